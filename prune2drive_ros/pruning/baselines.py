"""Attention-free baselines with the T-FPS interface, for comparisons at equal token budgets.

Each takes ``(tokens, budgets, *, seed=0, grid=None, ...)`` and returns a
:class:`~prune2drive_ros.pruning.selection.Selection` keeping exactly ``budgets[v]`` tokens of
view ``v``, so the tuner and the benchmarks can swap them for T-FPS without other changes.
None needs attention weights, so all of them run before the language model with SDPA or
FlashAttention, like T-FPS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import PruningInputError
from .fps import all_finite, check_tokens, require_finite, upcast
from .selection import Selection, patch_grid, real_tokens


def _keep_lowest(scores: torch.Tensor, budgets: tuple[int, ...]) -> torch.Tensor:
    """Mask of the ``budgets[v]`` lowest scores of each row; equal scores go to the lower index."""
    order = scores.argsort(dim=1, stable=True)
    rank = torch.arange(scores.shape[1], device=scores.device)
    keep = rank < torch.tensor(budgets, device=scores.device).unsqueeze(1)
    return torch.zeros_like(keep).scatter_(1, order, keep)


def _spread(budget: int, length: int) -> list[int]:
    """``budget`` of ``range(length)``, evenly strided from cell centres (distinct, ascending)."""
    return [math.floor((j + 0.5) * length / budget) for j in range(budget)]


def _grid_indices(budget: int, rows: int, cols: int) -> list[int]:
    """Raster indices of a near-uniform lattice of exactly ``budget`` cells of a patch grid.

    A ``r x c`` lattice with ``r * c >= budget`` points at cell centres, shaped like the grid
    (``r / c`` close to ``rows / cols``, so Qwen2.5-VL's 18 x 32 tokens get a wide lattice),
    thinned by an even stride to exactly ``budget``. A ``1 x count`` grid is an even 1-D stride.
    """
    r = min(rows, max(1, math.ceil(math.sqrt(budget * rows / cols))))
    c = min(cols, -(-budget // r))
    r = max(r, -(-budget // c))  # only grows when c was capped at cols, and stays <= rows
    lattice = [y * cols + x for y in _spread(r, rows) for x in _spread(c, cols)]
    return sorted(lattice[i] for i in _spread(budget, len(lattice)))


def _without_padding(scores: torch.Tensor, counts: Sequence[int] | None) -> torch.Tensor:
    """``scores`` with padding (past each view's count) at +inf, so it is never kept."""
    views, tokens = scores.shape
    real = real_tokens(counts, views, tokens, scores.device)
    return scores if real is None else scores.masked_fill(~real, float("inf"))


def random_select(
    tokens: torch.Tensor,
    budgets: Sequence[int],
    *,
    seed: int = 0,
    grid: tuple[int, int] | None = None,
    counts: Sequence[int] | None = None,
) -> Selection:
    """Uniformly random tokens per view; the same ``seed`` gives the same selection.

    The random numbers are drawn on the CPU from a ``torch.Generator`` seeded with ``seed``, so
    the selection does not depend on the device either. ``grid`` is unused; ``counts``: real
    tokens per view, as :func:`~prune2drive_ros.pruning.fps.tfps` takes them.
    """
    budgets = check_tokens(tokens, budgets, counts)
    require_finite(all_finite(tokens))
    generator = torch.Generator().manual_seed(seed)
    scores = _without_padding(torch.rand(tokens.shape[:2], generator=generator), counts)
    return Selection.from_mask(_keep_lowest(scores, budgets).to(tokens.device))


def grid_select(
    tokens: torch.Tensor,
    budgets: Sequence[int],
    *,
    seed: int = 0,
    grid: tuple[int, int] | None = None,
    counts: Sequence[int] | None = None,
) -> Selection:
    """A uniform spatial lattice of exactly ``budgets[v]`` patches per view (``seed`` is unused).

    The content-blind baseline: what any pruner must beat to show that looking at the tokens
    helps. ``grid`` is the ``(rows, cols)`` raster the tokens come in; without it a square
    count is taken as a square grid (27 x 27 for SigLIP's 729) and any other as one row. Views
    with their own ``counts`` (stitched views, whose tokens form no common grid) get an even
    stride over their tokens' order. See :func:`_grid_indices` for the layout.

    Raises:
        PruningInputError: as :func:`~prune2drive_ros.pruning.fps.tfps`, or a ``grid`` that
            does not hold the view's token count.
    """
    budgets = check_tokens(tokens, budgets, counts)
    require_finite(all_finite(tokens))
    views, count, _ = tokens.shape
    mask = torch.zeros(views, count, dtype=torch.bool)
    for view, budget in enumerate(budgets):
        rows, cols = patch_grid(count, grid) if counts is None else (1, int(counts[view]))
        mask[view, _grid_indices(budget, rows, cols)] = True
    return Selection.from_mask(mask.to(tokens.device))


@torch.no_grad()
def dart_select(
    tokens: torch.Tensor,
    budgets: Sequence[int],
    *,
    seed: int = 0,
    grid: tuple[int, int] | None = None,
    counts: Sequence[int] | None = None,
    pivots: int = 4,
) -> Selection:
    """DART-style duplication removal: keep pivots and the tokens least similar to them.

    After Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models:
    Duplication Matters More" (DART, arXiv 2502.11494): pick a few pivot tokens by norm, then
    keep the tokens that duplicate the pivots least (lowest cosine similarity). Differences from
    the paper, to fit this interface: pivots are the ``pivots`` tokens of largest L2 norm of the
    given features (DART uses key-state norms inside the language model and may add text
    pivots), and the non-pivot tokens are ranked once by their highest similarity to any pivot
    instead of per-pivot quotas, so each view keeps exactly its budget. ``seed`` and ``grid``
    are unused; ``counts``: real tokens per view, as
    :func:`~prune2drive_ros.pruning.fps.tfps` takes them.

    Raises:
        PruningInputError, BudgetError: as :func:`~prune2drive_ros.pruning.fps.tfps`.
        ValueError: ``pivots`` below 1.
    """
    budgets = check_tokens(tokens, budgets, counts)
    if pivots < 1:
        raise ValueError(f"pivots must be at least 1, got {pivots}")
    x = upcast(tokens)
    require_finite(all_finite(x))
    views, count, _ = tokens.shape
    device = tokens.device
    width = min(pivots, count)
    # Padding sorts last by norm, so pivots (at most a view's budget) are real tokens.
    norms = _without_padding(torch.linalg.vector_norm(x, dim=-1).neg(), counts)
    by_norm = norms.argsort(dim=1, stable=True)[:, :width]
    # A view keeps min(pivots, budget) pivots so that its pivots never exceed its budget.
    quota = torch.tensor([min(pivots, k) for k in budgets], device=device).unsqueeze(1)
    is_pivot = torch.arange(width, device=device) < quota
    unit = F.normalize(x, p=2.0, dim=-1)
    pivot_units = unit.gather(1, by_norm.unsqueeze(2).expand(-1, -1, unit.shape[2]))
    similarity = torch.bmm(unit, pivot_units.transpose(1, 2))
    similarity = similarity.masked_fill(~is_pivot.unsqueeze(1), float("-inf")).amax(dim=2)
    pivot_mask = torch.zeros(views, count, dtype=torch.bool, device=device)
    pivot_mask.scatter_(1, by_norm, is_pivot)
    scores = _without_padding(similarity.masked_fill(pivot_mask, float("-inf")), counts)
    return Selection.from_mask(_keep_lowest(scores, budgets))


def fastv_select(
    tokens: torch.Tensor,
    budgets: Sequence[int],
    *,
    seed: int = 0,
    grid: tuple[int, int] | None = None,
    counts: Sequence[int] | None = None,
    scores: torch.Tensor | None = None,
) -> Selection:
    """FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", arXiv 2403.06764):
    keep each view's tokens that the last prompt token attends to most.

    ``scores`` ``[views, tokens]`` is that attention (mean over heads) in the decoder layer
    before the one pruned, which the language model computes
    (:meth:`~prune2drive_ros.vlm.layers.LayerRunner.last_token_attention`): FastV runs only
    inside it, with ``placement: layer:K`` and K >= 1 (FastV's own K is 2). Unlike FastV's
    global top-k, each view keeps its own budget, as every pruner here does; ties go to the
    lower index. ``seed`` and ``grid`` are unused.

    Raises:
        PruningInputError: no ``scores`` (pruning after the projector), or scores of another
            shape than the tokens'.
    """
    budgets = check_tokens(tokens, budgets, counts)
    require_finite(all_finite(tokens))  # as every pruner: bad encoder output is an error
    if scores is None:
        raise PruningInputError(
            "fastv ranks tokens by the attention the last prompt token pays them inside the "
            "language model; use placement layer:K with K >= 1 (FastV's K is 2)"
        )
    if tuple(scores.shape) != tuple(tokens.shape[:2]):
        raise PruningInputError(
            f"fastv scores of shape {tuple(scores.shape)} do not match tokens of shape "
            f"{tuple(tokens.shape)}"
        )
    ranked = _without_padding(-scores.float(), counts)
    return Selection.from_mask(_keep_lowest(ranked, budgets))
