"""Score retention rates with every pruner and without pruning on validation questions.

The rates (``--rates`` file, default the package's; ``--uniform R``; or ``--no-pruning``) are
applied with each pruner of :data:`~prune2drive_ros.pruning.PRUNERS` at the same per-view token
budgets, and the unpruned model is the reference row ("none"). Per method the table gives the
visual tokens per image (mean over the six views), the score (the local DriveLM score with its
accuracy, language and match parts, or fidelity to the unpruned answers; see
:mod:`prune2drive_ros.tuning.objective`), the language-model prefill time and its speedup over
the unpruned prefill (medians over frames, the methods timed in turns on the same cached tokens
in this run), and the share of prefill FLOPs (analytic, :mod:`prune2drive_ros.vlm.flops`, on the
same prompts). Match is the coordinate F1 x100, as the challenge prints it. Under the table the
weighting of the score is spelled out, with the tokenizer of its language metrics. The vision
encoder runs only for frames missing from the feature cache that ``tune`` shares.

The DriveLM challenge scores a later question of a key frame only when the objects it names
were found in the frame's first answer (:func:`~prune2drive_ros.tuning.scoring.challenge_keep`).
``eval`` does not apply that filter, for DriveLM input neither: its premise is the whole
question list of a frame in the challenge's order (the perception question first), while
``--samples`` draws a subset, so the graph would come from whichever question was drawn first;
and it would score each method on a different subset of the items (those its own first answers
located), which confounds the side-by-side comparison this table is for. Without the GPT parts
the number is not the challenge's final score in any case;
:func:`~prune2drive_ros.tuning.drivelm.score_drivelm` applies the filter to a whole file's
predictions.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from ..config import resolve_rates_file
from ..engine import Engine
from ..errors import ConfigError
from ..pruning import PRUNERS
from ..pruning.budget import validate_rates
from ..sensors.rates_file import load_rates
from ..tuning.objective import (
    Evaluation,
    EvaluationSetup,
    prepare_evaluation,
)
from ..tuning.ptb import tokenizer_name
from ..vlm import RANDOM_WEIGHTS_NOTE, DrivingVLM
from ..vlm.flops import DecoderShape, flops_ratio
from .argtypes import at_least
from .bench import device_name, emit_json, median, time_interleaved
from .options import (
    add_data_arguments,
    add_engine_arguments,
    add_evaluation_arguments,
    choose_scoring,
    engine_config,
    open_validation_set,
)

logger = logging.getLogger(__name__)

UNPRUNED = "none"
DEFAULT_TIMING_FRAMES = 8
DEFAULT_REPEATS = 3


@dataclass(frozen=True)
class Row:
    """One method's line of the table."""

    method: str
    tokens_per_view: float
    score: float
    parts: dict[str, float | None]
    prefill_ms: float
    speedup: float
    flops_share: float
    answered: int
    skipped: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive eval``."""
    add_data_arguments(parser)
    add_engine_arguments(parser)
    add_evaluation_arguments(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--uniform", type=float, default=None, help="score this rate for every view, not --rates"
    )
    mode.add_argument("--no-pruning", action="store_true", help="score only the unpruned model")
    parser.add_argument(
        "--timing-frames",
        type=at_least(1),
        default=DEFAULT_TIMING_FRAMES,
        help="frames the prefill is timed on (%(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=at_least(1),
        default=DEFAULT_REPEATS,
        help="timed prefills per method and frame, after one warm-up (%(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the table as JSON last")


def run(args: argparse.Namespace) -> int:
    """``prune2drive eval``: 0, or 1 when some questions had to be skipped."""
    config = engine_config(args)
    # Rates, data and reward are checked before the model loads: a mistake costs a second.
    rates = None
    if args.uniform is not None:
        rates = validate_rates(args.uniform)
    elif not args.no_pruning:
        rates = load_rates(resolve_rates_file(config)).rates
    with open_validation_set(args, config) as data:
        print(data.summary())
        reward, tokenizer = choose_scoring(args, data)
        engine = Engine.from_config(config)
        vlm = engine.vlm
        if vlm.random_weights:
            print(f"NOTE: {RANDOM_WEIGHTS_NOTE}; the scores only show that the machinery works")
        methods = (
            [] if rates is None else [engine.pruner, *(p for p in PRUNERS if p != engine.pruner)]
        )
        setup = prepare_evaluation(
            engine,
            data,
            reward,
            tokenizer=tokenizer,
            cache_dir=args.cache_dir,
            seed=args.seed,
            progress=not args.no_progress,
        )
        scored = 1.0 if rates is None else rates  # --no-pruning: full budgets alone
        evaluations = {m: setup.evaluator.evaluate(scored, pruner=m) for m in methods}
        evaluations[UNPRUNED] = setup.evaluator.evaluate(1.0)
        timings = prefill_timings(
            vlm,
            setup,
            vlm.budgets(scored),
            methods,
            frames=args.timing_frames,
            repeats=args.repeats,
        )
    rows = [
        _row(m, evaluations[m], *timings[m], baseline=timings[UNPRUNED][0]) for m in evaluations
    ]
    print(table_text(rows, setup.reward))
    print(f"FLOPs share: analytic LM prefill FLOPs; device: {device_name(vlm.device)}")
    shown = methods[0] if methods else UNPRUNED
    print(f"\nscore of {shown}, and how each row's score is made up:")
    print(evaluations[shown].describe())
    if args.json:
        emit_json(
            {
                "reward": setup.reward,
                "tokenizer": tokenizer_name(setup.tokenizer),
                "rates": rates,
                "samples": len(data.samples),
                "frames": len(data.frames),
                "encoder_calls": setup.features.encoder_calls,
                "device": device_name(vlm.device),
                "model": vlm.name,
                "random_weights": vlm.random_weights,
                "rows": [asdict(row) for row in rows],
            }
        )
    return 1 if any(row.skipped for row in rows) else 0


def prefill_timings(
    vlm: DrivingVLM,
    setup: EvaluationSetup,
    budgets: Sequence[int],
    methods: Sequence[str],
    *,
    frames: int,
    repeats: int,
) -> dict[str, tuple[float, float]]:
    """Median prefill ms and mean FLOPs share per method (and ``none``) over ``frames`` frames.

    The prompt is the frame's first question; on each frame the methods take turns run by run
    (:func:`~.bench.time_interleaved`), so load from elsewhere slows all alike.
    """
    names = [*methods, UNPRUNED]
    times: dict[str, list[float]] = {name: [] for name in names}
    shares: dict[str, list[float]] = {name: [] for name in names}
    shape = DecoderShape.from_config(vlm.model.config)
    engine, seed = setup.evaluator.engine, setup.evaluator.seed
    for frame, group in setup.data.by_frame()[:frames]:
        try:
            visual = setup.features.visual(frame)
            question = group[0].question
            inputs = {
                UNPRUNED: engine.prefill_inputs(visual, question, budgets=engine.full_budgets)
            }
            for method in methods:
                inputs[method] = engine.prefill_inputs(
                    visual, question, budgets=budgets, pruner=method, seed=seed
                )
        except Exception as exc:  # a bad frame is left out of the timing, not fatal
            logger.warning("prefill of %s not timed: %s", frame.label, exc)
            continue
        runs = time_interleaved(
            {name: partial(vlm.prefill, inputs[name]) for name in names},
            warmup=1,
            repeats=repeats,
            device=vlm.device,
        )
        for name in names:
            times[name].append(median(runs[name]))
            shares[name].append(flops_ratio(shape, inputs[name].length, inputs[UNPRUNED].length))
    if not times[UNPRUNED]:
        raise ConfigError("no frame could be timed; see the warnings above")
    return {name: (median(times[name]), statistics.fmean(shares[name])) for name in names}


def _row(
    method: str, evaluation: Evaluation, prefill_ms: float, share: float, *, baseline: float
) -> Row:
    parts: Mapping[str, Any] = evaluation.parts
    keys = ("fidelity",) if "fidelity" in parts else ("accuracy", "language", "match")
    return Row(
        method=method,
        tokens_per_view=sum(evaluation.budgets) / len(evaluation.budgets),
        score=evaluation.reward,
        parts={key: parts.get(key) for key in keys},
        prefill_ms=prefill_ms,
        speedup=baseline / prefill_ms if prefill_ms > 0 else float("nan"),
        flops_share=share,
        answered=evaluation.answered,
        skipped=evaluation.skipped,
    )


def table_text(rows: Sequence[Row], reward: str) -> str:
    """The paper-style table as aligned text."""
    part_names = list(rows[0].parts)
    header = ["method", "tokens/view", f"score ({reward})", *part_names]
    header += ["prefill ms", "speedup", "FLOPs share", "skipped"]
    lines = [header]
    for row in rows:
        cells = [row.method, f"{row.tokens_per_view:.1f}", f"{row.score:.4f}"]
        cells += ["-" if row.parts[p] is None else f"{row.parts[p]:.4f}" for p in part_names]
        cells += [
            f"{row.prefill_ms:.2f}",
            f"{row.speedup:.2f}x",
            f"{100 * row.flops_share:.1f} %",
            str(row.skipped),
        ]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )
