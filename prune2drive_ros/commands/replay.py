"""Answer a questions file against a rosbag2 recording of six cameras, without ROS.

Each question is answered on the synchronized frame set nearest its stamp, one JSON line per
answer is written whole (:class:`~prune2drive_ros.files.LineWriter`) as soon as it exists, so an
interrupted or failing replay keeps every answer it already gave, and never half of one. A
question that cannot be answered (outside the recording, a corrupt image) is reported and
skipped; a bag that breaks mid-way or an answers file that cannot take the next line (a full
disk) stops the replay with the answers so far kept and summarised. With ``--baseline`` each
question is also answered without pruning, on the same model and frames, so the summary shows
the pruned and unpruned latencies side by side.

Questions are answered one at a time, as the node answers one service call at a time, so the
latency table is what a node user would see per question. Everything that can be checked
without the model (questions and their length, parameters, the bag and its topics, the rates
file, the output path: writable, not an input, not an existing file unless ``--force``) is
checked before the model loads: a mistake costs a second, not a model load.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BagError, DecodeError, OutputError, Prune2DriveError, QuestionError
from ..files import LineWriter
from ..progress import NO_PROGRESS, Progress, counted
from ..sensors.bag import DEFAULT_MAX_GAP_MS, CameraBag, open_config_bag
from ..sensors.questions import QAItem, read_questions
from ..serving.stats import STAGES, percentile
from .argtypes import at_least, positive_float
from .options import (
    BAG_HELP,
    add_engine_arguments,
    check_output,
    check_questions,
    engine_config,
)
from .progress import add_progress_argument, progress_from

if TYPE_CHECKING:
    from ..engine import Answer, Engine

logger = logging.getLogger(__name__)


@dataclass
class ReplayReport:
    """What a replay did: answers (pruned, and unpruned with ``--baseline``) and skips."""

    answers: list[Answer] = field(default_factory=list)
    baseline: list[Answer] = field(default_factory=list)
    #: the question of each answer, with its reference answer if the file has one
    asked: list[QAItem] = field(default_factory=list)
    skipped: list[tuple[QAItem, str]] = field(default_factory=list)
    #: why the replay stopped early (the bag broke off, the answers file could not take the next
    #: answer), or None when it went through every question.
    stopped: Prune2DriveError | None = None

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
                values = [getattr(a.timings_ms, stage) for a in answers]
                cells.append(f"{percentile(values, 50):>11.1f}/{percentile(values, 95):<10.1f}")
            lines.append(f"{name:<10}{len(answers):>4}" + "".join(cells))
        if self.answers and self.baseline:
            lines.append(f"prefill speedup (p50, unpruned / pruned): {self.prefill_speedup():.2f}x")
        return "\n".join(lines)

    def exact_match(self, answers: Sequence[Answer]) -> tuple[int, int]:
        """(right, scored): answers equal to their reference, of those that have one."""
        pairs = [
            (a.text.strip(), item.answer.strip())
            for a, item in zip(answers, self.asked, strict=True)
            if item.answer is not None
        ]
        return sum(text == reference for text, reference in pairs), len(pairs)

    def prefill_speedup(self) -> float:
        """Median unpruned prefill time over median pruned prefill time."""
        pruned = percentile([a.timings_ms.prefill for a in self.answers], 50)
        full = percentile([a.timings_ms.prefill for a in self.baseline], 50)
        return full / pruned if pruned > 0 else float("nan")


def replay(
    bag: CameraBag,
    items: Sequence[QAItem],
    engine: Engine,
    out: LineWriter | None = None,
    *,
    baseline: Engine | None = None,
    max_gap_ms: float = DEFAULT_MAX_GAP_MS,
    max_new_tokens: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> ReplayReport:
    """Answer ``items`` on the frame sets of the open ``bag``; write one line each to ``out``.

    A bag that breaks while reading, or an ``out`` that cannot take an answer (a full disk),
    ends the replay: the report says why (``stopped``) and keeps the answers given before,
    which are in ``out`` already, each whole.
    """
    report = ReplayReport()
    max_gap_ns = round(max_gap_ms * 1e6)
    with progress(total=len(items), desc="questions", unit="q") as bar:
        for item in counted(bar, items):
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
            except BagError as exc:
                report.stopped = exc
                break
            record = {
                **answer.as_dict(),
                "question_stamp_ns": item.stamp_ns,
                "reference": item.answer,
            }
            if unpruned is not None:
                record["unpruned"] = {
                    "text": unpruned.text,
                    "timings_ms": unpruned.timings_ms.as_dict(),
                }
            if out is not None:
                try:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                except OSError as exc:
                    report.stopped = OutputError(
                        f"cannot write answer {len(report.answers) + 1}: {exc.strerror or exc}"
                    )
                    break
            report.answers.append(answer)
            report.asked.append(item)
            if unpruned is not None:
                report.baseline.append(unpruned)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``prune2drive replay``."""
    parser.add_argument("bag", help=BAG_HELP)
    parser.add_argument("--questions", required=True, help="JSON Lines: stamp, question, answer")
    add_engine_arguments(parser)
    parser.add_argument("--out", help="write one JSON line per answer here (default: no file)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--max-gap-ms",
        type=positive_float,
        default=DEFAULT_MAX_GAP_MS,
        help="largest distance from a question's stamp to its frame set (default %(default)s)",
    )
    parser.add_argument("--limit", type=at_least(1), help="answer only the first N questions")
    parser.add_argument(
        "--baseline", action="store_true", help="also answer each question without pruning"
    )
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    """``prune2drive replay``: exit 0 when every question was answered, 1 when some were not.

    Raises:
        BagError: the bag cannot be opened, or broke off mid-way (after the answers so far
            were written and summarised).
        OutputError: ``--out`` could not take an answer (after the answers so far were
            written and summarised).
    """
    items = read_questions(args.questions)[: args.limit]
    if not items:
        raise QuestionError(f"{args.questions} holds no questions")
    config = engine_config(args)
    check_questions(
        ((f"{args.questions}, question {n}", item.question) for n, item in enumerate(items, 1)),
        config,
    )
    out_path = check_output(args, args.out) if args.out else None
    with ExitStack() as stack:
        bag = stack.enter_context(open_config_bag(args.bag, config))
        from ..engine import Engine

        engine = Engine.from_config(config)
        if engine.ttft_budget_ms > 0:
            engine.calibrate()  # the cost model the budget is kept with
        baseline = Engine(engine.vlm, None, topics=engine.topics) if args.baseline else None
        out = stack.enter_context(LineWriter.create(out_path)) if out_path else None
        report = replay(
            bag,
            items,
            engine,
            out,
            baseline=baseline,
            max_gap_ms=args.max_gap_ms,
            max_new_tokens=config.max_new_tokens,
            progress=progress_from(args),
        )
    return report_answers(report, engine.vlm.random_weights, out_path)


def report_answers(report: ReplayReport, random_weights: bool, out_path: Path | None) -> int:
    """Print the answers (flagged when the model has random weights) and the latency summary
    of a replay; its exit status (1: some were skipped).

    Raises:
        BagError, OutputError: the replay stopped early (:attr:`ReplayReport.stopped`), raised
            after the answers so far are printed; the error says where they were written.
    """
    if random_weights:
        from ..vlm import RANDOM_WEIGHTS_NOTE

        print(f"NOTE: {RANDOM_WEIGHTS_NOTE}")
    for answer, item in zip(report.answers, report.asked, strict=True):
        verdict = ""
        if item.answer is not None:
            right = answer.text.strip() == item.answer.strip()
            verdict = f"   ({'right' if right else 'wrong'}; reference {item.answer!r})"
        print(f"Q: {answer.question}\nA: {answer.text!r}{verdict}")
    print(f"\n{len(report.answers)} answered, {len(report.skipped)} skipped")
    for name, answers in (("pruned", report.answers), ("unpruned", report.baseline)):
        hits, scored = report.exact_match(answers) if answers else (0, 0)
        if scored:
            print(f"exact match {name}: {hits} of {scored} ({hits / scored:.0%})")
    for item, why in report.skipped:
        print(f"  skipped {item.question!r}: {why}")
    if report.answers:
        print("\nlatency (ms)\n" + report.latency_table())
    if out_path:
        print(f"answers written to {out_path}")
    if report.stopped is not None:
        kept = (
            f"; the {len(report.answers)} answers before it are in {out_path}" if out_path else ""
        )
        raise type(report.stopped)(f"{report.stopped}{kept}")
    return 1 if report.skipped else 0
