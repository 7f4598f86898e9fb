"""Tune per-view retention rates offline with optuna (TPE by default) on validation questions.

Each trial picks one retention rate per camera view, prunes the cached visual tokens of every
validation frame with them, answers the questions with the language model and scores the
answers: ``R - lambda * P`` with ``R`` the local DriveLM score (or, without reference answers,
agreement with the unpruned model) and ``P`` the fraction of visual tokens kept (see
:mod:`prune2drive_ros.tuning.objective`). The vision encoder runs once per frame for the whole
study (:mod:`prune2drive_ros.tuning.features`). The study is stored (default: SQLite in
``--out``), so re-running the command resumes it and several processes on one storage share it
(:mod:`prune2drive_ros.tuning.study`). The result is ``retention_rates.yaml`` for the node and
replay, ``report.md`` and plots in ``--out``; with ``--multi-objective`` also the Pareto front.
They are checked before the model loads (:func:`~prune2drive_ros.files.check_output_file`) and
replaced only with ``--force`` or when the run resumes their study: when ``--out``'s rates file
was written from the same storage, as re-running the same command does, the outputs are
rewritten from all of the study's trials, the earlier ones included, so nothing is lost.
``--rates`` (default: the package's uniform 0.1) and uniform ``--max-rate`` are queued as the
first trials, unless the study has them already.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.storages import BaseStorage

from ..errors import ConfigError, Prune2DriveError
from ..files import check_output_file
from ..sensors.rates_file import load_rates, redact_url, save_rates
from ..tuning.objective import (
    DEFAULT_LAMBDA,
    REFERENCE_SUM_LAMBDA,
    Evaluation,
    EvaluationSetup,
    prepare_evaluation,
)
from ..tuning.ptb import Tokenizer, tokenizer_name
from ..tuning.report import (
    HISTORY_PNG,
    PARETO_FILE,
    RATES_PNG,
    REPORT_FILE,
    TRADE_OFF_PNG,
    ReportContext,
    rates_front,
    write_pareto_front,
    write_report,
)
from ..tuning.samplers import (
    DEFAULT_GRID_STEPS,
    DEFAULT_MAX_RATE,
    DEFAULT_MIN_RATE,
    SAMPLERS,
    SearchSpace,
    make_sampler,
    sampler_name,
)
from ..tuning.scoring import ScoringRules
from ..tuning.sources import ValidationSet
from ..tuning.study import (
    DEFAULT_HEARTBEAT_S,
    OBJECTIVE_VERSION,
    Choice,
    RunStats,
    choose_trial,
    completed_trials,
    default_storage,
    enqueue_starts,
    make_objective,
    make_storage,
    open_study,
    run_trials,
    study_name,
    trial_rates,
)
from ..views import VIEWS
from .argtypes import at_least, non_negative_float, positive_float, retention_rate
from .bench import emit_json
from .options import (
    add_data_arguments,
    add_engine_arguments,
    add_evaluation_arguments,
    check_questions,
    choose_scoring,
    engine_config,
    input_files,
    open_validation_set,
)
from .progress import progress_from

if TYPE_CHECKING:
    from ..engine import Engine

logger = logging.getLogger(__name__)

DEFAULT_OUT = "tuning-out"
DEFAULT_TRIALS = 100
RATES_FILE = "retention_rates.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive tune``."""
    add_data_arguments(parser)
    add_engine_arguments(parser)
    add_evaluation_arguments(parser)
    search = parser.add_argument_group("search")
    search.add_argument(
        "--lambda",
        dest="lam",
        type=non_negative_float,
        default=DEFAULT_LAMBDA,
        help=f"token cost per unit of mean retention (default {DEFAULT_LAMBDA:g} = "
        f"{REFERENCE_SUM_LAMBDA:g} per unit of the summed six rates, the reference's)",
    )
    search.add_argument(
        "--min-rate",
        type=retention_rate,
        default=DEFAULT_MIN_RATE,
        help="lowest rate (%(default)s)",
    )
    search.add_argument(
        "--max-rate",
        type=retention_rate,
        default=DEFAULT_MAX_RATE,
        help="highest rate (%(default)s)",
    )
    search.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=None,
        help="optuna sampler (default tpe; nsga2 with --multi-objective)",
    )
    search.add_argument(
        "--sampler-seed",
        type=int,
        default=None,
        help="seed of the sampler (default --seed); give each worker sharing a study its own, "
        "or they draw the same start-up points",
    )
    search.add_argument(
        "--grid-steps",
        type=int,
        default=DEFAULT_GRID_STEPS,
        help="values per view of the grid sampler (%(default)s)",
    )
    search.add_argument(
        "--multi-objective",
        action="store_true",
        help="optimise (score, tokens) as two objectives and write the Pareto front",
    )
    search.add_argument(
        "--budget",
        type=retention_rate,
        default=None,
        help="with --multi-objective: write the best-scoring Pareto point keeping at most this "
        "fraction of tokens (default: the knee of the front)",
    )
    search.add_argument(
        "--tokens",
        type=at_least(6),
        default=None,
        help="search how a fixed total of N visual tokens per frame set is shared among the six "
        "views (each at least one) instead of rates against their cost, as a deadline fixes N "
        "(--lambda and --min-rate/--max-rate then play no part)",
    )
    search.add_argument(
        "--trials",
        type=at_least(0),
        default=DEFAULT_TRIALS,
        help="trials to add in this run (%(default)s)",
    )
    search.add_argument(
        "--timeout", type=positive_float, default=None, help="stop after this many seconds"
    )
    study = parser.add_argument_group("study")
    study.add_argument(
        "--storage",
        default=None,
        help="optuna storage: sqlite:///FILE.db, postgresql://USER@HOST/DB, or journal:FILE "
        "(default: sqlite:///OUT/prune2drive_tuning.db)",
    )
    study.add_argument(
        "--study-name",
        default=None,
        help="default: named after model, data, reward, lambda (the same settings resume)",
    )
    study.add_argument(
        "--heartbeat",
        type=at_least(0),
        default=DEFAULT_HEARTBEAT_S,
        help="seconds between heartbeats of a running trial on RDB storages; a trial silent for "
        "twice that is failed and retried (0: off; default %(default)s)",
    )
    study.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help="output folder (%(default)s)"
    )
    study.add_argument(
        "--force",
        action="store_true",
        help="replace the outputs in --out of another study (those of this study's storage are "
        "rewritten without it: re-running resumes the study)",
    )
    study.add_argument("--json", action="store_true", help="print a JSON summary as last line")


def run(args: argparse.Namespace) -> int:
    """``prune2drive tune``: 0 when rates were written, 1 when the run was cut short.

    What can be checked cheaply is checked first: the flags, the sampler, the storage, the
    validation data and the reward before the model loads, the stored study's settings before
    any frame is encoded.
    """
    if args.budget is not None and not args.multi_objective:
        raise ConfigError("--budget goes with --multi-objective; add it or leave --budget out")
    space = SearchSpace(args.min_rate, args.max_rate, args.grid_steps, tokens=args.tokens)
    sampler = sampler_name(args.sampler, multi_objective=args.multi_objective, tokens=args.tokens)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = args.storage or default_storage(args.out)
    storage = make_storage(url, heartbeat_s=args.heartbeat)
    config = engine_config(args)
    _check_outputs(args, url)
    with open_validation_set(args, config) as data:
        print(data.summary())
        check_questions(((sample.id, sample.question) for sample in data.samples), config)
        reward, tokenizer, rules = choose_scoring(args, data)
        from ..engine import Engine  # torch: only once everything above is checked
        from ..vlm import RANDOM_WEIGHTS_NOTE

        engine = Engine.from_config(config)
        space = space.bind(engine.vlm.view_tokens)
        if engine.vlm.random_weights:
            print(f"NOTE: {RANDOM_WEIGHTS_NOTE}; the scores only show that the machinery works")
        study = _open_study(
            args, storage, engine, data, reward[0], tokenizer, rules, space, sampler
        )
        print(f"study {study.study_name} in {redact_url(url)}: {len(study.trials)} trials so far")
        setup = prepare_evaluation(
            engine,
            data,
            reward,
            tokenizer=tokenizer,
            rules=rules,
            lam=args.lam,
            cache_dir=args.cache_dir,
            seed=args.seed,
            progress=progress_from(args),
        )
        print(
            f"vision encoder calls: {setup.features.encoder_calls} for {len(data.frames)} frames "
            f"(the others were cached in {setup.features.folder})"
        )
        unpruned = setup.evaluator.evaluate(1.0)
        print("unpruned model on this data:\n" + unpruned.describe())
        return _search(args, engine, setup, study, url, space, unpruned)


def _check_outputs(args: argparse.Namespace, url: str) -> None:
    """Create ``--out`` and check the files this run will write there, before the model loads.

    A folder whose rates file was written from the storage ``url`` is this study's: the run
    resumes it and rewrites its outputs from all its trials, so they are replaced without
    ``--force``.

    Raises:
        ConfigError: ``--out`` is a file or cannot be created, or an output fails
            :func:`~prune2drive_ros.files.check_output_file`.
    """
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; tune writes a folder there: name a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create --out {out}: {exc.strerror or exc}") from exc
    names = [RATES_FILE, REPORT_FILE, HISTORY_PNG, RATES_PNG, TRADE_OFF_PNG]
    if args.multi_objective:
        names.append(PARETO_FILE)
    force = args.force or _written_from(out / RATES_FILE, url)
    for name in names:
        check_output_file(out / name, force=force, inputs=input_files(args))


def _written_from(rates_file: Path, url: str) -> bool:
    """Whether ``rates_file`` is a rates file tune wrote from a study in the storage ``url``."""
    if not rates_file.is_file():
        return False
    try:
        return load_rates(rates_file).meta.get("storage") == redact_url(url)
    except Prune2DriveError:  # not a rates file tune wrote: not this study's outputs
        return False


def _open_study(
    args: argparse.Namespace,
    storage: BaseStorage,
    engine: Engine,
    data: ValidationSet,
    reward: str,
    tokenizer: Tokenizer | None,
    rules: ScoringRules,
    space: SearchSpace,
    sampler: str,
) -> optuna.Study:
    """The study of these settings: created, resumed, or refused when stored with others."""
    from ..tuning.features import model_content_key  # torch, loaded with the model already

    multi, vlm = args.multi_objective, engine.vlm
    settings = {
        "version": OBJECTIVE_VERSION,
        "model": model_content_key(vlm),
        "data": data.identity,
        "reward": reward,
        # A worker with Java and one without score language differently: not one objective.
        "tokenizer": tokenizer_name(tokenizer),
        # The drivelm reward's rules change its value; fidelity uses neither.
        **(
            {
                "accuracy": rules.accuracy,
                "challenge_filter": rules.challenge_filter,
                "untagged": rules.untagged,
            }
            if reward == "drivelm"
            else {}
        ),
        "lambda": _study_lambda(args),
        "multi_objective": multi,
        "pruner": engine.pruner,
        "min_rate": space.low,
        "max_rate": space.high,
        "tokens": space.tokens,
        "max_new_tokens": engine.max_new_tokens,
    }
    name = args.study_name or study_name(settings, family=vlm.family)
    seed = args.seed if args.sampler_seed is None else args.sampler_seed
    return open_study(
        storage,
        name,
        settings,
        lambda existing: make_sampler(sampler, space, seed=seed + existing, multi_objective=multi),
    )


def _search(
    args: argparse.Namespace,
    engine: Engine,
    setup: EvaluationSetup,
    study: optuna.Study,
    url: str,
    space: SearchSpace,
    unpruned: Evaluation,
) -> int:
    """Run the trials, write the results; the exit status."""
    multi = args.multi_objective
    grid = args.sampler == "grid"
    starts = [engine.rates, dict.fromkeys(VIEWS, space.high)]
    enqueue_starts(study, [space.start_point(rates, grid=grid) for rates in starts])
    objective = make_objective(setup.evaluator, space, multi_objective=multi)
    begin = time.perf_counter()
    stats = run_trials(
        study, objective, trials=args.trials, timeout=args.timeout, progress=progress_from(args)
    )
    outcome = Outcome(
        name=study.study_name,
        url=url,
        study=study,
        choice=choose_trial(study, multi_objective=multi, budget=args.budget),
        stats=stats,
        seconds=time.perf_counter() - begin,
        unpruned=unpruned,
    )
    rates_path = _write_outputs(args, engine, setup, outcome)
    _print_summary(args, setup, outcome, rates_path)
    if stats.aborted:
        logger.error("the run stopped early: %s", stats.aborted)
        return 130 if stats.interrupted else 1
    return 0


def _study_lambda(args: argparse.Namespace) -> float | None:
    """``lambda`` of the objective; None for two objectives (score, tokens), which have none."""
    return None if args.multi_objective else args.lam


@dataclass(frozen=True)
class Outcome:
    """What a run of the study ended with."""

    name: str
    url: str
    study: optuna.Study
    choice: Choice
    stats: RunStats
    seconds: float
    unpruned: Evaluation


def _write_outputs(
    args: argparse.Namespace, engine: Engine, setup: EvaluationSetup, outcome: Outcome
) -> Path:
    """retention_rates.yaml, the Pareto front (two objectives), report.md and plots."""
    vlm, out, study, choice = engine.vlm, Path(args.out), outcome.study, outcome.choice
    trial = choice.trial
    chosen = Evaluation.from_trial(trial)
    budgets = list(chosen.budgets)
    note = f"{setup.reward} reward on {setup.data.summary()}; chosen as the {choice.how}"
    if setup.reward == "drivelm":
        note += f"; {setup.evaluator.rules.describe()}"
    if engine.pruner == "tfps_shared":
        note += "; searched as the priors of tfps_shared: serve them with pruner tfps_shared"
    if vlm.random_weights:
        from ..vlm import RANDOM_WEIGHTS_NOTE

        note += f"; {RANDOM_WEIGHTS_NOTE}"
    rates_path = out / RATES_FILE
    save_rates(
        rates_path,
        trial_rates(trial),
        front=rates_front(study),
        study=outcome.name,
        storage=outcome.url,
        score=None if args.multi_objective else chosen.objective,
        tokens_kept={"total": sum(budgets), "per_view": dict(zip(VIEWS, budgets, strict=True))},
        tokens_full=sum(vlm.view_tokens),
        trials=len(completed_trials(study)),
        model=vlm.name,
        reward=chosen.reward,
        lambda_=_study_lambda(args),
        note=note,
    )
    if args.multi_objective:
        write_pareto_front(out, study)
    write_report(
        out,
        ReportContext(
            study=study,
            choice=choice,
            reward=setup.reward,
            reward_reason=setup.reward_reason,
            lam=_study_lambda(args),
            storage=redact_url(outcome.url),
            model=vlm.name,
            random_weights=vlm.random_weights,
            view_tokens=vlm.view_tokens,
            data=setup.data.summary(),
            unpruned=outcome.unpruned,
            encoder_calls=setup.features.encoder_calls,
            rates_file=rates_path.resolve(),
            command=["prune2drive", *sys.argv[1:]],
        ),
    )
    return rates_path


def _print_summary(
    args: argparse.Namespace, setup: EvaluationSetup, outcome: Outcome, rates_path: Path
) -> None:
    """What this run did and chose, for people (and as JSON with ``--json``)."""
    stats, seconds, choice = outcome.stats, outcome.seconds, outcome.choice
    finished = len(completed_trials(outcome.study))
    ran = stats.completed + stats.failed
    per_trial = seconds / ran if ran else float("nan")
    per_minute = 60 * ran / seconds if ran and seconds > 0 else float("nan")
    trial = choice.trial
    chosen = Evaluation.from_trial(trial)
    rates = trial_rates(trial)
    print(
        f"\nthis run: {stats.completed} trials finished, {stats.failed} failed in {seconds:.1f} s "
        f"({per_minute:.2f} trials/min, {per_trial:.2f} s per trial); the study has "
        f"{finished} finished trials"
    )
    objective = None if args.multi_objective else chosen.objective
    print(
        f"chosen: trial {trial.number} ({choice.how}): R = {chosen.reward:.4f}, "
        f"P = {chosen.penalty:.4f}"
        + ("" if objective is None else f", objective = {objective:.4f}")
        + f" (unpruned R = {outcome.unpruned.reward:.4f})"
    )
    print("rates: " + ", ".join(f"{view}={rate:.3f}" for view, rate in rates.items()))
    print(f"wrote {rates_path} and {Path(args.out) / REPORT_FILE} with plots")
    if args.json:
        emit_json(
            {
                "study": outcome.name,
                "storage": redact_url(outcome.url),
                "completed_this_run": stats.completed,
                "failed_this_run": stats.failed,
                "study_completed": finished,
                "seconds": seconds,
                "trials_per_minute": per_minute,
                "seconds_per_trial": per_trial,
                "samples": len(setup.data.samples),
                "frames": len(setup.data.frames),
                "encoder_calls": setup.features.encoder_calls,
                "reward": setup.reward,
                "tokenizer": tokenizer_name(setup.tokenizer),
                "lambda": _study_lambda(args),
                "chosen_trial": trial.number,
                "rates": rates,
                "score": chosen.reward,
                "tokens": chosen.penalty,
                "objective": objective,
                "unpruned_score": outcome.unpruned.reward,
                "rates_file": str(rates_path),
            }
        )
