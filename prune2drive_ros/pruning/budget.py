"""Per-view retention rates -> integer token budgets.

Rates come from the tuner's ``retention_rates.yaml`` (a mapping by view name) or from a single
float applied to every view. They are validated here, once, so every caller gets the same
clear error naming the offending view.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Mapping, Sequence

from ..errors import BudgetError
from ..views import VIEWS

Rates = Mapping[str, float] | float


def validate_rates(rates: Rates, views: Sequence[str] = VIEWS) -> dict[str, float]:
    """Return a rate for each of ``views`` (in that order), checking every one.

    Raises:
        BudgetError: a view is missing or unknown, or a rate is not a finite number in (0, 1].
    """
    if isinstance(rates, Mapping):
        unknown = [name for name in rates if name not in views]
        if unknown:
            raise BudgetError(
                f"retention rates name unknown view(s) {', '.join(map(str, unknown))}; "
                f"expected the views {', '.join(views)}"
            )
        missing = [name for name in views if name not in rates]
        if missing:
            raise BudgetError(
                f"retention rates are missing view(s) {', '.join(missing)}; give a rate for "
                "every view (or one float for all)"
            )
        table = {name: rates[name] for name in views}
    else:
        _check_rate(rates, "the retention rate")
        return dict.fromkeys(views, float(rates))
    for name, rate in table.items():
        _check_rate(rate, f"retention rate of {name}")
    return {name: float(rate) for name, rate in table.items()}


def _check_rate(rate: object, what: str) -> None:
    """A BudgetError unless ``rate`` is a real number (numpy's too, not bool) in (0, 1]."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise BudgetError(f"{what} is {rate!r}, not a number in (0, 1]")
    value = float(rate)
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise BudgetError(
            f"{what} is {rate}; it must lie in (0, 1] (1.0 keeps every token, 0.1 keeps one in ten)"
        )


def budget_for_rate(rate: float, tokens: int) -> int:
    """Tokens kept out of ``tokens`` at ``rate``: rounded half up, at least one."""
    return max(1, min(tokens, math.floor(rate * tokens + 0.5)))


def budgets_from_rates(
    rates: Rates, tokens_per_view: int | Sequence[int], views: Sequence[str] = VIEWS
) -> tuple[int, ...]:
    """Integer token budget of each view, in the order of ``views``.

    ``tokens_per_view`` is one count for every view, or each view's own (stitched views).

    >>> budgets_from_rates(0.1, 729)
    (73, 73, 73, 73, 73, 73)
    >>> budgets_from_rates(0.25, (48, 40, 40, 48, 40, 40))
    (12, 10, 10, 12, 10, 10)
    """
    counts = (
        (tokens_per_view,) * len(views) if isinstance(tokens_per_view, int) else tokens_per_view
    )
    if len(counts) != len(views) or min(counts) < 1:
        raise BudgetError(
            f"tokens per view must be at least 1 for each of {len(views)} views, got {counts}"
        )
    table = validate_rates(rates, views)
    return tuple(
        budget_for_rate(table[name], count) for name, count in zip(views, counts, strict=True)
    )


def check_budgets(
    budgets: Sequence[int], views: int, tokens: int, counts: Sequence[int] | None = None
) -> tuple[int, ...]:
    """Validate explicit budgets against a ``[views, tokens, dim]`` input whose view ``v``
    holds ``counts[v]`` real tokens (the rest padding; None: all ``tokens``)."""
    if len(budgets) != views:
        raise BudgetError(f"got {len(budgets)} budgets for {views} views; give one per view")
    limits = check_counts(counts, views, tokens)
    out = []
    for v, budget in enumerate(budgets):
        try:  # whole numbers only (numpy's too): 2.7 tokens is a caller's bug, not 2
            k = operator.index(budget)
        except TypeError:
            raise BudgetError(f"budget {budget!r} of view {v} is not a whole number") from None
        if isinstance(budget, bool) or not 1 <= k <= limits[v]:
            raise BudgetError(
                f"budget {k} of view {v} is outside [1, {limits[v]}] (the view has {limits[v]} "
                "tokens)"
            )
        out.append(k)
    return tuple(out)


def check_counts(counts: Sequence[int] | None, views: int, tokens: int) -> tuple[int, ...]:
    """Real tokens per view of a padded ``[views, tokens, dim]`` input (None: all real)."""
    if counts is None:
        return (tokens,) * views
    limits = tuple(int(c) for c in counts)
    if len(limits) != views or not all(1 <= c <= tokens for c in limits):
        raise BudgetError(
            f"token counts {limits} do not fit {views} views padded to {tokens} tokens; give "
            "one count per view, each in [1, tokens]"
        )
    return limits
