"""Small random-weight checkpoints of the real model classes, for tests, the demo and benchmarks.

No weights can be downloaded where this package is developed and tested, so a checkpoint is
built instead: the family's real transformers class (e.g.
``LlavaOnevisionForConditionalGeneration``) with a small config and random weights, a byte-level
BPE tokenizer trained offline on a built-in driving corpus with the family's special tokens, and
the family's image processor config, all written with ``save_pretrained``. It is then loaded
back through exactly the path a user's checkpoint takes (:func:`~.base.load_vlm`), so the tests
exercise the real loader, tokenizer, processor config and model code.

Such a model answers nonsense. Its config carries ``prune2drive_random_weights: true``, which
the loader exposes as ``vlm.random_weights``; whatever shows its answers must say so.

Shapes (see the family module for the numbers): ``tiny`` (saved; tests), ``small`` (in memory;
the CPU prefill benchmark) and ``7b`` (in memory, the real 7B architecture, built directly on the
GPU in bfloat16; never saved).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from ..devices import resolve_device
from ..errors import ModelLoadError
from ..views import VIEW_LABELS
from .base import (
    RANDOM_WEIGHTS_KEY,
    DrivingVLM,
    Normalization,
    check_attention,
    family_class,
    resolve_dtype,
)

logger = logging.getLogger(__name__)

#: Bump when the recipe (corpus, shapes, tokenizer) changes, so cached checkpoints rebuild.
TINY_VERSION = "1"
SHAPES = ("tiny", "small", "7b")
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


def train_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ``family``'s special tokens, trained on the corpus.

    Byte-level, so any question (any UTF-8) tokenises; deterministic (fixed corpus, no
    randomness in the BPE trainer).
    """
    cls = family_class(family)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=list(cls.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    # Named special tokens (InternVL's start_image_token, ...) only where the family has them,
    # so the other families' saved tokenizer files stay byte-identical.
    named = (
        {"extra_special_tokens": dict(cls.tokenizer_attributes)} if cls.tokenizer_attributes else {}
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=cls.eos_token, pad_token=cls.pad_token, **named
    )


def build_tiny(family: str, out_dir: Path, *, seed: int = 0) -> Path:
    """Write a ``tiny`` random-weight checkpoint of ``family`` to ``out_dir``; return it.

    The same ``seed`` gives the same weights; the tokenizer does not depend on it.
    """
    cls = family_class(family)
    tokenizer = train_tokenizer(family)
    model = _random_model(cls, "tiny", tokenizer, torch.device("cpu"), torch.float32, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    cls.image_processor().save_pretrained(out_dir)
    logger.info("wrote a tiny random-weight %s checkpoint to %s", family, out_dir)
    return out_dir


def cached_tiny(family: str, seed: int = 0) -> Path:
    """The tiny checkpoint of ``family`` in the user cache, built on first use.

    Lives in ``$XDG_CACHE_HOME/prune2drive_ros/tiny-<family>-<seed>-<version>`` (default
    ``~/.cache``). It is built in a temporary folder beside it and renamed into place, so
    concurrent processes (parallel test workers) never see half a checkpoint; the loser of a
    race discards its copy.
    """
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prune2drive_ros"
    final = root / f"tiny-{family}-{seed}-{TINY_VERSION}"
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        build_tiny(family, staging, seed=seed)
        try:
            staging.rename(final)
        except OSError:
            if not (final / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def random_vlm(
    family: str,
    shape: str = "small",
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    attn_implementation: str = "sdpa",
    seed: int = 0,
) -> DrivingVLM:
    """A random-weight model of ``shape`` built in memory on ``device`` (never saved).

    For benchmarks: the ``7b`` shape's 8 B parameters are initialised on the GPU directly in
    ``dtype`` (bfloat16 by default), which takes seconds instead of minutes of disk I/O.

    Raises:
        ModelLoadError: ``7b`` on the CPU, or a device/dtype/attention that cannot be used.
    """
    if shape not in SHAPES:
        raise ModelLoadError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    torch_device = resolve_device(device)
    if shape == "7b" and torch_device.type != "cuda":
        raise ModelLoadError(
            "the 7b shape needs a CUDA GPU (about 17 GB in bfloat16); use shape 'small' on the CPU"
        )
    torch_dtype = resolve_dtype(dtype, torch_device)
    check_attention(attn_implementation, torch_device)
    cls = family_class(family)
    tokenizer = train_tokenizer(family)
    model = _random_model(
        cls, shape, tokenizer, torch_device, torch_dtype, seed=seed, attn=attn_implementation
    )
    return cls(
        model,
        tokenizer,
        name=f"random-{family}-{shape}-{seed}",
        normalization=Normalization.from_processor_dict(cls.image_processor().to_dict()),
        random_weights=True,
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
    config = cls.random_config(shape, tokenizer)
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
