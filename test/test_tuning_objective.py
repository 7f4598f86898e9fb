"""Objective of the rate search: penalty, lambda equivalence with the reference, reward choice."""

from __future__ import annotations

import random

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from prune2drive_ros.errors import ConfigError
from prune2drive_ros.pruning.budget import budgets_from_rates
from prune2drive_ros.tuning.objective import (
    DEFAULT_LAMBDA,
    REFERENCE_SUM_LAMBDA,
    Evaluation,
    Evaluator,
    choose_reward,
    objective_value,
    penalty,
    score_from_parts,
)
from prune2drive_ros.tuning.scoring import score_answers
from prune2drive_ros.tuning.sources import Frame, Sample, ValidationSet
from prune2drive_ros.views import VIEWS

TOKENS = 729


def _data(answers: list[str | None], tags: tuple[int, ...] = ()) -> ValidationSet:
    frame = Frame(key="k", label="frame", read=dict)
    samples = [Sample(f"q{i}", frame, f"question {i}?", a, tags) for i, a in enumerate(answers)]
    return ValidationSet(samples, description="test data", identity="id")


def test_penalty_is_the_fraction_of_tokens_kept():
    full = (TOKENS,) * 6
    assert penalty(full, full) == 1.0
    assert penalty((73,) * 6, full) == pytest.approx(73 / TOKENS)
    assert penalty((729, 1, 1, 1, 1, 1), full) == pytest.approx(734 / (6 * TOKENS))
    assert penalty((4, 4, 4, 4, 4, 4), (40, 48, 40, 40, 48, 40)) == pytest.approx(24 / 256)


def test_default_lambda_is_the_reference_weight_per_mean_rate():
    rng = random.Random(0)
    for _ in range(200):
        rates = {view: rng.uniform(0.05, 1.0) for view in VIEWS}
        reward = rng.random()
        reference = reward - REFERENCE_SUM_LAMBDA * sum(rates.values())
        mean_rate = sum(rates.values()) / len(VIEWS)
        assert objective_value(reward, mean_rate, DEFAULT_LAMBDA) == pytest.approx(reference)
        # The penalty counts whole tokens: each view's budget is the rate rounded to a token.
        kept = penalty(budgets_from_rates(rates, TOKENS), (TOKENS,) * 6)
        ours = objective_value(reward, kept, DEFAULT_LAMBDA)
        assert abs(ours - reference) <= DEFAULT_LAMBDA * 0.5 / TOKENS + 1e-12


def test_reward_defaults_to_drivelm_with_every_reference_answer():
    reward, why = choose_reward(None, _data(["yes", "two cars"]))
    assert reward == "drivelm"
    assert "reference answer" in why


def test_reward_falls_back_to_fidelity_and_says_why():
    reward, why = choose_reward(None, _data(["yes", None, None]))
    assert reward == "fidelity"
    assert "2 of 3" in why and "q1" in why


def test_drivelm_reward_needs_every_reference_answer():
    with pytest.raises(ConfigError, match="--reward fidelity"):
        choose_reward("drivelm", _data(["yes", None]))
    assert choose_reward("fidelity", _data(["yes"]))[0] == "fidelity"
    with pytest.raises(ConfigError, match="unknown reward"):
        choose_reward("bleu", _data(["yes"]))


def test_drivelm_reward_on_gpt_only_items_is_refused():
    data = _data(["Keep going.", "Slow down."], tags=(1,))
    with pytest.raises(ConfigError, match="local DriveLM metric"):
        Evaluator(None, None, data, reward="drivelm", lam=DEFAULT_LAMBDA)  # type: ignore[arg-type]


def test_score_parts_round_trip_through_trial_attributes():
    predictions = ["B", "Yes.", "A car at <c1,CAM_FRONT,700.0,500.0> turns", "Brake now"]
    references = ["B", "No.", "A car at <c1,CAM_FRONT,702.0,505.0> goes", "Brake gently"]
    score = score_answers(predictions, references)
    rebuilt = score_from_parts(score.as_dict())
    assert rebuilt.value == pytest.approx(score.value)
    assert rebuilt.describe() == score.describe()


def test_an_evaluation_is_read_back_from_the_trial_a_study_stored():
    score = score_answers(["yes", "the car"], ["yes", "the car"], [(0,), (2,)])
    evaluation = Evaluation(
        dict.fromkeys(VIEWS, 0.5),
        (364,) * 6,
        score.value,
        0.5,
        score.value - 0.09,
        score.as_dict(),
        2,
        1,
        score,
    )
    trial = create_trial(
        params=dict(evaluation.rates or {}),
        distributions=dict.fromkeys(VIEWS, FloatDistribution(0.05, 1.0)),
        value=evaluation.objective,
        user_attrs=evaluation.user_attrs(),
    )
    assert Evaluation.stored(trial)
    read = Evaluation.from_trial(trial)
    assert read == evaluation
    assert read.describe() == evaluation.describe()
    # The format studies were stored in (a study written before resumes with these keys).
    fidelity = create_trial(
        params=dict.fromkeys(VIEWS, 0.1),
        distributions=dict.fromkeys(VIEWS, FloatDistribution(0.05, 1.0)),
        value=0.7,
        user_attrs={
            "reward": 0.8,
            "penalty": 0.1,
            "objective": 0.782,
            "tokens_per_view": [73] * 6,
            "parts": {"fidelity": 0.8},
            "answered": 12,
            "skipped": 0,
        },
    )
    read = Evaluation.from_trial(fidelity)
    assert (read.reward, read.budgets, read.score) == (0.8, (73,) * 6, None)
    assert read.describe().endswith("= 0.8000")
