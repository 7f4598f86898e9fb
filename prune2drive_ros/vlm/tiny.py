"""Small random-weight checkpoints of the real model classes, for tests, the demo and benchmarks.

No weights can be downloaded where this package is developed and tested, so a checkpoint is
built instead: the family's real transformers class (e.g.
``LlavaOnevisionForConditionalGeneration``) with a small config and random weights, a byte-level
BPE tokenizer trained offline on a built-in driving corpus with the family's special tokens, and
the family's image processor config, all written with ``save_pretrained``. It is then loaded
back through exactly the path a user's checkpoint takes (:func:`~.loading.load_vlm`), so the tests
exercise the real loader, tokenizer, processor config and model code.

Such a model answers nonsense. Its config carries ``prune2drive_random_weights: true``, which
the loader exposes as ``vlm.random_weights``; whatever shows its answers must say so.

Shapes: ``tiny`` (saved; tests), ``small`` (in memory; the CPU prefill benchmark), ``7b`` (in
memory, the real 7B architecture, built directly on the GPU in bfloat16; never saved) and, for
LLaVA-OneVision only, ``8b``: DriveMM's architecture (SigLIP-so400m, Llama-3.1-8B) likewise. What a
family needs for these (special tokens, a config per shape, the image processor its real
checkpoints ship) is its :class:`Recipe` in :data:`RECIPES`; the family adapters carry none of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GotOcr2ImageProcessorPil,
    InternVLConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionImageProcessorPil,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2VLImageProcessorPil,
)
from transformers.image_processing_base import ImageProcessingMixin

from ..cache import build_once, cache_dir
from ..devices import resolve_device
from ..errors import ModelLoadError
from ..prompts import CHATML_SPECIAL_TOKENS
from ..quantization import NO_QUANTIZATION
from ..views import VIEW_LABELS
from . import internvl, llava_onevision, qwen2_5_vl
from .base import DrivingVLM
from .checkpoint import RANDOM_WEIGHTS_KEY
from .families import FAMILIES
from .loading import check_attention, resolve_dtype
from .quantization import check_quantization, quantize_language_model
from .results import Normalization

logger = logging.getLogger(__name__)

#: Bump when the recipe (corpus, shapes, tokenizer) changes, so cached checkpoints rebuild.
TINY_VERSION = "1"
SHAPES = ("tiny", "small", "7b", "8b")
#: Shapes built on a GPU only (8 B parameters, about 17 GB in bfloat16).
GPU_SHAPES = ("7b", "8b")
#: The tokenizer's size before the family pads the model vocabulary.
TOKENIZER_VOCAB = 512

_CORPUS = (
    "Is there a pedestrian in front of the ego vehicle?",
    "What are the important objects in the current scene?",
    "What is the moving status of the car to the front left?",
    "What should the ego vehicle do next? Keep going straight at the same speed.",
    "Is it safe to change lanes to the left? No, a truck is approaching from behind.",
    "The traffic light ahead is red, so the ego vehicle should stop before the crosswalk.",
    "There is a cyclist on the right side of the road and a parked bus behind.",
    "Brake gently, turn right at the intersection, then accelerate.",
    "Which lane is the ego vehicle in? How many cars are visible?",
    "Yes. No. Left. Right. Ahead. Behind. Stop. Slow down. Speed up.",
    "You are a helpful driving assistant. You see the six surround cameras of the ego vehicle.",
    "system user assistant",
    *(f"{label} view:" for label in VIEW_LABELS.values()),
)


# -------------------------------------------------------------------------------- shapes

_Shape = TypeVar("_Shape")

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

#: DriveMM's language model (Llama-3.1-8B), in the ``8b`` shape behind SigLIP-so400m.
LLAMA_3_1_8B_DECODER: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "rope_parameters": {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
}

#: The stop and padding tokens of every family here (Qwen2's ChatML).
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"


def pick_shape(shapes: Mapping[str, _Shape], shape: str) -> _Shape:
    """``shapes[shape]``, or a ValueError naming the known shapes (for a recipe's config)."""
    try:
        return shapes[shape]
    except KeyError:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(shapes)}") from None


def padded_vocab_size(tokenizer: Any, multiple: int = 64) -> int:
    """The tokenizer's size rounded up to ``multiple``, as real checkpoints pad the embedding."""
    return -(-len(tokenizer) // multiple) * multiple


def _text_config(
    tokenizer: Any, shape: Mapping[str, Any], model_type: str = "qwen2"
) -> dict[str, Any]:
    """The language model part of a family's config: every family here decodes with a
    Qwen2-style model speaking ChatML, sized by ``shape`` and wired to the tokenizer."""
    return {
        "model_type": model_type,
        "vocab_size": padded_vocab_size(tokenizer),
        "max_position_embeddings": 32768,
        "eos_token_id": tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        "pad_token_id": tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        **shape,
    }


# -------------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """How to build a random-weight checkpoint of one family.

    Attributes:
        special_tokens: what the test tokenizer is trained with (chat markers, placeholders).
        config: ``(shape, tokenizer) -> model config`` of ``tiny``, ``small`` or ``7b``.
        image_processor: the image processor a real checkpoint of the family ships (saved
            beside tiny ones, so the loader reads its normalisation as it would a real one's).
        tokenizer_attributes: named special tokens the family's transformers processor reads
            off the tokenizer (InternVL's ``start_image_token``), so the family's own processor
            also loads a tiny checkpoint.
    """

    special_tokens: tuple[str, ...]
    config: Callable[[str, Any], PreTrainedConfig]
    image_processor: Callable[[], ImageProcessingMixin]
    tokenizer_attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


#: SigLIP-so400m at 384 px (729 tokens a view), the tower of LLaVA-OneVision-7B and DriveMM.
SIGLIP_SO400M: dict[str, Any] = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 26,
    "num_attention_heads": 16,
}
#: LLaVA-OneVision's shapes: (vision tower, language model) keyword arguments; ``7b`` is
#: LLaVA-OneVision-7B's real architecture (SigLIP-so400m, Qwen2-7B) and ``8b`` DriveMM's
#: converted one (SigLIP-so400m, Llama-3.1-8B), for GPU benchmarks.
_LLAVA_ONEVISION_SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    **{name: (VIT_TEST_SHAPES[name], DECODER_TEST_SHAPES[name]) for name in VIT_TEST_SHAPES},
    "7b": (SIGLIP_SO400M, QWEN2_7B_DECODER),
    "8b": (SIGLIP_SO400M, LLAMA_3_1_8B_DECODER),
}


def _llava_onevision_config(shape: str, tokenizer: Any) -> PreTrainedConfig:
    vision, text = pick_shape(_LLAVA_ONEVISION_SHAPES, shape)
    return llava_onevision_config(tokenizer, vision, text)


def llava_onevision_config(
    tokenizer: Any,
    vision: Mapping[str, Any],
    text: Mapping[str, Any],
    *,
    image_size: int = llava_onevision.IMAGE_SIZE,
    patch_size: int = llava_onevision.PATCH_SIZE,
) -> PreTrainedConfig:
    """A LLaVA-OneVision config: a SigLIP tower of ``vision`` sizes at ``image_size`` px, a
    Qwen2 of ``text`` sizes wired to ``tokenizer`` (also what the scene model is built from)."""
    ids = tokenizer.convert_tokens_to_ids
    return LlavaOnevisionConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "image_size": image_size,
            "patch_size": patch_size,
            "vision_use_head": False,
            **vision,
        },
        text_config={**_text_config(tokenizer, text), "tie_word_embeddings": False},
        image_token_index=ids(llava_onevision.LlavaOnevisionVLM.image_placeholder),
        video_token_index=ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )


def llava_onevision_processor(size: int = llava_onevision.IMAGE_SIZE) -> ImageProcessingMixin:
    """The image processor LLaVA-OneVision checkpoints ship (SigLIP normalisation), at ``size``."""
    return LlavaOnevisionImageProcessorPil(
        image_mean=llava_onevision.SIGLIP_MEAN_STD,
        image_std=llava_onevision.SIGLIP_MEAN_STD,
        size={"height": size, "width": size},
    )


#: InternVL's shapes; ``7b`` is InternVL3-8B's real architecture (InternViT-300M, Qwen2.5-7B).
_INTERNVL_SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    **{name: (VIT_TEST_SHAPES[name], DECODER_TEST_SHAPES[name]) for name in VIT_TEST_SHAPES},
    "7b": (
        {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "attention_bias": True,
        },
        {**QWEN2_7B_DECODER, "vocab_size": 151674},
    ),
}


def _internvl_config(shape: str, tokenizer: Any) -> PreTrainedConfig:
    vision, text = pick_shape(_INTERNVL_SHAPES, shape)
    return InternVLConfig(
        vision_config={
            "model_type": "internvl_vision",
            "image_size": internvl.IMAGE_SIZE,
            "patch_size": internvl.PATCH_SIZE,
            **vision,
        },
        text_config=_text_config(tokenizer, text),
        image_token_id=tokenizer.convert_tokens_to_ids(internvl.InternVLVLM.image_placeholder),
        image_seq_length=256,
        downsample_ratio=internvl.DOWNSAMPLE_RATIO,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )


def _internvl_processor() -> ImageProcessingMixin:
    size = internvl.IMAGE_SIZE
    return GotOcr2ImageProcessorPil(
        size={"height": size, "width": size},
        image_mean=internvl.IMAGENET_MEAN,
        image_std=internvl.IMAGENET_STD,
        crop_to_patches=False,
    )


#: Qwen2.5-VL's window-attention vision tower names its sizes differently from a plain ViT.
_QWEN2_5_VL_VISION_TEST_SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 32, "intermediate_size": 64, "depth": 2, "num_heads": 2},
    "small": {"hidden_size": 128, "intermediate_size": 512, "depth": 2, "num_heads": 4},
}


def _mrope(sections: list[int]) -> dict[str, Any]:
    """Qwen2.5-VL's rotary settings with M-RoPE ``sections`` (t, h, w) of half a head."""
    return {**QWEN2_7B_DECODER["rope_parameters"], "mrope_section": sections}


#: Qwen2.5-VL's shapes; ``7b`` is Qwen2.5-VL-7B-Instruct's real architecture.
#: ``mrope_section`` splits the rotary frequencies (head size / 2) over the three axes.
_QWEN2_5_VL_SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    **{
        name: (
            {**_QWEN2_5_VL_VISION_TEST_SHAPES[name], "fullatt_block_indexes": [1]},
            {**DECODER_TEST_SHAPES[name], "rope_parameters": _mrope(sections)},
        )
        for name, sections in (("tiny", [2, 3, 3]), ("small", [16, 24, 24]))
    },
    "7b": (
        {
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "depth": 32,
            "num_heads": 16,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
        {**QWEN2_7B_DECODER, "rope_parameters": _mrope([16, 24, 24])},
    ),
}


def _qwen2_5_vl_config(shape: str, tokenizer: Any) -> PreTrainedConfig:
    vision, text = pick_shape(_QWEN2_5_VL_SHAPES, shape)
    ids = tokenizer.convert_tokens_to_ids
    return Qwen2_5_VLConfig(
        vision_config={
            "model_type": "qwen2_5_vl_vision",
            "patch_size": qwen2_5_vl.PATCH_SIZE,
            "spatial_merge_size": qwen2_5_vl.MERGE_SIZE,
            "temporal_patch_size": qwen2_5_vl.TEMPORAL_PATCH_SIZE,
            "window_size": 112,
            "out_hidden_size": text["hidden_size"],
            **vision,
        },
        text_config={
            **_text_config(tokenizer, text, "qwen2_5_vl_text"),
            "bos_token_id": ids(PAD_TOKEN),
        },
        image_token_id=ids(qwen2_5_vl.Qwen2_5_VLVLM.image_placeholder),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )


def _qwen2_5_vl_processor() -> ImageProcessingMixin:
    # min_pixels = max_pixels = the per-view budget: a 16:9 frame resizes to exactly it.
    width, height = qwen2_5_vl.IMAGE_SIZE
    return Qwen2VLImageProcessorPil(
        min_pixels=width * height,
        max_pixels=width * height,
        patch_size=qwen2_5_vl.PATCH_SIZE,
        merge_size=qwen2_5_vl.MERGE_SIZE,
        temporal_patch_size=qwen2_5_vl.TEMPORAL_PATCH_SIZE,
    )


#: family -> its random-weight recipe.
RECIPES: dict[str, Recipe] = {
    "llava_onevision": Recipe(
        special_tokens=(*CHATML_SPECIAL_TOKENS, "<image>", "<video>"),
        config=_llava_onevision_config,
        image_processor=llava_onevision_processor,
    ),
    "internvl": Recipe(
        special_tokens=(*CHATML_SPECIAL_TOKENS, "<img>", "</img>", "<IMG_CONTEXT>", "<video>"),
        config=_internvl_config,
        image_processor=_internvl_processor,
        # What InternVLProcessor reads off the tokenizer (as the InternVL3 *-hf tokenizers
        # name them).
        tokenizer_attributes=MappingProxyType(
            {
                "start_image_token": "<img>",
                "end_image_token": "</img>",
                "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>",
            }
        ),
    ),
    "qwen2_5_vl": Recipe(
        special_tokens=(
            *CHATML_SPECIAL_TOKENS,
            "<|vision_start|>",
            "<|vision_end|>",
            "<|image_pad|>",
            "<|video_pad|>",
        ),
        config=_qwen2_5_vl_config,
        image_processor=_qwen2_5_vl_processor,
    ),
}


def recipe(family: str) -> Recipe:
    """The recipe of ``family`` (a ModelLoadError listing the families for an unknown one)."""
    FAMILIES.target(family)  # an unknown family fails here, naming the supported ones
    return RECIPES[family]


# -------------------------------------------------------------------------------- building


def train_bpe(special_tokens: Sequence[str], extra_corpus: Sequence[str] = ()) -> Tokenizer:
    """A byte-level BPE of :data:`TOKENIZER_VOCAB` tokens, ``special_tokens`` first, trained on
    the built-in driving corpus (and ``extra_corpus``, e.g. the scene model's questions): the raw
    ``tokenizers`` object, for callers that wrap or save it their own way (the original-format
    test checkpoints save it as their authors' tokenizers are).

    Byte-level, so any question (any UTF-8) tokenises; deterministic (fixed corpus, no
    randomness in the BPE trainer).
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([*_CORPUS, *extra_corpus], trainer)
    return tokenizer


def train_tokenizer(family: str, extra_corpus: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """:func:`train_bpe` with ``family``'s special tokens, as a transformers tokenizer."""
    family_recipe = recipe(family)
    tokenizer = train_bpe(family_recipe.special_tokens, extra_corpus)
    # Named special tokens (InternVL's start_image_token, ...) only where the family has them,
    # so the other families' saved tokenizer files stay byte-identical.
    attributes = family_recipe.tokenizer_attributes
    named = {"extra_special_tokens": dict(attributes)} if attributes else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, **named
    )


def build_tiny(family: str, out_dir: Path, *, seed: int = 0) -> Path:
    """Write a ``tiny`` random-weight checkpoint of ``family`` to ``out_dir``; return it.

    The same ``seed`` gives the same weights; the tokenizer does not depend on it.
    """
    cls = FAMILIES[family]
    tokenizer = train_tokenizer(family)
    model = _random_model(cls, "tiny", tokenizer, torch.device("cpu"), torch.float32, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    recipe(family).image_processor().save_pretrained(out_dir)
    logger.info("wrote a tiny random-weight %s checkpoint to %s", family, out_dir)
    return out_dir


def cached_tiny(family: str, seed: int = 0) -> Path:
    """The tiny checkpoint of ``family`` in the user cache, built on first use.

    Lives in ``$XDG_CACHE_HOME/prune2drive_ros/tiny-<family>-<seed>-<version>`` (default
    ``~/.cache``). It is built in a temporary folder beside it and renamed into place
    (:func:`~prune2drive_ros.cache.build_once`), so concurrent processes (parallel test
    workers) never see half a checkpoint; the loser of a race discards its copy.
    """
    final = cache_dir() / f"tiny-{family}-{seed}-{TINY_VERSION}"
    return build_once(final, lambda staging: build_tiny(family, staging, seed=seed))


def random_vlm(
    family: str,
    shape: str = "small",
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    attn_implementation: str = "sdpa",
    seed: int = 0,
    quantization: str = NO_QUANTIZATION,
) -> DrivingVLM:
    """A random-weight model of ``shape`` built in memory on ``device`` (never saved).

    For benchmarks: the ``7b`` and ``8b`` shapes' 8 B parameters are initialised on the GPU
    directly in ``dtype`` (bfloat16 by default), which takes seconds instead of minutes of disk
    I/O. ``quantization`` is applied as :func:`~.loading.load_pretrained` applies it.

    Raises:
        ModelLoadError: ``7b``/``8b`` on the CPU, or a device/dtype/attention/quantisation that
            cannot be used.
    """
    if shape not in SHAPES:
        raise ModelLoadError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    torch_device = resolve_device(device)
    if shape in GPU_SHAPES and torch_device.type != "cuda":
        raise ModelLoadError(
            f"the {shape} shape needs a CUDA GPU (about 17 GB in bfloat16); use shape 'small' "
            "on the CPU"
        )
    torch_dtype = resolve_dtype(dtype, torch_device)
    check_attention(attn_implementation, torch_device)
    check_quantization(quantization, torch_device, torch_dtype)
    cls = FAMILIES[family]
    tokenizer = train_tokenizer(family)
    model = _random_model(
        cls, shape, tokenizer, torch_device, torch_dtype, seed=seed, attn=attn_implementation
    )
    quantized = quantize_language_model(
        cls.language_model(model), quantization, torch_device, torch_dtype
    )
    return cls(
        model,
        tokenizer,
        name=f"random-{family}-{shape}-{seed}",
        normalization=Normalization.from_processor_dict(recipe(family).image_processor().to_dict()),
        random_weights=True,
        quantization=quantized,
    )


def _random_model(
    cls: type[DrivingVLM],
    shape: str,
    tokenizer: PreTrainedTokenizerFast,
    device: torch.device,
    dtype: torch.dtype,
    *,
    seed: int,
    attn: str = "sdpa",
) -> PreTrainedModel:
    """The family's model class with a ``shape`` config and seeded random weights on ``device``.

    The global RNG is forked so that building a model does not disturb the caller's seeds.
    """
    config = recipe(cls.family).config(shape, tokenizer)
    setattr(config, RANDOM_WEIGHTS_KEY, True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with torch.device(device):
            model = cls.model_class._from_config(config, dtype=dtype, attn_implementation=attn)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    logger.info(
        "built a random-weight %s %s model: %.1f M parameters on %s (%s)",
        cls.family,
        shape,
        sum(p.numel() for p in model.parameters()) / 1e6,
        device,
        dtype,
    )
    return model.eval()
