"""Score retention rates with every pruner and without pruning on validation questions.

The rates (``--rates`` file, default the package's; ``--uniform R [R ...]``, e.g. ``0.05 0.1
0.25 0.5`` for the paper's table; or ``--no-pruning``) are applied with each pruner of
:data:`~prune2drive_ros.pruning.PRUNERS` at the same per-view token budgets, and the unpruned
model is the reference row ("none"). Where the questions have reference answers the table also
gives exact-match accuracy (the answer string equals the reference) over all questions and, when
the questions file names their kinds (synthetic bags do), per kind. Per method the table gives the
visual tokens per image (mean over the six views), the score (the local DriveLM score with its
accuracy, language and match parts, or fidelity to the unpruned answers; see
:mod:`prune2drive_ros.tuning.objective`), the language-model prefill time and its speedup over
the unpruned prefill (medians over frames, the methods timed in turns on the same cached tokens
in this run), and the share of prefill FLOPs (analytic, :mod:`prune2drive_ros.vlm.flops`, on the
same prompts). Match is the coordinate F1 x100, as the challenge prints it. Under the table the
weighting of the score is spelled out, with the tokenizer of its language metrics. The vision
encoder runs only for frames missing from the feature cache that ``tune`` shares.

DriveLM answers are scored by the challenge's rules unless told otherwise
(:class:`~prune2drive_ros.tuning.scoring.ScoringRules`): accuracy is exact string equality
(``--accuracy extract`` reads the option out of free text instead; the accuracy column names
the mode), and a later question of a key frame counts only when the frame's first answer found
the objects it names (:func:`~prune2drive_ros.tuning.scoring.challenge_keep`;
``--no-challenge-filter`` scores all). As on the challenge server, each method is then scored
on the questions its own first answers located: the ``filtered`` column counts the others.
``--samples`` draws whole key frames for that filter (:func:`~prune2drive_ros.tuning.drivelm.
draw_frames`). Without the GPT parts the number is not the challenge's final score.

``--quantizations none int8 int4`` scores the model with each weight-only quantisation of its
language model side by side (:mod:`~prune2drive_ros.vlm.quantization`), loading it once per
scheme: every row names its scheme, each scheme has its own unpruned row (the first scheme's is
the reference of the noise marks), and a second table gives each scheme's weight memory and the
unpruned prefill and decoding times (decoding: milliseconds per new token over a fixed answer
length, medians over the timing frames). The visual tokens are shared: the vision tower is
never quantised.

``--save-predictions output.json`` writes the answers of the first row (the config's pruner at
the rates; unpruned with ``--no-pruning``) in the challenge's prediction format, the file its
``prepare_submission.py`` wraps for the test server (a question-only file such as
``v1_1_val_nus_q_only.json`` is scored by fidelity meanwhile). ``--score-predictions
output.json --drivelm FILE.json`` scores such a file against a DriveLM file with reference
answers, without a model or images.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DriveVLMConfig, resolve_rates_file
from ..errors import ConfigError, QuestionError
from ..placement import ATTENTION_PRUNERS, decoder_placement_needed, prune_layer
from ..pruning.budget import Rates, validate_rates
from ..pruning.registry import PRUNERS
from ..quantization import NO_QUANTIZATION, QUANTIZATIONS
from ..sensors.rates_file import load_rates
from ..tuning.drivelm import (
    Prediction,
    load_drivelm,
    match_predictions,
    read_predictions,
    score_drivelm,
    write_predictions,
)
from ..tuning.ptb import language_tokenizer, tokenizer_name
from ..tuning.scoring import BY_ANSWER, NOT_SCORED, ScoringRules
from ..tuning.sources import Sample, ValidationSet
from ..tuning.spread import NOISE_RULE, Accuracy, within_noise
from .argtypes import at_least
from .bench import device_name, emit_json, median, time_interleaved
from .options import (
    add_data_arguments,
    add_engine_arguments,
    add_evaluation_arguments,
    check_output,
    check_questions,
    choose_scoring,
    engine_config,
    open_validation_set,
)
from .progress import progress_from

if TYPE_CHECKING:
    from ..pruning.selection import Selection
    from ..tuning.objective import Evaluation, EvaluationSetup
    from ..tuning.ptb import Tokenizer
    from ..vlm import DrivingVLM

logger = logging.getLogger(__name__)

UNPRUNED = "none"
DEFAULT_TIMING_FRAMES = 8
DEFAULT_REPEATS = 3
#: New tokens per timed answer when decoding is timed (stop tokens ignored).
DECODE_TIMING_TOKENS = 16


@dataclass(frozen=True)
class Row:
    """One method's line of the table, at one placement and retention (``rate``: "10 %",
    "rates", or "-" for the unpruned reference)."""

    method: str
    placement: str
    rate: str
    tokens_per_view: float
    #: fewest and most tokens a view kept on a frame, and the mean per-view deviation across
    #: frames (they move only when the views share their budget, ``tfps_shared``).
    kept_min: int
    kept_max: int
    kept_sd: float
    score: float
    parts: dict[str, float | None]
    prefill_ms: float
    speedup: float
    flops_share: float
    answered: int
    skipped: int
    filtered: int
    #: exact-match accuracy overall ("all") and per kind, with the answers right, the questions
    #: scored and the binomial standard error sqrt(p(1-p)/n) of each
    exact: dict[str, float]
    exact_right: dict[str, int]
    exact_n: dict[str, int]
    exact_se: dict[str, float]
    #: the language model's weight-only quantisation (:data:`~prune2drive_ros.quantization.
    #: QUANTIZATIONS`)
    quantization: str = NO_QUANTIZATION


@dataclass(frozen=True)
class ModelRow:
    """One quantisation's line of the model table: its weights as stored, and the unpruned
    model's prefill and per-token decoding times (milliseconds, medians over frames)."""

    quantization: str
    method: str
    language_model_bytes: int
    model_bytes: int
    prefill_ms: float
    decode_ms_per_token: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive eval``."""
    add_data_arguments(parser)
    add_engine_arguments(parser)
    add_evaluation_arguments(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--uniform",
        type=float,
        nargs="+",
        default=None,
        metavar="R",
        help="score these rates for every view (one row per pruner and rate), not --rates",
    )
    mode.add_argument("--no-pruning", action="store_true", help="score only the unpruned model")
    parser.add_argument(
        "--timing-frames",
        type=at_least(1),
        default=DEFAULT_TIMING_FRAMES,
        help="frames the prefill is timed on (%(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=at_least(1),
        default=DEFAULT_REPEATS,
        help="timed prefills per method and frame, after one warm-up (%(default)s)",
    )
    parser.add_argument(
        "--placements",
        nargs="+",
        metavar="P",
        help="score these placements side by side (e.g. projector layer:2; FastV joins at "
        "layer:K), each with every pruner; default the --placement of the config",
    )
    parser.add_argument(
        "--pruners",
        nargs="+",
        choices=list(PRUNERS),
        metavar="NAME",
        help="score only these pruners (default: every one that can run where the model "
        "prunes, the config's first): " + ", ".join(PRUNERS),
    )
    parser.add_argument(
        "--quantizations",
        nargs="+",
        choices=QUANTIZATIONS,
        metavar="Q",
        help="score the model with each of these weight-only quantisations of its language "
        "model side by side (" + ", ".join(QUANTIZATIONS) + "; loaded once each), with their "
        "weight memory and prefill and decoding times; default the --quantization of the config",
    )
    parser.add_argument("--json", action="store_true", help="print the table as JSON last")
    files = parser.add_argument_group("DriveLM challenge prediction files (output.json)")
    given = files.add_mutually_exclusive_group()
    given.add_argument(
        "--save-predictions",
        metavar="FILE",
        help="write the first row's answers as the challenge's output.json (list of id, "
        "question, answer), for its prepare_submission.py; needs --drivelm",
    )
    given.add_argument(
        "--score-predictions",
        metavar="FILE",
        help="score this output.json against the --drivelm file's reference answers, without "
        "a model or images (--nuscenes-root, --samples and the model flags are not used)",
    )
    files.add_argument(
        "--force", action="store_true", help="replace an existing --save-predictions"
    )


def run(args: argparse.Namespace) -> int:
    """``prune2drive eval``: 0, or 1 when some questions had to be skipped (or, with
    ``--score-predictions``, had no answer)."""
    if args.score_predictions:
        return score_predictions_file(args)
    config = engine_config(args)
    # Rates, data, reward and output are checked before the model loads: a mistake costs a second.
    placements = list(dict.fromkeys(args.placements or [config.placement]))
    quantizations = list(dict.fromkeys(args.quantizations or [config.quantization]))
    layers = [prune_layer(p) for p in placements]  # a typo fails here, before the model loads
    # A pruner asked for by name that no placement can run would leave only the unpruned row.
    for pruner in args.pruners or ():
        if pruner in ATTENTION_PRUNERS and max(layers) == 0:
            raise decoder_placement_needed(pruner, "--placements layer:K")
    scored: dict[str, Rates] = {}  # label -> rates; empty: --no-pruning
    if args.uniform is not None:
        scored = {f"{100 * r:g} %": validate_rates(r) for r in dict.fromkeys(args.uniform)}
    elif not args.no_pruning:
        scored = {"rates": load_rates(resolve_rates_file(config)).rates}
    save = None
    if args.save_predictions:
        if not args.drivelm:
            raise ConfigError(
                "--save-predictions writes the DriveLM challenge's output.json, whose ids name "
                "DriveLM questions: give the questions with --drivelm FILE.json --nuscenes-root DIR"
            )
        save = check_output(args, args.save_predictions)
    with open_validation_set(args, config) as data:
        print(data.summary())
        check_questions(((sample.id, sample.question) for sample in data.samples), config)
        reward, tokenizer, rules = choose_scoring(args, data)
        # the rates scored are the ones logged: --uniform and --no-pruning leave the file unread
        logger.info("retention rates: %s", rates_used(scored, config, uniform=args.uniform))
        from ..devices import release_memory  # torch: once everything above is checked

        runs: list[SchemeRun] = []
        for quantization in quantizations:  # one scheme's model in memory at a time
            runs.append(
                _score_scheme(
                    args,
                    replace(config, quantization=quantization),
                    data,
                    reward,
                    tokenizer,
                    rules,
                    scored,
                    placements,
                    first=not runs,
                )
            )
            release_memory()  # the scheme's model, before the next one loads
    rows = [row for run in runs for row in run.rows]
    models = [run.model for run in runs]
    first = runs[0]
    shown = rows[0].method
    reward_name = reward[0]
    drivelm_rules = rules if reward_name == "drivelm" else None
    print(table_text(rows, reward_name, drivelm_rules))
    print(f"FLOPs share: analytic LM prefill FLOPs; device: {first.device}")
    if len(models) > 1 or models[0].quantization != NO_QUANTIZATION:
        print("\n" + models_text(models))
    print(f"\nscore of {shown}, and how each row's score is made up:")
    print(first.shown.describe())
    if save is not None:
        _save_predictions(save, data, first.shown, shown, drivelm=args.drivelm)
    if args.json:
        emit_json(
            {
                "reward": reward_name,
                "tokenizer": tokenizer_name(tokenizer),
                "accuracy_mode": None if drivelm_rules is None else drivelm_rules.accuracy,
                "challenge_filter": None
                if drivelm_rules is None
                else drivelm_rules.challenge_filter,
                "predictions_file": None if save is None else str(save),
                "rates": scored,
                "samples": len(data.samples),
                "frames": len(data.frames),
                "encoder_calls": sum(run.encoder_calls for run in runs),
                "device": first.device,
                "model": first.name,
                "random_weights": first.random_weights,
                "rows": [asdict(row) for row in rows],
                "models": [asdict(model) for model in models],
            }
        )
    return 1 if any(row.skipped for row in rows) else 0


@dataclass(frozen=True)
class SchemeRun:
    """What scoring the model under one quantisation gave (its model is dropped by then)."""

    rows: list[Row]
    model: ModelRow
    #: the first row's evaluation (the unpruned one with --no-pruning): shown and saved
    shown: Evaluation
    encoder_calls: int
    device: str
    name: str
    random_weights: bool


def _score_scheme(
    args: argparse.Namespace,
    config: DriveVLMConfig,
    data: ValidationSet,
    reward: tuple[str, str],
    tokenizer: Tokenizer | None,
    rules: ScoringRules,
    scored: Mapping[str, Rates],
    placements: Sequence[str],
    *,
    first: bool,
) -> SchemeRun:
    """Load the model with ``config.quantization`` and score every placement, pruner and rate,
    with its unpruned reference row, weights and timings."""
    from ..engine import Engine  # torch: only once everything the command checks is checked
    from ..tuning.objective import prepare_evaluation
    from ..vlm.quantization import weight_bytes

    vlm = Engine.from_config(config, rates_file=False).vlm
    if vlm.random_weights and first:
        from ..vlm import RANDOM_WEIGHTS_NOTE

        print(f"NOTE: {RANDOM_WEIGHTS_NOTE}; the scores only show that the machinery works")
    scheme = vlm.quantization.scheme
    shown: Evaluation | None = None
    rows: list[Row] = []
    encoder_calls = 0
    for placement in placements:
        placed = vlm if placement == config.placement else vlm.placed(placement)
        engine = Engine(placed, None, pruner=config.pruner, max_new_tokens=config.max_new_tokens)
        setup = prepare_evaluation(
            engine,
            data,
            reward,
            tokenizer=tokenizer,
            rules=rules,
            cache_dir=args.cache_dir,
            seed=args.seed,
            progress=progress_from(args),
        )
        encoder_calls += setup.features.encoder_calls
        methods = _methods(config.pruner, placed, args.pruners) if scored else []
        unpruned = setup.evaluator.evaluate(1.0)
        baseline = float("nan")
        for label, rates in (scored or {"-": 1.0}).items():
            evaluations = {m: setup.evaluator.evaluate(rates, pruner=m) for m in methods}
            shown = shown or (evaluations[methods[0]] if methods else None)
            timings = prefill_timings(
                placed,
                setup,
                placed.budgets(rates),
                methods,
                frames=args.timing_frames,
                repeats=args.repeats,
            )
            baseline = timings[UNPRUNED][0]
            rows += [
                _row(m, placement, label, evaluations[m], data, *timings[m], baseline, scheme)
                for m in methods
            ]
    # the unpruned model is the same at every placement: one reference row
    rows.append(_row(UNPRUNED, "-", "-", unpruned, data, baseline, 1.0, baseline, scheme))
    return SchemeRun(
        rows=rows,
        model=ModelRow(
            quantization=scheme,
            method=vlm.quantization.text(),
            language_model_bytes=vlm.quantization.language_model_bytes,
            model_bytes=weight_bytes(vlm.model),
            prefill_ms=baseline,
            decode_ms_per_token=decode_timing(vlm, setup, frames=args.timing_frames),
        ),
        shown=shown or unpruned,
        encoder_calls=encoder_calls,
        device=device_name(vlm.device),
        name=vlm.name,
        random_weights=vlm.random_weights,
    )


def rates_used(
    scored: Mapping[str, Rates], config: DriveVLMConfig, *, uniform: Sequence[float] | None
) -> str:
    """What eval scores, for its log: the uniform rates, the rates file, or no pruning."""
    if not scored:
        return "none (--no-pruning: the unpruned model only)"
    if uniform is not None:
        return f"uniform {', '.join(scored)} on every view (--uniform; no rates file is read)"
    rates = scored["rates"]
    shown = rates if isinstance(rates, float) else ", ".join(f"{k}={v:g}" for k, v in rates.items())
    return f"from {resolve_rates_file(config)}: {shown}"


def _save_predictions(
    path: Path, data: ValidationSet, evaluation: Evaluation, method: str, *, drivelm: str
) -> None:
    """Write ``evaluation``'s answers as the challenge's output.json and say whether it answers
    every question of the DriveLM file, as the test server needs."""
    answers = evaluation.answers
    written = write_predictions(
        path,
        (Prediction(s.id, s.question, answers[s.id]) for s in data.samples if s.id in answers),
    )
    asked = len(load_drivelm(drivelm, ".", check_images=False))
    print(
        f"\nwrote {written} answers of {method} to {path}, for {asked} questions in {drivelm} "
        "(the DriveLM challenge's output.json; challenge/prepare_submission.py wraps it for "
        "the test server)"
    )
    if written < len(data.samples):
        print(f"WARNING: {len(data.samples) - written} questions failed and have no answer")
    if len(data.samples) < asked:
        print(
            f"NOTE: --samples {len(data.samples)} left {asked - len(data.samples)} questions out; "
            f"the test server looks up every question of its file: give --samples {asked}"
        )


def score_predictions_file(args: argparse.Namespace) -> int:
    """``eval --score-predictions``: score a prediction file against a DriveLM file, as the
    challenge's evaluation.py would locally (no GPT parts); 1 when some questions have no
    answer in the file.

    Raises:
        ConfigError: no ``--drivelm`` file, or flags that need a model (``--bag``,
            ``--reward fidelity``).
        QuestionError: unreadable files, no reference answers, or no question answered.
    """
    if not args.drivelm or args.bag or args.questions:
        raise ConfigError(
            "--score-predictions scores against a DriveLM file: give --drivelm FILE.json (with "
            "reference answers) and leave out --bag and --questions"
        )
    if args.reward == "fidelity":
        raise ConfigError(
            "--score-predictions compares with reference answers (the drivelm reward); "
            "fidelity needs the unpruned model's answers: run eval without --score-predictions"
        )
    rules = ScoringRules(
        args.accuracy,
        challenge_filter=not args.no_challenge_filter,
        untagged=BY_ANSWER if args.untagged_by_answer else NOT_SCORED,
    )
    tokenizer = language_tokenizer(args.tokenizer)
    items = load_drivelm(args.drivelm, args.nuscenes_root or ".", check_images=False)
    coverage = match_predictions(items, read_predictions(args.score_predictions))
    if not coverage.items:
        raise QuestionError(
            f"{args.score_predictions} answers none of the {len(items)} questions of "
            f"{args.drivelm} (the ids differ; the challenge's are <scene>_<frame>_<index>, e.g. "
            f"{items[0].id}): was it written for another DriveLM file?"
        )
    print(
        f"{args.score_predictions}: answers {len(coverage.items)} of the {len(items)} questions "
        f"of {args.drivelm}"
    )
    if coverage.missing:
        print(
            f"WARNING: {len(coverage.missing)} questions have no answer (first: "
            f"{coverage.missing[0]}); scored the others. The challenge's evaluation.py needs "
            "an answer to every question (it stops with a KeyError)"
        )
    if coverage.unknown:
        print(
            f"NOTE: {len(coverage.unknown)} answers are to questions {args.drivelm} does not ask "
            f"(first: {coverage.unknown[0]}); left out"
        )
    score = score_drivelm(coverage.items, coverage.predictions, rules=rules, tokenizer=tokenizer)
    print(score.describe())
    if args.json:
        emit_json(
            {
                **score.as_dict(),
                "predictions": str(args.score_predictions),
                "drivelm": str(args.drivelm),
                "answered": len(coverage.items),
                "missing": len(coverage.missing),
                "unknown": len(coverage.unknown),
            }
        )
    return 1 if coverage.missing else 0


def prefill_timings(
    vlm: DrivingVLM,
    setup: EvaluationSetup,
    budgets: Sequence[int],
    methods: Sequence[str],
    *,
    frames: int,
    repeats: int,
) -> dict[str, tuple[float, float]]:
    """Median prefill ms and mean FLOPs share per method (and ``none``) over ``frames`` frames.

    The prompt is the frame's first question; on each frame the methods take turns run by run
    (:func:`~.bench.time_interleaved`), so load from elsewhere slows all alike. A prefill is
    what an answer's is: the prefix pruned where the model prunes (at ``layer:K`` its first K
    layers on every token), then the question; the pruner itself is not timed here.
    """
    from ..vlm.flops import DecoderShape, flops_ratio

    names = [*methods, UNPRUNED]
    times: dict[str, list[float]] = {name: [] for name in names}
    shares: dict[str, list[float]] = {name: [] for name in names}
    shape = DecoderShape.from_config(vlm.model.config)
    engine, seed = setup.evaluator.engine, setup.evaluator.seed
    for frame, group in setup.data.by_frame()[:frames]:
        try:
            visual = setup.features.visual(frame)
            question = group[0].question
            kept: dict[str, Selection | None] = {UNPRUNED: None}
            for method in methods:
                kept[method] = engine.selection(visual, budgets=budgets, pruner=method, seed=seed)
            lengths = {
                name: vlm.prefill_question(visual, kept[name], question)[1] for name in names
            }
        except Exception as exc:  # a bad frame is left out of the timing, not fatal
            logger.warning("prefill of %s not timed: %s", frame.label, exc)
            continue
        runs = time_interleaved(
            {name: partial(vlm.prefill_question, visual, kept[name], question) for name in names},
            warmup=1,
            repeats=repeats,
            device=vlm.device,
        )
        for name in names:
            times[name].append(median(runs[name]))
            share = flops_ratio(shape, lengths[name], lengths[UNPRUNED], at=vlm.prune_layer)
            shares[name].append(share)
    if not times[UNPRUNED]:
        raise ConfigError("no frame could be timed; see the warnings above")
    return {name: (median(times[name]), statistics.fmean(shares[name])) for name in names}


def decode_timing(
    vlm: DrivingVLM, setup: EvaluationSetup, *, frames: int, tokens: int = DECODE_TIMING_TOKENS
) -> float:
    """Median milliseconds per new token of unpruned greedy decoding over ``frames`` frames:
    each frame's first question answered with exactly ``tokens`` new tokens after a warm-up
    (the first token comes from the prefill; the other ``tokens - 1`` are the decoding steps).
    """
    per_token: list[float] = []
    for frame, group in setup.data.by_frame()[:frames]:
        try:
            visual = setup.features.visual(frame)
            answer = partial(vlm.generate, visual, None, [group[0].question], max_new_tokens=tokens)
            answer(fixed_length=True)  # warm-up
            _, timings = answer(fixed_length=True)
        except Exception as exc:  # a bad frame is left out of the timing, not fatal
            logger.warning("decoding of %s not timed: %s", frame.label, exc)
            continue
        per_token.append(timings.generate / (tokens - 1))
    return median(per_token) if per_token else float("nan")


def models_text(models: Sequence[ModelRow]) -> str:
    """The model table: each quantisation's weights as stored and its unpruned timings."""
    header = ["quantization", "LM weights MB", "model weights MB", "prefill ms", "decode ms/token"]
    lines = [header] + [
        [
            model.method,
            f"{model.language_model_bytes / 1e6:.1f}",
            f"{model.model_bytes / 1e6:.1f}",
            f"{model.prefill_ms:.2f}",
            f"{model.decode_ms_per_token:.2f}",
        ]
        for model in models
    ]
    note = (
        "LM weights: the language model's as stored (embeddings in; LM head out); prefill and "
        f"decoding unpruned, decoding over {DECODE_TIMING_TOKENS} new tokens"
    )
    return _aligned(lines) + "\n" + note


def _aligned(lines: Sequence[Sequence[str]]) -> str:
    """Rows of cells as columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def _methods(pruner: str, vlm: DrivingVLM, chosen: Sequence[str] | None = None) -> list[str]:
    """The configured pruner first, then every other one (of ``chosen``, when given) that can
    run where ``vlm`` prunes (FastV's attention ranking only inside the decoder)."""
    names = (
        list(dict.fromkeys(chosen)) if chosen else [pruner, *(p for p in PRUNERS if p != pruner)]
    )
    return [p for p in names if p not in ATTENTION_PRUNERS or vlm.prune_layer]


def exact_match(samples: Sequence[Sample], answers: Mapping[str, str]) -> dict[str, float]:
    """Exact-match accuracy of ``answers`` (by sample id) over the answered samples with a
    reference: ``"all"``, and per kind where samples name theirs. Empty without references."""
    return {kind: counted.p for kind, counted in exact_counts(samples, answers).items()}


def exact_counts(samples: Sequence[Sample], answers: Mapping[str, str]) -> dict[str, Accuracy]:
    """The answers right of the questions scored, as :func:`exact_match` counts them."""
    hits: dict[str, list[bool]] = {}
    for sample in samples:
        if sample.answer is None or sample.id not in answers:
            continue
        right = answers[sample.id].strip() == sample.answer.strip()
        hits.setdefault("all", []).append(right)
        if sample.kind is not None:
            hits.setdefault(sample.kind, []).append(right)
    order = ["all", *sorted(kind for kind in hits if kind != "all")]
    return {kind: Accuracy(sum(hits[kind]), len(hits[kind])) for kind in order if kind in hits}


def _row(
    method: str,
    placement: str,
    rate: str,
    evaluation: Evaluation,
    data: ValidationSet,
    prefill_ms: float,
    share: float,
    baseline: float,
    quantization: str = NO_QUANTIZATION,
) -> Row:
    parts: Mapping[str, Any] = evaluation.parts
    # the exact reward's one part is the table's exact-match column already
    keys: tuple[str, ...] = (
        ("fidelity",)
        if "fidelity" in parts
        else ()
        if "exact" in parts
        else ("accuracy", "language", "match")
    )
    kept_min, kept_max, kept_sd = evaluation.kept_spread()
    exact = exact_counts(data.samples, evaluation.answers)
    return Row(
        method=method,
        placement=placement,
        rate=rate,
        tokens_per_view=sum(evaluation.budgets) / len(evaluation.budgets),
        kept_min=kept_min,
        kept_max=kept_max,
        kept_sd=kept_sd,
        score=evaluation.reward,
        parts={key: parts.get(key) for key in keys},
        prefill_ms=prefill_ms,
        speedup=baseline / prefill_ms if prefill_ms > 0 else float("nan"),
        flops_share=share,
        answered=evaluation.answered,
        skipped=evaluation.skipped,
        filtered=int(parts.get("n_filtered", 0)),
        exact={kind: counted.p for kind, counted in exact.items()},
        exact_right={kind: counted.right for kind, counted in exact.items()},
        exact_n={kind: counted.n for kind, counted in exact.items()},
        exact_se={kind: counted.se for kind, counted in exact.items()},
        quantization=quantization,
    )


def table_text(rows: Sequence[Row], reward: str, rules: ScoringRules | None = None) -> str:
    """The paper-style table as aligned text; with the drivelm reward's ``rules`` the accuracy
    column names its mode and a ``filtered`` column counts the questions the per-frame filter
    left out.

    Each exact-match cell is the accuracy with its binomial standard error (``75.0 +- 8.8 %``),
    the header gives the questions scored per kind (``n=24``), and a ``~`` marks a pruned row's
    accuracy that is within the noise of the unpruned row's
    (:func:`~prune2drive_ros.tuning.spread.within_noise`); a legend under the table says so.
    """
    part_names = list(rows[0].parts)
    labels = [
        f"accuracy ({rules.accuracy})" if rules is not None and name == "accuracy" else name
        for name in part_names
    ]
    kinds = list(rows[0].exact)
    counts = {kind: sorted({row.exact_n.get(kind, 0) for row in rows}) for kind in kinds}
    reference = next((row for row in rows if row.method == UNPRUNED), None)
    schemes = list(dict.fromkeys(row.quantization for row in rows))
    quantized = schemes != [NO_QUANTIZATION]  # a column only where a row is quantised
    header = ["method", *(["quantization"] if quantized else []), "placement", "rate"]
    header += ["tokens/view", "view min-max", "view sd"]
    header += [f"score ({reward})", *labels]
    header += [f"{'exact' if kind == 'all' else kind} n={_span(counts[kind])}" for kind in kinds]
    header += ["prefill ms", "speedup", "FLOPs share", "skipped"]
    if rules is not None:
        header.append("filtered")
    lines = [header]
    compared = noise = 0
    for row in rows:
        cells = [row.method, *([row.quantization] if quantized else []), row.placement]
        cells += [row.rate, f"{row.tokens_per_view:.1f}"]
        cells += [f"{row.kept_min}-{row.kept_max}", f"{row.kept_sd:.1f}", f"{row.score:.4f}"]
        cells += ["-" if row.parts[p] is None else f"{row.parts[p]:.4f}" for p in part_names]
        for kind in kinds:
            counted = _accuracy(row, kind)
            if counted is None:
                cells.append("-")
                continue
            cell = counted.percent()
            if len(counts[kind]) > 1:  # rows scored different numbers of questions
                cell += f" n={counted.n}"
            base = None if reference is None or row is reference else _accuracy(reference, kind)
            if base is not None:
                compared += 1
                if within_noise(counted, base):
                    noise += 1
                    cell = "~" + cell
            cells.append(cell)
        cells += [
            f"{row.prefill_ms:.2f}",
            f"{row.speedup:.2f}x",
            f"{100 * row.flops_share:.1f} %",
            str(row.skipped),
        ]
        if rules is not None:
            cells.append(str(row.filtered))
        lines.append(cells)
    text = _aligned(lines)
    if kinds:
        scheme = f", {reference.quantization}" if quantized and reference is not None else ""
        text += "\n" + "\n".join(_legend(compared, noise, scheme))
    return text


def _accuracy(row: Row, kind: str) -> Accuracy | None:
    """A row's exact-match count of one kind, or None when it scored no question of it."""
    n = row.exact_n.get(kind, 0)
    return Accuracy(row.exact_right[kind], n) if n else None


def _span(values: Sequence[int]) -> str:
    return f"{values[0]}" if len(values) == 1 else f"{values[0]}-{values[-1]}"


def _legend(compared: int, noise: int, scheme: str = "") -> list[str]:
    """What the exact-match cells say, and how many differences from the unpruned row (of the
    first quantisation, ``scheme``, where rows differ in it) are noise."""
    lines = [
        "exact match: accuracy +- its binomial standard error sqrt(p(1-p)/n) in points, n the "
        "questions scored (per kind: the column's own n)",
        f"~: within the noise of the unpruned row ({UNPRUNED}{scheme}); {NOISE_RULE}. Compare any "
        "two rows by the same rule",
    ]
    if compared:
        lines.append(
            f"{noise} of {compared} exact-match differences from {UNPRUNED}{scheme} are within "
            "the noise"
            + (": these questions cannot tell the rows apart" if noise == compared else "")
        )
    return lines
