"""Budgets the views share by content, and T-FPS with a coverage term: equal to their plain
definitions, priors kept at equal content, bounds and totals held, clear errors."""

from __future__ import annotations

import pytest
import torch

from prune2drive_ros.errors import BudgetError, PruningInputError
from prune2drive_ros.pruning import PRUNERS, tfps
from prune2drive_ros.pruning.fps import image_distances, pairwise_distances
from prune2drive_ros.pruning.sharing import share_bounds


def _walk(tokens: torch.Tensor, steps: int) -> tuple[list[int], list[float]]:
    """One view's farthest point walk written out plainly: the picks in order and each
    pick's distance to the picks before it (+inf for the first, the most isolated token)."""
    dist = pairwise_distances(tokens.unsqueeze(0))[0]
    isolation = dist + torch.diag(torch.full((dist.shape[0],), float("inf")))
    picks, scores = [int(isolation.amin(dim=1).argmax())], [float("inf")]
    nearest = dist[picks[0]].clone()
    for _ in range(steps - 1):
        nearest[picks] = float("-inf")
        pick = int(nearest.argmax())
        picks.append(pick)
        scores.append(float(nearest[pick]))
        nearest = torch.minimum(nearest, dist[pick])
    return picks, scores


def _joint_walk(tokens: torch.Tensor, budgets: list[int], share: float) -> list[set[int]]:
    """The definition: every view starts with its floor, then one pick at a time goes to the
    view whose next pick is farthest (divided by the median over views of the scores at its
    prior depth), until the views hold their total; ties to the earlier view."""
    floors, ceilings = share_bounds(budgets, [tokens.shape[1]] * len(budgets), share)
    walks = [_walk(view, max(ceilings)) for view in tokens]
    scores = torch.tensor([s for _, s in walks])
    scale = [float(scores[:, b - 1].median()) for b in budgets]
    held = list(floors)
    while sum(held) < sum(budgets):
        open_views = [v for v in range(len(budgets)) if held[v] < ceilings[v]]
        best = max(open_views, key=lambda v: (walks[v][1][held[v]] / scale[v], -v))
        held[best] += 1
    return [set(walks[v][0][: held[v]]) for v in range(len(budgets))]


def _mixed_views(seed: int) -> torch.Tensor:
    """Six views of 48 tokens: diverse, near-uniform, two clusters, diverse at three scales."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(6, 48, 16, generator=generator)
    noise = torch.randn(48, 16, generator=generator)
    tokens[1] = torch.randn(16, generator=generator) + 0.02 * noise
    tokens[2, :24] = torch.randn(16, generator=generator) + 0.05 * noise[:24]
    tokens[3:] *= torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1)
    return tokens


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("budgets", [[6] * 6, [12, 4, 6, 8, 3, 5]])
@pytest.mark.parametrize("share", [0.25, 0.5, 0.9])
def test_shared_budgets_equal_the_joint_greedy_walk(
    seed: int, budgets: list[int], share: float
) -> None:
    tokens = _mixed_views(seed)
    selection = tfps(tokens, budgets, share=share)
    expected = _joint_walk(tokens, budgets, share)
    assert [set(kept.tolist()) for kept in selection.per_view()] == expected
    assert selection.total == sum(budgets)


def test_a_uniform_view_gives_its_tokens_to_diverse_views() -> None:
    selection = tfps(_mixed_views(0), [8] * 6, share=0.5)
    assert selection.budgets[1] == 4, "the near-uniform view keeps only its floor"
    assert max(selection.budgets) > 8 and selection.total == 48


def test_views_of_equal_content_keep_their_priors() -> None:
    # A front camera with twice the rate keeps twice the tokens when the views look alike.
    same = _mixed_views(1)[:1].expand(6, 48, 16).contiguous()
    priors = (16, 8, 8, 8, 8, 8)
    assert tfps(same, priors, share=0.5).budgets == priors


def test_no_share_is_plain_tfps_and_shares_stay_within_bounds() -> None:
    tokens = _mixed_views(2)
    assert torch.equal(tfps(tokens, [5] * 6, share=0.0).mask, tfps(tokens, [5] * 6).mask)
    assert share_bounds((10, 4, 1, 48), (48,) * 4, 0.5) == ((5, 2, 1, 24), (15, 6, 1, 48))
    counts = [48, 20, 48, 10, 48, 48]
    padded = tfps(tokens, [6, 12, 6, 8, 6, 6], share=0.9, counts=counts)
    assert all(k <= c for k, c in zip(padded.budgets, counts, strict=True))
    assert not padded.mask[3, 10:].any() and padded.total == 44


def test_shared_selection_is_deterministic_and_registered() -> None:
    tokens = _mixed_views(3)
    first, second = (PRUNERS["tfps_shared"](tokens, [7] * 6) for _ in range(2))
    assert torch.equal(first.mask, second.mask) and first.budgets == second.budgets


@pytest.mark.parametrize("share", [-0.1, 1.0, float("nan")])
def test_a_share_outside_its_range_is_refused(share: float) -> None:
    with pytest.raises(BudgetError, match=r"must lie in \[0, 1\)"):
        tfps(_mixed_views(0), [4] * 6, share=share)


def _bus_view() -> torch.Tensor:
    """One 8 x 8 view: a 4 x 8 block of near-identical tokens (a large uniform object, the
    top half), 28 of a slightly varied road and 4 distinct details (the last four)."""
    generator = torch.Generator().manual_seed(5)
    tokens = torch.randn(1, 64, 16, generator=generator)
    noise = torch.randn(60, 16, generator=generator)
    tokens[0, :32] = torch.randn(16, generator=generator) + 0.01 * noise[:32]
    tokens[0, 32:60] = torch.randn(16, generator=generator) + 0.05 * noise[32:]
    return tokens


def test_image_distances_are_in_diagonals() -> None:
    far = image_distances((8, 8), 64, torch.device("cpu"))
    assert far[0, 63] == pytest.approx(7 / 8) and far[0, 0] == 0 and far.max() <= 1
    assert torch.equal(image_distances(None, 64, torch.device("cpu")), far), "square by default"


def test_the_coverage_term_keeps_tokens_across_a_large_uniform_object() -> None:
    tokens = _bus_view()
    plain = tfps(tokens, [12], grid=(8, 8)).mask[0]
    covered = tfps(tokens, [12], grid=(8, 8), cover=0.5).mask[0]
    assert int(plain[:32].sum()) == 1, "farthest point sampling keeps one token of the object"
    assert int(covered[:32].sum()) >= 3, "the coverage term spreads picks over its extent"
    assert bool(plain[60:].all() and covered[60:].all()), "distinct details are kept by both"
    assert torch.equal(tfps(tokens, [12], cover=0.0).mask, tfps(tokens, [12]).mask)


def test_the_coverage_term_refuses_what_it_cannot_use() -> None:
    tokens = _bus_view()
    with pytest.raises(ValueError, match="cover must be >= 0"):
        tfps(tokens, [10], cover=-1.0)
    with pytest.raises(PruningInputError, match="stitched views"):
        tfps(tokens, [10], counts=[60], cover=0.5)
    with pytest.raises(PruningInputError, match="patch grid 4 x 4 does not hold the 64"):
        tfps(tokens, [10], grid=(4, 4), cover=0.5)
