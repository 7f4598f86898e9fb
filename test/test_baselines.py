"""Baselines: exact budgets, determinism, the grid's layout and DART's pivots.

The shared validity properties (unique, sorted, in range, mask agreeing) are checked for every
pruner in test_tfps.py; this file checks what each baseline promises on its own.
"""

from __future__ import annotations

import math

import pytest
import torch

from prune2drive_ros.errors import PruningInputError
from prune2drive_ros.pruning import dart_select, grid_select, random_select


def _tokens(views: int, count: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(views, count, dim, generator=torch.Generator().manual_seed(seed))


# --- random --------------------------------------------------------------------------------


def test_random_is_deterministic_per_seed_and_varies_across_seeds() -> None:
    tokens = _tokens(6, 729, 4)
    budgets = [73] * 6
    again = random_select(tokens, budgets, seed=7)
    assert torch.equal(random_select(tokens, budgets, seed=7).mask, again.mask)
    assert not torch.equal(random_select(tokens, budgets, seed=8).mask, again.mask)
    # Views draw independently.
    assert not torch.equal(again.mask[0], again.mask[1])


def test_random_ignores_token_values() -> None:
    budgets = [5, 9]
    assert torch.equal(
        random_select(_tokens(2, 30, 3, seed=1), budgets, seed=3).indices,
        random_select(_tokens(2, 30, 3, seed=2), budgets, seed=3).indices,
    )


def test_random_is_roughly_uniform() -> None:
    counts = torch.zeros(20)
    for seed in range(400):
        counts += random_select(torch.zeros(1, 20, 1), [5], seed=seed).mask[0].float()
    # Each token kept with probability 1/4: 100 of 400 expected, 5 sigma is about 43.
    assert bool(((counts - 100).abs() < 45).all())


# --- grid ----------------------------------------------------------------------------------


def _lattice(budget: int, count: int, grid: tuple[int, int] | None = None) -> list[int]:
    """The indices grid_select keeps of one view of ``count`` tokens (their values play no
    part)."""
    indices: list[int] = (
        grid_select(torch.zeros(1, count, 1), [budget], grid=grid).per_view()[0].tolist()
    )
    return indices


def test_grid_on_27_by_27_patches_is_a_centred_lattice() -> None:
    kept = _lattice(81, 729)
    rows = sorted({i // 27 for i in kept})
    cols = sorted({i % 27 for i in kept})
    assert rows == cols == [1, 4, 7, 10, 13, 16, 19, 22, 25]
    assert len(kept) == 81


@pytest.mark.parametrize("count", [1, 16, 30, 196, 729, 730])
def test_grid_keeps_exactly_the_budget_for_every_budget(count: int) -> None:
    for budget in range(1, count + 1):
        kept = _lattice(budget, count)
        assert len(kept) == len(set(kept)) == budget
        assert kept == sorted(kept)
        assert kept[0] >= 0 and kept[-1] < count


def test_grid_spreads_over_the_image() -> None:
    side = 27
    for budget in (9, 73, 182, 300):
        kept = _lattice(budget, side * side)
        rows = {i // side for i in kept}
        cols = {i % side for i in kept}
        # A lattice of about sqrt(budget) rows and columns, spanning the whole grid.
        assert len(rows) >= math.isqrt(budget) and len(cols) >= math.isqrt(budget) - 1
        assert min(rows) <= side // (2 * math.isqrt(budget)) + 1
        assert max(rows) >= side - 1 - side // math.isqrt(budget)


def test_grid_without_a_square_falls_back_to_a_1d_stride() -> None:
    assert _lattice(3, 30) == [5, 15, 25] == _lattice(3, 30, grid=(1, 30))
    assert _lattice(30, 30) == list(range(30))


@pytest.mark.parametrize("grid", [(18, 32), (32, 18), (3, 10), (1, 7), (7, 1)])
def test_grid_on_a_rectangular_patch_grid_keeps_the_budget_and_spans_both_axes(
    grid: tuple[int, int],
) -> None:
    rows, cols = grid
    for budget in range(1, rows * cols + 1):
        kept = _lattice(budget, rows * cols, grid)
        assert len(kept) == len(set(kept)) == budget
        assert kept == sorted(kept) and kept[0] >= 0 and kept[-1] < rows * cols
    # Qwen2.5-VL at 10 %: a wide lattice, not the square one a 24 x 24 guess would give.
    kept = _lattice(58, 576, (18, 32))
    used_rows, used_cols = {i // 32 for i in kept}, {i % 32 for i in kept}
    assert len(used_cols) > len(used_rows) >= 5
    assert min(used_rows) <= 2 and max(used_rows) >= 15
    assert min(used_cols) <= 2 and max(used_cols) >= 29


def test_grid_select_uses_the_given_patch_grid() -> None:
    tokens = _tokens(2, 576, 2)
    selection = grid_select(tokens, [58, 1], grid=(18, 32))
    wide = selection.per_view()[0].tolist()
    assert wide == _lattice(58, 576, (18, 32))  # the token values play no part
    assert selection.per_view()[1].tolist() == [9 * 32 + 16]  # the centre patch
    # Without a grid, 576 tokens are taken as 24 x 24: another lattice.
    square = grid_select(tokens, [58, 1]).per_view()[0].tolist()
    assert square == _lattice(58, 576, (24, 24)) != wide


@pytest.mark.parametrize("grid", [(24, 25), (0, 576), (-18, -32)])
def test_grid_select_rejects_a_grid_that_does_not_hold_the_tokens(grid: tuple[int, int]) -> None:
    with pytest.raises(PruningInputError, match="does not hold the 576 tokens"):
        grid_select(_tokens(1, 576, 2), [10], grid=grid)


def test_grid_select_per_view_budgets() -> None:
    selection = grid_select(_tokens(3, 729, 2), [81, 73, 1])
    assert selection.budgets == (81, 73, 1)
    assert selection.per_view()[0].tolist() == _lattice(81, 729)
    assert selection.per_view()[2].tolist() == [13 * 27 + 13]  # the centre patch


# --- DART-style ----------------------------------------------------------------------------


def test_dart_keeps_the_largest_norm_pivots() -> None:
    tokens = _tokens(2, 50, 8, seed=4)
    tokens[0, [3, 17, 40, 41]] *= 10
    kept = dart_select(tokens, [10, 10], pivots=4).per_view()[0].tolist()
    assert {3, 17, 40, 41} <= set(kept)


def test_dart_drops_duplicates_of_pivots_first() -> None:
    tokens = _tokens(1, 20, 6, seed=5)
    tokens[0, 0] *= 10  # the only pivot
    tokens[0, 5:15] = tokens[0, 0] * 0.5  # ten scaled copies of it
    kept = dart_select(tokens, [10], pivots=1).per_view()[0].tolist()
    assert kept[0] == 0
    assert not set(kept) & set(range(5, 15))


def test_dart_with_fewer_budget_than_pivots_keeps_the_top_norms() -> None:
    tokens = _tokens(2, 30, 4, seed=6)
    norms = tokens.norm(dim=-1)
    selection = dart_select(tokens, [2, 3], pivots=8)
    for view, budget in enumerate((2, 3)):
        expected = sorted(norms[view].argsort(descending=True)[:budget].tolist())
        assert selection.per_view()[view].tolist() == expected


def test_dart_is_deterministic_and_dtype_stable() -> None:
    tokens = _tokens(6, 729, 32, seed=9)
    budgets = [73, 100, 73, 50, 200, 1]
    first = dart_select(tokens, budgets)
    assert torch.equal(dart_select(tokens, budgets, seed=123).indices, first.indices)
    half = tokens.to(torch.bfloat16)
    assert torch.equal(
        dart_select(half, budgets).indices, dart_select(half.float(), budgets).indices
    )


def test_dart_rejects_zero_pivots() -> None:
    with pytest.raises(ValueError, match="pivots must be at least 1"):
        dart_select(_tokens(1, 5, 2), [2], pivots=0)
