"""The optuna side of the rate search, without a model: space, samplers, storage, choice."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import signal
from collections.abc import Callable

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.samplers import GridSampler, NSGAIISampler, RandomSampler, TPESampler
from optuna.storages import InMemoryStorage, JournalStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from prune2drive_ros.errors import ConfigError, StudyError
from prune2drive_ros.tuning.objective import Evaluation
from prune2drive_ros.tuning.samplers import SearchSpace, make_sampler
from prune2drive_ros.tuning.study import (
    MAX_CONSECUTIVE_FAILURES,
    HeartbeatRDBStorage,
    choose_trial,
    enqueue_starts,
    knee,
    make_storage,
    open_study,
    pareto_front,
    run_trials,
    study_name,
)
from prune2drive_ros.views import VIEWS

SETTINGS = {"reward": "fidelity", "lambda": 0.18, "multi_objective": False, "model": "m"}


def _study(multi: bool = False) -> optuna.Study:
    return open_study(
        InMemoryStorage(),
        "s",
        {**SETTINGS, "multi_objective": multi},
        lambda n: RandomSampler(seed=n),
    )


def _add(study: optuna.Study, reward: float, tokens: float, rate: float = 0.5) -> None:
    values = [reward, tokens] if len(study.directions) == 2 else [reward - 0.18 * tokens]
    study.add_trial(
        create_trial(
            params=dict.fromkeys(VIEWS, rate),
            distributions=dict.fromkeys(VIEWS, FloatDistribution(0.05, 1.0)),
            values=values,
            user_attrs=Evaluation(
                dict.fromkeys(VIEWS, rate),
                (1,) * len(VIEWS),
                reward,
                tokens,
                reward - 0.18 * tokens,
                {"fidelity": reward},
                1,
                0,
            ).user_attrs(),
        )
    )


def test_search_space_checks_bounds_and_builds_a_grid():
    space = SearchSpace(0.1, 0.5, 5)
    assert space.grid_values() == [0.1, 0.2, 0.3, 0.4, 0.5]
    rates = dict.fromkeys(VIEWS, 0.03)
    assert space.start_point(rates, grid=False) == dict.fromkeys(VIEWS, 0.1)
    assert space.start_point(dict.fromkeys(VIEWS, 0.26), grid=True) == dict.fromkeys(VIEWS, 0.3)
    for low, high in ((0.0, 1.0), (0.5, 0.4), (0.1, 1.5), (float("nan"), 1.0)):
        with pytest.raises(ConfigError):
            SearchSpace(low, high)
    with pytest.raises(ConfigError, match="grid-steps"):
        SearchSpace(0.1, 1.0, 1)


def test_samplers_are_optunas_own():
    space = SearchSpace()
    assert isinstance(make_sampler(None, space, seed=0, multi_objective=False), TPESampler)
    assert isinstance(make_sampler(None, space, seed=0, multi_objective=True), NSGAIISampler)
    assert isinstance(make_sampler("random", space, seed=0, multi_objective=False), RandomSampler)
    assert isinstance(make_sampler("grid", space, seed=0, multi_objective=False), GridSampler)
    with pytest.raises(ConfigError, match="one objective"):
        make_sampler("cmaes", space, seed=0, multi_objective=True)
    if importlib.util.find_spec("cmaes") is None:
        with pytest.raises(ConfigError, match="pip install cmaes"):
            make_sampler("cmaes", space, seed=0, multi_objective=False)
    with pytest.raises(ConfigError, match="unknown sampler"):
        make_sampler("bayes", space, seed=0, multi_objective=False)


def test_storage_urls(tmp_path):
    journal = make_storage(f"journal:{tmp_path / 'j' / 'study.log'}")
    assert isinstance(journal, JournalStorage)
    sqlite = make_storage(f"sqlite:///{tmp_path / 'nested' / 'x.db'}", heartbeat_s=5)
    assert isinstance(sqlite, RDBStorage)
    assert (tmp_path / "nested" / "x.db").exists()
    with pytest.raises(ConfigError, match="not an optuna storage"):
        make_storage(str(tmp_path / "x.db"))


@pytest.mark.filterwarnings(
    "ignore:Heartbeat of storage", "ignore::optuna.exceptions.ExperimentalWarning"
)
def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_and_retried(
    tmp_path, age_heartbeats
):
    # The worker dies right after study.ask(): before optuna's heartbeat thread ever ran. Both
    # ways a trial starts: a new one, and an enqueued one leaving the queue.
    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = make_storage(url, heartbeat_s=1)
    study = open_study(storage, "s", SETTINGS, lambda n: RandomSampler(seed=n))
    enqueue_starts(study, [dict.fromkeys(VIEWS, 0.3)])
    queued, new = study.ask(), study.ask()
    for trial in (queued, new):
        SearchSpace().suggest(trial)
    # Both trials have a heartbeat row already; dated back, it is past the grace period.
    assert age_heartbeats(url) == 2
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states[queued.number] == states[new.number] == TrialState.FAIL
    retried = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert sorted(t.params[VIEWS[0]] for t in retried) == sorted((0.3, new.params[VIEWS[0]]))


def test_an_enqueued_trial_is_taken_by_one_worker_only(tmp_path):
    # Two workers on one SQLite study see the same WAITING trial; the conditional update lets
    # only the first take it (optuna's read-then-write let both, on SQLite, run it twice).
    url = f"sqlite:///{tmp_path / 's.db'}"
    first, second = make_storage(url, heartbeat_s=5), make_storage(url, heartbeat_s=5)
    study = open_study(first, "s", SETTINGS, lambda n: RandomSampler(seed=n))
    enqueue_starts(study, [dict.fromkeys(VIEWS, 0.3)])
    (waiting,) = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert first.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
    assert not second.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
    assert first.get_trial(waiting._trial_id).state == TrialState.RUNNING
    assert first.get_trial(waiting._trial_id).datetime_start is not None


def test_the_private_optuna_hook_the_heartbeat_storage_overrides_is_still_called(
    tmp_path, monkeypatch
):
    # HeartbeatRDBStorage overrides RDBStorage._get_prepared_new_trial, a private method. If
    # optuna renames it, changes its parameters or stops calling it from create_new_trial,
    # the override silently does nothing: this test fails instead (see setup.py's range).
    ours = inspect.signature(HeartbeatRDBStorage._get_prepared_new_trial)
    stock = inspect.signature(RDBStorage._get_prepared_new_trial)
    assert list(ours.parameters) == list(stock.parameters)
    assert list(stock.parameters) == ["self", "study_id", "template_trial", "session"]
    calls = []
    original = RDBStorage._get_prepared_new_trial

    def spy(self, study_id, template_trial, session):
        calls.append((study_id, template_trial))
        return original(self, study_id, template_trial, session)

    monkeypatch.setattr(RDBStorage, "_get_prepared_new_trial", spy)
    storage = RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    study_id = storage.create_new_study([StudyDirection.MAXIMIZE], "s")
    storage.create_new_trial(study_id)
    assert calls == [(study_id, None)]


def test_unreachable_database_is_a_clear_error_without_the_password():
    # Without a PostgreSQL driver (a ROS machine that skipped the postgres extra) the error
    # says which to install before any connection is tried.
    has_driver = any(importlib.util.find_spec(name) for name in ("psycopg", "psycopg2"))
    message = "cannot open storage" if has_driver else "needs a driver: pip install"
    with pytest.raises(ConfigError, match=message) as info:
        make_storage("postgresql://user:secret@127.0.0.1:1/tuning", heartbeat_s=0)
    assert "secret" not in str(info.value)


def test_study_names_follow_the_settings():
    name = study_name(SETTINGS, family="llava_onevision")
    assert name.startswith("prune2drive-llava_onevision-fidelity-lambda0.18-")
    assert name == study_name(dict(SETTINGS), family="llava_onevision")
    assert name != study_name({**SETTINGS, "model": "n"}, family="llava_onevision")
    assert name != study_name({**SETTINGS, "lambda": 0.1}, family="llava_onevision")
    assert "-pareto-" in study_name({**SETTINGS, "multi_objective": True}, family="x")


def test_a_study_with_other_settings_is_not_resumed(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = open_study(make_storage(url), "s", SETTINGS, lambda n: RandomSampler(seed=n))
    _add(study, 0.5, 0.5)
    again = open_study(make_storage(url), "s", SETTINGS, lambda n: RandomSampler(seed=n))
    assert len(again.trials) == 1
    with pytest.raises(ConfigError, match="lambda differ"):
        open_study(make_storage(url), "s", {**SETTINGS, "lambda": 0.3}, RandomSampler)


def test_start_points_are_queued_once():
    study = _study()
    starts = [dict.fromkeys(VIEWS, 0.1), dict.fromkeys(VIEWS, 1.0)]
    enqueue_starts(study, starts)
    enqueue_starts(study, starts)
    assert [t.state for t in study.trials] == [TrialState.WAITING] * 2


def test_best_single_objective_trial():
    study = _study()
    _add(study, 0.50, 1.0)
    _add(study, 0.45, 0.2)
    choice = choose_trial(study, multi_objective=False)
    assert choice.trial.number == 1
    assert "objective" in choice.how


def test_pareto_front_knee_and_budget():
    study = _study(multi=True)
    for reward, tokens in [(0.1, 0.1), (0.5, 0.2), (0.55, 0.6), (0.6, 1.0), (0.4, 0.5)]:
        _add(study, reward, tokens)
    front = pareto_front(study.trials)
    assert [t.number for t in front] == [0, 1, 2, 3]  # (0.4, 0.5) is beaten by (0.5, 0.2)
    assert knee(front).number == 1
    assert choose_trial(study, multi_objective=True).trial.number == 1
    budget = choose_trial(study, multi_objective=True, budget=0.7)
    assert budget.trial.number == 2 and "70.0%" in budget.how
    with pytest.raises(StudyError, match=r"at most 5\.0%"):
        choose_trial(study, multi_objective=True, budget=0.05)


def test_knee_of_tiny_fronts_takes_the_higher_score():
    study = _study(multi=True)
    _add(study, 0.2, 0.1)
    _add(study, 0.3, 0.9)
    assert knee(pareto_front(study.trials)).number == 1


def test_no_finished_trial_is_a_clear_error():
    with pytest.raises(StudyError, match="no finished trial"):
        choose_trial(_study(), multi_objective=False)


def test_failed_trials_are_recorded_and_the_study_goes_on():
    study = _study()

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number % 2:
            raise RuntimeError("bad trial")
        return x

    stats = run_trials(study, objective, trials=6)
    assert (stats.completed, stats.failed, stats.aborted) == (3, 3, "")
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 3 and states.count(TrialState.COMPLETE) == 3


def test_a_run_of_failures_stops_the_run():
    study = _study()

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("error", "RuntimeError: broken")
        raise RuntimeError("broken")

    stats = run_trials(study, objective, trials=50)
    assert stats.failed == MAX_CONSECUTIVE_FAILURES
    assert "in a row" in stats.aborted and "broken" in stats.aborted


def test_a_failed_trial_is_one_log_line_without_a_traceback(caplog, capfd):
    study = _study()

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("error", "RuntimeError: bad trial")
        raise RuntimeError("bad trial")

    with caplog.at_level(logging.WARNING):
        stats = run_trials(study, objective, trials=1)
    assert stats.failed == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["trial 0 failed: RuntimeError: bad trial"]
    assert not any(r.exc_info for r in warnings)
    err = capfd.readouterr().err  # optuna's own handler writes to stderr, past caplog
    assert "Traceback" not in err and "failed with parameters" not in err


def _interrupting(times: int) -> Callable[[optuna.Trial], float]:
    """An objective whose trial 1 gets ``times`` Ctrl-C (SIGINT) while it runs."""

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)
        return x

    return objective


def test_the_first_ctrl_c_lets_the_running_trial_finish_then_stops(caplog):
    study = _study()
    with caplog.at_level(logging.WARNING):
        stats = run_trials(study, _interrupting(1), trials=10)
    assert (stats.completed, stats.failed, stats.interrupted) == (2, 0, True)
    assert stats.aborted == "interrupted"
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert "press Ctrl-C again" in caplog.text
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(capfd):
    study = _study()
    stats = run_trials(study, _interrupting(2), trials=10)
    assert (stats.completed, stats.interrupted) == (1, True)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert "Traceback" not in capfd.readouterr().err


def test_a_token_total_is_shared_by_weight_one_token_each_none_over_a_view() -> None:
    space = SearchSpace(tokens=100).bind([64] * len(VIEWS))
    equal = space.share(dict.fromkeys(VIEWS, 1.0))
    assert sorted(round(rate * 64) for rate in equal.values()) == [16, 16, 17, 17, 17, 17]
    front_only = space.share({view: float(view == "CAM_FRONT") for view in VIEWS})
    kept = {view: round(rate * 64) for view, rate in front_only.items()}
    assert kept["CAM_FRONT"] == 64, "capped at what the view holds"
    assert sum(kept.values()) == 100 and min(kept.values()) >= 1
    assert space.start_point({}, grid=False) == dict.fromkeys(VIEWS, 1.0)
    with pytest.raises(ConfigError, match="at least 6"):
        SearchSpace(tokens=5)
    with pytest.raises(ConfigError, match="more than the model's"):
        SearchSpace(tokens=1000).bind([64] * len(VIEWS))
