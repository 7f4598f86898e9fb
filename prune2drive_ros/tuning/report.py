"""What a rate search found, for people: ``report.md`` and three PNG plots (:mod:`.plots`).

Everything is read back from the study (all workers' trials, not only this process's), so the
report a worker writes at the end covers the whole study at that moment. Plots are drawn with
matplotlib's object API on an Agg canvas: no display, no global pyplot state, nothing from the
network; matplotlib is imported only when they are drawn.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from ..files import write_text_atomically
from ..sensors.rates_file import FrontPoint, redact_command
from ..views import VIEWS
from ..vlm import RANDOM_WEIGHTS_NOTE
from .objective import Evaluation
from .study import Choice, completed_trials, pareto_front, trial_rates

logger = logging.getLogger(__name__)

HISTORY_PNG = "history.png"
REPORT_FILE = "report.md"
#: The Pareto front of a two-objective study, beside the report.
PARETO_FILE = "pareto.yaml"
RATES_PNG = "rates.png"
TRADE_OFF_PNG = "score_vs_tokens.png"
TOP_TRIALS = 5


@dataclass(frozen=True)
class ReportContext:
    """What the report says beside the trials.

    Attributes:
        study: the study (all workers' trials).
        choice: the chosen trial and how it was chosen.
        reward: ``drivelm``, ``exact`` or ``fidelity``, and why (``reward_reason``).
        lam: ``lambda`` of the objective ``R - lambda * P``; None for a study of two
            objectives (score, tokens), which has none (:attr:`multi_objective`).
        storage: the storage URL, password removed.
        model: model id or path; ``random_weights``: its answers are meaningless.
        view_tokens: visual tokens of each view before pruning.
        data: the validation set, in words (questions, frames, source, skipped).
        unpruned: the unpruned model on the same data (the reference point).
        encoder_calls: frames encoded by this run (0 when all were cached).
        rates_file: where the chosen rates were written.
        command: the command line of this run (re-run it to resume); written without the
            storage URL's password.
    """

    study: optuna.Study
    choice: Choice
    reward: str
    reward_reason: str
    lam: float | None
    storage: str
    model: str
    random_weights: bool
    view_tokens: tuple[int, ...]
    data: str
    unpruned: Evaluation
    encoder_calls: int
    rates_file: Path
    command: Sequence[str]

    @property
    def multi_objective(self) -> bool:
        """Two objectives (score, tokens): the study has no lambda."""
        return self.lam is None


def write_report(folder: Path, context: ReportContext) -> list[Path]:
    """Write ``report.md``, then the plots, into ``folder``; return the paths written.

    The report comes first and a plot that cannot be drawn or written (a full disk, a figure
    matplotlib refuses) is a warning: the study's outcome is never lost to a picture of it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    trials = completed_trials(context.study)
    report = folder / REPORT_FILE
    write_text_atomically(report, report_text(trials, context))
    written = [report]
    from .plots import history_figure, rates_figure, save_figure, trade_off_figure

    figures = {
        HISTORY_PNG: history_figure,
        RATES_PNG: rates_figure,
        TRADE_OFF_PNG: trade_off_figure,
    }
    for name, draw in figures.items():
        try:
            written.append(save_figure(folder / name, draw(trials, context)))
        except (OSError, ValueError) as exc:
            logger.warning("plot %s not written: %s", folder / name, exc)
    logger.info("wrote %s and %d plots", report, len(written) - 1)
    return written


def _front(study: optuna.Study) -> list[tuple[FrozenTrial, Evaluation]]:
    """The trials of ``study`` on its (score, tokens) Pareto front, fewest tokens first."""
    return [(t, Evaluation.from_trial(t)) for t in pareto_front(completed_trials(study))]


def rates_front(study: optuna.Study) -> list[FrontPoint]:
    """The Pareto front of ``study`` for the rates file: each point's rates, tokens kept and
    score R, fewest tokens first.

    A study of one objective (``R - lambda * P``) has a front too: its trials also trade score
    against tokens, and a node under a latency budget needs the points the objective passed
    over.
    """
    return [
        FrontPoint(rates=trial_rates(t), tokens=sum(e.budgets), score=e.reward)
        for t, e in _front(study)
    ]


def write_pareto_front(folder: Path, study: optuna.Study) -> Path:
    """Write the Pareto front of a two-objective ``study`` (rates, R, P and tokens kept of each
    trial on it) to ``folder``/pareto.yaml; return its path."""
    front = [
        {
            "trial": t.number,
            "rates": trial_rates(t),
            "score": e.reward,
            "tokens": e.penalty,
            "tokens_kept": sum(e.budgets),
        }
        for t, e in _front(study)
    ]
    path = folder / PARETO_FILE
    write_text_atomically(path, yaml.safe_dump(front, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f} %"


def _ev(trial: FrozenTrial) -> Evaluation:
    return Evaluation.from_trial(trial)


def reward_of(trial: FrozenTrial) -> float:
    """The trial's score R."""
    return _ev(trial).reward


def penalty_of(trial: FrozenTrial) -> float:
    """The trial's share of tokens kept P."""
    return _ev(trial).penalty


def objective_of(trial: FrozenTrial) -> float:
    """The trial's R - lambda * P."""
    return _ev(trial).objective


def _rates_cells(trial: FrozenTrial) -> str:
    return " | ".join(f"{rate:.3f}" for rate in trial_rates(trial).values())


def report_text(trials: Sequence[FrozenTrial], context: ReportContext) -> str:
    """The Markdown report."""
    study, chosen = context.study, context.choice.trial
    states = [t.state for t in study.get_trials(deepcopy=False)]
    full = sum(context.view_tokens)
    kept = _ev(chosen).budgets
    lines = ["# Retention-rate tuning report", ""]
    if context.random_weights:
        lines += [f"> **{RANDOM_WEIGHTS_NOTE}**: the scores below only show the machinery.", ""]
    if context.lam is None:  # two objectives (this test narrows lam for the else branch)
        objective = "two objectives: maximise the score R, minimise the tokens kept P"
    else:
        objective = (
            f"R - lambda * P with lambda = {context.lam:g} per unit of mean retention "
            f"(= {context.lam / len(VIEWS):g} per unit of the summed six rates; the reference "
            "uses 0.03)"
        )
    lines += [
        f"- study: `{study.study_name}` in `{context.storage}`",
        f"- model: `{context.model}` ({_per_view(context.view_tokens)} visual tokens per view)",
        f"- data: {context.data}",
        f"- reward R: {context.reward} ({context.reward_reason})",
        f"- objective: {objective}",
        f"- trials: {states.count(TrialState.COMPLETE)} complete, "
        f"{states.count(TrialState.FAIL)} failed, {states.count(TrialState.RUNNING)} running, "
        f"{states.count(TrialState.WAITING)} waiting (all workers)",
        f"- vision encoder calls in this run: {context.encoder_calls} (the others were cached)",
        "",
        "## Chosen rates",
        "",
        f"Trial {chosen.number}, chosen as the {context.choice.how}: R = "
        f"{reward_of(chosen):.4f}, P = {penalty_of(chosen):.4f} "
        f"({sum(kept)} of {full} visual tokens, {_percent(sum(kept) / full)})"
        + ("" if context.multi_objective else f", objective = {objective_of(chosen):.4f}")
        + f". Unpruned on the same data: R = {context.unpruned.reward:.4f}.",
        "",
        "| view | rate | tokens kept |",
        "| --- | ---: | ---: |",
        *(
            f"| {view} | {rate:.3f} | {tokens} of {count} |"
            for (view, rate), tokens, count in zip(
                trial_rates(chosen).items(), kept, context.view_tokens, strict=True
            )
        ),
        "",
        "## Parts of the score",
        "",
        "```",
        _ev(chosen).describe(),
        "```",
        "",
        f"## Top {TOP_TRIALS} trials",
        "",
        _trials_table(top_trials(trials, context.multi_objective), context.multi_objective),
    ]
    if context.multi_objective:
        lines += ["## Pareto front", "", _trials_table(pareto_front(trials), multi_objective=True)]
    lines += [
        "## Use the rates",
        "",
        "```bash",
        f"ros2 launch prune2drive_ros drive_vlm.launch.py rates_file:={context.rates_file}",
        f"prune2drive replay BAG --questions QUESTIONS.jsonl --rates {context.rates_file} "
        "--baseline",
        f"prune2drive eval --bag BAG --questions QUESTIONS.jsonl --rates {context.rates_file}",
        "```",
        "",
        "Run the same command again to add trials to this study (several at once share it):",
        "",
        "```bash",
        shlex.join(redact_command(context.command)),
        "```",
        "",
        "## Plots",
        "",
        f"![optimisation history]({HISTORY_PNG})",
        f"![rates per view]({RATES_PNG})",
        f"![score vs tokens]({TRADE_OFF_PNG})",
        "",
    ]
    return "\n".join(lines)


def top_trials(trials: Sequence[FrozenTrial], multi_objective: bool) -> list[FrozenTrial]:
    """The best trials: by ``R - lambda * P``, or with two objectives by R, then fewer tokens."""
    if multi_objective:
        return sorted(trials, key=lambda t: (-reward_of(t), penalty_of(t), t.number))[:TOP_TRIALS]
    return sorted(trials, key=lambda t: (-objective_of(t), t.number))[:TOP_TRIALS]


def _trials_table(trials: Sequence[FrozenTrial], multi_objective: bool) -> str:
    """Trials with R, P and rates; and ``R - lambda * P`` when that is what the study optimised."""
    columns: list[tuple[str, Callable[[FrozenTrial], float]]] = [
        ("R", reward_of),
        ("P", penalty_of),
    ]
    if not multi_objective:
        columns.insert(0, ("objective", objective_of))
    header = "| trial | " + " | ".join([*(name for name, _ in columns), *VIEWS]) + " |"
    rule = "| ---: " * (1 + len(columns) + len(VIEWS)) + "|"
    rows = [
        f"| {t.number} | " + " | ".join(f"{value(t):.4f}" for _, value in columns) + f" | "
        f"{_rates_cells(t)} |"
        for t in trials
    ]
    return "\n".join([header, rule, *rows, ""])


def _per_view(counts: Sequence[int]) -> str:
    """``729``, or ``40-48`` when views differ (stitched views)."""
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}-{high}"
