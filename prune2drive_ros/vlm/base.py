"""One interface over transformers VLMs: encode views, prune, splice, prefill, generate.

Prune2Drive prunes between the projector and the language model, so every family adapter has
to expose the same steps with the visual tokens in the open (:class:`~prune2drive_ros.engine.
Engine` runs them in this order and times them)::

    pixel_values = vlm.preprocess(images)            # six RGB uint8 arrays at vlm.image_size
    visual = vlm.encode_views(pixel_values)           # [V, tokens_per_view, D_lm], what T-FPS sees
    selection = vlm.prune(visual, budgets)            # per-view kept indices
    answers, timings = vlm.generate(visual, selection, ["Is the road clear?", ...])

How the language model sees the frames (the same for every family):

* Prompt. The one the checkpoint was trained with (:mod:`~prune2drive_ros.prompts`:
  DriveMM's six-image prompt, DriveLMM-o1's, the tokenizer's chat template, or this package's
  generic fallback), cut into a prefix that ends with the last image and the question turn
  (:mod:`.prompt`). The image placeholder stands for that view's *kept* visual tokens followed
  by the family's view separator (LLaVA-OneVision's learned image-newline embedding). A
  separator is not a patch: it is never pruned, it always follows its view, so the language
  model still sees where one camera ends.
* Splicing. ``inputs_embeds`` is the text embeddings with the kept visual tokens spliced in;
  text tokens are never dropped.
* Positions. ``positions="original"`` (default, what the Prune2Drive reference does): every kept
  token keeps the RoPE position it had in the unpruned sequence, and the text after an image
  keeps its unpruned position too, so the gaps left by pruned tokens remain. The model then sees
  the surviving tokens exactly where it was trained to see them, and relative distances between
  text and image regions are those of the full prompt. ``positions="compact"`` renumbers the
  pruned sequence 0..L-1 (what naive token dropping does); it is there to measure the
  difference. Position ids are always passed explicitly, and generation continues from the last
  position + 1.
* Several questions, one frame set. The shared prefix (preamble and all six views) is prefilled
  ONCE into a stock :class:`~transformers.DynamicCache`; each question is prefilled on top of it,
  decoded greedily (:mod:`.decoding`), and the cache is cropped back to the prefix length before
  the next question. Nothing is re-encoded and nothing is copied; answers equal the one-question
  answers.

Attention masks come from each decoder layer's own cache length, never from the position ids
(:mod:`.layers`), so the gaps left by pruned tokens are not mistaken for packed sequences.

Where the rest lives: value types in :mod:`.results`, the prompt in :mod:`.prompt`, the pixel
values in :mod:`.image_processing`, where each view's tokens are (per view, stitched, in the
prefix, on the image) in :mod:`.view_tokens`, the decoder run layer by layer in :mod:`.layers`,
greedy decoding and cache cropping in :mod:`.decoding`, loading in :mod:`.loading`, the
families and how to add one in :mod:`.families`, random-weight test checkpoints (and each
family's recipe for them) in :mod:`.tiny`.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache, PreTrainedConfig, PreTrainedModel

from ..errors import ModelLoadError
from ..placement import PROJECTOR, prune_layer
from ..prompts import PROMPTS
from ..pruning.budget import Rates, budgets_from_rates, check_budgets
from ..pruning.registry import PRUNERS
from ..pruning.selection import Selection
from ..sensors.resizing import ResizeMode, check_resize_mode
from ..stopping import FINISHED, StopSignal
from ..timings import Timings
from ..views import VIEWS
from .checkpoint import RANDOM_WEIGHTS_NOTE
from .decoding import cache_keyword, crop, greedy, stop_ids, stopwatch
from .image_processing import ViewImageProcessor
from .layers import LayerRunner
from .prompt import TokenizedPrompt
from .quantization import Quantization, unquantized
from .results import (
    Generation,
    ImageFit,
    Normalization,
    Positions,
    PrefillInputs,
    PrefillOutput,
    ViewGeometry,
)
from .view_tokens import ViewTokens

logger = logging.getLogger(__name__)

#: Random-weight models already warned about: one warning per model, not one per adapter
#: (:meth:`DrivingVLM.placed` makes more adapters over the same weights).
_WARNED: weakref.WeakSet[nn.Module] = weakref.WeakSet()

Pruner = Callable[..., Selection]


class Prefix(NamedTuple):
    """The shared prefix prefilled: what the later layers hold, the cache, the kept tokens."""

    inputs: PrefillInputs
    cache: DynamicCache
    selection: Selection


#: Chooses the kept tokens from per-view tokens ``[V, N, D]`` (the projector's output, or the
#: hidden states entering the pruning layer) and, at a decoder layer, the attention the last
#: prefix token pays each of them (``[V, N]``, for FastV; None after the projector).
Selector = Callable[[torch.Tensor, torch.Tensor | None], Selection]
#: Called with an answer's text so far and its tokens generated, after every token.
OnText = Callable[[str, int], None]


class DrivingVLM(ABC):
    """A transformers VLM with Prune2Drive pruning between its projector and language model.

    Load one with :func:`~.loading.load_vlm` (which picks the family from ``config.json``) or
    :func:`~.loading.load_pretrained` (a given family), or build one with
    :func:`~prune2drive_ros.vlm.tiny.random_vlm` for random weights. All model calls
    run under ``torch.inference_mode``. The model is batch size 1 (one vehicle, one frame set).
    Each family is a subclass (:mod:`.families` says what it sets and implements).

    Attributes:
        name: model id or path it was loaded from.
        tokens_per_view, patch_grid, image_size: see :class:`~.results.ViewGeometry`.
        device, dtype: where and in which precision the model runs.
        random_weights: True for checkpoints built by :mod:`~prune2drive_ros.vlm.tiny`; whatever
            shows their answers must say that they are meaningless (``RANDOM_WEIGHTS_NOTE``).
        quantization: how the language model's weights are stored (:mod:`.quantization`);
            the adapter runs a quantised model as any other.
        image_resize: how camera images are resized to :attr:`image_size`
            (:data:`~prune2drive_ros.sensors.resizing.RESIZE_MODES`): ``exact``, the pixels of
            the family's own image processor, or ``fast``. Whoever decodes views for this model
            reads it (the engine, the feature cache), once per frame, so a change applies from
            the next frame; a view's pixels depend on it, so it belongs to the model here.
    """

    family: ClassVar[str]
    model_class: ClassVar[type[PreTrainedModel]]
    image_placeholder: ClassVar[str]
    image_markup: ClassVar[str] = "{image}"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        *,
        name: str,
        normalization: Normalization,
        random_weights: bool = False,
        prompt: str = "generic",
        image_fit: ImageFit = "resize",
        max_tiles: int = 1,
        placement: str = PROJECTOR,
        quantization: Quantization | None = None,
        image_resize: ResizeMode = "exact",
    ) -> None:
        markup = self.image_markup.format(image=self.image_placeholder)
        template = PROMPTS[prompt](markup, tokenizer, self.image_placeholder)
        geometry = (
            self._stitched_geometry(model.config, max_tiles)
            if template.stitched
            else self._geometry(model.config)
        )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.normalization = normalization
        self.random_weights = random_weights
        self.quantization = quantization or unquantized(self._decoder)
        self.image_resize = check_resize_mode(image_resize)
        self.tokens_per_view = geometry.tokens_per_view
        self.patch_grid = geometry.patch_grid
        self.image_size = geometry.image_size
        self.layout = geometry.layout
        self.view_tokens = geometry.view_tokens
        parameter = next(model.parameters())
        self.device: torch.device = parameter.device
        self.dtype: torch.dtype = parameter.dtype
        self._tokens = ViewTokens(geometry, self.device)
        self._layers = LayerRunner(
            self._decoder,
            cache_keyword(self._decoder),
            str(getattr(model.config, "_attn_implementation", None) or "sdpa"),
        )
        #: Decoder layer whose input is pruned (0: after the projector; :mod:`~prune2drive_ros.
        #: placement`).
        self.prune_layer = prune_layer(placement)
        if self.prune_layer >= len(self._layers):
            raise ModelLoadError(
                f"placement {placement} prunes at decoder layer {self.prune_layer}, but {name} has "
                f"{len(self._layers)} layers (0 to {len(self._layers) - 1}); choose a smaller K"
            )
        self._stop_ids = stop_ids(model, tokenizer)
        self._images = ViewImageProcessor(
            normalization,
            image_fit,
            image_size=self.image_size,
            layout=self.layout,
            device=self.device,
            dtype=self.dtype,
        )
        self.image_fit, self.max_tiles = image_fit, max_tiles
        self._prompt = TokenizedPrompt(
            template,
            tokenizer,
            self.image_placeholder,
            self.device,
            model=name,
            family=self.family,
        )
        #: ``[V, tokens_per_view]``: the row of each view's tokens in the unpruned prefix.
        self._visual_rows = self._tokens.prefix_rows(
            [int(segment.numel()) for segment in self._prompt.segments],
            self._view_separator().shape[0],
        )
        #: Rows of the real (not padding) visual tokens in the unpruned prefix.
        self._real_visual_rows = self._visual_rows[self.keep_all().mask]
        if random_weights and model not in _WARNED:
            _WARNED.add(model)
            logger.warning("%s is a %s", name, RANDOM_WEIGHTS_NOTE)

    def placed(self, placement: str) -> DrivingVLM:
        """The same model, weights and prompt, pruning at ``placement`` (to compare them)."""
        return type(self)(
            self.model,
            self.tokenizer,
            name=self.name,
            normalization=self.normalization,
            random_weights=self.random_weights,
            prompt=self.prompt_name,
            image_fit=self.image_fit,
            max_tiles=self.max_tiles,
            placement=placement,
            quantization=self.quantization,
            image_resize=self.image_resize,
        )

    @property
    def prompt_name(self) -> str:
        """Which named prompt the model is asked with."""
        return self._prompt.template.name

    @property
    def pad_color(self) -> tuple[int, int, int] | None:
        """Letterbox colour of the views, None when they are resized whole
        (:attr:`~.image_processing.ViewImageProcessor.pad_color`)."""
        return self._images.pad_color

    # ------------------------------------------------------------------ family hooks

    @classmethod
    @abstractmethod
    def _geometry(cls, config: PreTrainedConfig) -> ViewGeometry:
        """Validate ``config`` for the per-view layout and return the view geometry.

        Raises:
            ModelLoadError: the vision tower does not give a fixed per-view token grid.
        """

    @classmethod
    def _stitched_geometry(cls, config: PreTrainedConfig, max_tiles: int) -> ViewGeometry:
        """The geometry of the six views stitched into one tiled image (:mod:`.stitching`).

        Raises:
            ModelLoadError: the family cannot take the stitched image (the default).
        """
        raise ModelLoadError(
            f"the {cls.family} family does not take the six views stitched into one image "
            "(the drivelmm_o1 prompt); use another prompt"
        )

    @abstractmethod
    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixel values ``[V, 3, H, W]`` -> prunable projected tokens ``[V, N, D_lm]``."""

    def _view_separator(self) -> torch.Tensor:
        """Unprunable embeddings ``[S, D_lm]`` placed after each view's kept tokens."""
        return torch.empty(0, self._hidden_size, device=self.device, dtype=self.dtype)

    @staticmethod
    def language_model(model: PreTrainedModel) -> nn.Module:
        """``model``'s decoder stack (what :mod:`.quantization` quantises): takes
        ``inputs_embeds``, ``position_ids`` and a cache."""
        decoder: nn.Module = model.model.language_model
        return decoder

    @property
    def _decoder(self) -> nn.Module:
        return self.language_model(self.model)

    @property
    def _hidden_size(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    def _text_positions(self, start: int, count: int) -> tuple[torch.Tensor, int]:
        """Positions ``[P, count]`` of ``count`` text tokens from ``start``, and the next start."""
        return torch.arange(start, start + count, device=self.device).unsqueeze(0), start + count

    def _view_positions(
        self, start: int, kept: torch.Tensor, separators: int
    ) -> tuple[torch.Tensor, int]:
        """Original positions ``[P, k + separators]`` of an image's kept tokens and separators.

        The image (a view, or the stitched image) occupies its tokens plus ``separators``
        positions from ``start`` in the unpruned sequence; the kept tokens keep theirs, the
        separators follow the last patch.
        """
        span = self._tokens.image_tokens
        tail = torch.arange(separators, device=self.device) + span
        positions = torch.cat([kept.to(self.device), tail]) + start
        return positions.unsqueeze(0), start + span + separators

    def _decoder_position_ids(self, positions: torch.Tensor) -> torch.Tensor:
        """``[P, L]`` positions -> the ``position_ids`` the decoder takes (``[1, L]`` here)."""
        return positions

    # ------------------------------------------------------------------ pipeline

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Six RGB uint8 ``H x W x 3`` arrays at :attr:`image_size` -> ``[V, 3, H, W]`` pixels,
        normalised on the device (:class:`~.image_processing.ViewImageProcessor`).

        Raises:
            DecodeError: wrong number of views, size, dtype or channel count.
        """
        return self._images(images)

    @torch.inference_mode()
    def encode_views(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Vision encoder and projector: ``[V, 3, H, W]`` -> ``[V, tokens_per_view, D_lm]``.

        Stitched views: the tiles' tokens are gathered per view, each view's in stitched order
        and zero-padded to :attr:`tokens_per_view` (:attr:`view_tokens` are real).
        """
        visual = self._tokens.per_view(self._encode(pixel_values.to(self.device, self.dtype)))
        expected = (len(VIEWS), self.tokens_per_view, self._hidden_size)
        if tuple(visual.shape) != expected:
            raise RuntimeError(f"{self.family} encoder gave {tuple(visual.shape)}, not {expected}")
        return visual

    def budgets(self, rates: Rates) -> tuple[int, ...]:
        """Per-view token budgets for retention ``rates`` (a float or a mapping by view)."""
        return budgets_from_rates(rates, self.view_tokens)

    def prune(
        self,
        visual: torch.Tensor,
        budgets: Sequence[int],
        pruner: str | Pruner = "tfps",
        *,
        seed: int = 0,
        scores: torch.Tensor | None = None,
    ) -> Selection:
        """Select ``budgets[v]`` tokens of each view with ``pruner`` (a name or a callable).

        The pruner gets this family's :attr:`patch_grid`, which the grid baseline needs (not
        every tower's grid is square: Qwen2.5-VL's 576 tokens per view are 18 x 32), for
        stitched views each view's real token count, and, if it takes them (FastV), the
        ``scores`` the model's attention gave each token where it prunes.
        """
        counts = self.view_tokens if self.layout is not None else None
        check_budgets(budgets, visual.shape[0], visual.shape[1], counts)
        if isinstance(pruner, str):
            pruner = PRUNERS[pruner]
        extra: dict[str, Any] = {"counts": counts} if counts is not None else {}
        if "scores" in inspect.signature(pruner).parameters:
            extra["scores"] = scores
        return pruner(visual, budgets, seed=seed, grid=self.patch_grid, **extra)

    def token_boxes(self) -> list[np.ndarray]:
        """Per view, ``[view_tokens[v], 4]`` (x0, y0, x1, y1) of each token on its camera
        image, in [0, 1]: what the kept-token picture lights."""
        return self._tokens.boxes()

    @torch.inference_mode()
    def prefill_inputs(
        self,
        visual: torch.Tensor,
        selection: Selection | None,
        question: str | None = None,
        *,
        positions: Positions = "original",
    ) -> PrefillInputs:
        """Decoder inputs for the shared prefix, and the question turn when ``question`` is given.

        ``selection=None`` keeps every token (the unpruned baseline on the same inputs).
        """
        prefix = self._prefix_inputs(visual, selection, positions)
        if question is None:
            return prefix
        return prefix.then(self._question_inputs(question, prefix.next_position))

    @torch.inference_mode()
    def prefill_prefix(
        self,
        visual: torch.Tensor,
        selection: Selection | Selector | None,
        *,
        positions: Positions = "original",
        timings: Timings | None = None,
    ) -> Prefix:
        """Prune where the model prunes and prefill the shared prefix into a new cache.

        After the projector (``prune_layer`` 0) the selector sees the visual tokens and the
        prefix holds the kept ones. At layer K the first K decoder layers run on the unpruned
        prefix; the selector sees the views' hidden states entering layer K (and the attention
        the last prefix token pays them in layer K - 1, for FastV); layers K and later run on
        the text and the kept tokens only, at their original positions. Returns the inputs
        the later layers hold (what answers report), the cache and the kept tokens. The
        selector's time goes to ``timings.prune``.
        """
        timings = Timings() if timings is None else timings
        fixed = selection if selection is None or isinstance(selection, Selection) else None
        select = None if selection is None or isinstance(selection, Selection) else selection
        if self.prune_layer == 0:
            chosen = fixed if select is None else self._timed(select, visual, None, timings)
            prefix = self._prefix_inputs(visual, chosen, positions)
            cache = DynamicCache(config=self.model.config.get_text_config())
            self._layers.run(prefix.embeds, self._decoder_position_ids(prefix.positions), cache)
            return Prefix(prefix, cache, chosen if chosen is not None else self.keep_all())
        if positions != "original":
            raise ValueError("pruning inside the language model keeps original positions only")
        full = self._prefix_inputs(visual, None, positions)
        cache = DynamicCache(config=self.model.config.get_text_config())
        hidden, scores = self._first_layers(full, cache)
        rows = self._visual_rows
        if select is None:
            chosen = fixed if fixed is not None else self.keep_all()
        else:
            chosen = self._timed(select, hidden[0][rows], scores, timings)
        keep = torch.ones(full.length, dtype=torch.bool, device=self.device)
        keep[self._real_visual_rows] = False
        keep[rows[chosen.mask.to(self.device)]] = True
        kept = PrefillInputs(
            embeds=full.embeds[:, keep],
            positions=full.positions[:, keep],
            visual_tokens=chosen.total,
            separator_tokens=full.separator_tokens,
            text_tokens=full.text_tokens,
            next_position=full.next_position,
        )
        self._layers.run(
            hidden[:, keep],
            self._decoder_position_ids(kept.positions),
            cache,
            start=self.prune_layer,
        )
        return Prefix(kept, cache, chosen)

    @torch.inference_mode()
    def prefill_question(
        self,
        visual: torch.Tensor,
        selection: Selection | None,
        question: str,
        *,
        positions: Positions = "original",
    ) -> tuple[PrefillOutput, int]:
        """The prefill of one answer: the prefix with ``selection`` kept where the model prunes,
        then ``question``'s turn. Returns the question's logits and the tokens the layers
        after the cut held (prefix kept and question), e.g. to time and count a prefill."""
        prefix, cache, _ = self.prefill_prefix(visual, selection, positions=positions)
        turn = self._question_inputs(question, prefix.next_position)
        return self.prefill(turn, cache), prefix.length + turn.length

    def _first_layers(
        self, full: PrefillInputs, cache: DynamicCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The unpruned prefix through layers ``[0, prune_layer)``: the hidden states entering
        the pruning layer, and per view the attention the last prefix token pays each visual
        token in the layer before it (``[V, N]``, mean over heads)."""
        positions = self._decoder_position_ids(full.positions)
        last = self.prune_layer - 1
        hidden = self._layers.run(full.embeds, positions, cache, 0, last)
        scores = self._layers.last_token_attention(hidden, positions, last)
        hidden = self._layers.run(hidden, positions, cache, last, self.prune_layer)
        return hidden, scores[self._visual_rows]

    def keep_all(self) -> Selection:
        """Every real token of every view: the unpruned model as a selection."""
        return self._tokens.keep_all()

    @staticmethod
    def _timed(
        select: Selector, tokens: torch.Tensor, scores: torch.Tensor | None, timings: Timings
    ) -> Selection:
        with stopwatch(timings, "prune", tokens.device):
            return select(tokens, scores)

    @torch.inference_mode()
    def prefill(
        self,
        inputs: PrefillInputs,
        cache: DynamicCache | None = None,
        *,
        all_logits: bool = False,
    ) -> PrefillOutput:
        """Run the language model over ``inputs`` (appending to ``cache``; a new one if None).

        Only the last position goes through the LM head unless ``all_logits``: a prefill that
        feeds generation needs nothing else, and a full-vocabulary head over thousands of
        positions would cost more than a small decoder.
        """
        if cache is None:
            cache = DynamicCache(config=self.model.config.get_text_config())
        hidden = self._layers.run(
            inputs.embeds, self._decoder_position_ids(inputs.positions), cache
        )
        hidden = self._layers.norm(hidden)[0]
        head = self.model.get_output_embeddings()
        logits = head(hidden if all_logits else hidden[-1])
        return PrefillOutput(logits=logits.float(), cache=cache)

    @torch.inference_mode()
    def generate(
        self,
        visual: torch.Tensor,
        selection: Selection | Selector | None,
        questions: Sequence[str],
        *,
        max_new_tokens: int = 64,
        positions: Positions = "original",
        stop: StopSignal | None = None,
        on_text: OnText | None = None,
        fixed_length: bool = False,
    ) -> tuple[list[Generation], Timings]:
        """Greedy answers to several questions over one frame set, without re-encoding.

        The shared prefix is prefilled once; each question is prefilled on its KV cache,
        decoded one token per step until a stop token, ``max_new_tokens`` or ``stop``, and the
        cache is cropped back to the prefix for the next question (see the module docstring).
        ``selection`` is the kept tokens, or a :data:`Selector` that chooses them where the
        model prunes (:meth:`prefill_prefix`). ``timings.prune``, ``prefill`` and ``generate``
        are filled; the engine times the rest. Once ``stop`` is set the answer being generated
        ends (its ``finish`` is the signal's reason) and later questions are not asked.
        ``on_text(text, tokens)`` gets each answer's text so far after every token.
        ``fixed_length`` decodes ``max_new_tokens`` whatever the model says (stop tokens
        included), for timing decoding over a known number of steps.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        timings = Timings()
        with stopwatch(timings, "prefill", self.device):
            prefix, cache, kept = self.prefill_prefix(
                visual, selection, positions=positions, timings=timings
            )
        timings.prefill -= timings.prune  # the selector ran inside the prefix prefill
        base = cache.get_seq_length()  # the first layer's length: layers may hold fewer
        answers = []
        for question in questions:
            with stopwatch(timings, "prefill", self.device):
                turn = self._question_inputs(question, prefix.next_position)
                logits = self.prefill(turn, cache).logits
            with stopwatch(timings, "generate", self.device):
                decoded = greedy(
                    logits,
                    partial(self._next_logits, cache),
                    turn.next_position,
                    max_new_tokens=max_new_tokens,
                    stop_ids=frozenset() if fixed_length else self._stop_ids,
                    stop=stop,
                    on_token=None
                    if on_text is None
                    else lambda ids: on_text(self._text(ids), len(ids)),
                )
            crop(cache, base)
            answers.append(
                Generation(
                    question=question,
                    text=self._text(decoded.tokens),
                    new_tokens=len(decoded.tokens),
                    prompt_tokens=prefix.length + turn.length,
                    visual_tokens=prefix.visual_tokens,
                    selection=kept,
                    finish=decoded.finish,
                )
            )
            if decoded.finish not in FINISHED:
                break
        return answers, timings

    def _text(self, tokens: list[int]) -> str:
        """Generated ``tokens`` as the answer's text (special tokens dropped, trimmed)."""
        text: str = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return text.strip()

    # ------------------------------------------------------------------ internals

    def _text_embeds(self, ids: torch.Tensor) -> torch.Tensor:
        embeddings: torch.Tensor = self.model.get_input_embeddings()(ids)
        return embeddings

    def _text_inputs(self, ids: torch.Tensor, start: int) -> PrefillInputs:
        """Text token ``ids`` (1-D) from position ``start`` on."""
        places, after = self._text_positions(start, ids.numel())
        return PrefillInputs(
            embeds=self._text_embeds(ids).unsqueeze(0),
            positions=places,
            visual_tokens=0,
            separator_tokens=0,
            text_tokens=ids.numel(),
            next_position=after,
        )

    def _question_inputs(self, question: str, start: int) -> PrefillInputs:
        return self._text_inputs(self._prompt.question_ids(question), start)

    def _next_logits(self, cache: DynamicCache, ids: torch.Tensor, position: int) -> torch.Tensor:
        """One decoding step on ``cache``: token ``ids`` at ``position`` -> the next logits."""
        return self.prefill(self._text_inputs(ids, position), cache).logits

    def _prefix_inputs(
        self, visual: torch.Tensor, selection: Selection | None, mode: Positions
    ) -> PrefillInputs:
        """The shared prefix: the prompt's text with ``selection``'s kept tokens of ``visual``
        (every token when None) and the view separators spliced in at the images."""
        kept_per_view = self._tokens.kept(visual, selection)
        separator = self._view_separator().to(visual.dtype)
        images = self._tokens.image_slots(visual, kept_per_view)
        embeds, positions = [], []
        start = text = 0
        for i, segment in enumerate(self._prompt.segments):
            place, start = self._text_positions(start, segment.numel())
            embeds.append(self._text_embeds(segment))
            positions.append(place)
            text += segment.numel()
            if i < len(images):
                kept_embeds, kept = images[i]
                embeds += [kept_embeds, separator]
                place, start = self._view_positions(start, kept, separator.shape[0])
                positions.append(place)
        joined = torch.cat(embeds).unsqueeze(0)
        places = torch.cat(positions, dim=1)
        if mode == "compact":
            places = torch.arange(joined.shape[1], device=self.device).expand_as(places)
            start = joined.shape[1]
        elif mode != "original":
            raise ValueError(f"positions must be 'original' or 'compact', got {mode!r}")
        kept_total = sum(k.numel() for k in kept_per_view)
        return PrefillInputs(
            embeds=joined,
            positions=places,
            visual_tokens=kept_total,
            separator_tokens=len(images) * separator.shape[0],
            text_tokens=text,
            next_position=start,
        )
