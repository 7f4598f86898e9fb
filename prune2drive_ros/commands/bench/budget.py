"""Deadline hit rate of a latency budget against fixed rates of the same mean tokens, idle and
beside a CPU-burning neighbour.

The demo's synthetic bag is answered question by question (its reference answers give the
accuracy; a random-weight shape has none worth scoring). For each budget the engine first keeps
the budget (``ttft_budget_ms``: per question as many tokens as its cost model predicts will fit,
corrected by every answer), with the machine idle and then beside neighbour processes this
benchmark starts, one burning each core (``--neighbour-cores``) as other programs on the vehicle
would: the model then gets a share of every core, its stages slow down, and only what the cost
model learns from the answers says by how much. Then fixed
uniform rates keeping the same mean tokens as the budget runs kept (over both loads: one
operating point chosen for the average conditions) answer the same questions under the same two
loads. Reported per budget, method and load: the share of answers whose time to first token
(image decode, encode, prune, prefill; no queue here) met the budget, the mean visual tokens
kept and the exact-match accuracy.

The budgets default to the calibrated cost model's prediction, plus the measured image decode,
at 10, 25 and 50 % of every visual token: tight, middling and loose on whatever device runs it.
The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError
from ...sensors.bag import DEFAULT_MAX_GAP_MS, CameraBag, open_camera_bag
from ...sensors.questions import QAItem, read_questions
from ...sensors.synthetic import default_questions_path
from ...training.cached import require_trained
from ..argtypes import at_least, positive_float
from ..demo import DEMO_SEED, demo_bag
from . import add_torch_arguments, device_name, emit_json, median, setup_torch, time_ms

if TYPE_CHECKING:
    from ...engine import Answer, Engine

#: Shares of every visual token whose predicted cost sets the default budgets.
BUDGET_FRACTIONS = (0.1, 0.25, 0.5)
LOADS = ("idle", "neighbour")


@dataclass(frozen=True)
class Run:
    """One method under one load at one budget: what its answers did."""

    method: str
    load: str
    budget_ms: float
    ttft_ms: list[float]
    tokens: list[int]
    right: list[bool]

    def row(self) -> dict[str, Any]:
        """The JSON record of this run."""
        return {
            "method": self.method,
            "load": self.load,
            "budget_ms": round(self.budget_ms, 1),
            "hit_rate": round(
                sum(t <= self.budget_ms for t in self.ttft_ms) / len(self.ttft_ms), 3
            ),
            "mean_tokens": round(statistics.fmean(self.tokens), 1),
            "accuracy": round(sum(self.right) / len(self.right), 3),
            "ttft_ms_p50": round(statistics.median(self.ttft_ms), 1),
            "questions": len(self.ttft_ms),
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive bench budget``."""
    parser.add_argument(
        "--model",
        default="scene",
        help="'scene' (the trained default scene model: accuracy means something), 'small' "
        "(the random-weight 729-token shape: cost only), or a checkpoint folder (scene)",
    )
    parser.add_argument(
        "--questions", type=at_least(1), default=24, help="questions of the demo bag (24)"
    )
    parser.add_argument(
        "--budgets",
        type=positive_float,
        nargs="+",
        help="budgets in ms (default: the cost model's at 10, 25 and 50 %% of every token)",
    )
    parser.add_argument("--max-new-tokens", type=at_least(1), default=8, help="answer length (8)")
    parser.add_argument(
        "--neighbour-cores",
        type=at_least(1),
        default=os.cpu_count() or 1,
        help="cores the neighbour burns, one process each (every core: %(default)s)",
    )
    add_torch_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Calibrate, answer under each budget and load, compare with fixed rates, print."""
    model = _model_folder(args.model)
    bag_path = demo_bag(12, DEMO_SEED)
    items = read_questions(default_questions_path(bag_path))[: args.questions]
    device = setup_torch(args)
    engine = _engine(model, str(device), args.max_new_tokens)
    engine.warmup()
    cost = engine.calibrate()  # shared by the runs, corrected as they go
    full = sum(engine.full_budgets)
    rows: list[dict[str, Any]] = []
    with open_camera_bag(bag_path) as bag:
        decode_ms = _decode_ms(engine, bag, items[0])
        budgets = args.budgets or [
            decode_ms + cost.predict_ttft_ms(round(f * full)) for f in BUDGET_FRACTIONS
        ]
        for budget in budgets:
            answer = partial(_answer_all, engine, bag, items, cores=args.neighbour_cores)
            kept = [answer("budget", load, budget) for load in LOADS]
            tokens = statistics.fmean(t for run in kept for t in run.tokens)
            fixed = [answer("fixed", load, budget, tokens / full) for load in LOADS]
            rows += [run.row() for run in (*kept, *fixed)]
    result = {
        "benchmark": "budget",
        "model": engine.vlm.name,
        "random_weights": engine.vlm.random_weights,
        "device": device_name(device),
        "full_tokens": full,
        "decode_ms": round(decode_ms, 1),
        "neighbour_cores": args.neighbour_cores,
        "cost_model": cost.describe(),
        "rows": rows,
    }
    if not args.json:
        _print_table(result)
    emit_json(result)
    return 0


def _model_folder(model: str) -> str:
    """The checkpoint ``--model`` names ('small' stays a shape name); never trains one."""
    if model == "small":
        return model
    if model != "scene":
        if not Path(model).is_dir():
            raise ConfigError(f"--model {model} is no folder; give 'scene', 'small' or a folder")
        return model
    return str(require_trained("default", "give --model small"))


def _engine(model: str, device: str, max_new_tokens: int) -> Engine:
    """The engine the runs share (one cost model, corrected as the runs go)."""
    from ...config import DriveVLMConfig
    from ...engine import Engine
    from ...vlm.tiny import random_vlm

    if model == "small":
        vlm = random_vlm("llava_onevision", "small", device=device)
        return Engine(vlm, 1.0, max_new_tokens=max_new_tokens)
    config = DriveVLMConfig(model=model, device=device, max_new_tokens=max_new_tokens)
    return Engine.from_config(config, rates_file=False)


def _decode_ms(engine: Engine, bag: CameraBag, item: QAItem) -> float:
    """Median time to decode one frame set's six images on this machine."""
    frames = _frames(bag, item)
    return median(time_ms(lambda: engine.decode(frames), warmup=0, repeats=5, device="cpu"))


def _frames(bag: CameraBag, item: QAItem) -> Any:
    return bag.nearest_frame_set(item.stamp_ns, round(DEFAULT_MAX_GAP_MS * 1e6))


def _answer_all(
    engine: Engine,
    bag: CameraBag,
    items: Sequence[QAItem],
    method: str,
    load: str,
    budget_ms: float,
    rate: float | None = None,
    *,
    cores: int,
) -> Run:
    """Answer ``items`` keeping ``budget_ms`` (``rate`` None) or at the fixed ``rate``, with
    the neighbour burning ``cores`` cores under the ``neighbour`` load."""
    engine.ttft_budget_ms = budget_ms if rate is None else 0.0
    engine.set_pruning(1.0 if rate is None else max(rate, 1e-3), engine.pruner)
    ttft, tokens, right = [], [], []
    with _neighbour(cores if load == "neighbour" else 0):
        for item in items:
            answer: Answer = engine.answer(_frames(bag, item), item.question)
            ttft.append(answer.timings_ms.ttft)
            tokens.append(sum(answer.kept_tokens.values()))
            right.append(item.answer is not None and answer.text.strip() == item.answer.strip())
    return Run(method, load, budget_ms, ttft, tokens, right)


@contextmanager
def _neighbour(cores: int) -> Iterator[None]:
    """``cores`` processes each burning a core for the block (none for 0), as other programs
    on the vehicle would."""
    if not cores:
        yield
        return
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    processes = [context.Process(target=burn, args=(stop,), daemon=True) for _ in range(cores)]
    for process in processes:
        process.start()
    try:
        time.sleep(0.5)  # let them start burning before the first answer
        yield
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()


def burn(stop: Any) -> None:
    """Busy-loop until ``stop`` is set (the neighbour's body; module level for ``spawn``)."""
    while not stop.is_set():
        sum(i * i for i in range(20_000))


def _print_table(result: dict[str, Any]) -> None:
    print(
        f"{result['model']} on {result['device']}: {result['full_tokens']} visual tokens "
        f"unpruned, image decode {result['decode_ms']} ms; cost model {result['cost_model']}"
    )
    print(f"{'budget ms':>10} {'method':<7} {'load':<10} {'hit rate':>8} {'tokens':>7} {'acc':>6}")
    for r in result["rows"]:
        print(
            f"{r['budget_ms']:>10.1f} {r['method']:<7} {r['load']:<10} {r['hit_rate']:>8.2f}"
            f" {r['mean_tokens']:>7.0f} {r['accuracy']:>6.2f}"
        )
