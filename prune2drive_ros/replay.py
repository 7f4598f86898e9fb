"""Answer a questions file against a rosbag2 recording of six cameras, without ROS.

Each question is answered on the synchronized frame set nearest its stamp, one JSON line per
answer is written (and flushed) as soon as it exists, so an interrupted or failing replay keeps
every answer it already gave. A question that cannot be answered (outside the recording, a
corrupt image) is reported and skipped; a bag that breaks mid-way stops the replay with the
answers so far kept. With ``--baseline`` each question is also answered without pruning, on the
same model and frames, so the summary shows the pruned and unpruned latencies side by side.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from .argtypes import at_least
from .bag import open_camera_bag
from .config import DriveVLMConfig
from .engine import Answer, Engine
from .errors import BagError, DecodeError, QuestionError
from .questions import QAItem, read_questions
from .stats import STAGES, percentile
from .vlm import RANDOM_WEIGHTS_NOTE

logger = logging.getLogger(__name__)

#: Default largest distance between a question's stamp and the frame set answering it.
DEFAULT_MAX_GAP_MS = 100.0


@dataclass
class ReplayReport:
    """What a replay did: answers (pruned, and unpruned with ``--baseline``) and skips."""

    answers: list[Answer] = field(default_factory=list)
    baseline: list[Answer] = field(default_factory=list)
    skipped: list[tuple[QAItem, str]] = field(default_factory=list)

    def latency_table(self) -> str:
        """p50 / p95 per stage in ms, pruned and (if run) unpruned, as aligned text."""
        rows = [("pruned", self.answers), ("unpruned", self.baseline)]
        header = f"{'run':<10}{'n':>4}" + "".join(f"{s + ' p50/p95':>22}" for s in STAGES)
        lines = [header]
        for name, answers in rows:
            if not answers:
                continue
            cells = []
            for stage in STAGES:
                values = [a.timings_ms[stage] for a in answers]
                cells.append(f"{percentile(values, 50):>11.1f}/{percentile(values, 95):<10.1f}")
            lines.append(f"{name:<10}{len(answers):>4}" + "".join(cells))
        if self.answers and self.baseline:
            lines.append(f"prefill speedup (p50, unpruned / pruned): {self.prefill_speedup():.2f}x")
        return "\n".join(lines)

    def prefill_speedup(self) -> float:
        """Median unpruned prefill time over median pruned prefill time."""
        pruned = percentile([a.timings_ms["prefill"] for a in self.answers], 50)
        full = percentile([a.timings_ms["prefill"] for a in self.baseline], 50)
        return full / pruned if pruned > 0 else float("nan")


def replay(
    bag_path: str | Path,
    items: Sequence[QAItem],
    engine: Engine,
    out: TextIO | None = None,
    *,
    baseline: Engine | None = None,
    max_gap_ms: float = DEFAULT_MAX_GAP_MS,
    max_new_tokens: int | None = None,
    progress: bool = True,
) -> ReplayReport:
    """Answer ``items`` on the frame sets of the bag at ``bag_path``; write lines to ``out``.

    Raises:
        BagError: the bag cannot be opened or breaks while reading (answers written so far
            stay in ``out``).
    """
    report = ReplayReport()
    max_gap_ns = round(max_gap_ms * 1e6)
    with open_camera_bag(bag_path, topics=engine.topics) as bag:
        for item in tqdm(items, desc="questions", unit="q", disable=not progress):
            try:
                frames = bag.nearest_frame_set(item.stamp_ns, max_gap_ns)
                answer = engine.answer(frames, item.question, max_new_tokens)
                unpruned = (
                    baseline.answer(frames, item.question, max_new_tokens) if baseline else None
                )
            except (QuestionError, DecodeError) as exc:
                logger.warning("skipped %r: %s", item.question, exc)
                report.skipped.append((item, str(exc)))
                continue
            report.answers.append(answer)
            record = {**answer.as_dict(), "reference": item.answer}
            if unpruned is not None:
                report.baseline.append(unpruned)
                record["unpruned"] = {"text": unpruned.text, "timings_ms": unpruned.timings_ms}
            if out is not None:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``prune2drive replay``."""
    parser.add_argument("bag", help="rosbag2 folder or file (sqlite3 or mcap)")
    parser.add_argument("--questions", required=True, help="JSON Lines: stamp, question, answer")
    add_engine_arguments(parser)
    parser.add_argument("--out", help="write one JSON line per answer here (default: no file)")
    parser.add_argument(
        "--max-gap-ms",
        type=float,
        default=DEFAULT_MAX_GAP_MS,
        help="largest distance from a question's stamp to its frame set (default %(default)s)",
    )
    parser.add_argument("--limit", type=at_least(1), help="answer only the first N questions")
    parser.add_argument(
        "--baseline", action="store_true", help="also answer each question without pruning"
    )


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and pruning options every answering command shares (defaults: config.py)."""
    parser.add_argument("--model", default="", help="hub id or local checkpoint (default: tiny)")
    parser.add_argument("--family", default="", help="model family (default: from config.json)")
    parser.add_argument("--rates", default="", help="retention_rates.yaml (default: package's)")
    parser.add_argument("--pruner", default="tfps", help="tfps, random, grid, ...")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="answer length limit")
    parser.add_argument(
        "--raw", action="store_true", help="read sensor_msgs/Image topics instead of compressed"
    )


def engine_config(args: argparse.Namespace) -> DriveVLMConfig:
    """The one config schema, filled from the command line (validated)."""
    return DriveVLMConfig().with_changes(
        model=args.model,
        family=args.family,
        rates_file=args.rates,
        pruner=args.pruner,
        device=args.device,
        dtype=args.dtype,
        max_new_tokens=args.max_new_tokens,
        use_compressed=not args.raw,
    )


def print_answers(report: ReplayReport, random_weights: bool, stream: TextIO = sys.stdout) -> None:
    """Answers and the latency summary, flagged when the model has random weights."""
    if random_weights:
        print(f"NOTE: {RANDOM_WEIGHTS_NOTE}", file=stream)
    for answer in report.answers:
        print(f"Q: {answer.question}\nA: {answer.text!r}", file=stream)
    print(f"\n{len(report.answers)} answered, {len(report.skipped)} skipped", file=stream)
    for item, why in report.skipped:
        print(f"  skipped {item.question!r}: {why}", file=stream)
    if report.answers:
        print("\nlatency (ms)\n" + report.latency_table(), file=stream)


def run(args: argparse.Namespace) -> int:
    """``prune2drive replay``: exit 0 when every question was answered, 1 when some were not."""
    items = read_questions(args.questions)[: args.limit]
    if not items:
        raise QuestionError(f"{args.questions} holds no questions")
    engine = Engine.from_config(engine_config(args))
    baseline = Engine(engine.vlm, None, topics=engine.topics) if args.baseline else None
    with ExitStack() as stack:
        out = stack.enter_context(Path(args.out).open("w", encoding="utf-8")) if args.out else None
        try:
            report = replay(
                args.bag,
                items,
                engine,
                out,
                baseline=baseline,
                max_gap_ms=args.max_gap_ms,
                max_new_tokens=args.max_new_tokens,
            )
        except BagError:
            if args.out:
                logger.error("the bag broke off; answers so far are in %s", args.out)
            raise
    print_answers(report, engine.vlm.random_weights)
    if args.out:
        print(f"answers written to {args.out}")
    return 1 if report.skipped else 0
