"""One interface over transformers VLMs: encode views, prune, prefill, generate.

Prune2Drive prunes between the projector and the language model, so every family adapter has
to expose the same four steps with the visual tokens in the open::

    pixel_values = vlm.preprocess(images)            # six RGB uint8 arrays at vlm.image_size
    visual = vlm.encode_views(pixel_values)           # [V, tokens_per_view, D_lm], what T-FPS sees
    selection = vlm.prune(visual, budgets)            # per-view kept indices
    answers, timings = vlm.generate(visual, selection, ["Is the road clear?", ...])

How the language model sees the frames (the same for every family):

* Prompt. A fixed prefix (the family's chat preamble, then for each view in
  :data:`~prune2drive_ros.views.VIEWS` order the line ``"<label> view: <image>"``) followed by
  the question and the assistant turn. The image placeholder stands for that view's *kept*
  visual tokens followed by the family's view separator (LLaVA-OneVision's learned
  image-newline embedding). A separator is not a patch: it is never pruned, it always follows
  its view, so the language model still sees where one camera ends.
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
  decoded greedily, and the cache is cropped back to the prefix length before the next question.
  Nothing is re-encoded and nothing is copied; answers equal the one-question answers.

Attention masks are never built by hand: with a cache object present, transformers' mask code
does not read the position ids (so the gaps are not mistaken for packed sequences) and SDPA
runs its causal kernel. FlashAttention-2 treats gapped positions of one sequence starting at 0 as
one packed sequence (``cu_seqlens = [0, L]``), which is the same computation.

Adding a family
---------------
Write ``vlm/<family>.py`` with a subclass of :class:`DrivingVLM`, decorate it with
:func:`register_family`, and import the module in ``vlm/__init__.py``. Set:

* ``family``: the checkpoint's ``config.json`` ``model_type`` (how :func:`load_vlm` picks you);
* ``model_class``: the transformers class whose ``from_pretrained`` loads the checkpoint;
* ``prompt``: a :class:`PromptTemplate` in the family's chat format, and ``image_placeholder``,
  the tokenizer's special token for one image (it must be a single added token);
* ``special_tokens`` / ``eos_token`` / ``pad_token``: what :mod:`~prune2drive_ros.vlm.tiny`
  trains the random-weight test tokenizer with, and ``tokenizer_attributes`` (optional): named
  special tokens the family's transformers processor reads off the tokenizer (InternVL's
  ``start_image_token``), so the family's own processor also loads a tiny checkpoint;

and implement the hooks:

* :meth:`DrivingVLM._geometry` validates the config (raise :class:`ModelLoadError` with the
  remedy when the vision tower does not give a fixed per-view token grid) and returns the
  :class:`ViewGeometry`;
* :meth:`DrivingVLM._encode`: pixel values ``[V, 3, H, W]`` -> prunable tokens ``[V, N, D]``
  after the projector;
* :meth:`DrivingVLM._view_separator` (optional): unprunable embeddings placed after each view;
* :meth:`DrivingVLM.random_config` and :meth:`DrivingVLM.image_processor`: the shapes
  ``tiny``/``small``/``7b`` for :mod:`~prune2drive_ros.vlm.tiny`.

The decoder is taken from ``model.model.language_model`` (the layout of every transformers 5
VLM) and the head from ``model.get_output_embeddings()``; override :attr:`DrivingVLM._decoder`
when that differs. Families with multi-axis RoPE (Qwen2-VL's M-RoPE) override
:meth:`DrivingVLM._view_positions`, :meth:`DrivingVLM._text_positions` and
:meth:`DrivingVLM._decoder_position_ids`; everything else (splicing, caching, decoding, timing) is
shared. Families whose language model speaks ChatML (Qwen2) build their prompt with
:func:`chatml_prompt`; :func:`pick_shape` and :meth:`DrivingVLM._random_text_config` serve
:meth:`DrivingVLM.random_config`. Add the family to the tests by parametrising them over it.
"""

from __future__ import annotations

import inspect
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer, DynamicCache, PreTrainedConfig, PreTrainedModel
from transformers.image_processing_base import ImageProcessingMixin
from transformers.utils import is_flash_attn_2_available

from ..devices import resolve_device
from ..errors import DecodeError, ModelLoadError
from ..pruning.budget import Rates, budgets_from_rates, check_budgets
from ..pruning.selection import Selection
from ..views import VIEW_LABELS, VIEWS

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger(__name__)

Positions = Literal["original", "compact"]
_Shape = TypeVar("_Shape")
Pruner = Callable[..., Selection]

#: Attention kernels the adapters are written for; neither needs attention weights.
ATTENTION_IMPLEMENTATIONS = ("sdpa", "flash_attention_2")
#: Config attribute that marks a checkpoint built by :mod:`~prune2drive_ros.vlm.tiny`.
RANDOM_WEIGHTS_KEY = "prune2drive_random_weights"
#: Shown next to every answer of a random-weight model.
RANDOM_WEIGHTS_NOTE = "random-weight test model: its answers are meaningless"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass(frozen=True)
class Generation:
    """One answer.

    Attributes:
        question: the question as asked.
        text: the decoded answer, special tokens removed.
        new_tokens: tokens generated, the stop token included.
        prompt_tokens: tokens the language model prefilled for it (shared prefix with the kept
            visual tokens and view separators, plus the question turn).
        visual_tokens: kept visual tokens over all views (separators not counted).
    """

    question: str
    text: str
    new_tokens: int
    prompt_tokens: int
    visual_tokens: int


@dataclass
class Timings:
    """Wall-clock milliseconds per stage (CUDA work is synchronised before each reading).

    ``prefill`` covers the shared prefix once plus every question turn; ``generate`` covers the
    decoding steps of every question.
    """

    encode: float = 0.0
    prune: float = 0.0
    prefill: float = 0.0
    generate: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """Stage -> milliseconds, plus ``total``."""
        stages = asdict(self)
        stages["total"] = sum(stages.values())
        return stages


@dataclass(frozen=True)
class ViewGeometry:
    """What a family's vision tower gives per view.

    Attributes:
        tokens_per_view: prunable visual tokens per view (729 for LLaVA-OneVision).
        patch_grid: (rows, cols) of those tokens in raster order, for the grid baseline and viz.
        image_size: (width, height) in pixels that the encoder takes.
    """

    tokens_per_view: int
    patch_grid: tuple[int, int]
    image_size: tuple[int, int]


@dataclass(frozen=True)
class Normalization:
    """Pixel normalisation from the checkpoint's ``preprocessor_config.json``.

    ``pixel = (uint8 * rescale - mean) / std`` per channel, as the transformers image
    processors compute it; folded into one multiply-add in :meth:`DrivingVLM.preprocess`.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float

    @classmethod
    def from_processor_dict(cls, config: Mapping[str, Any]) -> Normalization:
        """Read an image-processor dict, honouring ``do_rescale`` and ``do_normalize``."""
        rescale = 1.0
        if config.get("do_rescale", True):
            rescale = float(config.get("rescale_factor", 1 / 255))
        if not config.get("do_normalize", True):
            return cls(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), rescale=rescale)
        mean, std = config.get("image_mean"), config.get("image_std")
        if mean is None or std is None:
            raise ModelLoadError(
                "the image processor config has do_normalize but no image_mean/image_std; "
                "copy preprocessor_config.json from the original checkpoint"
            )
        return cls(mean=_triple(mean), std=_triple(std), rescale=rescale)


@dataclass(frozen=True)
class PromptTemplate:
    """A family's multi-view prompt, as text around the image placeholders.

    ``prefix`` opens the conversation, ``view`` is formatted once per view with ``label`` (from
    :data:`~prune2drive_ros.views.VIEW_LABELS`) and ``image`` (the placeholder token), and
    ``question`` holds one ``{question}`` field followed by the assistant turn. The question
    text is tokenised with special tokens split, so a question cannot inject chat markers or
    image placeholders.
    """

    prefix: str
    view: str
    question: str

    def prefix_text(self, image: str, views: Sequence[str] = VIEWS) -> str:
        """The shared prefix: preamble and one line per view."""
        return self.prefix + "".join(
            self.view.format(label=VIEW_LABELS[name], image=image) for name in views
        )

    def question_parts(self) -> tuple[str, str]:
        """The template text before and after ``{question}``."""
        before, marker, after = self.question.partition("{question}")
        if not marker:
            raise ValueError(f"question template {self.question!r} has no {{question}} field")
        return before, after


#: ChatML's special tokens (Qwen2's chat format), for the tokenizers of Qwen2-based families.
CHATML_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def chatml_prompt(view: str) -> PromptTemplate:
    """The driving prompt in ChatML, with ``view`` (a :class:`PromptTemplate` view line) per view.

    One system turn and one user turn holding the six views and the question, then the open
    assistant turn: what Qwen2's chat template writes, so every Qwen2-based family asks the
    same question the same way and only the image wrapping in ``view`` differs.
    """
    return PromptTemplate(
        prefix=(
            "<|im_start|>system\nYou are a helpful driving assistant. You see the six surround "
            "cameras of the ego vehicle.<|im_end|>\n<|im_start|>user\n"
        ),
        view=view,
        question="{question}<|im_end|>\n<|im_start|>assistant\n",
    )


#: Random-weight test shapes every family shares, so their prefill times compare: ``tiny`` for
#: tests (a CPU forward of six views in well under a second), ``small`` the CPU benchmark shape,
#: big enough for the language model to dominate prefill time. Vision towers of the ViT kind
#: (SigLIP, InternViT) take :data:`VIT_TEST_SHAPES`; decoders (Qwen2) :data:`DECODER_TEST_SHAPES`.
VIT_TEST_SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    },
    "small": {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
}
DECODER_TEST_SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "small": {
        "hidden_size": 768,
        "intermediate_size": 2048,
        "num_hidden_layers": 4,
        "num_attention_heads": 6,  # head size 128 and grouped KV heads, as in Qwen2-7B
        "num_key_value_heads": 2,
    },
}
#: The language model of every family's ``7b`` shape: Qwen2-7B / Qwen2.5-7B (families change
#: only the vocabulary size and the rotary settings).
QWEN2_7B_DECODER: dict[str, Any] = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
}


def pick_shape(shapes: Mapping[str, _Shape], shape: str) -> _Shape:
    """``shapes[shape]``, or a ValueError naming the known shapes (for ``random_config``)."""
    try:
        return shapes[shape]
    except KeyError:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(shapes)}") from None


def padded_vocab_size(tokenizer: Any, multiple: int = 64) -> int:
    """The tokenizer's size rounded up to ``multiple``, as real checkpoints pad the embedding."""
    return -(-len(tokenizer) // multiple) * multiple


@dataclass(frozen=True)
class PrefillInputs:
    """What the language model gets for one prefill: embeddings and explicit positions.

    Attributes:
        embeds: ``[1, L, D]`` text embeddings with the kept visual tokens spliced in.
        positions: ``[P, L]`` RoPE positions (P = 1 for 1-D RoPE).
        visual_tokens: kept visual tokens in ``embeds`` (separators not counted).
        separator_tokens: unprunable view separators in ``embeds``.
        text_tokens: text tokens in ``embeds``.
        next_position: the position the token after these gets.
    """

    embeds: torch.Tensor
    positions: torch.Tensor
    visual_tokens: int
    separator_tokens: int
    text_tokens: int
    next_position: int

    @property
    def length(self) -> int:
        """Tokens in ``embeds``."""
        return int(self.embeds.shape[1])

    def then(self, other: PrefillInputs) -> PrefillInputs:
        """These inputs followed by ``other`` (which must continue at ``next_position``)."""
        return PrefillInputs(
            embeds=torch.cat([self.embeds, other.embeds], dim=1),
            positions=torch.cat([self.positions, other.positions], dim=1),
            visual_tokens=self.visual_tokens + other.visual_tokens,
            separator_tokens=self.separator_tokens + other.separator_tokens,
            text_tokens=self.text_tokens + other.text_tokens,
            next_position=other.next_position,
        )


@dataclass
class PrefillOutput:
    """Logits of a prefill and the cache that now holds its keys and values.

    ``logits`` is ``[vocab]`` for the last position, or ``[L, vocab]`` when every position was
    asked for.
    """

    logits: torch.Tensor
    cache: DynamicCache


@dataclass(frozen=True)
class _Prompt:
    """Token ids of the fixed prompt text: the image placeholder, the shared prefix split at the
    placeholders (one segment more than views), and the question template around the question."""

    image_token: int
    segments: list[torch.Tensor]
    question_before: torch.Tensor
    question_after: torch.Tensor


class DrivingVLM(ABC):
    """A transformers VLM with Prune2Drive pruning between its projector and language model.

    Build one with :meth:`from_pretrained` (or :func:`load_vlm`, which picks the family), or
    :func:`~prune2drive_ros.vlm.tiny.random_vlm` for random weights. All model calls run under
    ``torch.inference_mode``. The model is batch size 1 (one vehicle, one frame set).

    Attributes:
        name: model id or path it was loaded from.
        tokens_per_view, patch_grid, image_size: see :class:`ViewGeometry`.
        device, dtype: where and in which precision the model runs.
        random_weights: True for checkpoints built by :mod:`~prune2drive_ros.vlm.tiny`; whatever
            shows their answers must say that they are meaningless (:data:`RANDOM_WEIGHTS_NOTE`).
    """

    family: ClassVar[str]
    model_class: ClassVar[type[PreTrainedModel]]
    prompt: ClassVar[PromptTemplate]
    image_placeholder: ClassVar[str]
    special_tokens: ClassVar[tuple[str, ...]]
    eos_token: ClassVar[str]
    pad_token: ClassVar[str]
    tokenizer_attributes: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        *,
        name: str,
        normalization: Normalization,
        random_weights: bool = False,
    ) -> None:
        geometry = self._geometry(model.config)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.normalization = normalization
        self.random_weights = random_weights
        self.tokens_per_view = geometry.tokens_per_view
        self.patch_grid = geometry.patch_grid
        self.image_size = geometry.image_size
        parameter = next(model.parameters())
        self.device: torch.device = parameter.device
        self.dtype: torch.dtype = parameter.dtype
        self._cache_kwarg = _cache_keyword(self._decoder)
        self._stop_ids = _stop_ids(model, tokenizer)
        self._prompt = self._tokenize_prompt()
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

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "auto",
        attn_implementation: str = "sdpa",
        local_files_only: bool = False,
    ) -> Self:
        """Load a checkpoint of this family from a local folder or a hub id.

        Args:
            path_or_id: folder written by ``save_pretrained`` (or :mod:`~.tiny`), or a hub
                id: read from the local hub cache, and downloaded by transformers when it is
                not there and the network allows (``HF_HUB_OFFLINE=1`` or
                ``local_files_only`` forbid that, as a vehicle should).
            device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
            dtype: ``"auto"`` (bfloat16 on CUDA where supported, else float16; float32 on CPU)
                or ``float32`` / ``bfloat16`` / ``float16``.
            attn_implementation: ``"sdpa"`` or ``"flash_attention_2"`` (CUDA with flash-attn).
            local_files_only: never contact the hub, even for an id.

        Raises:
            ModelLoadError: with the remedy, for a missing path, a folder that is not a
                checkpoint, a checkpoint of another family, a vision tower whose input size
                does not give this family's per-view token grid, a dtype that cannot be
                used, or an attention kernel that is not installed.
            ConfigError: a device that cannot be used (unknown, or CUDA without a GPU).
        """
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        check_attention(attn_implementation, torch_device)
        config = load_config(path_or_id, local_files_only=local_files_only)
        if config.model_type != cls.family:
            raise ModelLoadError(
                f"{path_or_id} is a {config.model_type!r} checkpoint, not {cls.family!r}; "
                "use load_vlm() to pick the family from config.json"
            )
        cls._geometry(config)  # fail on a mismatched vision tower before loading weights
        source = str(path_or_id)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
            processor, _ = ImageProcessingMixin.get_image_processor_dict(
                source, local_files_only=local_files_only
            )
            model = cls.model_class.from_pretrained(
                source,
                config=config,
                dtype=torch_dtype,
                attn_implementation=attn_implementation,
                local_files_only=local_files_only,
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"cannot load the {cls.family} checkpoint {source}: {exc}. A checkpoint needs "
                "config.json, the weights, the tokenizer files and preprocessor_config.json"
            ) from exc
        # Loaded on the CPU first, then moved: device_map would need `accelerate`. (The stubs
        # of PreTrainedModel.to are wrapped by a decorator that mypy misreads.)
        model.to(torch_device)  # type: ignore[arg-type]
        vlm = cls(
            model,
            tokenizer,
            name=source,
            normalization=Normalization.from_processor_dict(processor),
            random_weights=bool(getattr(config, RANDOM_WEIGHTS_KEY, False)),
        )
        logger.info(
            "loaded %s %s on %s (%s, %s)",
            cls.family,
            source,
            torch_device,
            torch_dtype,
            attn_implementation,
        )
        return vlm

    # ------------------------------------------------------------------ family hooks

    @classmethod
    @abstractmethod
    def _geometry(cls, config: PreTrainedConfig) -> ViewGeometry:
        """Validate ``config`` for the per-view layout and return the view geometry.

        Raises:
            ModelLoadError: the vision tower does not give a fixed per-view token grid.
        """

    @abstractmethod
    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixel values ``[V, 3, H, W]`` -> prunable projected tokens ``[V, N, D_lm]``."""

    def _view_separator(self) -> torch.Tensor:
        """Unprunable embeddings ``[S, D_lm]`` placed after each view's kept tokens."""
        return torch.empty(0, self._hidden_size, device=self.device, dtype=self.dtype)

    @classmethod
    @abstractmethod
    def random_config(cls, shape: str, tokenizer: Any) -> PreTrainedConfig:
        """Model config of a random-weight shape (``tiny``, ``small``, ``7b``) for ``tokenizer``."""

    @classmethod
    def _random_text_config(
        cls, tokenizer: Any, shape: Mapping[str, Any], model_type: str = "qwen2"
    ) -> dict[str, Any]:
        """The language model part of :meth:`random_config`: every family here decodes with a
        Qwen2-style model speaking ChatML, sized by ``shape`` and wired to the tokenizer."""
        return {
            "model_type": model_type,
            "vocab_size": padded_vocab_size(tokenizer),
            "max_position_embeddings": 32768,
            "eos_token_id": tokenizer.convert_tokens_to_ids(cls.eos_token),
            "pad_token_id": tokenizer.convert_tokens_to_ids(cls.pad_token),
            **shape,
        }

    @classmethod
    @abstractmethod
    def image_processor(cls) -> ImageProcessingMixin:
        """The image processor a real checkpoint of this family ships (saved beside tiny ones)."""

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
        """Original positions ``[P, k + separators]`` of a view's kept tokens and separators.

        The view occupies ``tokens_per_view + separators`` positions from ``start`` in the
        unpruned sequence; the kept tokens keep theirs, the separators follow the last patch.
        """
        tail = torch.arange(separators, device=self.device) + self.tokens_per_view
        positions = torch.cat([kept.to(self.device), tail]) + start
        return positions.unsqueeze(0), start + self.tokens_per_view + separators

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
        batch = torch.from_numpy(np.stack(images)).to(self.device, non_blocking=True)
        pixels = batch.permute(0, 3, 1, 2).float() * self._pixel_scale + self._pixel_offset
        return pixels.to(self.dtype)

    @torch.inference_mode()
    def encode_views(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Vision encoder and projector: ``[V, 3, H, W]`` -> ``[V, tokens_per_view, D_lm]``."""
        visual = self._encode(pixel_values.to(self.device, self.dtype))
        expected = (len(VIEWS), self.tokens_per_view, self._hidden_size)
        if tuple(visual.shape) != expected:
            raise RuntimeError(f"{self.family} encoder gave {tuple(visual.shape)}, not {expected}")
        return visual

    def budgets(self, rates: Rates) -> tuple[int, ...]:
        """Per-view token budgets for retention ``rates`` (a float or a mapping by view)."""
        return budgets_from_rates(rates, self.tokens_per_view)

    def prune(
        self,
        visual: torch.Tensor,
        budgets: Sequence[int],
        pruner: str | Pruner = "tfps",
        *,
        seed: int = 0,
    ) -> Selection:
        """Select ``budgets[v]`` tokens of each view with ``pruner`` (a name or a callable).

        The pruner gets this family's :attr:`patch_grid`, which the grid baseline needs (not
        every tower's grid is square: Qwen2.5-VL's 576 tokens per view are 18 x 32).
        """
        check_budgets(budgets, visual.shape[0], visual.shape[1])
        if isinstance(pruner, str):
            from ..pruning import get_pruner  # the pruner registry imports its backends lazily

            pruner = get_pruner(pruner)
        return pruner(visual, budgets, seed=seed, grid=self.patch_grid)

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
        hidden = self._decoder(
            inputs_embeds=inputs.embeds,
            position_ids=self._decoder_position_ids(inputs.positions),
            use_cache=True,
            **{self._cache_kwarg: cache},
        ).last_hidden_state[0]
        head = self.model.get_output_embeddings()
        logits = head(hidden if all_logits else hidden[-1])
        return PrefillOutput(logits=logits.float(), cache=cache)

    @torch.inference_mode()
    def generate(
        self,
        visual: torch.Tensor,
        selection: Selection | None,
        questions: Sequence[str],
        *,
        max_new_tokens: int = 64,
        positions: Positions = "original",
    ) -> tuple[list[Generation], Timings]:
        """Greedy answers to several questions over one frame set, without re-encoding.

        The shared prefix is prefilled once; each question is prefilled on its KV cache,
        decoded one token per step until a stop token or ``max_new_tokens``, and the cache is
        cropped back to the prefix for the next question (see the module docstring).
        ``timings.encode`` and ``timings.prune`` stay 0 here; :meth:`ask` fills them.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        timings = Timings()
        with self._stopwatch(timings, "prefill"):
            prefix = self._prefix_inputs(visual, selection, positions)
            cache = self.prefill(prefix).cache
        answers = []
        for question in questions:
            with self._stopwatch(timings, "prefill"):
                turn = self._question_inputs(question, prefix.next_position)
                logits = self.prefill(turn, cache).logits
            with self._stopwatch(timings, "generate"):
                tokens = self._greedy(logits, cache, turn.next_position, max_new_tokens)
            _crop(cache, prefix.length)
            answers.append(
                Generation(
                    question=question,
                    text=self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                    new_tokens=len(tokens),
                    prompt_tokens=prefix.length + turn.length,
                    visual_tokens=prefix.visual_tokens,
                )
            )
        return answers, timings

    def ask(
        self,
        images: Sequence[np.ndarray],
        questions: Sequence[str],
        *,
        budgets: Sequence[int] | None = None,
        pruner: str | Pruner = "tfps",
        seed: int = 0,
        max_new_tokens: int = 64,
        positions: Positions = "original",
    ) -> tuple[list[Generation], Timings]:
        """Whole pipeline on six images: encode, prune (``budgets=None``: keep all), answer."""
        timings = Timings()
        with self._stopwatch(timings, "encode"):
            visual = self.encode_views(self.preprocess(images))
        selection = None
        if budgets is not None:
            with self._stopwatch(timings, "prune"):
                selection = self.prune(visual, budgets, pruner, seed=seed)
        answers, stages = self.generate(
            visual, selection, questions, max_new_tokens=max_new_tokens, positions=positions
        )
        timings.prefill, timings.generate = stages.prefill, stages.generate
        return answers, timings

    def reference_input_ids(self, question: str) -> torch.Tensor:
        """``[1, L]`` unpruned prompt ids the stock model's own forward expects.

        Each image placeholder is repeated to its view's token count (patches plus separator),
        which is what the family's transformers processor does for one image per view; the
        tests compare the stock forward on these ids with :meth:`prefill` at retention 1.0.
        """
        per_view = self.tokens_per_view + self._view_separator().shape[0]
        pieces: list[torch.Tensor] = []
        for v, segment in enumerate(self._prompt.segments):
            pieces.append(segment)
            if v < len(VIEWS):
                image = torch.full((per_view,), self._prompt.image_token, device=self.device)
                pieces.append(image)
        turn = self._question_ids(question)
        return torch.cat([*pieces, turn]).unsqueeze(0)

    # ------------------------------------------------------------------ internals

    def _tokenize_prompt(self) -> _Prompt:
        placeholder = self.tokenizer.convert_tokens_to_ids(self.image_placeholder)
        if placeholder is None or placeholder == self.tokenizer.unk_token_id:
            raise ModelLoadError(
                f"the tokenizer of {self.name} has no {self.image_placeholder!r} token; "
                f"{self.family} checkpoints ship it as an added special token"
            )
        ids = self._ids(self.prompt.prefix_text(self.image_placeholder))
        cuts = (ids == placeholder).nonzero().flatten().tolist()
        if len(cuts) != len(VIEWS):
            raise ModelLoadError(
                f"the tokenizer of {self.name} does not keep {self.image_placeholder!r} as one "
                f"token ({len(cuts)} found for {len(VIEWS)} views)"
            )
        bounds = [-1, *cuts, ids.numel()]
        before, after = self.prompt.question_parts()
        return _Prompt(
            image_token=int(placeholder),
            segments=[ids[a + 1 : b] for a, b in pairwise(bounds)],
            question_before=self._ids(before),
            question_after=self._ids(after),
        )

    def _ids(self, text: str, *, split_special_tokens: bool = False) -> torch.Tensor:
        encoded = self.tokenizer(
            text, add_special_tokens=False, split_special_tokens=split_special_tokens
        )
        return torch.tensor(encoded["input_ids"], dtype=torch.long, device=self.device)

    def _question_ids(self, question: str) -> torch.Tensor:
        asked = self._ids(question, split_special_tokens=True)
        return torch.cat([self._prompt.question_before, asked, self._prompt.question_after])

    def _text_embeds(self, ids: torch.Tensor) -> torch.Tensor:
        embeddings: torch.Tensor = self.model.get_input_embeddings()(ids)
        return embeddings

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
            else [torch.arange(tokens, device=self.device)] * views
        )
        embeds, positions = [], []
        start = text = 0
        for v, segment in enumerate(self._prompt.segments):
            place, start = self._text_positions(start, segment.numel())
            embeds.append(self._text_embeds(segment))
            positions.append(place)
            text += segment.numel()
            if v < views:
                kept = kept_per_view[v].to(visual.device)
                embeds += [visual[v].index_select(0, kept), separator]
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
            separator_tokens=views * separator.shape[0],
            text_tokens=text,
            next_position=start,
        )

    def _question_inputs(self, question: str, start: int) -> PrefillInputs:
        ids = self._question_ids(question)
        places, after = self._text_positions(start, ids.numel())
        return PrefillInputs(
            embeds=self._text_embeds(ids).unsqueeze(0),
            positions=places,
            visual_tokens=0,
            separator_tokens=0,
            text_tokens=ids.numel(),
            next_position=after,
        )

    def _greedy(
        self, logits: torch.Tensor, cache: DynamicCache, position: int, max_new_tokens: int
    ) -> list[int]:
        """Greedy decoding: one token per step on ``cache``, from ``position`` on."""
        tokens: list[int] = []
        while True:
            ids = logits.argmax().view(1)  # stays on the device; int() below is the one sync
            tokens.append(int(ids))
            if tokens[-1] in self._stop_ids or len(tokens) == max_new_tokens:
                return tokens
            step = PrefillInputs(
                embeds=self._text_embeds(ids).unsqueeze(0),
                positions=self._text_positions(position, 1)[0],
                visual_tokens=0,
                separator_tokens=0,
                text_tokens=1,
                next_position=position + 1,
            )
            logits = self.prefill(step, cache).logits
            position += 1

    @contextmanager
    def _stopwatch(self, timings: Timings, stage: str) -> Iterator[None]:
        """Add the wall time of the block to ``timings.<stage>`` (CUDA synchronised)."""
        _synchronize(self.device)
        start = time.perf_counter()
        yield
        _synchronize(self.device)
        setattr(timings, stage, getattr(timings, stage) + (time.perf_counter() - start) * 1e3)


#: model_type -> adapter class; filled by :func:`register_family`.
FAMILIES: dict[str, type[DrivingVLM]] = {}


def register_family(cls: type[DrivingVLM]) -> type[DrivingVLM]:
    """Class decorator: make ``cls`` loadable by :func:`load_vlm` under ``cls.family``."""
    FAMILIES[cls.family] = cls
    return cls


def family_class(family: str) -> type[DrivingVLM]:
    """The adapter class of ``family``, or a ModelLoadError listing the supported ones."""
    try:
        return FAMILIES[family]
    except KeyError:
        raise ModelLoadError(
            f"model family (config.json's model_type) {family!r} is not supported; supported "
            "families: "
            f"{', '.join(sorted(FAMILIES))}"
        ) from None


def load_vlm(path_or_id: str | Path, *, family: str | None = None, **kwargs: Any) -> DrivingVLM:
    """Load a checkpoint with the adapter of its family (from ``config.json`` when None).

    Keyword arguments go to :meth:`DrivingVLM.from_pretrained`.
    """
    if family is None:
        config = load_config(path_or_id, local_files_only=kwargs.get("local_files_only", False))
        family = str(config.model_type)
    return family_class(family).from_pretrained(path_or_id, **kwargs)


def load_config(path_or_id: str | Path, *, local_files_only: bool = False) -> PreTrainedConfig:
    """The checkpoint's config, with a ModelLoadError that says what to fix."""
    path = Path(path_or_id).expanduser()
    looks_local = isinstance(path_or_id, Path) or str(path_or_id).startswith(("/", ".", "~"))
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} is not a checkpoint: it has no config.json (point at the folder that "
                "save_pretrained wrote)"
            )
    elif looks_local:
        raise ModelLoadError(f"checkpoint folder {path} does not exist")
    try:
        config: PreTrainedConfig = AutoConfig.from_pretrained(
            str(path) if path.exists() else str(path_or_id), local_files_only=local_files_only
        )
    except (OSError, ValueError) as exc:
        # A mistyped relative folder ("models/my-llava") reads as a hub id: say both.
        no_folder = "" if path.exists() else f"there is no folder {path.resolve()}, and "
        raise ModelLoadError(
            f"cannot read the config of {path_or_id}: {no_folder}{exc}. Give a local checkpoint "
            "folder, or a hub id that is in the hub cache on this machine (or can be downloaded)"
        ) from exc
    return config


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"`` or a dtype name -> a dtype that runs on ``device``, or a ModelLoadError."""
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    resolved = dtype if isinstance(dtype, torch.dtype) else _DTYPES.get(str(dtype))
    if resolved is None or resolved not in _DTYPES.values():
        raise ModelLoadError(
            f"dtype {dtype!r} is not supported; use auto, float32, bfloat16 or float16"
        )
    if device.type == "cpu" and resolved == torch.float16:
        raise ModelLoadError("float16 is not supported on the CPU; use float32 or bfloat16")
    if device.type == "cuda" and resolved == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ModelLoadError(f"this GPU ({device}) has no bfloat16; use float16 or float32")
    return resolved


def check_attention(attn_implementation: str, device: torch.device) -> None:
    """Raise a ModelLoadError when ``attn_implementation`` cannot run on ``device``."""
    if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ModelLoadError(
            f"attention implementation {attn_implementation!r} is not supported; use one of "
            f"{', '.join(ATTENTION_IMPLEMENTATIONS)}"
        )
    if attn_implementation == "flash_attention_2":
        if device.type != "cuda":
            raise ModelLoadError("flash_attention_2 runs on CUDA only; use sdpa on the CPU")
        if not is_flash_attn_2_available():
            raise ModelLoadError(
                "flash_attention_2 needs the flash-attn package (>= 2.3.3) built for this "
                "torch and CUDA; install it (pip install flash-attn --no-build-isolation) or "
                "use sdpa"
            )


def _triple(values: Any) -> tuple[float, float, float]:
    items = [float(x) for x in values] if isinstance(values, list | tuple) else [float(values)] * 3
    if len(items) != 3:
        raise ModelLoadError(f"expected 3 channel values in the image processor, got {values!r}")
    return items[0], items[1], items[2]


def _cache_keyword(decoder: nn.Module) -> str:
    """The cache argument's name: ``cache`` since transformers 5.2x, ``past_key_values`` before."""
    parameters = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _stop_ids(model: PreTrainedModel, tokenizer: Any) -> frozenset[int]:
    """Token ids that end an answer: the generation config's eos ids and the tokenizer's."""
    stops: set[int] = set()
    config_eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(config_eos, int):
        stops.add(config_eos)
    elif config_eos is not None:
        stops.update(int(i) for i in config_eos)
    if tokenizer.eos_token_id is not None:
        stops.add(int(tokenizer.eos_token_id))
    return frozenset(stops)


def _crop(cache: DynamicCache, length: int) -> None:
    """Cut ``cache`` back to its first ``length`` tokens (transformers 5 takes a negative count)."""
    surplus = cache.get_seq_length() - length
    if surplus > 0:
        cache.crop(-surplus)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
