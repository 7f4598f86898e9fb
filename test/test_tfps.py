"""Batched T-FPS: equal to the reference loop, valid selections, k-center bound, clear errors."""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from prune2drive_ros.commands.cli import main
from prune2drive_ros.errors import BudgetError, ConfigError, PruningInputError
from prune2drive_ros.pruning import (
    PRUNERS,
    Selection,
    budgets_from_rates,
    gather_kept,
    reference_tfps,
    tfps,
)
from prune2drive_ros.pruning.fps import (
    METRICS,
    STARTS,
    SYMMETRIC_FROM,
    gram,
    pairwise_distances,
)
from prune2drive_ros.pruning.sharing import share_bounds


def _tokens(views: int, count: int, dim: int, seed: int, coarse: bool = False) -> torch.Tensor:
    """Random tokens; ``coarse`` ones are small integers, full of exact ties and duplicates."""
    generator = torch.Generator().manual_seed(seed)
    if coarse:
        return torch.randint(-2, 3, (views, count, dim), generator=generator).float()
    return torch.randn(views, count, dim, generator=generator)


def attention_scores(name: str, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """What FastV takes beside the tokens (the language model's attention), random here."""
    if name != "fastv":
        return {}
    generator = torch.Generator().manual_seed(tokens.numel())
    return {"scores": torch.rand(tokens.shape[:2], generator=generator)}


def chosen_budgets(name: str, selection: Selection, budgets: list[int]) -> list[int]:
    """The budgets ``name`` had to keep: ``budgets``, or for views sharing their total (within
    each view's bounds) the ones it chose."""
    if name != "tfps_shared":
        return budgets
    floors, ceilings = share_bounds(budgets, [selection.mask.shape[1]] * len(budgets), 0.5)
    assert selection.total == sum(budgets), "the views share the total, they do not change it"
    assert all(lo <= k <= hi for lo, k, hi in zip(floors, selection.budgets, ceilings, strict=True))
    return list(selection.budgets)


def assert_valid(selection: Selection, budgets: list[int], count: int) -> None:
    """Unique, sorted, in-range indices, as many as budgeted, padded with -1, mask agreeing."""
    assert selection.budgets == tuple(budgets)
    assert selection.indices.dtype == torch.int64
    assert selection.indices.shape == (len(budgets), max(budgets))
    assert selection.mask.shape == (len(budgets), count)
    assert selection.mask.dtype == torch.bool
    for view, kept in enumerate(selection.per_view()):
        assert kept.numel() == budgets[view]
        assert bool((kept[1:] > kept[:-1]).all()), "indices must be strictly ascending"
        assert int(kept.min()) >= 0 and int(kept.max()) < count
        assert bool((selection.indices[view, budgets[view] :] == -1).all())
        assert torch.equal(torch.nonzero(selection.mask[view]).squeeze(1), kept)


# --- golden equivalence with the reference loop ---------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    ("shape", "budgets"),
    [
        ((1, 1, 1), [1]),
        ((1, 7, 3), [7]),
        ((2, 30, 8), [1, 30]),
        ((6, 49, 16), [5, 12, 1, 49, 20, 3]),
        ((6, 81, 64), [8, 8, 20, 21, 2, 81]),
        ((3, 200, 32), [20, 50, 199]),
    ],
)
@pytest.mark.parametrize("coarse", [False, True])
def test_matches_reference(
    metric: str, shape: tuple[int, int, int], budgets: list[int], coarse: bool
) -> None:
    tokens = _tokens(*shape, seed=sum(shape), coarse=coarse)
    ours = tfps(tokens, budgets, metric=metric)
    reference = reference_tfps(tokens, budgets, metric=metric)
    assert torch.equal(ours.indices, reference.indices)
    assert torch.equal(ours.mask, reference.mask)
    assert ours.budgets == reference.budgets


@settings(max_examples=40, deadline=None)
@given(
    views=st.integers(1, 4),
    count=st.integers(1, 40),
    dim=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    coarse=st.booleans(),
    metric=st.sampled_from(METRICS),
    data=st.data(),
)
def test_matches_reference_property(
    views: int,
    count: int,
    dim: int,
    seed: int,
    coarse: bool,
    metric: str,
    data: st.DataObject,
) -> None:
    budgets = data.draw(st.lists(st.integers(1, count), min_size=views, max_size=views))
    tokens = _tokens(views, count, dim, seed, coarse)
    assert torch.equal(
        tfps(tokens, budgets, metric=metric).indices,
        reference_tfps(tokens, budgets, metric=metric).indices,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("metric", METRICS)
def test_half_precision_selects_like_its_float32_upcast(dtype: torch.dtype, metric: str) -> None:
    # Distances are computed in float32, so a half-precision input selects exactly what its
    # upcast selects; the only difference to float32 input is the rounding of the input itself.
    half = _tokens(6, 60, 24, seed=3).to(dtype)
    budgets = [6, 15, 6, 15, 30, 1]
    ours = tfps(half, budgets, metric=metric)
    assert torch.equal(ours.indices, tfps(half.float(), budgets, metric=metric).indices)
    assert torch.equal(ours.indices, reference_tfps(half, budgets, metric=metric).indices)


def test_float64_input_is_accepted() -> None:
    tokens = _tokens(2, 20, 4, seed=5).double()
    assert torch.equal(tfps(tokens, [4, 9]).indices, reference_tfps(tokens, [4, 9]).indices)


# --- properties of every pruner -----------------------------------------------------------


# --- views of different sizes (stitched views), padded to the largest ---------------------


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    dim=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    coarse=st.booleans(),
    metric=st.sampled_from(METRICS),
    padding=st.sampled_from(["zeros", "duplicates", "outliers"]),
    data=st.data(),
)
def test_padded_views_get_the_picks_they_would_get_alone(
    counts: list[int],
    dim: int,
    seed: int,
    coarse: bool,
    metric: str,
    padding: str,
    data: st.DataObject,
) -> None:
    budgets = [data.draw(st.integers(1, c)) for c in counts]
    width = max(counts) + 3
    tokens = _tokens(len(counts), width, dim, seed, coarse)
    for v, count in enumerate(counts):  # padding that would win if it took part
        if padding == "zeros":
            tokens[v, count:] = 0
        elif padding == "duplicates":
            tokens[v, count:] = tokens[v, 0]
        else:
            tokens[v, count:] = 1e3 * (
                torch.arange(width - count, dtype=torch.float32)[:, None] + 1
            )
    ours = tfps(tokens, budgets, counts=counts, metric=metric)
    for v, count in enumerate(counts):
        alone = reference_tfps(tokens[v : v + 1, :count], [budgets[v]], metric=metric)
        assert torch.equal(ours.per_view()[v], alone.per_view()[0])
        assert not ours.mask[v, count:].any()


@pytest.mark.parametrize("name", sorted(PRUNERS))
@pytest.mark.parametrize("start", STARTS)
def test_no_pruner_keeps_padding(name: str, start: str) -> None:
    counts, budgets = [40, 48, 40, 1, 5], [40, 7, 1, 1, 5]
    tokens = _tokens(len(counts), 48, 8, seed=3)
    for v, count in enumerate(counts):
        tokens[v, count:] = 50.0  # far outliers, the most isolated by far
    options = {"start": start} if name == "tfps" else attention_scores(name, tokens)
    if name == "tfps_cover":  # padded views are stitched ones, which have no patch grid
        with pytest.raises(PruningInputError, match="stitched views"):
            PRUNERS[name](tokens, budgets, counts=counts)
        return
    for seed in range(3):
        selection = PRUNERS[name](tokens, budgets, seed=seed, counts=counts, **options)
        if name != "tfps_shared":
            assert selection.budgets == tuple(budgets)
        assert selection.total == sum(budgets)
        for v, count in enumerate(counts):
            assert not selection.mask[v, count:].any()


def test_budgets_past_a_views_count_are_refused() -> None:
    tokens = _tokens(2, 10, 4, seed=0)
    with pytest.raises(BudgetError, match="budget 7 of view 1 is outside \\[1, 6\\]"):
        tfps(tokens, [3, 7], counts=[10, 6])
    with pytest.raises(BudgetError, match="do not fit 2 views padded to 10"):
        tfps(tokens, [3, 3], counts=[10, 11])


def test_keep_all_and_budgets_follow_the_counts() -> None:
    keep = Selection.keep_all(2, 5, counts=[5, 3])
    assert keep.budgets == (5, 3) and not keep.mask[1, 3:].any()
    assert budgets_from_rates(0.25, (48, 40, 40, 48, 40, 40)) == (12, 10, 10, 12, 10, 10)


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(sorted(PRUNERS)),
    views=st.integers(1, 6),
    count=st.integers(1, 64),
    dim=st.integers(1, 8),
    seed=st.integers(0, 2**16),
    coarse=st.booleans(),
    data=st.data(),
)
def test_every_pruner_returns_a_valid_selection(
    name: str,
    views: int,
    count: int,
    dim: int,
    seed: int,
    coarse: bool,
    data: st.DataObject,
) -> None:
    budgets = data.draw(st.lists(st.integers(1, count), min_size=views, max_size=views))
    tokens = _tokens(views, count, dim, seed, coarse)
    options = attention_scores(name, tokens)
    selection = PRUNERS[name](tokens, budgets, seed=seed, **options)
    assert_valid(selection, chosen_budgets(name, selection, budgets), count)


@settings(max_examples=30, deadline=None)
@given(
    metric=st.sampled_from(METRICS),
    start=st.sampled_from(STARTS),
    count=st.integers(1, 50),
    seed=st.integers(0, 2**16),
    coarse=st.booleans(),
    data=st.data(),
)
def test_tfps_options_return_valid_selections(
    metric: str, start: str, count: int, seed: int, coarse: bool, data: st.DataObject
) -> None:
    budgets = data.draw(st.lists(st.integers(1, count), min_size=3, max_size=3))
    tokens = _tokens(3, count, 5, seed, coarse)
    selection = tfps(tokens, budgets, seed=seed, metric=metric, start=start)
    assert_valid(selection, budgets, count)
    assert_valid(reference_tfps(tokens, budgets, metric=metric), budgets, count)


def test_full_budget_keeps_everything() -> None:
    tokens = _tokens(2, 10, 3, seed=0)
    selection = tfps(tokens, [10, 10])
    assert bool(selection.mask.all())
    assert torch.equal(gather_kept(tokens, selection), tokens.reshape(20, 3))


# --- the start token -----------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_isolated_start_is_the_largest_nearest_neighbour_distance(metric: str) -> None:
    tokens = _tokens(3, 25, 6, seed=11).double()
    if metric == "cosine":
        unit = tokens / tokens.norm(dim=-1, keepdim=True)
        dist = 1 - unit @ unit.transpose(1, 2)
    else:
        dist = torch.cdist(tokens, tokens, p=2.0 if metric == "l2" else 1.0)
    dist.diagonal(dim1=1, dim2=2).fill_(math.inf)
    most_isolated = dist.min(dim=2).values.argmax(dim=1)
    assert torch.equal(tfps(tokens, [1, 1, 1], metric=metric).indices[:, 0], most_isolated)


def test_first_start_keeps_token_zero() -> None:
    tokens = _tokens(4, 30, 5, seed=2)
    assert bool(tfps(tokens, [1, 2, 3, 4], start="first").mask[:, 0].all())


def test_random_start_is_deterministic_per_seed() -> None:
    tokens = _tokens(6, 40, 5, seed=2)
    first = [tfps(tokens, [1] * 6, seed=s, start="random").indices for s in range(5)]
    again = [tfps(tokens, [1] * 6, seed=s, start="random").indices for s in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert len({tuple(t.flatten().tolist()) for t in first}) > 1


# --- what the selection means --------------------------------------------------------------


def _covering_radius(dist: torch.Tensor, kept: list[int]) -> float:
    return float(dist[:, kept].min(dim=1).values.max())


@pytest.mark.parametrize(("metric", "p"), [("l2", 2.0), ("l1", 1.0)])
@pytest.mark.parametrize("start", STARTS)
def test_covering_radius_is_within_twice_the_optimum(metric: str, p: float, start: str) -> None:
    # Greedy max-min selection is Gonzalez' k-center 2-approximation for any start and any
    # metric with the triangle inequality (l2, l1); cosine distance lacks it, so not tested.
    for seed in range(60):
        generator = torch.Generator().manual_seed(seed)
        count = int(torch.randint(2, 11, (1,), generator=generator))
        tokens = torch.randn(1, count, 2, generator=generator, dtype=torch.float64)
        dist = torch.cdist(tokens[0], tokens[0], p=p)
        for budget in range(1, min(4, count) + 1):
            kept = tfps(tokens, [budget], seed=seed, metric=metric, start=start).per_view()[0]
            optimum = min(
                _covering_radius(dist, list(subset))
                for subset in itertools.combinations(range(count), budget)
            )
            assert _covering_radius(dist, kept.tolist()) <= 2 * optimum + 1e-9


@pytest.mark.parametrize("start", STARTS)
def test_euclidean_fps_on_unit_vectors_equals_cosine_fps(start: str) -> None:
    # |x - y|^2 = 2 - 2 cos(x, y) for unit vectors: the same order, so the same tokens.
    tokens = _tokens(6, 120, 32, seed=8)
    budgets = [12, 30, 12, 30, 60, 1]
    cosine = tfps(tokens, budgets, metric="cosine", start=start)
    euclid = tfps(F.normalize(tokens, dim=-1), budgets, metric="l2", start=start)
    assert torch.equal(cosine.indices, euclid.indices)


@pytest.mark.parametrize("count", [17, SYMMETRIC_FROM, 301])
@pytest.mark.parametrize("metric", METRICS)
def test_pairwise_distances_match_a_float64_computation(metric: str, count: int) -> None:
    tokens = _tokens(3, count, 9, seed=4)
    x = tokens.double()
    if metric == "cosine":
        unit = x / x.norm(dim=-1, keepdim=True)
        expected = 1 - unit @ unit.transpose(1, 2)
    elif metric == "l2":
        expected = torch.cdist(x, x) ** 2
    else:
        expected = (x.unsqueeze(2) - x.unsqueeze(1)).abs().sum(dim=-1)
    got = pairwise_distances(tokens.to(torch.bfloat16).float(), metric)
    got_bf16 = pairwise_distances(tokens.to(torch.bfloat16), metric)
    assert got.dtype == got_bf16.dtype == torch.float32
    assert torch.equal(got, got_bf16)
    assert torch.allclose(pairwise_distances(tokens, metric).double(), expected, atol=1e-4)


@pytest.mark.parametrize("count", [1, 2, SYMMETRIC_FROM - 1, SYMMETRIC_FROM, 301])
def test_gram_is_the_exactly_symmetric_product(count: int) -> None:
    x = _tokens(2, count, 7, seed=count)
    product = gram(x)
    assert torch.equal(product, product.transpose(1, 2))
    assert torch.allclose(product, x @ x.transpose(1, 2), atol=1e-5)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("pruner", [tfps, reference_tfps, *PRUNERS.values()])
@pytest.mark.parametrize(
    ("tokens", "budgets", "error", "words"),
    [
        (torch.zeros(5, 4), [1], PruningInputError, "shape [views, tokens, dim]"),
        (torch.zeros(1, 2, 3, 4), [1], PruningInputError, "4 dimensions"),
        (torch.zeros(0, 5, 3), [], PruningInputError, "views is 0"),
        (torch.zeros(2, 0, 3), [1, 1], PruningInputError, "tokens is 0"),
        (torch.zeros(2, 5, 0), [1, 1], PruningInputError, "dim is 0"),
        (torch.zeros(2, 5, 3, dtype=torch.long), [1, 1], PruningInputError, "floating point"),
        (torch.zeros(2, 5, 3), [1, 6], BudgetError, "budget 6 of view 1"),
        (torch.zeros(2, 5, 3), [0, 1], BudgetError, "budget 0 of view 0"),
        (torch.zeros(2, 5, 3), [1], BudgetError, "1 budgets for 2 views"),
    ],
)
def test_bad_input_is_rejected(
    pruner: object, tokens: torch.Tensor, budgets: list[int], error: type, words: str
) -> None:
    assert callable(pruner)
    with pytest.raises(error, match=re.escape(words)):
        pruner(tokens, budgets)


@pytest.mark.parametrize("pruner", [tfps, reference_tfps, *PRUNERS.values()])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_tokens_are_rejected(pruner: object, bad: float) -> None:
    assert callable(pruner)
    tokens = _tokens(2, 6, 3, seed=0)
    tokens[1, 4, 2] = bad
    with pytest.raises(PruningInputError, match="NaN or inf"):
        pruner(tokens, [2, 2])


def test_values_whose_sum_overflows_are_rejected_but_large_ones_pass() -> None:
    # The finiteness check sums each token's features (far cheaper than an elementwise check):
    # a token summing past the float32 limit is refused, merely large values are not.
    tokens = _tokens(2, 6, 3, seed=0)
    tokens[0, 1] = 1e30
    tfps(tokens, [2, 2])
    tokens[0, 1] = 3e38
    with pytest.raises(PruningInputError, match="overflows"):
        tfps(tokens, [2, 2])


@pytest.mark.parametrize("pruner", [tfps, reference_tfps, *PRUNERS.values()])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_feature_sums_past_their_range_are_no_false_alarm(
    pruner: object, dtype: torch.dtype
) -> None:
    # 100 features of 1000 sum to 1e5, past fp16's 65504: the check must not overflow first.
    assert callable(pruner)
    tokens = (1000 + _tokens(2, 8, 100, seed=1)).to(dtype)
    options = attention_scores("fastv" if pruner is PRUNERS["fastv"] else "", tokens)
    assert pruner(tokens, [3, 3], **options).total == 6


def test_not_a_tensor_is_rejected() -> None:
    with pytest.raises(PruningInputError, match=r"torch\.Tensor"):
        tfps([[[1.0]]], [1])  # type: ignore[arg-type]


def test_unknown_metric_and_start_name_the_options() -> None:
    tokens = _tokens(1, 4, 2, seed=0)
    with pytest.raises(ValueError, match="cosine, l2, l1"):
        tfps(tokens, [2], metric="dot")
    with pytest.raises(ValueError, match="cosine, l2, l1"):
        reference_tfps(tokens, [2], metric="dot")
    with pytest.raises(ValueError, match="isolated, first, random"):
        tfps(tokens, [2], start="middle")
    with pytest.raises(ValueError, match="cosine, l2, l1"):
        pairwise_distances(tokens, "dot")


def test_unknown_pruner_names_the_known_ones() -> None:
    known = "tfps, tfps_shared, tfps_cover, random, grid, dart, fastv"
    with pytest.raises(ConfigError, match=known):
        PRUNERS["v2drop"]
    assert PRUNERS["tfps"] is tfps


# --- the benchmark command -----------------------------------------------------------------


def test_bench_tfps_prints_one_json_object_per_retention_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["bench", "tfps", "--json", "--views", "2", "--tokens", "25", "--dim", "8"]
    argv += ["--retention", "0.2", "0.5", "--repeats", "1", "--warmup", "0", "--device", "cpu"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    results = [json.loads(line) for line in lines[-2:]]
    assert [r["retention"] for r in results] == [0.2, 0.5]
    for result in results:
        assert result["same_selection"] is True
        assert result["views"] == 2 and result["tokens"] == 25 and result["dim"] == 8
        for key in ("ours_ms", "reference_ms", "speedup", "floor_ms", "device", "dtype"):
            assert key in result
        assert result["shared_over_ours"] > 0 and result["cover_over_ours"] > 0


def test_bench_tfps_table_and_bad_device(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "tfps", "--views", "1", "--tokens", "9", "--dim", "4", "--repeats", "1"]
    assert main([*argv, "--dtype", "bfloat16"]) == 0
    assert "reference" in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert main([*argv, "--device", "cuda"]) == 2
        assert "cuda" in capsys.readouterr().err
