"""Selection: built from a mask, split per view, and used to gather kept tokens in order."""

from __future__ import annotations

import pytest
import torch

from prune2drive_ros.pruning import Selection, gather_kept


def _mask() -> torch.Tensor:
    return torch.tensor(
        [
            [False, True, False, True, True],
            [True, False, False, False, False],
            [True, True, True, True, True],
        ]
    )


def test_from_mask_sorts_and_pads() -> None:
    selection = Selection.from_mask(_mask())
    assert selection.budgets == (3, 1, 5)
    assert selection.total == 9
    assert selection.indices.tolist() == [[1, 3, 4, -1, -1], [0, -1, -1, -1, -1], [0, 1, 2, 3, 4]]
    assert torch.equal(selection.mask, _mask())


def test_keep_all_selects_every_token_in_order() -> None:
    everything = Selection.keep_all(2, 5)
    assert everything.budgets == (5, 5) and bool(everything.mask.all())
    assert all(torch.equal(kept, torch.arange(5)) for kept in everything.per_view())


def test_per_view_drops_padding() -> None:
    views = Selection.from_mask(_mask()).per_view()
    assert [v.tolist() for v in views] == [[1, 3, 4], [0], [0, 1, 2, 3, 4]]


def test_gather_kept_is_view_after_view_in_original_order() -> None:
    tokens = torch.arange(3 * 5 * 2, dtype=torch.float32).reshape(3, 5, 2)
    selection = Selection.from_mask(_mask())
    kept = gather_kept(tokens, selection)
    assert kept.shape == (9, 2)
    expected = torch.cat([tokens[v, idx] for v, idx in enumerate(selection.per_view())])
    assert torch.equal(kept, expected)


def test_gather_kept_rejects_a_selection_of_another_shape() -> None:
    selection = Selection.from_mask(_mask())
    with pytest.raises(ValueError, match=r"do not match a selection over \(3, 5\)"):
        gather_kept(torch.zeros(3, 6, 2), selection)
    with pytest.raises(ValueError, match="do not match"):
        gather_kept(torch.zeros(2, 5, 2), selection)
