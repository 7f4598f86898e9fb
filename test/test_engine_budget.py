"""The engine under a latency budget: a cost model fitted at warm-up, one choice of tokens per
call from what is left of the budget, each answer saying how the budget was kept.

Costs are synthetic where the choice is checked (the machine's timings are noise); the real
calibration runs on the tiny model to show the wiring, not its figures.
"""

from __future__ import annotations

import pytest

from prune2drive_ros.config import DriveVLMConfig
from prune2drive_ros.engine import Engine
from prune2drive_ros.sensors.bag import open_camera_bag
from prune2drive_ros.sensors.rates_file import FrontPoint
from prune2drive_ros.sensors.sync import FrameSet
from prune2drive_ros.sensors.synthetic import SyntheticBag
from prune2drive_ros.serving.latency import CostModel
from prune2drive_ros.views import VIEWS

#: 1 ms fixed, 0.1 ms a visual token: 4374 tokens (unpruned tiny model) cost 438.4 ms.
LINEAR = (1.0, 0.1, 0.0)


@pytest.fixture(scope="module")
def frames(small_bag: SyntheticBag) -> FrameSet:
    with open_camera_bag(small_bag.path) as bag:
        return next(iter(bag.frame_sets()))


def _engine(frames: FrameSet, budget_ms: float, front: tuple[FrontPoint, ...] = ()) -> Engine:
    config = DriveVLMConfig(model="tiny", device="cpu", max_new_tokens=2)
    engine = Engine.from_config(config)
    # The measured image decode is spent of the budget before the tokens are chosen. These tests
    # check the choice against synthetic costs, so the machine's decode time must not enter it:
    # ``frames`` is decoded once here and handed back at once when the engine decodes it.
    images = engine.decode(frames)
    engine.decode = lambda _: images  # type: ignore[method-assign]
    engine.set_pruning(dict.fromkeys(VIEWS, 0.5), "tfps", front)
    engine.ttft_budget_ms = budget_ms
    engine.cost = CostModel(LINEAR)
    return engine


def test_without_a_budget_the_rates_are_kept_and_nothing_is_reported(frames: FrameSet) -> None:
    engine = _engine(frames, 0.0)
    answer = engine.answer(frames, "How many cars?")
    assert answer.budget is None and sum(answer.kept_tokens.values()) == sum(engine.budgets)


def test_a_tight_budget_scales_the_rates_down_and_says_how_it_went(frames: FrameSet) -> None:
    engine = _engine(frames, 100.0)  # about 990 tokens fit, of the 2187 the rates keep
    answer = engine.answer(frames, "How many cars?")
    kept = sum(answer.kept_tokens.values())
    assert 900 <= kept <= 990 < sum(engine.budgets)
    assert answer.budget is not None and answer.budget.predicted_ms <= 100.0
    assert answer.budget.budget_ms == 100.0 and answer.budget.measured_ms > 0
    assert answer.budget.met == (answer.budget.measured_ms <= 100.0)
    assert "budget" in answer.as_dict()


def test_the_queue_wait_is_spent_of_the_budget(frames: FrameSet) -> None:
    fresh = _engine(frames, 100.0).answer(frames, "How many cars?", waited_ms=0.0)
    waited = _engine(frames, 100.0).answer(frames, "How many cars?", waited_ms=50.0)
    assert sum(waited.kept_tokens.values()) < sum(fresh.kept_tokens.values())
    assert waited.budget is not None and waited.budget.measured_ms >= 50.0


def test_questions_about_one_frame_set_share_one_choice_from_the_front(frames: FrameSet) -> None:
    front = (
        FrontPoint(dict.fromkeys(VIEWS, 0.05), 216, 0.4),
        FrontPoint(dict.fromkeys(VIEWS, 0.1), 438, 0.6),
        FrontPoint(dict.fromkeys(VIEWS, 0.9), 3936, 0.9),
    )
    answers = _engine(frames, 60.0, front).answer_many(frames, ["How many cars?", "Is it clear?"])
    assert [sum(a.kept_tokens.values()) for a in answers] == [438, 438]
    assert answers[0].budget == answers[1].budget


def test_an_impossible_budget_takes_the_cheapest_point_and_says_it_missed(
    frames: FrameSet,
) -> None:
    front = (FrontPoint(dict.fromkeys(VIEWS, 0.05), 216, 0.4),)
    answer = _engine(frames, 1.0, front).answer(frames, "How many cars?")
    assert sum(answer.kept_tokens.values()) == 216
    assert answer.budget is not None and not answer.budget.met


def test_warmup_fits_the_cost_model_and_answers_correct_it(frames: FrameSet) -> None:
    engine = Engine.from_config(
        DriveVLMConfig(model="tiny", device="cpu", max_new_tokens=2, ttft_budget_ms=5000.0)
    )
    assert engine.cost is None
    engine.warmup()
    assert engine.cost is not None and engine.cost.decode_ms_per_token is not None
    assert engine.cost.predict_ttft_ms(4374) >= engine.cost.predict_ttft_ms(437) > 0
    answer = engine.answer(frames, "How many cars?")
    assert answer.budget is not None and answer.budget.budget_ms == 5000.0
    assert engine.cost.describe()["ttft_observed"] != "0"
