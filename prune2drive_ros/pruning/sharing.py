"""Budgets the views share by content: one frame-set total, split by how diverse each view is.

Prune2Drive fixes a budget per view offline; a camera that sees an empty road then keeps as
many tokens as one that sees a crowded junction. With a ``share`` in (0, 1) each view keeps at
least ``(1 - share)`` and at most ``(1 + share)`` times its budget (its *prior*, from the tuned
rates), and the frame set's total (the sum of the priors) goes to the views whose farthest
point walk still finds far tokens.

Why it is computed this way:

* Farthest point sampling over all six views at once, with distances only within a view
  (a token of one camera covers nothing in another), picks each view's tokens in exactly the
  order that view's own walk picks them: only how far each view gets depends on the others.
  The score of a view's k-th pick (its distance to the picks before it) never grows along the
  walk. So the joint greedy walk equals: walk every view to its ceiling in the one batched
  loop T-FPS already runs, then keep the ``total`` best scores over all views, each view's
  first ``floor`` forced. That is a sort of ``views x ceiling`` numbers, not a second loop.
* A view's scores are divided by the *typical* score at its prior budget, the median over the
  six views of the scores of their ``b_v``-th picks. Views of equal content then keep exactly
  their priors (a front camera with twice the rate keeps twice the tokens), and a view gains
  only when its walk finds tokens farther than the other views' at the same depth. Comparing
  raw scores instead would pull every view towards the same count and undo the priors.
* Ties go to the earlier view and the earlier pick (a stable sort): deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import BudgetError


def check_share(share: float) -> float:
    """``share`` as a float in [0, 1): 0 keeps the budgets fixed (the paper's).

    Raises:
        BudgetError: not a number in [0, 1).
    """
    value = float(share)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise BudgetError(
            f"budget share {share!r} must lie in [0, 1): 0 keeps each view's budget fixed, 0.5 "
            "lets each view keep between half and 1.5 times its budget"
        )
    return value


def share_bounds(
    budgets: Sequence[int], limits: Sequence[int], share: float
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Fewest and most tokens each view may keep: ``budget -/+ floor(share * budget)``, at
    least 1 and at most the view's real tokens ``limits``.

    >>> share_bounds((10, 4, 1), (64, 64, 64), 0.5)
    ((5, 2, 1), (15, 6, 1))
    """
    floors = tuple(max(1, b - math.floor(share * b)) for b in budgets)
    ceilings = tuple(
        min(limit, b + math.floor(share * b)) for b, limit in zip(budgets, limits, strict=True)
    )
    return floors, ceilings


def share_total(
    scores: torch.Tensor,
    budgets: Sequence[int],
    floors: Sequence[int],
    ceilings: Sequence[int],
) -> torch.Tensor:
    """How many of its walk's picks each view keeps: ``[views]`` int64, summing to
    ``sum(budgets)``.

    Args:
        scores: ``[views, steps]``, the score of each view's k-th pick (its distance to the
            picks before it, times its weight); non-increasing along a row, the first pick
            +inf; ``steps >= max(ceilings)``.
        budgets: the priors (each view's budget at its tuned rate).
        floors, ceilings: from :func:`share_bounds`.
    """
    views, steps = scores.shape
    if steps < max(ceilings):
        raise BudgetError(f"the walk took {steps} steps, fewer than a ceiling {max(ceilings)}")
    device = scores.device
    prior = torch.tensor(list(budgets), device=device)
    # The typical score at each depth, and each view's scale: that typical score at its prior.
    typical = scores.median(dim=0).values
    scale = typical.gather(0, prior - 1).clamp_min(torch.finfo(scores.dtype).tiny)
    normalised = scores / scale.unsqueeze(1)
    step = torch.arange(steps, device=device)
    low = torch.tensor(list(floors), device=device).unsqueeze(1)
    high = torch.tensor(list(ceilings), device=device).unsqueeze(1)
    normalised = torch.where(step < low, torch.inf, normalised)
    normalised = torch.where(step >= high, -torch.inf, normalised)
    order = normalised.flatten().sort(descending=True, stable=True).indices[: sum(budgets)]
    return torch.bincount(torch.div(order, steps, rounding_mode="floor"), minlength=views)
