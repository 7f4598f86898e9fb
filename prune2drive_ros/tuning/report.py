"""What a rate search found, for people: ``report.md`` and three PNG plots.

Everything is read back from the study (all workers' trials, not only this process's), so the
report a worker writes at the end covers the whole study at that moment. Plots are drawn with
matplotlib's object API on an Agg canvas: no display, no global pyplot state, nothing from the
network.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from ..files import write_atomically, write_text_atomically
from ..sensors.rates_file import redact_command
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
    figures = {
        HISTORY_PNG: history_figure,
        RATES_PNG: rates_figure,
        TRADE_OFF_PNG: trade_off_figure,
    }
    for name, draw in figures.items():
        try:
            written.append(_save(folder / name, draw(trials, context)))
        except (OSError, ValueError) as exc:
            logger.warning("plot %s not written: %s", folder / name, exc)
    logger.info("wrote %s and %d plots", report, len(written) - 1)
    return written


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
        for t, e in ((t, Evaluation.from_trial(t)) for t in pareto_front(completed_trials(study)))
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


def _reward(trial: FrozenTrial) -> float:
    return _ev(trial).reward


def _penalty(trial: FrozenTrial) -> float:
    return _ev(trial).penalty


def _objective(trial: FrozenTrial) -> float:
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
        f"{_reward(chosen):.4f}, P = {_penalty(chosen):.4f} "
        f"({sum(kept)} of {full} visual tokens, {_percent(sum(kept) / full)})"
        + ("" if context.multi_objective else f", objective = {_objective(chosen):.4f}")
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
        _trials_table(_top(trials, context.multi_objective), context.multi_objective),
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


def _top(trials: Sequence[FrozenTrial], multi_objective: bool) -> list[FrozenTrial]:
    """The best trials: by ``R - lambda * P``, or with two objectives by R, then fewer tokens."""
    if multi_objective:
        return sorted(trials, key=lambda t: (-_reward(t), _penalty(t), t.number))[:TOP_TRIALS]
    return sorted(trials, key=lambda t: (-_objective(t), t.number))[:TOP_TRIALS]


def _trials_table(trials: Sequence[FrozenTrial], multi_objective: bool) -> str:
    """Trials with R, P and rates; and ``R - lambda * P`` when that is what the study optimised."""
    columns: list[tuple[str, Callable[[FrozenTrial], float]]] = [("R", _reward), ("P", _penalty)]
    if not multi_objective:
        columns.insert(0, ("objective", _objective))
    header = "| trial | " + " | ".join([*(name for name, _ in columns), *VIEWS]) + " |"
    rule = "| ---: " * (1 + len(columns) + len(VIEWS)) + "|"
    rows = [
        f"| {t.number} | " + " | ".join(f"{value(t):.4f}" for _, value in columns) + f" | "
        f"{_rates_cells(t)} |"
        for t in trials
    ]
    return "\n".join([header, rule, *rows, ""])


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def history_figure(trials: Sequence[FrozenTrial], context: ReportContext) -> Figure:
    """Per trial: the objective and the best so far; with two objectives, the score R and the
    tokens kept P in two panels, the trials on the Pareto front marked."""
    ordered = sorted(trials, key=lambda t: t.number)
    numbers = [t.number for t in ordered]
    if not context.multi_objective:
        figure = Figure(figsize=(7, 4.2), layout="constrained")
        axes = figure.add_subplot()
        values = [_objective(t) for t in ordered]
        best = [max(values[: i + 1]) for i in range(len(values))]
        axes.scatter(numbers, values, s=14, label="trial: R - lambda * P")
        axes.step(numbers, best, where="post", color="tab:red", label="best so far")
        axes.set(ylabel="objective R - lambda * P", title="Optimisation history")
        _trial_axis(axes)
        _legend_below(figure, [axes])
        return figure
    front = {t.number for t in pareto_front(trials)}
    figure = Figure(figsize=(7, 5.5), layout="constrained")
    score_axes, tokens_axes = figure.subplots(2, 1, sharex=True)
    for axes, value, label in (
        (score_axes, _reward, f"score R ({context.reward}), higher is better"),
        (tokens_axes, _penalty, "tokens kept P, lower is better"),
    ):
        on = [t for t in ordered if t.number in front]
        off = [t for t in ordered if t.number not in front]
        axes.scatter([t.number for t in off], [value(t) for t in off], s=14, label="trial")
        axes.scatter(
            [t.number for t in on],
            [value(t) for t in on],
            s=30,
            color="tab:orange",
            label="on the Pareto front",
        )
        axes.set(ylabel=label)
    score_axes.set(title="Optimisation history (two objectives)")
    _trial_axis(tokens_axes)
    _legend_below(figure, [score_axes])
    return figure


def rates_figure(trials: Sequence[FrozenTrial], context: ReportContext) -> Figure:
    """The chosen rates per view (bars) with the top trials' rates (dots, side by side)."""
    figure = Figure(figsize=(7, 4.4), layout="constrained")
    axes = figure.add_subplot()
    positions = list(range(len(VIEWS)))
    axes.bar(positions, list(trial_rates(context.choice.trial).values()), label="chosen")
    top = _top(trials, context.multi_objective)
    by = "R" if context.multi_objective else "objective"
    for i, trial in enumerate(top):
        offset = 0.6 * (i / max(len(top) - 1, 1) - 0.5)  # spread over the bar, none on another
        axes.scatter(
            [x + offset for x in positions],
            list(trial_rates(trial).values()),
            color="black",
            s=10,
            zorder=3,
            label=f"top {len(top)} trials by {by}" if i == 0 else None,
        )
    axes.set_xticks(positions, [view.removeprefix("CAM_") for view in VIEWS], rotation=20)
    axes.set(ylabel="retention rate", ylim=(0, 1.05), title="Retention rate per view")
    _legend_below(figure, [axes])
    return figure


def trade_off_figure(trials: Sequence[FrozenTrial], context: ReportContext) -> Figure:
    """Score against tokens kept: every trial, the Pareto front (the staircase no trial gets
    beyond), the choice, no pruning."""
    figure = Figure(figsize=(7, 4.8), layout="constrained")
    axes = figure.add_subplot()
    axes.scatter(
        [_penalty(t) for t in trials],
        [_reward(t) for t in trials],
        s=14,
        alpha=0.6,
        label="trials",
    )
    front = pareto_front(trials)
    axes.step(
        [_penalty(t) for t in front],
        [_reward(t) for t in front],
        "o-",
        where="post",
        color="tab:orange",
        label="Pareto front",
    )
    chosen = context.choice.trial
    axes.scatter(
        [_penalty(chosen)],
        [_reward(chosen)],
        marker="*",
        s=220,
        color="tab:red",
        zorder=3,
        label="chosen",
    )
    axes.scatter(
        [context.unpruned.penalty],
        [context.unpruned.reward],
        marker="s",
        color="tab:green",
        label="no pruning",
    )
    axes.set(
        xlabel="fraction of visual tokens kept (P)",
        ylabel=f"score R ({context.reward})",
        title="Score vs tokens",
    )
    _legend_below(figure, [axes])
    return figure


def _trial_axis(axes: Axes) -> None:
    """Trial numbers on the x axis: whole numbers only."""
    axes.set_xlabel("trial")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend_below(figure: Figure, axes: Sequence[Axes]) -> None:
    """One legend for ``axes`` under the plot, where it hides no point."""
    handles, labels = [], []
    for one in axes:
        more_handles, more_labels = one.get_legend_handles_labels()
        handles += more_handles
        labels += more_labels
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)


def _save(path: Path, figure: Figure) -> Path:
    FigureCanvasAgg(figure)
    write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=110))
    return path


def _per_view(counts: Sequence[int]) -> str:
    """``729``, or ``40-48`` when views differ (stitched views)."""
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}-{high}"
