"""The three plots of a rate search's report: history, rates per view, score against tokens.

Drawn with matplotlib's object API on an Agg canvas: no display, no global pyplot state. Its
own module so that reading the report's names (``tune --help``, the output checks) needs no
matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial

from ..files import write_atomically
from ..views import VIEWS
from .report import ReportContext, objective_of, penalty_of, reward_of, top_trials
from .study import pareto_front, trial_rates


def history_figure(trials: Sequence[FrozenTrial], context: ReportContext) -> Figure:
    """Per trial: the objective and the best so far; with two objectives, the score R and the
    tokens kept P in two panels, the trials on the Pareto front marked."""
    ordered = sorted(trials, key=lambda t: t.number)
    numbers = [t.number for t in ordered]
    if not context.multi_objective:
        figure = Figure(figsize=(7, 4.2), layout="constrained")
        axes = figure.add_subplot()
        values = [objective_of(t) for t in ordered]
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
        (score_axes, reward_of, f"score R ({context.reward}), higher is better"),
        (tokens_axes, penalty_of, "tokens kept P, lower is better"),
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
    top = top_trials(trials, context.multi_objective)
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
        [penalty_of(t) for t in trials],
        [reward_of(t) for t in trials],
        s=14,
        alpha=0.6,
        label="trials",
    )
    front = pareto_front(trials)
    axes.step(
        [penalty_of(t) for t in front],
        [reward_of(t) for t in front],
        "o-",
        where="post",
        color="tab:orange",
        label="Pareto front",
    )
    chosen = context.choice.trial
    axes.scatter(
        [penalty_of(chosen)],
        [reward_of(chosen)],
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


def save_figure(path: Path, figure: Figure) -> Path:
    """Draw ``figure`` on an Agg canvas and write it to ``path`` (PNG), atomically."""
    FigureCanvasAgg(figure)
    write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=110))
    return path
