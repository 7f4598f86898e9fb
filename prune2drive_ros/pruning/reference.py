"""The paper's T-FPS as its public reference code runs it: a yardstick, not a pruner to use.

This is a port of the Prune2Drive reference (``farway_point_sampling`` in its modified
``modeling_llama.py``): one view at a time in a Python loop, the first token the most isolated
one, then every step recomputes each candidate's minimum distance to the *whole* selected set
and reads the winner back to the host with ``.item()``; the kept indices are sorted at the end.
That costs O(k * |S| * N) per view plus one host synchronisation per step.

It exists for two jobs: the golden tests check :func:`~prune2drive_ros.pruning.fps.tfps`
against it, and ``prune2drive bench tfps`` times it as ``reference_ms``. Nothing in the
package prunes with it.

Departures, all so that a comparison tests the selection loop and not rounding: the distances
come from the same :func:`~prune2drive_ros.pruning.fps.pairwise_distances` (the original's
cosine distance, one minus the Gram matrix of the normalised tokens, but in float32 where the
original runs in the model's dtype, with the norms applied to the product rather than the
features and the mirrored quarter of the symmetric product copied: equal up to rounding), and
the ``l2``/``l1`` metrics are offered besides the original's cosine. The shared distances make
the reference's timing a little faster than the original code's, never slower.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .fps import (
    METRICS,
    all_finite,
    check_tokens,
    pairwise_distances,
    require_finite,
    upcast,
)
from .selection import Selection


@torch.no_grad()
def reference_tfps(
    tokens: torch.Tensor, budgets: Sequence[int], metric: str = "cosine"
) -> Selection:
    """Keep ``budgets[v]`` tokens of view ``v`` the way the reference code does, view by view.

    Raises:
        PruningInputError: malformed, empty or non-finite tokens.
        BudgetError: budgets that do not fit the tokens.
        ValueError: unknown metric.
    """
    budgets = check_tokens(tokens, budgets)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    x = upcast(tokens)
    require_finite(all_finite(x))
    views, count, _ = tokens.shape
    mask = torch.zeros(views, count, dtype=torch.bool, device=tokens.device)
    for view, budget in enumerate(budgets):
        dist = pairwise_distances(x[view : view + 1], metric)[0]
        dist.fill_diagonal_(float("inf"))
        selected = torch.zeros(count, dtype=torch.bool, device=tokens.device)
        kept: list[int] = []
        for _ in range(budget):
            if selected.sum() == 0:
                # Most isolated token: the largest distance to its nearest neighbour (row and
                # column, so that a mutual pair ties exactly: see fps.tfps).
                candidates = torch.minimum(dist.min(dim=1).values, dist.min(dim=0).values)
            else:
                candidates = dist[selected, :].min(dim=0).values
            candidates[selected] = float("-inf")
            index = int(candidates.argmax().item())
            selected[index] = True
            kept.append(index)
        mask[view, torch.tensor(sorted(kept), device=tokens.device)] = True
    return Selection.from_mask(mask)
