"""The optuna study of a rate search: storage, samplers, resuming, workers, choosing the result.

Storage (``--storage``):

* default ``sqlite:///<out>/prune2drive_tuning.db``: the study lives beside the files it
  produces, so re-running the same command resumes it and deleting the output folder starts
  afresh;
* any optuna RDB URL (``postgresql://user@host/db``, ``mysql+pymysql://...``, ``sqlite:///x.db``);
* ``journal:PATH``: optuna's :class:`~optuna.storages.JournalStorage` on a file, for several
  processes on one machine without a database server (appends under a file lock).

Every trial is written to the storage when it finishes, so a killed worker loses at most the
trial it was running. On RDB storages each running trial also records a heartbeat (every
``--heartbeat`` seconds); a trial whose heartbeat is older than twice that (its worker was
killed) is marked FAIL by the next worker that asks for a trial, and re-queued once with the
same rates (:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`). optuna ignores a
running trial that has no heartbeat at all, and stock optuna records the first one only once
the sampler has drawn the trial's parameters: a worker killed in between left its trial
RUNNING for good. :class:`HeartbeatRDBStorage` stamps the first heartbeat as the trial starts
running (see there). JournalStorage has no heartbeat: a killed worker's running trial stays
RUNNING there (it is ignored by the samplers' results and by the report; finished trials are
all kept).

Studies are named after what defines their objective (model, data, reward, lambda, search
space, pruner, answer length); the same settings give the same name, so re-running resumes
(``load_if_exists``), and several processes given the same storage share one study. Model and
data take part by content, not by path or file time (see :mod:`.sources` and
:func:`.features.model_content_key`): the same checkpoint and recording on another machine, in
another folder or after a ``touch`` name the same study, and the device does not take part (a
GPU and a CPU worker may share a study). Opening a study whose stored settings differ from the
command's is refused rather than mixing two objectives in one study.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages._rdb import models as rdb_models
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import ConfigError, StudyError
from ..progress import NO_PROGRESS, Progress
from ..sensors.rates_file import redact_url
from ..views import VIEWS
from .objective import Evaluation, Evaluator
from .samplers import SearchSpace

logger = logging.getLogger(__name__)

DEFAULT_STORAGE_FILE = "prune2drive_tuning.db"
#: Seconds between heartbeats of a running trial on RDB storages (0 turns them off).
DEFAULT_HEARTBEAT_S = 60
#: Re-queue a trial whose worker died at most this often (then it stays FAIL).
STALE_RETRIES = 1
#: Stop the run after this many failed trials in a row: something is broken, not one trial.
MAX_CONSECUTIVE_FAILURES = 5
JOURNAL_PREFIX = "journal:"
#: Attempts at opening an RDB storage while another worker creates its tables.
_CREATE_ATTEMPTS = 5
#: Bump when the objective's definition changes, so old studies are not resumed by mistake.
OBJECTIVE_VERSION = 2
_SETTINGS_ATTR = "prune2drive"


# --------------------------------------------------------------------------------------------
# Storage and study
# --------------------------------------------------------------------------------------------


def default_storage(out_dir: str | Path) -> str:
    """The SQLite file in the output folder (absolute, so the URL works from anywhere)."""
    return f"sqlite:///{(Path(out_dir) / DEFAULT_STORAGE_FILE).resolve()}"


def make_storage(url: str, *, heartbeat_s: int = DEFAULT_HEARTBEAT_S) -> BaseStorage:
    """An optuna storage for ``url`` (RDB URL or ``journal:PATH``).

    Raises:
        ConfigError: a URL that is neither, a database that cannot be reached, or a missing
            database driver; the message never shows a password.
    """
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url.removeprefix(JOURNAL_PREFIX)).expanduser()
        if not path.name:
            raise ConfigError(f"storage {url!r} names no file; write journal:PATH")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigError(
            f"storage {url!r} is not an optuna storage; use sqlite:///FILE.db, "
            "postgresql://USER@HOST/DB or journal:FILE"
        )
    given, url = url, with_postgres_driver(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Workers on one SQLite file queue for its write lock instead of failing at once.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        database = url.split(":///", 1)[-1]
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat is "experimental"
            if heartbeat_s > 0:
                kwargs.update(
                    heartbeat_interval=heartbeat_s,
                    grace_period=2 * heartbeat_s,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                        max_retry=STALE_RETRIES
                    ),
                )
            return _rdb_storage(url, kwargs)
    except (ImportError, ValueError, SQLAlchemyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot open storage {redact_url(given)}: {reason}") from exc


def with_postgres_driver(url: str) -> str:
    """``postgresql://`` spelled with the PostgreSQL driver that is installed.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, while this package's
    ``postgres`` extra installs psycopg2 (``psycopg2-binary``, a wheel with libpq inside); the
    URL is pointed at psycopg2 when only that one is there. Explicit drivers are left alone.

    Raises:
        ConfigError: neither driver is installed.
    """
    scheme, separator, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres") or importlib.util.find_spec("psycopg"):
        return url
    if importlib.util.find_spec("psycopg2") is None:
        raise ConfigError(
            "a PostgreSQL storage needs a driver: pip install 'prune2drive_ros[postgres]' "
            "(psycopg2-binary) or psycopg"
        )
    return f"postgresql+psycopg2{separator}{rest}"


class HeartbeatRDBStorage(RDBStorage):
    """optuna's RDBStorage whose trials carry a heartbeat from the moment they run.

    Stock optuna writes a trial's first heartbeat from the thread it starts after
    ``study.ask()`` has created the trial and sampled its parameters, and never counts a
    running trial without a heartbeat as stale. A worker killed in that window (tens of
    milliseconds per trial on SQLite, longer with a slow sampler) left a trial that no worker
    would ever fail or retry. Here a new trial's heartbeat row is written in the transaction
    that creates it, and an enqueued trial's right after it leaves the queue (a separate
    commit: a window of one statement remains there). The heartbeat thread then refreshes the
    row as usual.

    It also takes an enqueued trial out of the queue with one conditional ``UPDATE ... WHERE
    state = WAITING``: optuna reads the state with ``SELECT ... FOR UPDATE`` and then writes
    it, and SQLite has no row locks, so two workers could both take the same trial, both run
    it, and the second fail with "Cannot tell a COMPLETE trial" (seen in the two-process
    test). The conditional update is atomic on SQLite and PostgreSQL alike.

    Only the two methods below differ from optuna's; both are hooks of optuna's own
    RDBStorage (present since optuna 4.0, the oldest this package accepts). The first is
    private: setup.py bounds optuna below 6, and a test fails if optuna stops calling it.
    """

    def _get_prepared_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None, session: Session
    ) -> rdb_models.TrialModel:
        trial = super()._get_prepared_new_trial(study_id, template_trial, session)
        if self.heartbeat_interval and trial.state == TrialState.RUNNING:
            session.add(rdb_models.TrialHeartbeatModel(trial_id=trial.trial_id))
        return trial

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state != TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        trials = rdb_models.TrialModel.__table__
        claim = (
            update(trials)
            .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
            .values(state=TrialState.RUNNING, datetime_start=datetime.now())
        )
        with self.engine.begin() as connection:
            claimed = connection.execute(claim).rowcount == 1
        if claimed and self.heartbeat_interval:
            self.record_heartbeat(trial_id)
        return claimed


def _rdb_storage(url: str, kwargs: dict[str, Any]) -> RDBStorage:
    """RDBStorage, retried when another worker is creating the tables at the same moment.

    Two workers starting on a new database both try to create optuna's tables and stamp their
    schema version; the loser gets "table ... already exists", or an IntegrityError on the
    version row (``alembic_version``). A second attempt finds the tables and goes on.
    """
    attempt = 1
    while True:
        try:
            return HeartbeatRDBStorage(url, **kwargs)
        except SQLAlchemyError as exc:
            lost_race = isinstance(exc, IntegrityError) or "already exists" in str(exc)
            if not lost_race or attempt == _CREATE_ATTEMPTS:
                raise
            logger.debug("optuna tables are being created by another worker; retrying")
            time.sleep(0.5 * attempt)
            attempt += 1


def _tag(text: str, limit: int = 40) -> str:
    """``text`` as a short name part: letters, digits, ``._-`` only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:limit] or "x"


def study_name(settings: Mapping[str, Any], *, family: str) -> str:
    """``prune2drive-<family>-<reward>-<lambda or pareto>-<hash of all settings>``.

    Only the hash tells models and data apart; the readable parts come from settings that are
    the same on every machine (not a file or folder name, which a copy may change).
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    goal = "pareto" if settings["multi_objective"] else f"lambda{settings['lambda']:g}"
    return f"prune2drive-{_tag(family)}-{settings['reward']}-{goal}-{digest}"


def open_study(
    storage: BaseStorage,
    name: str,
    settings: Mapping[str, Any],
    sampler: Callable[[int], BaseSampler],
) -> optuna.Study:
    """Create the study or load it when it exists; refuse one with other settings.

    ``settings`` defines the objective (see the module docstring); it is stored with the study.
    ``sampler(n)`` builds the sampler given the number of trials the study already has: seeding
    with it keeps a resumed run from drawing the same start-up points as the first run did.

    Raises:
        ConfigError: the stored study was made with other settings.
    """
    directions = (
        [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
        if settings["multi_objective"]
        else [StudyDirection.MAXIMIZE]
    )
    study = optuna.create_study(
        storage=storage, study_name=name, directions=directions, load_if_exists=True
    )
    stored = study.user_attrs.get(_SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(_SETTINGS_ATTR, dict(settings))
    elif stored != dict(settings):
        changed = sorted(k for k in {*stored, *settings} if stored.get(k) != settings.get(k))
        raise ConfigError(
            f"study {name!r} was made with other settings ({', '.join(changed)} differ); "
            "choose another --study-name, or leave it out to get one named after the settings"
        )
    study.sampler = sampler(len(study.get_trials(deepcopy=False)))
    return study


def enqueue_starts(study: optuna.Study, starts: Sequence[Mapping[str, float]]) -> None:
    """Queue ``starts`` as the first trials, each only when the study does not have it yet."""
    for params in starts:
        study.enqueue_trial(dict(params), skip_if_exists=True)


def make_objective(
    evaluator: Evaluator, space: SearchSpace, *, multi_objective: bool
) -> Callable[[Trial], float | tuple[float, float]]:
    """The optuna objective: rates from the trial, evaluated, parts stored as user attrs.

    Single objective: ``R - lambda * P``; two objectives: ``(R, P)``. An error is stored in the
    trial's ``error`` attribute and re-raised, so optuna records the trial as FAIL. ``worker``
    (host:pid) says which process ran the trial, when several share a study.
    """

    worker = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: Trial) -> float | tuple[float, float]:
        trial.set_user_attr("worker", worker)
        rates = space.suggest(trial)
        try:
            evaluation = evaluator.evaluate(rates)
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            logger.debug("trial %d failed", trial.number, exc_info=True)
            raise
        for key, value in evaluation.user_attrs().items():
            trial.set_user_attr(key, value)
        logger.debug(
            "trial %d: R=%.4f P=%.4f objective=%.4f",
            trial.number,
            evaluation.reward,
            evaluation.penalty,
            evaluation.objective,
        )
        if multi_objective:
            return evaluation.reward, evaluation.penalty
        return evaluation.objective

    return objective


@dataclass
class RunStats:
    """What one :func:`run_trials` call did in this process."""

    completed: int = 0
    failed: int = 0
    aborted: str = ""
    interrupted: bool = False
    consecutive_failures: int = field(default=0, repr=False)


def run_trials(
    study: optuna.Study,
    objective: Callable[[Trial], float | tuple[float, float]],
    *,
    trials: int | None,
    timeout: float | None = None,
    progress: Progress = NO_PROGRESS,
) -> RunStats:
    """Run ``trials`` more trials (or until ``timeout`` seconds) in this process.

    A failing trial is recorded as FAIL, logged as one line (its error is also kept in the
    trial's ``error`` attribute; ``-v`` logs the traceback) and the study goes on; after
    :data:`MAX_CONSECUTIVE_FAILURES` failures in a row the run stops (``aborted`` says why).

    Ctrl-C (SIGINT) is an expected way to end a run, so it prints no traceback either: the
    first lets the running trial finish and then stops, the second stops at once (optuna then
    records the running trial as FAIL). Either way ``interrupted`` is set and every finished
    trial is kept.
    """
    stats = RunStats()
    bar = progress(total=trials, desc="trials", unit="trial")

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        bar.update(1)
        if trial.state == TrialState.COMPLETE:
            stats.completed += 1
            stats.consecutive_failures = 0
            if Evaluation.stored(trial):
                bar.set_postfix_str(f"reward={Evaluation.from_trial(trial).reward:.4f}")
        elif trial.state == TrialState.FAIL:
            stats.failed += 1
            stats.consecutive_failures += 1
            error = trial.user_attrs.get("error", "optuna refused the value it returned")
            logger.warning("trial %d failed: %s", trial.number, error)
            if stats.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                stats.aborted = (
                    f"{stats.consecutive_failures} trials in a row failed, the last with: {error}"
                )
        if stats.interrupted or stats.aborted:
            study.stop()

    with bar, _quiet_optuna_failures(), _stop_on_interrupt(stats):
        try:
            study.optimize(
                objective,
                n_trials=trials,
                timeout=timeout,
                catch=(Exception,),
                callbacks=[after_trial],
            )
        except KeyboardInterrupt:  # the second Ctrl-C; optuna has recorded the trial as FAIL
            stats.interrupted = True
    if stats.interrupted:
        stats.aborted = "interrupted"
    return stats


#: optuna's logger of failed trials; it adds the traceback, which :func:`run_trials` leaves out.
_OPTUNA_TRIAL_LOGGER = "optuna.study._optimize"


@contextmanager
def _quiet_optuna_failures() -> Iterator[None]:
    """Silence optuna's two WARNING lines per failed trial (the first with the traceback):
    :func:`run_trials` logs one line instead."""
    optimize_logger = logging.getLogger(_OPTUNA_TRIAL_LOGGER)
    level = optimize_logger.level
    optimize_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        optimize_logger.setLevel(level)


@contextmanager
def _stop_on_interrupt(stats: RunStats) -> Iterator[None]:
    """While the trials run: the first SIGINT sets ``stats.interrupted`` (the trial callback then
    stops the study), the second raises KeyboardInterrupt. Outside the main thread, where no
    signal handler can be set, Ctrl-C keeps Python's default (KeyboardInterrupt at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if stats.interrupted:
            raise KeyboardInterrupt
        stats.interrupted = True
        logger.warning(
            "interrupted: finishing the running trial, then writing the results; "
            "press Ctrl-C again to stop at once"
        )

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Finished trials that carry the evaluation's attributes."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if Evaluation.stored(t)
    ]


def pareto_front(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials no other trial beats on both score (higher) and tokens (fewer), by tokens."""

    points = {t.number: _point(t) for t in trials}
    front = []
    for t in trials:
        reward, tokens = points[t.number]
        dominated = any(
            r >= reward and p <= tokens and (r > reward or p < tokens) for r, p in points.values()
        )
        if not dominated:
            front.append(t)
    return sorted(front, key=lambda t: (points[t.number][1], -points[t.number][0], t.number))


def _point(trial: FrozenTrial) -> tuple[float, float]:
    """(score R, tokens kept P) of ``trial``."""
    evaluation = Evaluation.from_trial(trial)
    return evaluation.reward, evaluation.penalty


def knee(front: Sequence[FrozenTrial]) -> FrozenTrial:
    """The knee of a Pareto front: the point farthest above the chord joining its two ends.

    With score and tokens each scaled to [0, 1] over the front, the ends are (0, 0) (fewest
    tokens, lowest score) and (1, 1), the chord is ``score = tokens``, and the knee is the point
    with the largest ``score - tokens``: where spending more tokens stops paying. Ties (and
    fronts of one or two points) go to the higher score.
    """
    if not front:
        raise StudyError("the Pareto front is empty: no trial has finished")
    points = [_point(t) for t in front]
    rewards = [reward for reward, _ in points]
    tokens = [penalty for _, penalty in points]

    def scaled(values: Sequence[float], value: float) -> float:
        span = max(values) - min(values)
        return (value - min(values)) / span if span > 0 else 0.0

    def height(i: int) -> tuple[float, float]:
        reward, penalty = points[i]
        return scaled(rewards, reward) - scaled(tokens, penalty), reward

    return front[max(range(len(front)), key=height)]


@dataclass(frozen=True)
class Choice:
    """The trial whose rates are written, and how it was chosen."""

    trial: FrozenTrial
    how: str


def choose_trial(
    study: optuna.Study, *, multi_objective: bool, budget: float | None = None
) -> Choice:
    """The result of a study.

    Single objective: the trial with the highest ``R - lambda * P``. Two objectives: with a
    ``budget`` (fraction of tokens), the best score among Pareto points within it; without, the
    :func:`knee` of the Pareto front.

    Raises:
        StudyError: no trial has finished (or none lies within the budget).
    """
    trials = completed_trials(study)
    if not trials:
        raise StudyError(f"study {study.study_name!r} has no finished trial yet")
    if not multi_objective:
        best = max(trials, key=lambda t: (Evaluation.from_trial(t).objective, -t.number))
        return Choice(best, "highest objective R - lambda * P")
    front = pareto_front(trials)
    if budget is None:
        return Choice(knee(front), "knee of the Pareto front (score and tokens scaled to [0, 1])")
    within = [t for t in front if _point(t)[1] <= budget]
    if not within:
        fewest = _point(front[0])[1]
        raise StudyError(
            f"no finished trial keeps at most {budget:.1%} of the tokens (fewest: {fewest:.1%}); "
            "raise --budget or run more trials"
        )
    best = max(within, key=lambda t: _point(t)[0])
    return Choice(best, f"highest score with at most {budget:.1%} of the tokens")


def trial_rates(trial: FrozenTrial) -> dict[str, float]:
    """The rates of ``trial``, by view (a fixed-token search stores them: its parameters are
    the views' weights, :meth:`~.samplers.SearchSpace.suggest`)."""
    rates = trial.user_attrs.get("rates") or trial.params
    return {view: float(rates[view]) for view in VIEWS}
