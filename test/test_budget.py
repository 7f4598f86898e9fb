"""Retention rates -> token budgets: every bad rate is a BudgetError naming the view."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prune2drive_ros.errors import BudgetError
from prune2drive_ros.pruning import budgets_from_rates, check_budgets, validate_rates
from prune2drive_ros.views import VIEWS


def test_one_float_applies_to_every_view() -> None:
    assert budgets_from_rates(0.1, 729) == (73,) * 6
    assert validate_rates(0.5) == dict.fromkeys(VIEWS, 0.5)


def test_mapping_is_read_in_view_order() -> None:
    rates = {name: 0.1 * (i + 1) for i, name in enumerate(reversed(VIEWS))}
    table = validate_rates(rates)
    assert list(table) == list(VIEWS)
    # CAM_FRONT 0.6 .. CAM_BACK_RIGHT 0.1 of 729: 437.4, 364.5 (half up), 291.6, 218.7, 145.8, 72.9
    assert budgets_from_rates(rates, 729) == (437, 365, 292, 219, 146, 73)


def test_integer_rate_one_is_accepted_as_float() -> None:
    assert validate_rates(1) == dict.fromkeys(VIEWS, 1.0)
    assert budgets_from_rates({name: 1 for name in VIEWS}, 729) == (729,) * 6


def test_unknown_view_is_named() -> None:
    rates = dict.fromkeys(VIEWS, 0.5) | {"CAM_ROOF": 0.5}
    with pytest.raises(BudgetError, match=r"unknown view.*CAM_ROOF"):
        validate_rates(rates)


def test_missing_view_is_named() -> None:
    rates = {name: 0.5 for name in VIEWS if name != "CAM_BACK_LEFT"}
    with pytest.raises(BudgetError, match=r"missing view.*CAM_BACK_LEFT"):
        budgets_from_rates(rates, 729)


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, math.nan, math.inf, True, False, "0.5", None])
def test_bad_rate_is_named_with_its_view(bad: object) -> None:
    rates: dict[str, object] = dict.fromkeys(VIEWS, 0.5)
    rates["CAM_FRONT_RIGHT"] = bad
    with pytest.raises(BudgetError, match="CAM_FRONT_RIGHT"):
        validate_rates(rates)  # type: ignore[arg-type]
    # One rate for every view names no view: it is the caller's one number that is wrong.
    with pytest.raises(BudgetError, match=r"^the retention rate is .*\(0, 1\]") as info:
        validate_rates(bad)  # type: ignore[arg-type]
    assert "CAM_" not in str(info.value)


def test_numpy_rates_are_numbers() -> None:
    assert validate_rates(np.float32(0.5)) == dict.fromkeys(VIEWS, 0.5)
    assert budgets_from_rates({view: np.float64(0.1) for view in VIEWS}, 729) == (73,) * 6


@pytest.mark.parametrize("bad", [2.7, math.nan, True, "3"])
def test_budgets_must_be_whole_numbers(bad: object) -> None:
    with pytest.raises(BudgetError, match="view 1"):
        check_budgets([3, bad, 3], views=3, tokens=10)  # type: ignore[list-item]
    assert check_budgets([np.int64(3), 4], views=2, tokens=10) == (3, 4)


def test_rounding_is_half_up() -> None:
    # 0.5 of 5 tokens is 2.5 -> 3; 0.3 of 10 is 3 (not 2.9999...).
    assert budgets_from_rates(0.5, 5, views=["a"]) == (3,)
    assert budgets_from_rates(0.3, 10, views=["a"]) == (3,)
    assert budgets_from_rates(0.25, 729) == (182,) * 6


def test_at_least_one_token_is_kept() -> None:
    assert budgets_from_rates(0.001, 729) == (1,) * 6
    assert budgets_from_rates(0.1, 1, views=["a"]) == (1,)


def test_tokens_per_view_must_be_positive() -> None:
    with pytest.raises(BudgetError, match="at least 1"):
        budgets_from_rates(0.5, 0)


@given(rate=st.floats(min_value=1e-6, max_value=1.0), tokens=st.integers(1, 5000))
def test_budget_is_always_within_range_and_close_to_the_rate(rate: float, tokens: int) -> None:
    (budget,) = budgets_from_rates(rate, tokens, views=["a"])
    assert 1 <= budget <= tokens
    assert abs(budget - rate * tokens) <= 0.5 or budget == 1


def test_check_budgets() -> None:
    assert check_budgets([1, 729], views=2, tokens=729) == (1, 729)
    with pytest.raises(BudgetError, match="3 budgets for 2 views"):
        check_budgets([1, 2, 3], views=2, tokens=10)
    with pytest.raises(BudgetError, match="budget 11 of view 1 is outside"):
        check_budgets([1, 11], views=2, tokens=10)
    with pytest.raises(BudgetError, match="budget 0 of view 0"):
        check_budgets([0, 1], views=2, tokens=10)
