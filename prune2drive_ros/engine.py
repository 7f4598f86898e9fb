"""The ROS-free engine: a model, retention rates, a frame set and a question -> an Answer.

The one place that runs the pipeline: decode -> encode -> prune -> prefill -> generate. The
node and ``prune2drive replay`` answer frame sets through :class:`Engine`, and the tuner and
``prune2drive eval`` answer (or build prefill inputs) from already-encoded visual tokens through
it too, so a question asked live, replayed from a bag or scored in a trial goes through the same
budgets, pruner and prefill. Unpruned is full budgets: every token selected, the pruner not run.
The engine is not thread-safe: the node runs it on one worker thread
(:mod:`~prune2drive_ros.serving.worker`), replay on its main thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import TINY_MODEL, DriveVLMConfig, check_question, resolve_rates_file
from .errors import DecodeError
from .picture import kept_tokens_jpeg
from .pruning.budget import validate_rates
from .pruning.selection import Selection
from .sensors.imaging import decode_views
from .sensors.rates_file import FrontPoint, load_rates
from .sensors.resizing import check_resize_mode
from .sensors.sync import FrameSet
from .serving.latency import BudgetDecision, CostModel, choose_rates
from .stopping import StopSignal
from .timings import Timings
from .views import VIEWS, image_topic
from .vlm import FAMILIES, RANDOM_WEIGHTS_NOTE, DrivingVLM, Generation, PrefillInputs, load_vlm
from .vlm.base import OnText, Selector
from .vlm.decoding import stopwatch

logger = logging.getLogger(__name__)

#: Family of the default models: the trained scene model, and the tiny random-weight one.
DEFAULT_FAMILY = "llava_onevision"
#: The scene-model variant an empty ``model`` answers with when it is in the cache.
DEFAULT_SCENE_MODEL = "default"
#: Shares of every visual token the latency cost model is fitted on (three at least: a
#: quadratic), each timed :data:`CALIBRATION_REPEATS` times and the median kept.
CALIBRATION_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
CALIBRATION_REPEATS = 3
#: Tokens generated per calibration pass, to time decoding too.
DECODE_PROBE_TOKENS = 4


def resolve_model(model: str, family: str | None = None) -> tuple[str, str | None]:
    """The checkpoint the ``model`` parameter names and the family to load it with.

    - a hub id or path: itself;
    - :data:`~prune2drive_ros.config.TINY_MODEL` (``"tiny"``): the cached tiny random-weight
      test model of ``family`` (default LLaVA-OneVision), built on first use;
    - empty, with no family or the scene model's (LLaVA-OneVision): the ``default`` scene model
      when a finished one is in the cache (it is never trained here), else the tiny model with
      a warning that says how to get one that answers right;
    - empty with another family: that family's tiny model.

    Logs the choice and why (INFO). Nothing is downloaded.
    """
    if model and model != TINY_MODEL:
        logger.info("model: %s (the model parameter)", model)
        return model, family
    if model == TINY_MODEL:
        why = f"model is {TINY_MODEL!r}"
    elif family not in (None, DEFAULT_FAMILY):
        why = f"model is empty and family is {family}; the scene model is {DEFAULT_FAMILY}"
    else:
        from .training.cached import trained_scene_model, why_not_trained

        scene = trained_scene_model(DEFAULT_SCENE_MODEL)
        if scene is not None:
            logger.info(
                "model: the trained %r scene model %s (model is empty and it is in the cache)",
                DEFAULT_SCENE_MODEL,
                scene,
            )
            return str(scene), family
        logger.warning(
            "model is empty and no trained scene model is cached (%s), so the answers come from "
            "the tiny random-weight test model and are noise: run `prune2drive train` (or "
            "`make demo`) once for a model that answers right, or set model to a checkpoint "
            "(model %r silences this)",
            why_not_trained(DEFAULT_SCENE_MODEL),
            TINY_MODEL,
        )
        why = "model is empty and no trained scene model is cached"
    from .vlm.tiny import cached_tiny

    family = family or DEFAULT_FAMILY
    path = cached_tiny(family)
    logger.info("model: the tiny random-weight %s test model %s (%s)", family, path, why)
    return str(path), family


@dataclass(frozen=True)
class Pruning:
    """What the engine keeps: swapped as a whole, so an answer never mixes two settings."""

    rates: dict[str, float]
    budgets: tuple[int, ...]
    pruner: str
    #: the rates file's tuned trade-offs, which a latency budget chooses among.
    front: tuple[FrontPoint, ...] = ()


@dataclass(frozen=True)
class BudgetReport:
    """How an answer kept its latency budget (``ttft_budget_ms`` > 0).

    Attributes:
        budget_ms: the budget for the time to first token.
        predicted_ms: what the cost model predicted for the tokens chosen, queue wait included.
        measured_ms: the time to first token measured: queue wait, decode, encode, prune and
            prefill (every question of the call shares them).
        met: ``measured_ms`` was within the budget.
        why: the choice in words.
    """

    budget_ms: float
    predicted_ms: float
    measured_ms: float
    met: bool
    why: str


@dataclass(frozen=True)
class Answer:
    """One answered question, with what the model saw and how long each stage took."""

    question: str
    text: str
    frames_stamp_ns: int
    kept_tokens: dict[str, int]
    #: per-stage milliseconds, rounded to 3 decimals (as they are reported).
    timings_ms: Timings
    model: str
    random_weights: bool
    #: "stop" or "length" (it ended by itself), else why it was stopped early ("cancelled",
    #: "timeout", "shutdown"): the text is then what was generated until then.
    finish: str = "stop"
    #: the kept-token picture as JPEG, when asked for (``picture=True``); not in as_dict.
    picture: bytes | None = field(default=None, repr=False)
    #: how the latency budget was kept, None without one.
    budget: BudgetReport | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (one line of ``replay --out``); notes a random-weight model."""
        record = asdict(self)
        del record["picture"]
        if self.random_weights:
            record["note"] = RANDOM_WEIGHTS_NOTE
        return record


class Engine:
    """Answer questions about synchronized six-camera frame sets with a pruned VLM.

    Args:
        vlm: a loaded model adapter.
        rates: retention rate per view (validated here); ``None`` (or 1.0) keeps every token:
            the unpruned baseline is full budgets, and the pruner does not run for them.
        pruner: name in :data:`~prune2drive_ros.pruning.PRUNERS`.
        topics: topic of each view, only used to name the topic in decode errors.
        max_new_tokens: answer length when a request does not give one.
        max_question_chars: longest question accepted.
        ttft_budget_ms: latency budget for the time to first token; 0 (off) answers with
            ``rates``. Above 0, :meth:`warmup` fits a cost model and each call keeps as many
            tokens as fit (:func:`~prune2drive_ros.serving.latency.choose_rates`).
        front: the rates file's tuned front, which the budget chooses among.
    """

    def __init__(
        self,
        vlm: DrivingVLM,
        rates: Mapping[str, float] | float | None,
        *,
        pruner: str = "tfps",
        topics: Mapping[str, str] | None = None,
        max_new_tokens: int = 64,
        max_question_chars: int = 1000,
        ttft_budget_ms: float = 0.0,
        front: Sequence[FrontPoint] = (),
    ) -> None:
        self.vlm = vlm
        self.full_budgets = vlm.view_tokens
        self._pruning = self._pruning_for(rates, pruner, front)
        self.ttft_budget_ms = ttft_budget_ms
        #: time to first token against kept tokens, fitted by :meth:`calibrate`.
        self.cost: CostModel | None = None
        self.topics = dict(topics) if topics else {v: image_topic(v) for v in VIEWS}
        self.max_new_tokens = max_new_tokens
        self.max_question_chars = max_question_chars

    @property
    def rates(self) -> dict[str, float]:
        """Retention rate per view."""
        return self._pruning.rates

    @property
    def budgets(self) -> tuple[int, ...]:
        """Tokens kept per view, in :data:`VIEWS` order."""
        return self._pruning.budgets

    @property
    def pruner(self) -> str:
        """Name of the pruner in :data:`~prune2drive_ros.pruning.PRUNERS`."""
        return self._pruning.pruner

    def set_pruning(
        self,
        rates: Mapping[str, float] | float | None,
        pruner: str,
        front: Sequence[FrontPoint] = (),
    ) -> None:
        """Replace the rates, the pruner and the front (checked first: a bad value raises and
        changes nothing). An answer already under way keeps the ones it started with; the next one
        uses these (the node reloads a rates file this way, without a restart).

        Raises:
            BudgetError: invalid rates.
        """
        self._pruning = self._pruning_for(rates, pruner, front)

    def _pruning_for(
        self,
        rates: Mapping[str, float] | float | None,
        pruner: str,
        front: Sequence[FrontPoint] = (),
    ) -> Pruning:
        checked = validate_rates(1.0 if rates is None else rates)
        return Pruning(checked, self.vlm.budgets(checked), pruner, tuple(front))

    @classmethod
    def from_config(
        cls,
        config: DriveVLMConfig,
        share_dir: str | Path | None = None,
        *,
        rates_file: bool = True,
    ) -> Engine:
        """Load the rates file and the model that ``config`` names (the rates first: a bad
        file fails in a second, not after a model load).

        ``rates_file=False`` leaves the rates file unread (and unlogged): the engine answers
        unpruned until the caller sets rates of its own (``eval --uniform`` and
        ``--no-pruning``, which say what they use).

        An empty ``config.model`` means the cached scene model when it was trained, else the
        tiny random-weight test model; ``tiny`` always the latter (see :func:`resolve_model`).
        ``share_dir`` is the installed package share folder (the node passes the one
        ament_index knows), where the default rates file lives.

        Raises:
            ModelLoadError, ConfigError, BudgetError: with what to fix.
        """
        family = config.family or None
        if family is not None:
            FAMILIES.target(family)  # an unknown family fails here, naming the known ones
        rates_path = resolve_rates_file(config, share_dir) if rates_file else None
        loaded = None if rates_path is None else load_rates(rates_path)
        rates = None if loaded is None else loaded.rates
        model, family = resolve_model(config.model, family)
        vlm = load_vlm(
            model,
            family=family,
            device=config.device,
            dtype=config.dtype,
            attn_implementation=config.attn_implementation,
            prompt=config.prompt,
            max_tiles=config.max_tiles,
            placement=config.placement,
            quantization=config.quantization,
        )
        vlm.image_resize = check_resize_mode(config.image_resize)
        if rates_path is not None:
            logger.info("retention rates from %s: %s", rates_path, rates)
        return cls(
            vlm,
            rates,
            pruner=config.pruner,
            topics=config.resolved_image_topics(),
            max_new_tokens=config.max_new_tokens,
            max_question_chars=config.max_question_chars,
            ttft_budget_ms=config.ttft_budget_ms,
            front=() if loaded is None else loaded.front,
        )

    # ------------------------------------------------------------------ answering

    def decode(self, frames: FrameSet) -> list[np.ndarray]:
        """The six images of ``frames`` as RGB arrays at the encoder's input size.

        Raises:
            DecodeError: a view is missing or its message cannot be decoded (names the topic).
        """
        missing = [view for view in VIEWS if view not in frames.messages]
        if missing:
            raise DecodeError(
                "the frame set has no image from "
                + ", ".join(f"{view} ({self.topics[view]})" for view in missing)
                + "; check that all six camera topics are published"
            )
        images = decode_views(
            frames.messages,
            self.topics,
            size=self.vlm.image_size,
            pad=self.vlm.pad_color,
            resize_mode=self.vlm.image_resize,
        )
        return [images[view] for view in VIEWS]

    def answer(
        self,
        frames: FrameSet,
        question: str,
        max_new_tokens: int | None = None,
        *,
        stop: StopSignal | None = None,
        on_text: OnText | None = None,
        picture: bool = False,
        waited_ms: float = 0.0,
    ) -> Answer:
        """Answer one question about ``frames``; ``stop`` ends it early (after the current
        token), ``on_text(text, tokens)`` streams it, ``picture`` adds the kept-token JPEG,
        ``waited_ms`` is how long it queued (spent of a latency budget)."""
        return self.answer_many(
            frames,
            [question],
            max_new_tokens,
            stop=stop,
            on_text=on_text,
            picture=picture,
            waited_ms=waited_ms,
        )[0]

    def answer_many(
        self,
        frames: FrameSet,
        questions: Sequence[str],
        max_new_tokens: int | None = None,
        *,
        stop: StopSignal | None = None,
        on_text: OnText | None = None,
        picture: bool = False,
        waited_ms: float = 0.0,
    ) -> list[Answer]:
        """Answer several questions about one frame set, decoding and encoding it once.

        Each answer carries the timings of the whole call (the shared stages ran once). Once
        ``stop`` is set, the answer being generated ends and later questions get none. With
        ``picture`` each carries the kept-token JPEG (drawn once, after the timings). Under a
        latency budget the questions share one choice of tokens, made for what is left of the
        budget after ``waited_ms`` in the queue, and each answer reports how it was kept.
        """
        texts = [check_question(q, self.max_question_chars) for q in questions]
        pruning = self._pruning  # this frame set's, whatever set_pruning does meanwhile
        begin = time.perf_counter()
        images = self.decode(frames)
        decode_ms = (time.perf_counter() - begin) * 1e3
        # the budget left after the queue and the decode is what the model's stages may take
        decision = self._budget_decision(pruning, waited_ms + decode_ms)
        budgets = pruning.budgets if decision is None else self.vlm.budgets(decision.rates)
        generations, timings = self.answer_images(
            images,
            texts,
            max_new_tokens,
            budgets=budgets,
            pruner=pruning.pruner,
            stop=stop,
            on_text=on_text,
        )
        timings.decode = decode_ms
        timings.total = (time.perf_counter() - begin) * 1e3
        report = self._observe(decision, budgets, timings, generations, waited_ms)
        jpeg = None
        if picture and generations:
            jpeg = kept_tokens_jpeg(
                frames, generations[0].selection, self.vlm.token_boxes(), self.topics
            )
        return [
            Answer(
                question=generation.question,
                text=generation.text,
                frames_stamp_ns=frames.stamp_ns,
                kept_tokens=dict(zip(VIEWS, generation.kept_per_view, strict=True)),
                timings_ms=timings.rounded(3),
                model=self.vlm.name,
                random_weights=self.vlm.random_weights,
                finish=generation.finish,
                picture=jpeg,
                budget=report,
            )
            for generation in generations
        ]

    def _budget_decision(self, pruning: Pruning, spent_ms: float) -> BudgetDecision | None:
        """The rates to keep the latency budget with after ``spent_ms`` (queue wait and image
        decode, both measured by then), None without a budget. A budget set at run time on an
        engine warmed up without one is calibrated for here, once (that call pays for it)."""
        if self.ttft_budget_ms <= 0:
            return None
        if self.cost is None:
            self.calibrate()
        assert self.cost is not None
        return choose_rates(
            self.cost,
            budget_ms=self.ttft_budget_ms,
            queue_ms=max(spent_ms, 0.0),
            rates=pruning.rates,
            view_tokens=self.full_budgets,
            front=pruning.front,
        )

    def _observe(
        self,
        decision: BudgetDecision | None,
        budgets: Sequence[int],
        timings: Timings,
        generations: Sequence[Generation],
        waited_ms: float,
    ) -> BudgetReport | None:
        """Correct the cost model by this call's measured stages; how the budget was kept."""
        if decision is None or self.cost is None:
            return None
        self.cost.observe(sum(budgets), timings.model_ttft)
        self.cost.observe_decode(sum(g.new_tokens for g in generations), timings.generate)
        measured = max(waited_ms, 0.0) + timings.ttft
        return BudgetReport(
            budget_ms=self.ttft_budget_ms,
            predicted_ms=round(decision.predicted_ms, 3),
            measured_ms=round(measured, 3),
            met=measured <= self.ttft_budget_ms,
            why=decision.why,
        )

    def select(self, frames: FrameSet) -> Selection:
        """The tokens the engine keeps of ``frames`` with its budgets and pruner (decoded and
        encoded as for an answer), e.g. to show them."""
        visual = self.vlm.encode_views(self.vlm.preprocess(self.decode(frames)))
        return self.selection(visual)

    def selection(
        self,
        visual: torch.Tensor,
        *,
        budgets: Sequence[int] | None = None,
        pruner: str | None = None,
        seed: int = 0,
    ) -> Selection:
        """The tokens kept of encoded ``visual`` where the model prunes (after the projector,
        or at decoder layer K, which runs the prefix's first K layers to find out)."""
        if self.vlm.prune_layer == 0:
            return self._select(visual, budgets, pruner, seed)
        return self.vlm.prefill_prefix(visual, self._selector(budgets, pruner, seed)).selection

    def answer_images(
        self,
        images: Sequence[np.ndarray],
        questions: Sequence[str],
        max_new_tokens: int | None = None,
        *,
        budgets: Sequence[int] | None = None,
        pruner: str | None = None,
        stop: StopSignal | None = None,
        on_text: OnText | None = None,
        fixed_length: bool = False,
    ) -> tuple[list[Generation], Timings]:
        """Answer ``questions`` about six decoded images (``decode``'s output) with ``budgets``
        and ``pruner`` (default the engine's): encode, then :meth:`answer_encoded`, each stage
        timed (``fixed_length``: see :meth:`~.vlm.base.DrivingVLM.generate`)."""
        encoding = Timings()
        with stopwatch(encoding, "encode", self.vlm.device):
            visual = self.vlm.encode_views(self.vlm.preprocess(images))
        generations, timings = self.answer_encoded(
            visual,
            questions,
            budgets=budgets,
            pruner=pruner,
            max_new_tokens=max_new_tokens,
            stop=stop,
            on_text=on_text,
            fixed_length=fixed_length,
        )
        timings.encode = encoding.encode
        return generations, timings

    def answer_encoded(
        self,
        visual: torch.Tensor,
        questions: Sequence[str],
        *,
        budgets: Sequence[int] | None = None,
        pruner: str | None = None,
        seed: int = 0,
        max_new_tokens: int | None = None,
        stop: StopSignal | None = None,
        on_text: OnText | None = None,
        fixed_length: bool = False,
    ) -> tuple[list[Generation], Timings]:
        """Answer ``questions`` from visual tokens already encoded (``vlm.encode_views``):
        prune, prefill, generate (``stop`` and ``on_text``: see :meth:`answer`).

        ``budgets``, ``pruner`` and ``max_new_tokens`` default to the engine's; full budgets
        answer unpruned. The timings hold the stages that ran here (prune, prefill, generate).
        """
        unpruned = (self.budgets if budgets is None else tuple(budgets)) == self.full_budgets
        return self.vlm.generate(
            visual,
            None if unpruned else self._selector(budgets, pruner, seed),  # None: every token
            questions,
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            stop=stop,
            on_text=on_text,
            fixed_length=fixed_length,
        )

    def prefill_inputs(
        self,
        visual: torch.Tensor,
        question: str | None = None,
        *,
        budgets: Sequence[int] | None = None,
        pruner: str | None = None,
        seed: int = 0,
    ) -> PrefillInputs:
        """The decoder inputs ``answer_encoded`` would prefill (prefix, and ``question``'s turn
        when given) for ``budgets`` and ``pruner`` (default the engine's), e.g. to time them."""
        selection = self._select(visual, budgets, pruner, seed)
        return self.vlm.prefill_inputs(visual, selection, question)

    @property
    def unpruned(self) -> bool:
        """True when the engine keeps every visual token (full budgets)."""
        return self.budgets == self.full_budgets

    def kept_tokens(self) -> dict[str, int]:
        """Visual tokens per view the budgets give (all of them when unpruned); a pruner
        with shared budgets moves some between views per frame set (see ``Answer``)."""
        return dict(zip(VIEWS, self.budgets, strict=True))

    def warmup(self) -> None:
        """One full pass on blank images, so the first real request does not pay for lazy
        initialisation (kernels, allocator pools, tokenizer caches); under a latency budget,
        then :meth:`calibrate`."""
        begin = time.perf_counter()
        self.answer_images(self._blank(), ["warm up"], max_new_tokens=2)
        logger.info("warm-up pass took %.0f ms", (time.perf_counter() - begin) * 1e3)
        if self.ttft_budget_ms > 0:
            self.calibrate()

    def calibrate(self, fractions: Sequence[float] = CALIBRATION_FRACTIONS) -> CostModel:
        """Fit :attr:`cost`: the time to first token (encode, prune, prefill) measured on blank
        images at each fraction of every token (three sizes at least, for the quadratic; the
        median of :data:`CALIBRATION_REPEATS` runs each, the sizes taking turns so that a burst
        of load elsewhere does not bend the curve), and the decode time per token; each answer
        then corrects it (:meth:`answer_many`)."""
        runs: dict[int, list[float]] = {}
        decode = []
        for _ in range(CALIBRATION_REPEATS):
            for fraction in fractions:
                budgets = self.vlm.budgets(fraction)
                _, timings = self.answer_images(
                    self._blank(),
                    ["warm up"],
                    max_new_tokens=DECODE_PROBE_TOKENS,
                    budgets=budgets,
                )
                runs.setdefault(sum(budgets), []).append(timings.model_ttft)
                decode.append(timings.generate / DECODE_PROBE_TOKENS)
        samples = [(tokens, float(np.median(times))) for tokens, times in runs.items()]
        self.cost = CostModel.fit(samples, decode_ms_per_token=float(np.median(decode)))
        logger.info("latency cost model: %s", self.cost.describe())
        return self.cost

    def _blank(self) -> list[np.ndarray]:
        """Six black views at the encoder's input size."""
        width, height = self.vlm.image_size
        return [np.zeros((height, width, 3), np.uint8)] * len(VIEWS)

    def describe(self) -> dict[str, str]:
        """What is loaded, for diagnostics and logs."""
        rates = (
            "none (unpruned)"
            if self.unpruned
            else ", ".join(f"{view}={rate:g}" for view, rate in self.rates.items())
        )
        return {
            "model": self.vlm.name,
            "family": self.vlm.family,
            "prompt": self.vlm.prompt_name,
            "device": str(self.vlm.device),
            "dtype": str(self.vlm.dtype).removeprefix("torch."),
            **self.vlm.quantization.describe(),
            "image_resize": self.vlm.image_resize,
            "pruner": "none" if self.unpruned else self.pruner,
            "rates": rates,
            "random_weights": str(self.vlm.random_weights).lower(),
            "ttft_budget_ms": f"{self.ttft_budget_ms:g}" if self.ttft_budget_ms else "off",
            **(self.cost.describe() if self.cost is not None else {}),
        }

    # ------------------------------------------------------------------ pipeline

    def _selector(self, budgets: Sequence[int] | None, pruner: str | None, seed: int) -> Selector:
        """:meth:`_select` as the model calls it, where it prunes (after the projector or at
        a decoder layer)."""

        def select(tokens: torch.Tensor, scores: torch.Tensor | None) -> Selection:
            return self._select(tokens, budgets, pruner, seed, scores)

        return select

    def _select(
        self,
        visual: torch.Tensor,
        budgets: Sequence[int] | None,
        pruner: str | None,
        seed: int,
        scores: torch.Tensor | None = None,
    ) -> Selection:
        """The kept tokens for ``budgets`` (default the engine's): every token for full budgets
        (the pruner does not run), else the choice of ``pruner`` (default the engine's) on
        ``visual`` (the tokens where the model prunes; ``scores``: FastV's attention there)."""
        chosen = self.budgets if budgets is None else tuple(budgets)
        if chosen == self.full_budgets:
            return self.vlm.keep_all()
        return self.vlm.prune(visual, chosen, pruner or self.pruner, seed=seed, scores=scores)
