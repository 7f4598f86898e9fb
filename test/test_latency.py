"""The latency budget's core: the cost model's fit and online correction, and the controller's
choice of rates, on synthetic costs (deterministic, no model, no torch)."""

from __future__ import annotations

import math

import pytest
from conftest import heavy_modules_after

from prune2drive_ros.errors import BudgetError
from prune2drive_ros.pruning.budget import budgets_from_rates
from prune2drive_ros.sensors.rates_file import FrontPoint
from prune2drive_ros.serving.latency import WINDOW, BudgetDecision, CostModel, choose_rates
from prune2drive_ros.views import VIEWS

#: A known TTFT curve: 20 ms fixed, 0.05 ms per token, quadratic attention on top.
A, B, C = 20.0, 0.05, 4e-6
VIEW_TOKENS = (729,) * len(VIEWS)
TUNED = dict(zip(VIEWS, (0.3, 0.15, 0.15, 0.1, 0.05, 0.05), strict=True))


def quadratic(n: float) -> float:
    return A + B * n + C * n * n


def tokens_of(rates: dict[str, float]) -> int:
    return sum(budgets_from_rates(rates, VIEW_TOKENS))


def uniform_point(rate: float, score: float) -> FrontPoint:
    rates = dict.fromkeys(VIEWS, rate)
    return FrontPoint(rates=rates, tokens=tokens_of(rates), score=score)


#: A Pareto front: more tokens, more score.
FRONT = (
    uniform_point(0.05, 0.40),
    uniform_point(0.1, 0.48),
    uniform_point(0.25, 0.52),
    uniform_point(0.5, 0.55),
    uniform_point(1.0, 0.56),
)


@pytest.fixture
def cost() -> CostModel:
    return CostModel((A, B, C))


def choose(cost: CostModel, budget_ms: float, **kwargs: object) -> BudgetDecision:
    settings: dict[str, object] = {
        "queue_ms": 0.0,
        "rates": TUNED,
        "view_tokens": VIEW_TOKENS,
        **kwargs,
    }
    return choose_rates(cost, budget_ms=budget_ms, **settings)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The cost model
# --------------------------------------------------------------------------------------------


def test_fit_recovers_a_known_quadratic() -> None:
    sizes = (48, 438, 1094, 2187, 4374)
    model = CostModel.fit([(n, quadratic(n)) for n in sizes for _ in range(2)])
    assert model.coefficients == pytest.approx((A, B, C), rel=1e-6)
    for n in (6, 500, 4374, 6000):
        assert model.predict_ttft_ms(n) == pytest.approx(quadratic(n), rel=1e-9)
    assert model.correction == 1.0
    assert model.decode_ms_per_token is None


def test_a_fit_bent_down_by_noise_is_never_predicted_faster_with_more_tokens() -> None:
    model = CostModel((10.0, 0.2, -1e-4))  # concave: peaks at 1000 tokens, then falls
    predictions = [model.predict_ttft_ms(n) for n in range(0, 3000, 50)]
    assert predictions == sorted(predictions)
    assert model.predict_ttft_ms(2500) == pytest.approx(10.0 + 0.2 * 1000 - 1e-4 * 1000**2)
    assert CostModel((-5.0, 0.0, 0.0)).predict_ttft_ms(10) == 0.0


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        (
            [(64, 10.0), (64, 11.0), (128, 12.0)],
            r"3 or more different token counts, got 2 \(64, 128\)",
        ),
        ([], r"got 0 \(none\)"),
        ([(64, 10.0), (128, math.nan), (256, 12.0)], r"a fit sample is nan ms"),
        ([(64, 10.0), (128, -1.0), (256, 12.0)], r"a fit sample is -1.0 ms"),
        ([(64, 10.0), (128.5, 1.0), (256, 12.0)], r"tokens of a fit sample are 128.5"),
    ],
)
def test_fit_refuses_what_cannot_fit_a_quadratic(
    samples: list[tuple[int, float]], expected: str
) -> None:
    with pytest.raises(BudgetError, match=expected):
        CostModel.fit(samples)


def test_the_correction_follows_a_slowed_device(cost: CostModel) -> None:
    for n in (100, 400, 900, 200, 700):  # the device runs twice as slow as at warm-up
        cost.observe(n, 2 * quadratic(n))
    assert cost.correction == pytest.approx(2.0)
    assert cost.predict_ttft_ms(438) == pytest.approx(2 * quadratic(438))
    for n in range(WINDOW):  # and recovers
        cost.observe(100 + n, quadratic(100 + n))
    assert cost.correction == pytest.approx(1.0)


def test_the_correction_ignores_one_slow_answer(cost: CostModel) -> None:
    cost.observe(438, 10 * quadratic(438))  # the very first answer
    assert cost.correction == 1.0
    for n in range(WINDOW):
        cost.observe(100 + n, 1.1 * quadratic(100 + n))
    cost.observe(438, 50 * quadratic(438))  # a stall in steady state
    assert cost.correction == pytest.approx(1.1)
    assert cost.describe()["ttft_observed"] == str(WINDOW + 2)


def test_decode_time_per_token_is_a_running_median() -> None:
    model = CostModel((A, B, C), decode_ms_per_token=8.0)
    assert model.decode_ms_per_token == 8.0
    model.observe_decode(0, 5.0)  # nothing generated: nothing learned
    model.observe_decode(10, 400.0)  # one slow answer
    assert model.decode_ms_per_token == 8.0
    for _ in range(3):
        model.observe_decode(20, 240.0)
    assert model.decode_ms_per_token == pytest.approx(12.0)
    fresh = CostModel((A, B, C))
    fresh.observe_decode(4, 20.0)
    assert fresh.decode_ms_per_token == 5.0
    assert fresh.describe() == {
        "ttft_fit_ms": "20 + 0.05 n + 4e-06 n^2",
        "ttft_correction": "1.000",
        "ttft_planning_correction": "1.000",
        "ttft_observed": "0",
        "decode_ms_per_token": "5.000",
    }


def test_bad_observations_are_refused(cost: CostModel) -> None:
    with pytest.raises(BudgetError, match="an observed TTFT is inf ms"):
        cost.observe(100, math.inf)
    with pytest.raises(BudgetError, match="tokens of an observation are -1"):
        cost.observe(-1, 10.0)
    with pytest.raises(BudgetError, match=r"a decode time is -2\.0 ms"):
        cost.observe_decode(3, -2.0)
    with pytest.raises(BudgetError, match="not all finite"):
        CostModel((A, math.nan, C))


# --------------------------------------------------------------------------------------------
# The controller
# --------------------------------------------------------------------------------------------


def test_the_best_score_that_fits_is_chosen(cost: CostModel) -> None:
    # The points keep 216, 438, 1092, 2190 and 4374 tokens: 31.0, 42.7, 79.4, 148.7, 315.2 ms.
    decision = choose(cost, 100.0, front=FRONT)
    assert decision.rates == FRONT[2].rates
    assert decision.tokens == FRONT[2].tokens == 1092
    assert decision.predicted_ms == pytest.approx(quadratic(1092))
    assert decision.fits
    assert decision.why.startswith("front point 3 of 5 (score 0.52, 1092 tokens, 79.4 ms)")
    waited = choose(cost, 100.0, front=FRONT, queue_ms=50.0)
    assert waited.rates == FRONT[1].rates
    assert waited.predicted_ms == pytest.approx(50.0 + quadratic(FRONT[1].tokens))


def test_a_dominated_point_is_never_chosen_and_ties_go_to_fewer_tokens(cost: CostModel) -> None:
    tie = uniform_point(0.15, 0.48)  # FRONT[1]'s score with 654 tokens: 54.4 ms
    dominated = uniform_point(0.2, 0.45)  # 876 tokens, less score: 66.9 ms
    front = (dominated, tie, *FRONT)
    for budget in (60.0, 70.0):
        assert choose(cost, budget, front=front).rates == FRONT[1].rates
    assert choose(cost, 100.0, front=front).rates == FRONT[2].rates


@pytest.mark.parametrize("with_front", [True, False])
def test_a_larger_budget_never_chooses_fewer_tokens(cost: CostModel, with_front: bool) -> None:
    front = FRONT if with_front else ()
    decisions = [
        choose(cost, float(budget), front=front, queue_ms=15.0) for budget in range(1, 2000, 7)
    ]
    tokens = [d.tokens for d in decisions]
    assert tokens == sorted(tokens)
    assert max(tokens) == (FRONT[-1].tokens if with_front else tokens_of(TUNED))
    assert all(
        d.predicted_ms <= budget
        for d, budget in zip(decisions, range(1, 2000, 7), strict=True)
        if d.fits
    )
    assert [d.fits for d in decisions] == sorted(d.fits for d in decisions)  # misses, then fits


def test_the_front_caps_the_tokens(cost: CostModel) -> None:
    decision = choose(cost, 1e9, front=FRONT[:3])
    assert decision.tokens == FRONT[2].tokens and decision.fits


def test_nothing_fits_gives_the_cheapest_point_and_says_it_misses(cost: CostModel) -> None:
    decision = choose(cost, 100.0, front=FRONT, queue_ms=120.0)
    assert decision.rates == FRONT[0].rates
    assert not decision.fits
    assert decision.predicted_ms == pytest.approx(120.0 + quadratic(FRONT[0].tokens))
    assert "no point is predicted within the 100 ms budget, so the cheapest" in decision.why


def test_without_a_front_the_rates_are_scaled_down_keeping_each_views_share(
    cost: CostModel,
) -> None:
    assert choose(cost, 1000.0).rates == TUNED  # fits as it is (582 tokens, 50.4 ms): unchanged
    decision = choose(cost, 50.0)
    assert decision.fits and decision.predicted_ms <= 50.0
    factors = {view: decision.rates[view] / TUNED[view] for view in VIEWS}
    assert max(factors.values()) == pytest.approx(min(factors.values()))
    assert 0.9 < factors["CAM_FRONT"] < 1
    assert "scaled by" in decision.why
    # The largest total that fits of all the scale factors.
    scaled = [tokens_of({v: r * k / 10_000 for v, r in TUNED.items()}) for k in range(1, 10_001)]
    assert decision.tokens == max(n for n in scaled if quadratic(n) <= 50.0)


def test_scaling_stops_at_the_floor(cost: CostModel) -> None:
    decision = choose(cost, 35.0, min_rate=0.1)  # the floor keeps 364 tokens: 38.7 ms
    assert not decision.fits
    assert decision.rates == {view: min(rate, 0.1) for view, rate in TUNED.items()}
    assert "even the fewest tokens allowed miss the 35 ms budget" in decision.why
    one_token = choose(cost, 1.0)  # no budget this small: one token per view
    assert one_token.tokens == len(VIEWS) and not one_token.fits


def test_no_budget_serves_the_rates_file(cost: CostModel) -> None:
    decision = choose(cost, 0.0, front=FRONT, queue_ms=1e6)
    assert decision.rates == TUNED and decision.fits
    assert decision.why == "no latency budget: the rates file's rates"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"budget_ms": -5.0}, r"the latency budget is -5.0 ms; give > 0 ms, or 0 to turn it off"),
        ({"budget_ms": math.nan}, r"the latency budget is nan ms"),
        ({"budget_ms": "fast"}, r"the latency budget is 'fast', not a number of milliseconds"),
        ({"queue_ms": -1.0}, r"the predicted queue wait is -1.0 ms"),
        ({"min_rate": 1.5}, r"min_rate is 1.5; give a rate in \[0, 1\]"),
        ({"rates": {**TUNED, "CAM_TOP": 0.1}}, r"unknown view\(s\) CAM_TOP"),
        ({"view_tokens": (729,) * 5}, r"tokens per view must be at least 1 for each of 6 views"),
    ],
)
def test_bad_input_is_refused(cost: CostModel, kwargs: dict[str, object], expected: str) -> None:
    settings: dict[str, object] = {"budget_ms": 100.0, **kwargs}
    with pytest.raises(BudgetError, match=expected):
        choose(cost, **settings)  # type: ignore[arg-type]


def test_the_module_imports_without_torch() -> None:
    code = "import prune2drive_ros.serving.latency"
    assert heavy_modules_after(code, ("torch", "optuna")) == []


def test_tokens_are_priced_with_the_high_quantile_of_recent_ratios() -> None:
    """A device whose times scatter gets choices the budget holds four times in five, not on
    the budget's edge; one outlier still moves nothing."""
    model = CostModel((A, B, C))
    fitted = model.predict_ttft_ms(1000)
    for ratio in (0.9, 1.0, 1.1, 1.2, 1.3, 1.0, 5.0):  # the last one an outlier
        model.observe(1000, fitted * ratio)
    assert model.correction == pytest.approx(1.1)
    assert model.planning_correction == pytest.approx(1.3)
    assert model.predict_ttft_ms(1000, cautious=True) == pytest.approx(fitted * 1.3)
