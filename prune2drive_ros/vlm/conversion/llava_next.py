"""LLaVA-NeXT's original checkpoints (DriveMM, LLaVA-OneVision's lmms-lab releases) -> transformers.

DriveMM (``DriveMM/DriveMM``) is published as its code (LLaVA-NeXT's ``llava`` package) saves
it: one ``LlavaLlamaForCausalLM`` (``LlavaQwenForCausalLM`` for OneVision's Qwen2 releases)
whose config.json is the language model's config plus LLaVA's ``mm_*`` keys, and whose state
dict holds everything under the language model's names::

    model.embed_tokens / model.layers.* / model.norm / lm_head     the decoder (lm_head absent
                                                                   when tied, as in Qwen2-0.5B)
    model.mm_projector.{0,2}                                       Linear, exact GELU, Linear
    model.image_newline                                            appended after each image
    model.vision_tower.vision_tower.vision_model.*                 SigLIP, last layer deleted

LLaVA's ``SigLipVisionTower`` deletes the tower's last encoder layer and returns the last
remaining layer's output (``hidden_states[-1]``) without ``post_layernorm``: so a checkpoint
stores 26 of so400m's 27 layers, and the transformers tower is given exactly the stored layers
with ``vision_feature_layer -1`` and ``vision_feature_select_strategy "full"`` (the stored
``mm_vision_select_layer -2`` is never read for SigLIP towers). Its ``post_layernorm`` tensors are
copied but never applied, as in the original.

The result is the ``LlavaOnevisionForConditionalGeneration`` folder ``save_pretrained`` would
write (same tensor names), with:

* the original's text config (``LlamaConfig`` / ``Qwen2Config`` fields, rope scaling included);
* an ``<image>`` special token: the original marks images with the id -200 and has no vocabulary
  entry, transformers needs one. Its id is the tokenizer's next one; the embedding and
  ``lm_head`` grow by a row where that id is past their end. The new rows are the MEAN of the
  existing rows. The embedding row is never read (the placeholder is always replaced by image
  features); the ``lm_head`` row's logit is then the mean of the other logits, so it never
  exceeds the largest one and greedy decoding never picks the placeholder;
* a SigLIP image processor config (384 px, mean/std 0.5, rescale 1/255);
* the prompt to use (``prompts.PROMPT_KEY``): by default DriveMM's six-image ``drivemm`` for
  ``llava_llama``, none for ``llava_qwen`` (whose chat template the loader then uses);
* how each view fits the encoder (``checkpoint.IMAGE_FIT_KEY``), from the checkpoint's
  ``image_aspect_ratio`` as LLaVA's ``process_images`` reads it (:func:`image_fit`): ``pad``
  letterboxes each view to a square with the mean colour, ``square`` (or none) resizes it.
  The package feeds each camera view as ONE image; LLaVA's tiling modes (``anyres``,
  ``anyres_max_N``, ``highres``, ``crop_split``) cut each view into up to N crops plus a base
  image, which the per-view pruning does not model: such a checkpoint is refused unless
  ``image_fit`` (``--image-fit``) names the fit to convert it with (recorded under
  :data:`ORIGINAL_ASPECT_KEY`). transformers' ``vision_aspect_ratio`` default
  (``anyres_max_9``), which nothing here reads, is left out of the written config.json.

The vision tower's config comes from ``vision_tower`` (``--vision-tower``), else the checkpoint's
``mm_vision_tower``; :func:`tower_config` says how a folder is told from a hub id.

Tensors are read one at a time and written shard by shard (:mod:`.shards`), so an 8 B
checkpoint needs about one shard of memory, not two copies of the model.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from transformers import (
    AddedToken,
    AutoTokenizer,
    LlamaConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionImageProcessorPil,
    PreTrainedConfig,
    Qwen2Config,
    SiglipVisionConfig,
)

from ...errors import ConversionError
from ...progress import Progress
from ...prompts import PROMPT_KEY
from ..checkpoint import IMAGE_FIT_KEY
from ..llava_onevision import SIGLIP_MEAN_STD
from . import edit_json, read_config
from .shards import Producer, SourceTensors, missing_weights, write_shards

logger = logging.getLogger(__name__)

NAME = "llava_next"
TITLE = "LLaVA-NeXT / LLaVA-OneVision original format (DriveMM/DriveMM, lmms-lab llava-onevision)"

#: original model_type -> the transformers config class of its language model.
TEXT_CONFIGS: dict[str, type[PreTrainedConfig]] = {
    "llava_llama": LlamaConfig,
    "llava_qwen": Qwen2Config,
}
#: The prompt of each original model_type's paper checkpoint (:func:`default_prompt`):
#: DriveMM's for llava_llama; OneVision's Qwen2 releases have none of their own.
DEFAULT_PROMPTS: dict[str, str] = {"llava_llama": "drivemm"}
#: LLaVA's ``image_aspect_ratio`` values that feed each image as one -> how a view fits the
#: encoder (``checkpoint.IMAGE_FIT_KEY``). LLaVA's ``process_images`` letterboxes for ``pad``
#: and resizes for any value it does not tile (``square``, its default, or none).
IMAGE_FITS: dict[str | None, str] = {"pad": "pad", "square": "resize", None: "resize"}
#: The fits :func:`image_fit` may be asked for (``--image-fit``).
FIT_CHOICES: tuple[str, ...] = ("pad", "resize")
#: ``image_aspect_ratio`` values (or prefixes) with which LLaVA cuts one image into several crops.
_TILED = re.compile(r"anyres.*|highres|crop_split")
#: Config attribute: the checkpoint's own ``image_aspect_ratio`` when it was a tiling mode and
#: ``image_fit`` chose the fit instead.
ORIGINAL_ASPECT_KEY = "prune2drive_original_image_aspect_ratio"
#: The converted config.json keys written by transformers that describe no image handling used
#: here: ``vision_aspect_ratio`` (its ``anyres_max_9`` default) is read only when a view is tiled.
_UNUSED_KEYS = ("vision_aspect_ratio",)
IMAGE_TOKEN = "<image>"
#: The only projector the transformers class has: Linear, GELU, Linear.
PROJECTOR_TYPE = "mlp2x_gelu"

#: SigLIP towers LLaVA-NeXT checkpoints name in mm_vision_tower, with what their hub config
#: says (its head count is in no tensor shape); any other tower needs a local config folder.
KNOWN_TOWERS: dict[str, dict[str, Any]] = {
    "google/siglip-so400m-patch14-384": {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "image_size": 384,
        "patch_size": 14,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    },
}

_VISION = "model.vision_tower.vision_tower.vision_model."
_EMBED = "model.embed_tokens.weight"
_HEAD = "lm_head.weight"
#: original name prefix -> the name save_pretrained gives it (first match wins).
_RENAMES: tuple[tuple[str, str], ...] = (
    (_VISION, "vision_tower."),
    ("model.mm_projector.0.", "multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "multi_modal_projector.linear_2."),
    ("model.image_newline", "image_newline"),
    ("lm_head.", "language_model.lm_head."),
    *(
        (f"model.{part}", f"language_model.model.{part}")
        for part in ("embed_tokens.", "layers.", "norm.")
    ),
)
#: Stored but not weights of the transformers model: rotary caches, SigLIP's pooling head
#: (LLaVA replaces it by an identity).
_DROPPED = re.compile(rf"(.*\.rotary_emb\.inv_freq|{re.escape(_VISION)}head\..*)$")
_VISION_LAYER = re.compile(rf"{re.escape(_VISION)}encoder\.layers\.(\d+)\.")
#: Tensors every checkpoint of this format has (lm_head unless tied).
_REQUIRED = (
    _EMBED,
    "model.norm.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.mm_projector.0.weight",
    "model.mm_projector.0.bias",
    "model.mm_projector.2.weight",
    "model.mm_projector.2.bias",
    "model.image_newline",
    f"{_VISION}embeddings.patch_embedding.weight",
    f"{_VISION}embeddings.position_embedding.weight",
    f"{_VISION}encoder.layers.0.self_attn.q_proj.weight",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
#: The files a tokenizer may be saved in (Llama-3's two, SentencePiece, Qwen2's BPE files).
_TOKENIZER_COPIED = (
    *_TOKENIZER_FILES,
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


# -------------------------------------------------------------------------------- the format


def missing(folder: Path) -> list[str]:
    """What ``folder`` lacks to be an original LLaVA-NeXT checkpoint (empty: it is one)."""
    config, problems = read_config(folder)
    if config is None:
        return problems
    model_type = config.get("model_type")
    if model_type not in TEXT_CONFIGS:
        return [f"config.json model_type is {model_type!r}, not {' / '.join(TEXT_CONFIGS)}"]
    tower = config.get("mm_vision_tower")
    if not isinstance(tower, str) or "siglip" not in tower.lower():
        problems.append(f"config.json mm_vision_tower is {tower!r}, not a SigLIP tower")
    projector = config.get("mm_projector_type")
    if projector != PROJECTOR_TYPE:
        problems.append(f"config.json mm_projector_type is {projector!r}, not {PROJECTOR_TYPE!r}")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        problems.append(f"no tokenizer ({' / '.join(_TOKENIZER_FILES)})")
    no_weights = missing_weights(folder)
    if no_weights:
        return [*problems, *no_weights]
    with SourceTensors(folder) as tensors:
        names = set(tensors.names())
    required = (*_REQUIRED, *(() if config.get("tie_word_embeddings") else (_HEAD,)))
    problems += [f"no {name} tensor" for name in required if name not in names]
    return problems


def default_prompt(folder: Path) -> str | None:
    """The prompt of the paper's checkpoint of ``folder``'s model_type (:data:`DEFAULT_PROMPTS`)."""
    config, _ = read_config(folder)
    return None if config is None else DEFAULT_PROMPTS.get(config.get("model_type", ""))


def convert(
    source: Path,
    target: Path,
    *,
    prompt: str | None,
    shard_bytes: int,
    progress: Progress,
    vision_tower: str | Path | None = None,
    image_fit: str | None = None,
) -> None:
    """Write the converted checkpoint ``source`` (in this format: ``missing`` is empty) into
    the existing empty folder ``target``.

    ``prompt``, ``shard_bytes`` and ``progress`` are :func:`~.convert_checkpoint`'s.
    ``vision_tower`` (``--vision-tower``) names the SigLIP tower's config: a folder holding its
    config.json or a hub id (:func:`tower_config`); by default config.json's
    ``mm_vision_tower``. ``image_fit`` (``--image-fit``: ``pad`` or ``resize``) converts a
    checkpoint whose ``image_aspect_ratio`` tiles images (:func:`image_fit`).

    Raises:
        ConversionError: its vision tower is unknown, its tensors do not fit its config, or
            its images are tiled and ``image_fit`` does not say how to feed views instead.
    """
    original, _ = read_config(source)
    assert original is not None  # missing() checked it
    fit, tiled_aspect = _image_fit(original, image_fit)  # fails before writing
    with SourceTensors(source) as tensors:
        vision = _vision_config(original, tensors, vision_tower)  # fails before writing
        tokenizer = _tokenizer(source, target)
        image_token = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        rows = tensors.shape(_EMBED)[0]
        if image_token > rows:
            raise ConversionError(
                f"{source}'s tokenizer has {len(tokenizer)} tokens but {_EMBED} only {rows} "
                "rows; the tokenizer files do not belong to these weights"
            )
        vocab_size = max(rows, image_token + 1)
        config = _config(original, vision, vocab_size=vocab_size, tied=_HEAD not in tensors.names())
        config.image_token_index = image_token
        setattr(config, IMAGE_FIT_KEY, fit)
        if tiled_aspect is not None:
            setattr(config, ORIGINAL_ASPECT_KEY, tiled_aspect)
        if prompt is not None:
            setattr(config, PROMPT_KEY, prompt)
        config.save_pretrained(target)
        edit_json(target / "config.json", _drop_unused_keys)
        _image_processor(original, _side(vision.image_size)).save_pretrained(target)
        if (source / "generation_config.json").is_file():
            shutil.copyfile(source / "generation_config.json", target / "generation_config.json")
        plan = tensor_plan(tensors, rows=vocab_size)
        write_shards(target, plan, shard_bytes=shard_bytes, progress=progress)
    logger.info("converted %s (%s) to %s", source, original["model_type"], target)


def image_fit(original: Mapping[str, Any], requested: str | None = None) -> str:
    """How each view of a checkpoint with config ``original`` fits the encoder (``pad`` or
    ``resize``, ``checkpoint.IMAGE_FIT_KEY``): :data:`IMAGE_FITS` of its
    ``image_aspect_ratio``, or ``requested`` where that is a tiling mode.

    Raises:
        ConversionError: the checkpoint tiles images (``anyres``, ``anyres_max_N``, ``highres``,
            ``crop_split``) and ``requested`` is None, or ``requested`` is unknown or
            contradicts an aspect ratio that does not tile.
    """
    return _image_fit(original, requested)[0]


def _image_fit(original: Mapping[str, Any], requested: str | None) -> tuple[str, str | None]:
    """:func:`image_fit`, and the checkpoint's tiling ``image_aspect_ratio`` it replaced."""
    aspect = original.get("image_aspect_ratio")
    if requested is not None and requested not in FIT_CHOICES:
        raise ConversionError(
            f"unknown image fit {requested!r}; give one of {', '.join(FIT_CHOICES)}"
        )
    if isinstance(aspect, str) and _TILED.fullmatch(aspect):
        if requested is None:
            raise ConversionError(
                f"config.json's image_aspect_ratio is {aspect!r}: LLaVA tiles each image into "
                "several crops plus a base image, which this package does not do (it feeds each "
                "camera view as one image, and prunes per view); converting it as it is would "
                "change the model's input silently. Pass --image-fit pad (each view "
                "letterboxed to a square with the mean colour, as LLaVA-NeXT's training feeds the "
                "images of a multi-image sample) or --image-fit resize (each view squashed, as "
                "transformers' LLaVA-OneVision feeds several images) to convert it with that fit "
                "(image_fit= in Python)"
            )
        return requested, aspect
    if aspect is not None and not isinstance(aspect, str):
        raise ConversionError(f"config.json's image_aspect_ratio is {aspect!r}, not a string")
    fit = IMAGE_FITS.get(aspect, "resize")
    if requested is not None and requested != fit:
        raise ConversionError(
            f"--image-fit {requested} contradicts config.json's image_aspect_ratio {aspect!r} "
            f"(LLaVA feeds such images with fit {fit!r}); --image-fit only chooses for a "
            "checkpoint that tiles its images"
        )
    return fit, None


def _drop_unused_keys(config: dict[str, Any]) -> dict[str, Any]:
    """The written config.json without :data:`_UNUSED_KEYS`."""
    return {key: value for key, value in config.items() if key not in _UNUSED_KEYS}


def _tokenizer(source: Path, target: Path) -> Any:
    """The original tokenizer with ``<image>`` added as a special token (unless it has one),
    saved into ``target``; chat template and special tokens as they were.

    It is loaded from a copy of its files in ``target``: transformers would otherwise read the
    source's config.json, whose model_type it does not know.
    """
    for name in _TOKENIZER_COPIED:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    tokenizer.add_tokens(
        AddedToken(IMAGE_TOKEN, special=True, normalized=False), special_tokens=True
    )
    tokenizer.save_pretrained(str(target))
    return tokenizer


def _config(
    original: Mapping[str, Any],
    vision: SiglipVisionConfig,
    *,
    vocab_size: int,
    tied: bool,
) -> LlavaOnevisionConfig:
    """The transformers config: the original's text config and the stored ``vision`` tower
    (``tied``: the checkpoint stores no lm_head)."""
    text_class = TEXT_CONFIGS[original["model_type"]]
    base = {field.name for field in dataclasses.fields(PreTrainedConfig)}
    # rope_theta and rope_scaling: the transformers 4 names, which the config class maps
    # onto its rope_parameters.
    known = {field.name for field in dataclasses.fields(text_class)} - base
    text = {
        key: value
        for key, value in original.items()
        if key in known | {"rope_theta", "rope_scaling"}
    }
    text.update(vocab_size=vocab_size, tie_word_embeddings=tied)
    dtype = original.get("torch_dtype", original.get("dtype"))
    if dtype is not None:
        text["dtype"] = dtype
    pinpoints = original.get("image_grid_pinpoints")
    extra: dict[str, Any] = {}
    if isinstance(pinpoints, list):
        extra["image_grid_pinpoints"] = pinpoints
    config = LlavaOnevisionConfig(
        text_config=text_class(**text).to_dict(),
        vision_config=vision.to_dict(),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=tied,
        **extra,
    )
    config.architectures = ["LlavaOnevisionForConditionalGeneration"]
    if dtype is not None:
        config.dtype = dtype
    return config


def is_folder_name(tower: str | Path) -> bool:
    """Whether ``tower`` names a folder rather than a hub id: a :class:`~pathlib.Path`, or a
    string that is absolute or starts with ``.``, ``/`` or ``~`` (``./siglip``, ``../siglip``,
    ``~/models/siglip``). Any other string (``google/siglip-so400m-patch14-384``) is a hub
    id, never looked up relative to the current folder."""
    if isinstance(tower, Path):
        return True
    return tower.startswith((".", "/", "~")) or Path(tower).is_absolute()


def tower_config(tower: str | Path, *, where: str) -> SiglipVisionConfig:
    """The SigLIP config ``tower`` names (``where``: where the name came from, for errors).

    A folder (:func:`is_folder_name`) must hold a config.json. A hub id is looked up in
    :data:`KNOWN_TOWERS` first (no download), else its config.json is fetched with
    ``huggingface_hub`` (the cache under ``HF_HOME``; ``HF_HUB_OFFLINE=1`` reads only that) and
    read with ``SiglipVisionConfig.from_pretrained`` from the absolute snapshot folder (a bare
    ``from_pretrained(hub_id)`` would take a folder of that name in the current folder first).
    A full SigLIP config (text and vision) gives its vision part.

    Raises:
        ConversionError: the folder has no config.json, or the hub id cannot be read.
    """
    remedy = (
        "pass --vision-tower FOLDER_OR_HUB_ID (vision_tower= in Python): a folder holding the "
        "tower's SigLIP config.json, or its hub id"
    )
    if is_folder_name(tower):
        folder = Path(tower).expanduser()
        if not (folder / "config.json").is_file():
            raise ConversionError(
                f"the vision tower {str(tower)!r} ({where}) is a folder name, but "
                f"{folder / 'config.json'} does not exist; {remedy}"
            )
        return SiglipVisionConfig.from_pretrained(str(folder.resolve()))
    name = str(tower)
    if name in KNOWN_TOWERS:
        return SiglipVisionConfig(**KNOWN_TOWERS[name])
    try:
        config_file = hf_hub_download(name, "config.json")
        return SiglipVisionConfig.from_pretrained(str(Path(config_file).parent))
    except (OSError, ValueError) as exc:
        raise ConversionError(
            f"the vision tower {name!r} ({where}) is read as a hub id (not a known tower: "
            f"{', '.join(KNOWN_TOWERS)}; a folder name starts with '.', '/' or '~'), and its "
            f"config cannot be read: {exc}; {remedy}"
        ) from exc


def _vision_config(
    original: Mapping[str, Any], tensors: SourceTensors, vision_tower: str | Path | None
) -> SiglipVisionConfig:
    """The tower's config with the layer count the checkpoint stores, checked against its shapes."""
    if vision_tower is not None:
        tower, where = vision_tower, "--vision-tower"
    else:
        tower, where = str(original["mm_vision_tower"]), "config.json mm_vision_tower"
    name = str(tower)
    config = tower_config(tower, where=where)
    layers = sorted({int(m.group(1)) for n in tensors.names() if (m := _VISION_LAYER.match(n))})
    if layers != list(range(len(layers))):
        raise ConversionError(f"the vision tower's stored encoder layers are not 0..n-1: {layers}")
    config.num_hidden_layers = len(layers)
    config.vision_use_head = False
    hidden, _, patch, _ = tensors.shape(f"{_VISION}embeddings.patch_embedding.weight")
    positions = tensors.shape(f"{_VISION}embeddings.position_embedding.weight")[0]
    stored = {"hidden_size": hidden, "patch_size": patch, "positions": positions}
    expected = {
        "hidden_size": config.hidden_size,
        "patch_size": _side(config.patch_size),
        "positions": (_side(config.image_size) // _side(config.patch_size)) ** 2,
    }
    if stored != expected:
        raise ConversionError(
            f"the stored vision tower ({stored}) does not match the config of {name} ({where}: "
            f"{expected}); pass --vision-tower FOLDER_OR_HUB_ID (vision_tower= in Python) naming "
            "the right SigLIP config"
        )
    return config


def _side(size: int | Sequence[int]) -> int:
    """A SigLIP image or patch size as one number (they are square)."""
    return size if isinstance(size, int) else int(size[0])


def _image_processor(original: Mapping[str, Any], size: int) -> LlavaOnevisionImageProcessorPil:
    """SigLIP's preprocessing as LLaVA's ``SigLipImageProcessor`` does it (``size`` px, 384
    for so400m; mean/std 0.5, rescale 1/255), written as LLaVA-OneVision's image processor."""
    pinpoints = original.get("image_grid_pinpoints")
    settings: dict[str, Any] = {
        "image_mean": SIGLIP_MEAN_STD,
        "image_std": SIGLIP_MEAN_STD,
        "rescale_factor": 1 / 255,
        "size": {"height": size, "width": size},
    }
    if isinstance(pinpoints, list):
        settings["image_grid_pinpoints"] = pinpoints
    return LlavaOnevisionImageProcessorPil(**settings)


# -------------------------------------------------------------------------------- tensors


def target_name(name: str) -> str | None:
    """The transformers name of original tensor ``name`` (None: not a weight there).

    Raises:
        ConversionError: a tensor this format does not have (never dropped silently).
    """
    if _DROPPED.match(name):
        return None
    for prefix, replacement in _RENAMES:
        if name.startswith(prefix):
            return replacement + name[len(prefix) :]
    raise ConversionError(
        f"tensor {name!r} is not part of a LLaVA-NeXT checkpoint this converter knows "
        "(decoder, mm_projector, image_newline, SigLIP tower)"
    )


def _grown(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """``tensor`` with rows appended up to ``rows``, each the mean of the existing rows (see the
    module docstring: the embedding row is never read, the head's logit never wins)."""
    extra = rows - tensor.shape[0]
    if extra <= 0:
        return tensor
    mean = tensor.double().mean(dim=0, keepdim=True).to(tensor.dtype)
    return torch.cat([tensor, mean.expand(extra, -1)])


def tensor_plan(tensors: SourceTensors, *, rows: int) -> dict[str, Producer]:
    """Converted name -> a function reading that tensor; the embedding and ``lm_head`` grown to
    ``rows`` (:func:`_grown`).

    Raises:
        ConversionError: a tensor this format does not have (:func:`target_name`).
    """
    plan: dict[str, Producer] = {}
    for name in tensors.names():
        renamed = target_name(name)
        if renamed is None:
            continue
        if name in (_EMBED, _HEAD):
            plan[renamed] = partial(_read_grown, tensors, name, rows)
        else:
            plan[renamed] = partial(tensors.get, name)
    return plan


def _read_grown(tensors: SourceTensors, name: str, rows: int) -> torch.Tensor:
    return _grown(tensors.get(name), rows)


__all__ = [
    "DEFAULT_PROMPTS",
    "FIT_CHOICES",
    "IMAGE_FITS",
    "NAME",
    "ORIGINAL_ASPECT_KEY",
    "TITLE",
    "convert",
    "default_prompt",
    "image_fit",
    "is_folder_name",
    "missing",
    "target_name",
    "tensor_plan",
    "tower_config",
]
