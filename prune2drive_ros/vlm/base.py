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

Attention masks are never built by hand: with a cache object present, transformers' mask code
does not read the position ids (so the gaps are not mistaken for packed sequences) and SDPA
runs its causal kernel. FlashAttention-2 treats gapped positions of one sequence starting at 0 as
one packed sequence (``cu_seqlens = [0, L]``), which is the same computation.

Where the rest lives: value types in :mod:`.results`, the prompt in :mod:`.prompt`, greedy
decoding and cache cropping in :mod:`.decoding`, loading and the family registry in
:mod:`.loading`, random-weight test checkpoints (and each family's recipe for them) in
:mod:`.tiny`.

Adding a family
---------------
Write ``vlm/<family>.py`` with a subclass of :class:`DrivingVLM`, decorate it with
:func:`~.loading.register_family`, and import the module in ``vlm/__init__.py``. Set:

* ``family``: the checkpoint's ``config.json`` ``model_type`` (how
  :func:`~.loading.load_vlm` picks you);
* ``model_class``: the transformers class whose ``from_pretrained`` loads the checkpoint;
* ``image_placeholder``, the tokenizer's special token for one image (it must be a single
  added token), and ``image_markup``, how the family's processor writes one image around it
  (e.g. InternVL's ``<img>{image}</img>``): every named prompt
  (:mod:`~prune2drive_ros.prompts`) is built from it;

and implement the hooks:

* :meth:`DrivingVLM._geometry` validates the config (raise :class:`ModelLoadError` with the
  remedy when the vision tower does not give a fixed per-view token grid) and returns the
  :class:`~.results.ViewGeometry`;
* :meth:`DrivingVLM._encode`: pixel values ``[V, 3, H, W]`` -> prunable tokens ``[V, N, D]``
  after the projector;
* :meth:`DrivingVLM._view_separator` (optional): unprunable embeddings placed after each view.

The decoder is taken from ``model.model.language_model`` (the layout of every transformers 5
VLM) and the head from ``model.get_output_embeddings()``; override :attr:`DrivingVLM._decoder`
when that differs. Families with multi-axis RoPE (Qwen2-VL's M-RoPE) override
:meth:`DrivingVLM._view_positions`, :meth:`DrivingVLM._text_positions` and
:meth:`DrivingVLM._decoder_position_ids`; everything else (splicing, caching, decoding, timing) is
shared. Then add the family's random-weight recipe (special tokens, config per shape, image
processor) to :data:`~.tiny.RECIPES`, and the family to the tests by parametrising them over it.
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache, PreTrainedConfig, PreTrainedModel

from ..errors import DecodeError, ModelLoadError
from ..placement import PROJECTOR, prune_layer
from ..prompts import PROMPTS
from ..pruning.budget import Rates, budgets_from_rates, check_budgets
from ..pruning.selection import Selection
from ..stopping import FINISHED, StopSignal
from ..timings import Timings
from ..views import VIEWS
from .decoding import cache_keyword, crop, greedy, stop_ids, stopwatch
from .layers import LayerRunner
from .loading import IMAGE_FIT_KEY, RANDOM_WEIGHTS_NOTE
from .prompt import TokenizedPrompt
from .results import (
    IMAGE_FITS,
    Generation,
    ImageFit,
    Normalization,
    Positions,
    PrefillInputs,
    PrefillOutput,
    ViewGeometry,
)

logger = logging.getLogger(__name__)

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

    Attributes:
        name: model id or path it was loaded from.
        tokens_per_view, patch_grid, image_size: see :class:`~.results.ViewGeometry`.
        device, dtype: where and in which precision the model runs.
        random_weights: True for checkpoints built by :mod:`~prune2drive_ros.vlm.tiny`; whatever
            shows their answers must say that they are meaningless (``RANDOM_WEIGHTS_NOTE``).
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
        self.tokens_per_view = geometry.tokens_per_view
        self.patch_grid = geometry.patch_grid
        self.image_size = geometry.image_size
        self.layout = geometry.layout
        self.view_tokens = geometry.view_tokens
        parameter = next(model.parameters())
        self.device: torch.device = parameter.device
        self.dtype: torch.dtype = parameter.dtype
        #: Stitched views: each view's token indices in the stitched image, on the device.
        self._view_index = [
            torch.as_tensor(indices, device=self.device)
            for indices in (self.layout.view_indices if self.layout is not None else ())
        ]
        self._cache_kwarg = cache_keyword(self._decoder)
        self._layers = LayerRunner(
            self._decoder,
            self._cache_kwarg,
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
        if image_fit not in IMAGE_FITS:
            raise ModelLoadError(
                f"image fit {image_fit!r} is not one of {', '.join(IMAGE_FITS)} (config.json's "
                f"{IMAGE_FIT_KEY})"
            )
        #: Letterbox colour (the image mean, as LLaVA's ``expand2square``) when the checkpoint
        #: was trained on views padded to a square; None: views are resized whole.
        self.pad_color: tuple[int, int, int] | None = (
            _mean_colour(normalization) if image_fit == "pad" else None
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
        self._visual_rows = self._prefix_rows()
        #: Rows of the real (not padding) visual tokens in the unpruned prefix.
        self._real_visual_rows = self._visual_rows[self.keep_all().mask]
        scale = torch.tensor(
            [normalization.rescale / s for s in normalization.std], device=self.device
        )
        offset = torch.tensor(
            [-m / s for m, s in zip(normalization.mean, normalization.std, strict=True)],
            device=self.device,
        )
        self._pixel_scale = scale.view(1, 3, 1, 1)
        self._pixel_offset = offset.view(1, 3, 1, 1)
        if random_weights:
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
        )

    @property
    def prompt_name(self) -> str:
        """Which named prompt the model is asked with."""
        return self._prompt.template.name

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

    @property
    def _decoder(self) -> nn.Module:
        """The decoder stack: takes ``inputs_embeds``, ``position_ids`` and a cache."""
        decoder: nn.Module = self.model.model.language_model
        return decoder

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
        span = self.layout.tokens if self.layout is not None else self.tokens_per_view
        tail = torch.arange(separators, device=self.device) + span
        positions = torch.cat([kept.to(self.device), tail]) + start
        return positions.unsqueeze(0), start + span + separators

    def _decoder_position_ids(self, positions: torch.Tensor) -> torch.Tensor:
        """``[P, L]`` positions -> the ``position_ids`` the decoder takes (``[1, L]`` here)."""
        return positions

    # ------------------------------------------------------------------ pipeline

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Six RGB uint8 ``H x W x 3`` arrays at :attr:`image_size` -> ``[V, 3, H, W]`` pixels.

        The arrays go to the device as uint8 (a quarter of the float bytes) and are rescaled
        and normalised there in one multiply-add with the checkpoint's image mean and std; the
        result equals the transformers image processor's for inputs already at the encoder size
        (decode at reduced size upstream instead of resizing here).

        Raises:
            DecodeError: wrong number of views, size, dtype or channel count.
        """
        if len(images) != len(VIEWS):
            raise DecodeError(f"got {len(images)} images; give one per view ({', '.join(VIEWS)})")
        width, height = self.image_size
        for name, image in zip(VIEWS, images, strict=True):
            if image.dtype != np.uint8 or image.shape != (height, width, 3):
                raise DecodeError(
                    f"{name} image is {image.dtype} {tuple(image.shape)}; the encoder takes RGB "
                    f"uint8 {height}x{width}x3 (decode or resize to {width}x{height} first)"
                )
        # Stitched: the views become one image, cut into the vision tower's tiles.
        stacked = self.layout.tile_images(images) if self.layout is not None else np.stack(images)
        batch = torch.from_numpy(stacked).to(self.device, non_blocking=True)
        pixels = batch.permute(0, 3, 1, 2).float() * self._pixel_scale + self._pixel_offset
        return pixels.to(self.dtype)

    @torch.inference_mode()
    def encode_views(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Vision encoder and projector: ``[V, 3, H, W]`` -> ``[V, tokens_per_view, D_lm]``.

        Stitched views: the tiles' tokens are gathered per view, each view's in stitched order
        and zero-padded to :attr:`tokens_per_view` (:attr:`view_tokens` are real).
        """
        visual = self._encode(pixel_values.to(self.device, self.dtype))
        if self.layout is not None:
            visual = self._gather_views(visual.reshape(-1, visual.shape[-1]))
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
            from ..pruning import get_pruner  # the pruner registry imports its backends lazily

            pruner = get_pruner(pruner)
        extra: dict[str, Any] = {"counts": counts} if counts is not None else {}
        if "scores" in inspect.signature(pruner).parameters:
            extra["scores"] = scores
        return pruner(visual, budgets, seed=seed, grid=self.patch_grid, **extra)

    def token_boxes(self) -> list[np.ndarray]:
        """Per view, ``[view_tokens[v], 4]`` (x0, y0, x1, y1) of each token on its camera
        image, in [0, 1]: what the kept-token picture lights."""
        if self.layout is not None:
            return [self.layout.view_boxes(v) for v in range(len(VIEWS))]
        assert self.patch_grid is not None
        rows, cols = self.patch_grid
        r, c = np.divmod(np.arange(rows * cols), cols)
        boxes = np.stack([c / cols, r / rows, (c + 1) / cols, (r + 1) / rows], axis=1)
        return [boxes] * len(VIEWS)

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
        return Selection.keep_all(len(VIEWS), self.tokens_per_view, self.device, self.view_tokens)

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
                    stop_ids=self._stop_ids,
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

    def _prefix_rows(self) -> torch.Tensor:
        """``[V, tokens_per_view]``: the row of each view's tokens in the unpruned prefix
        (padding rows of stitched views point at the first token; they are never kept)."""
        segments = [int(segment.numel()) for segment in self._prompt.segments]
        if self.layout is not None:
            rows = torch.zeros(len(VIEWS), self.tokens_per_view, dtype=torch.long)
            for v, indices in enumerate(self.layout.view_indices):
                rows[v, : len(indices)] = torch.as_tensor(indices) + segments[0]
            return rows.to(self.device)
        span = self.tokens_per_view + self._view_separator().shape[0]
        starts = [sum(segments[: v + 1]) + v * span for v in range(len(VIEWS))]
        tokens = torch.arange(self.tokens_per_view)
        return torch.stack([tokens + start for start in starts]).to(self.device)

    def _image_slots(
        self, visual: torch.Tensor, kept_per_view: Sequence[torch.Tensor]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image placeholder of the prompt: its kept embeddings and their indices in it.

        One image per view, or for stitched views one image holding every view's kept tokens
        in stitched order (the order and places they have in the unpruned image).
        """
        if self.layout is None:
            return [(visual[v].index_select(0, kept), kept) for v, kept in enumerate(kept_per_view)]
        stitched = torch.cat(
            [self._view_index[v].index_select(0, kept) for v, kept in enumerate(kept_per_view)]
        )
        embeds = torch.cat(
            [visual[v].index_select(0, kept) for v, kept in enumerate(kept_per_view)]
        )
        order = stitched.argsort()
        return [(embeds.index_select(0, order), stitched.index_select(0, order))]

    def _gather_views(self, tokens: torch.Tensor) -> torch.Tensor:
        """Stitched image tokens ``[M, D]`` -> per-view ``[V, tokens_per_view, D]``, zero-padded."""
        padded = torch.cat([tokens, tokens.new_zeros(1, tokens.shape[-1])])
        index = torch.full(
            (len(VIEWS), self.tokens_per_view), tokens.shape[0], device=tokens.device
        )
        for v, count in enumerate(self.view_tokens):
            index[v, :count] = self._view_index[v]
        return padded[index]

    def _prefix_inputs(
        self, visual: torch.Tensor, selection: Selection | None, mode: Positions
    ) -> PrefillInputs:
        views, tokens = len(VIEWS), self.tokens_per_view
        if tuple(visual.shape[:2]) != (views, tokens):
            raise ValueError(
                f"visual tokens of shape {tuple(visual.shape)}; expected [{views}, {tokens}, D] "
                "from encode_views"
            )
        if selection is not None and tuple(selection.mask.shape) != (views, tokens):
            raise ValueError(
                f"selection over {tuple(selection.mask.shape)} does not match {views} views of "
                f"{tokens} tokens"
            )
        separator = self._view_separator().to(visual.dtype)
        kept_per_view = (
            selection.per_view()
            if selection is not None
            else [torch.arange(count, device=self.device) for count in self.view_tokens]
        )
        images = self._image_slots(visual, [k.to(visual.device) for k in kept_per_view])
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


def _mean_colour(normalization: Normalization) -> tuple[int, int, int]:
    """The image mean as 8-bit RGB: LLaVA pads with ``tuple(int(m * 255) for m in mean)``."""
    red, green, blue = (int(m * 255) for m in normalization.mean)
    return red, green, blue
