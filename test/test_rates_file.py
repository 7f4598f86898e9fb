"""retention_rates.yaml: round trip, atomic write, the shipped default, the tuned Pareto front
and every error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.samplers import RandomSampler
from optuna.storages import InMemoryStorage
from optuna.trial import create_trial

from prune2drive_ros import files
from prune2drive_ros.errors import BudgetError, ConfigError
from prune2drive_ros.sensors.rates_file import (
    FrontPoint,
    RatesFile,
    load_rates,
    redact_url,
    save_rates,
)
from prune2drive_ros.tuning.objective import Evaluation
from prune2drive_ros.tuning.report import rates_front
from prune2drive_ros.tuning.study import open_study
from prune2drive_ros.views import VIEWS

SHIPPED = Path(__file__).resolve().parents[1] / "config" / "retention_rates.yaml"
TUNED = dict(zip(VIEWS, (0.3, 0.15, 0.15, 0.1, 0.05, 0.05), strict=True))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rates.yaml"
    path.write_text(text)
    return path


def test_shipped_default_is_uniform_ten_percent() -> None:
    shipped = load_rates(SHIPPED)
    assert shipped.rates == RatesFile.uniform(0.1).rates
    assert shipped.mean_rate == pytest.approx(0.1)
    assert "untuned" in shipped.meta["note"]
    assert "prune2drive tune" in SHIPPED.read_text()


def test_round_trip_keeps_rates_order_and_provenance(tmp_path: Path) -> None:
    path = tmp_path / "out" / "rates.yaml"
    shuffled = dict(reversed(list(TUNED.items())))
    written = save_rates(
        path,
        shuffled,
        study="p2d",
        storage="sqlite:///study.db",
        score=np.float64(0.52),  # values straight from numpy / optuna are accepted
        tokens_kept={"total": np.int64(438), "per_view": {"CAM_FRONT": 219}},
        tokens_full=4374,
        trials=200,
        model="tiny-llava",
        reward=0.55,
        lambda_=0.03,
        note="test",
    )
    loaded = load_rates(path)
    assert loaded == written
    assert list(loaded.rates) == list(VIEWS)
    assert loaded.rates == TUNED
    assert loaded.meta["lambda"] == 0.03
    assert loaded.meta["tokens_kept"] == {"total": 438, "per_view": {"CAM_FRONT": 219}}
    assert isinstance(loaded.meta["date"], str)
    assert path.read_text().startswith("# Prune2Drive per-view retention rates")


def test_uniform_float_and_given_date(tmp_path: Path) -> None:
    path = tmp_path / "rates.yaml"
    save_rates(path, 0.25, date="2026-11-24T00:00:00+00:00")
    loaded = load_rates(path)
    assert loaded.rates == RatesFile.uniform(0.25).rates
    assert loaded.meta == {"date": "2026-11-24T00:00:00+00:00"}


def test_unquoted_yaml_date_is_read_as_text(tmp_path: Path) -> None:
    text = "rates: {" + ", ".join(f"{v}: 0.5" for v in VIEWS) + "}\ndate: 2026-11-24\n"
    assert load_rates(_write(tmp_path, text)).meta["date"] == "2026-11-24"


def test_storage_password_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "rates.yaml"
    save_rates(path, 0.5, storage="postgresql://tuner:s3cret@db.local:5432/optuna")
    assert "s3cret" not in path.read_text()
    assert load_rates(path).meta["storage"] == "postgresql://tuner@db.local:5432/optuna"


def test_redact_url() -> None:
    assert redact_url("sqlite:///tmp/study.db") == "sqlite:///tmp/study.db"
    assert redact_url("mysql://u:p@host/db?x=1") == "mysql://u@host/db?x=1"
    assert redact_url("redis://:p@host:6379/0") == "redis://host:6379/0"


def test_write_is_atomic_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rates.yaml"
    save_rates(path, TUNED, note="old")
    before = path.read_text()

    def killed(*_: Any) -> None:
        raise KeyboardInterrupt  # the tuner is stopped between writing and renaming

    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_rates(path, 0.5, note="new")
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["rates.yaml"]  # no temporary file left behind


def test_write_failure_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write retention rates file"):
        save_rates(blocker / "rates.yaml", 0.5)


def test_save_validates_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "rates.yaml"
    with pytest.raises(BudgetError, match="CAM_BACK"):
        save_rates(path, {**TUNED, "CAM_BACK": 1.5})
    with pytest.raises(ConfigError, match="unknown key"):
        save_rates(path, 0.5, sccore=1.0)
    with pytest.raises(ConfigError, match="'trials'"):
        save_rates(path, 0.5, trials=-1)
    assert not path.exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist"):
        load_rates(tmp_path / "nope.yaml")


def test_not_yaml_names_the_position(tmp_path: Path) -> None:
    path = _write(tmp_path, "rates:\n  CAM_FRONT: [0.1\n")
    with pytest.raises(ConfigError, match=r"rates\.yaml is not valid YAML at line \d+, column"):
        load_rates(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty; expected a YAML mapping with 'rates:'"),
        ("- 0.1\n", "is a list; expected a YAML mapping"),
        ("rate: 0.1\n", "has no 'rates:' key; expected a YAML mapping with 'rates:'"),
        ("rates: 0.1\n", "'rates' is 0.1, not a mapping"),
    ],
)
def test_schema_errors_say_the_expected_schema(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_rates(_write(tmp_path, text))


def _rates_yaml(rates: dict[str, Any], **extra: Any) -> str:
    return yaml.safe_dump({"rates": rates, **extra}, sort_keys=False)


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        ({**TUNED, "CAM_TOP": 0.1}, "unknown view.*CAM_TOP"),
        ({k: v for k, v in TUNED.items() if k != "CAM_BACK_LEFT"}, "missing view.*CAM_BACK_LEFT"),
        ({**TUNED, "CAM_FRONT": 0.0}, "CAM_FRONT is 0.0; it must lie in"),
        ({**TUNED, "CAM_BACK": 1.01}, "CAM_BACK is 1.01; it must lie in"),
        ({**TUNED, "CAM_BACK_RIGHT": "high"}, "CAM_BACK_RIGHT is 'high', not a number"),
    ],
)
def test_rate_errors_name_the_file_and_view(
    tmp_path: Path, rates: dict[str, Any], expected: str
) -> None:
    with pytest.raises(BudgetError, match=rf"rates\.yaml: .*{expected}"):
        load_rates(_write(tmp_path, _rates_yaml(rates)))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"scroe": 0.5}, "unknown key.*scroe"),
        ({"score": "good"}, "'score' is 'good', expected a finite number"),
        ({"trials": 2.5}, "'trials' is 2.5, expected a whole number"),
        ({"note": 5}, "'note' is 5, expected text"),
        ({"tokens_kept": 438}, "'tokens_kept' is 438"),
        ({"tokens_kept": {"per_view": {"CAM_TOP": 1}}}, "'tokens_kept.per_view'"),
    ],
)
def test_provenance_errors(tmp_path: Path, extra: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"rates\.yaml: {expected}"):
        load_rates(_write(tmp_path, _rates_yaml(TUNED, **extra)))


def test_uniform_validates() -> None:
    assert RatesFile.uniform(1.0).rates == dict.fromkeys(VIEWS, 1.0)
    with pytest.raises(BudgetError):
        RatesFile.uniform(0.0)


# --------------------------------------------------------------------------------------------
# The Pareto front beside the chosen rates
# --------------------------------------------------------------------------------------------

FRONT = (
    FrontPoint(rates=dict.fromkeys(VIEWS, 0.05), tokens=216, score=0.41),
    FrontPoint(rates=TUNED, tokens=583, score=0.52),
    FrontPoint(rates=dict.fromkeys(VIEWS, 0.5), tokens=2190, score=0.55),
)


def test_front_round_trips_beside_the_chosen_rates(tmp_path: Path) -> None:
    path = tmp_path / "rates.yaml"
    as_numpy = FrontPoint(rates=FRONT[0].rates, tokens=np.int64(216), score=np.float64(0.41))  # type: ignore[arg-type]
    written = save_rates(path, TUNED, front=[as_numpy, *FRONT[1:]], note="tuned")
    loaded = load_rates(path)
    assert loaded == written
    assert loaded.front == FRONT
    assert loaded.rates == TUNED, "the chosen rates stay the ones served"
    assert loaded.meta["note"] == "tuned"
    document = yaml.safe_load(path.read_text())
    assert list(document) == ["rates", "date", "note", "front"]
    assert document["front"][1] == {"rates": TUNED, "tokens": 583, "score": 0.52}


def test_a_file_without_front_has_none(tmp_path: Path) -> None:
    assert load_rates(SHIPPED).front == ()
    path = tmp_path / "rates.yaml"
    save_rates(path, 0.5)
    assert "front" not in yaml.safe_load(path.read_text())
    assert load_rates(path).front == ()


def _front_yaml(*points: Any) -> str:
    return _rates_yaml(TUNED, front=list(points))


_GOOD = {"rates": TUNED, "tokens": 583, "score": 0.52}


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        ({**_GOOD, "rates": {**TUNED, "CAM_TOP": 0.1}}, r"front\[1\]: .*unknown view.*CAM_TOP"),
        ({**_GOOD, "rates": {**TUNED, "CAM_BACK": 1.5}}, r"front\[1\]: .*CAM_BACK is 1.5"),
        ({**_GOOD, "rates": {"CAM_FRONT": 0.2}}, r"front\[1\]: .*missing view.*CAM_BACK_LEFT"),
    ],
)
def test_front_rate_errors_name_the_point(tmp_path: Path, point: Any, expected: str) -> None:
    with pytest.raises(BudgetError, match=rf"rates\.yaml: {expected}"):
        load_rates(_write(tmp_path, _front_yaml(_GOOD, point)))


@pytest.mark.parametrize(
    ("front", "expected"),
    [
        ([{**_GOOD, "tokens": 0}], r"front\[0\]\.tokens' is 0, expected a whole number >= 1"),
        ([{**_GOOD, "tokens": 2.5}], r"front\[0\]\.tokens' is 2.5"),
        ([_GOOD, {**_GOOD, "score": float("nan")}], r"front\[1\]\.score' is nan, expected a fin"),
        ([{**_GOOD, "score": "good"}], r"front\[0\]\.score' is 'good'"),
        ([{"rates": TUNED, "tokens": 5}], r"front\[0\] lacks score"),
        ([{**_GOOD, "trial": 3}], r"front\[0\] has unknown key\(s\) trial"),
        ([{**_GOOD, "rates": 0.1}], r"front\[0\]\.rates is 0\.1, not a mapping"),
        ([0.1], r"front\[0\] is 0\.1; expected a list of points"),
        ({"rates": TUNED}, r"'front' is .*; expected a list of points"),
        ([], r"'front' is \[\]; expected a list .* \(leave 'front' out for none\)"),
    ],
)
def test_front_schema_errors_name_the_point(tmp_path: Path, front: Any, expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"rates\.yaml: '?{expected}"):
        load_rates(_write(tmp_path, _rates_yaml(TUNED, front=front)))


def test_save_checks_the_front_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "rates.yaml"
    bad = FrontPoint(rates={**TUNED, "CAM_FRONT": 0.0}, tokens=10, score=0.1)
    with pytest.raises(BudgetError, match=r"front\[1\]: .*CAM_FRONT is 0.0"):
        save_rates(path, TUNED, front=[FRONT[0], bad])
    with pytest.raises(ConfigError, match=r"front\[0\]\.tokens"):
        save_rates(path, TUNED, front=[FrontPoint(rates=TUNED, tokens=-1, score=0.1)])
    assert not path.exists()


@pytest.mark.parametrize("multi_objective", [False, True])
def test_the_tuners_front_is_the_studys_pareto_front(tmp_path: Path, multi_objective: bool) -> None:
    """A study of one objective (R - lambda * P) writes a front too: its trials trade score for
    tokens as well."""
    settings = {"reward": "fidelity", "lambda": None if multi_objective else 0.18}
    study = open_study(
        InMemoryStorage(), "s", {**settings, "multi_objective": multi_objective}, RandomSampler
    )
    # (score, tokens per view): (0.3, 300) and (0.45, 700) are beaten by (0.5, 200).
    for i, (score, tokens) in enumerate(
        [(0.2, 50), (0.3, 300), (0.5, 200), (0.45, 700), (0.6, 729)]
    ):
        rates = {view: (i + 1) / 10 for view in VIEWS}
        penalty = tokens / 729
        evaluation = Evaluation(
            rates, (tokens,) * 6, score, penalty, score - 0.18 * penalty, {"fidelity": score}, 6, 0
        )
        values = [score, penalty] if multi_objective else [evaluation.objective]
        study.add_trial(
            create_trial(
                params=rates,
                distributions=dict.fromkeys(VIEWS, FloatDistribution(0.05, 1.0)),
                values=values,
                user_attrs=evaluation.user_attrs(),
            )
        )
    path = tmp_path / "rates.yaml"
    save_rates(path, 0.3, front=rates_front(study))
    front = load_rates(path).front
    assert [(p.score, p.tokens) for p in front] == [(0.2, 300), (0.5, 1200), (0.6, 4374)]
    assert front[1].rates == dict.fromkeys(VIEWS, 0.3)
