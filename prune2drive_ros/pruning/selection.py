"""The result every pruner returns, and the helper that gathers the kept tokens.

One type for T-FPS and every baseline so that the VLM adapters, the tuner and the
benchmarks can swap pruners without caring which one ran.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import PruningInputError


@dataclass(frozen=True)
class Selection:
    """Kept token indices per view.

    Attributes:
        indices: ``[views, max(budgets)]`` int64; row ``v`` holds ``budgets[v]`` indices in
            ascending (original) order, then ``-1`` padding.
        mask: ``[views, tokens]`` bool, True where a token is kept.
        budgets: tokens kept per view.
    """

    indices: torch.Tensor
    mask: torch.Tensor
    budgets: tuple[int, ...]

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> Selection:
        """Build a selection from a ``[views, tokens]`` keep-mask (indices come out sorted)."""
        budgets = tuple(int(k) for k in mask.sum(dim=1).tolist())
        width = max(budgets, default=0)
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        # Kept positions keep their index, dropped ones sort to the end as a large sentinel.
        keyed = torch.where(mask, positions, torch.full_like(positions, mask.shape[1]))
        ordered = keyed.sort(dim=1).values[:, :width]
        indices = torch.where(ordered == mask.shape[1], torch.full_like(ordered, -1), ordered)
        return cls(indices=indices, mask=mask, budgets=budgets)

    @classmethod
    def keep_all(
        cls,
        views: int,
        tokens: int,
        device: torch.device | str = "cpu",
        counts: Sequence[int] | None = None,
    ) -> Selection:
        """Every real token of every view (``counts``: see :func:`real_tokens`): the unpruned
        model as a selection (full budgets)."""
        real = real_tokens(counts, views, tokens, device)
        if real is None:
            real = torch.ones(views, tokens, dtype=torch.bool, device=device)
        return cls.from_mask(real)

    def per_view(self) -> list[torch.Tensor]:
        """Kept indices of each view, without padding."""
        return [self.indices[v, :k] for v, k in enumerate(self.budgets)]

    @property
    def total(self) -> int:
        """Tokens kept over all views."""
        return sum(self.budgets)


def real_tokens(
    counts: Sequence[int] | None, views: int, tokens: int, device: torch.device | str = "cpu"
) -> torch.Tensor | None:
    """``[views, tokens]`` True on the first ``counts[v]`` tokens of view ``v``; None when
    ``counts`` is None (every token real).

    Views of different sizes (the six cameras stitched into one image) come padded to the
    largest; pruners take the counts and never keep padding.
    """
    if counts is None:
        return None
    limit = torch.tensor(list(counts), device=device).unsqueeze(1)
    return torch.arange(tokens, device=device) < limit


def gather_kept(tokens: torch.Tensor, selection: Selection) -> torch.Tensor:
    """Kept tokens of all views, view after view, each view in original order: ``[total, dim]``."""
    if tokens.shape[:2] != selection.mask.shape:
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)} do not match a selection over "
            f"{tuple(selection.mask.shape)} (views, tokens)"
        )
    return tokens[selection.mask.to(tokens.device)]


def patch_grid(count: int, grid: tuple[int, int] | None) -> tuple[int, int]:
    """``grid`` checked against ``count`` tokens; without one, a square if ``count`` is one,
    else one row (the pruners that look at positions take the grid this way).

    Raises:
        PruningInputError: ``grid`` does not hold exactly ``count`` tokens.
    """
    if grid is None:
        side = math.isqrt(count)
        return (side, side) if side * side == count else (1, count)
    rows, cols = grid
    if rows < 1 or cols < 1 or rows * cols != count:
        raise PruningInputError(
            f"patch grid {rows} x {cols} does not hold the {count} tokens of a view; pass the "
            "(rows, cols) the vision tower lays its tokens out in (DrivingVLM.patch_grid)"
        )
    return rows, cols
