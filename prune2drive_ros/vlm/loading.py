"""Loading a checkpoint: config, dtype, attention kernel, the adapter of its family and weights.

:func:`load_vlm` reads ``config.json``'s ``model_type``, picks the adapter
:data:`~.families.FAMILIES` names for it, and loads the checkpoint with :func:`load_pretrained`.
Every check that can fail runs before the weights load, each with a :class:`ModelLoadError` that
says what to fix.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig
from transformers.image_processing_base import ImageProcessingMixin
from transformers.utils import is_flash_attn_2_available
from transformers.utils import logging as transformers_logging

from ..attention import ATTENTION_IMPLEMENTATIONS
from ..devices import resolve_device
from ..errors import ModelLoadError
from ..prompts import PROMPT_KEY, resolve_prompt
from ..quantization import NO_QUANTIZATION
from .checkpoint import IMAGE_FIT_KEY, RANDOM_WEIGHTS_KEY
from .families import FAMILIES
from .quantization import check_quantization, quantize_language_model
from .results import Normalization

if TYPE_CHECKING:
    from .base import DrivingVLM

logger = logging.getLogger(__name__)

_VLM = TypeVar("_VLM", bound="DrivingVLM")

#: Weight files that are Python pickles, which transformers would unpickle (running any code
#: they hold) where a folder has no safetensors weights.
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Keep transformers' own progress bars ("Loading weights") off while it runs inside this
    package: the library reports progress to its callers, and only commands draw bars."""
    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


def load_vlm(path_or_id: str | Path, *, family: str | None = None, **kwargs: Any) -> DrivingVLM:
    """Load a checkpoint with the adapter of its family (from ``config.json`` when None).

    Keyword arguments go to :func:`load_pretrained`.

    Raises:
        ModelLoadError: as :func:`load_pretrained`, and for a family :data:`~.families.FAMILIES`
            has no adapter for (naming the supported ones).
    """
    if family is None:
        config = load_config(path_or_id, local_files_only=kwargs.get("local_files_only", False))
        family = str(config.model_type)
    return load_pretrained(FAMILIES[family], path_or_id, **kwargs)


def load_pretrained(
    cls: type[_VLM],
    path_or_id: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    attn_implementation: str = "sdpa",
    local_files_only: bool = False,
    prompt: str = "auto",
    max_tiles: int = 1,
    placement: str = "projector",
    quantization: str = NO_QUANTIZATION,
) -> _VLM:
    """Load a checkpoint of family ``cls`` from a local folder or a hub id.

    Args:
        cls: the family's adapter class.
        path_or_id: folder written by ``save_pretrained`` (or :mod:`~.tiny`), or a hub
            id: read from the local hub cache, and downloaded by transformers when it is
            not there and the network allows (``HF_HUB_OFFLINE=1`` or
            ``local_files_only`` forbid that, as a vehicle should).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        dtype: ``"auto"`` (bfloat16 on CUDA where supported, else float16; float32 on CPU)
            or ``float32`` / ``bfloat16`` / ``float16``.
        attn_implementation: ``"sdpa"`` or ``"flash_attention_2"`` (CUDA with flash-attn).
        local_files_only: never contact the hub, even for an id.
        prompt: a named prompt (:data:`~prune2drive_ros.prompts.PROMPT_CHOICES`); ``auto``
            follows the checkpoint (:func:`~prune2drive_ros.prompts.resolve_prompt`).
        max_tiles: tiles of the stitched image, for prompts that stitch the views.
        placement: where tokens are pruned (:mod:`~prune2drive_ros.placement`).
        quantization: weight-only quantisation of the language model, applied once the model
            is on ``device`` (:mod:`.quantization`).

    Raises:
        ModelLoadError: with the remedy, for a missing path, a folder that is not a
            checkpoint, a folder whose weights are only pickles, a checkpoint of another
            family, a vision tower whose input size does not give this family's per-view token
            grid, a dtype that cannot be used, an attention kernel that is not installed, or a
            quantisation that cannot run here (:func:`~.quantization.check_quantization`).
        ConfigError: a device that cannot be used (unknown, or CUDA without a GPU).
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    check_attention(attn_implementation, torch_device)
    check_quantization(quantization, torch_device, torch_dtype)
    config = load_config(path_or_id, local_files_only=local_files_only)
    if config.model_type != cls.family:
        raise ModelLoadError(
            f"{path_or_id} is a {config.model_type!r} checkpoint, not {cls.family!r}; "
            "use load_vlm() to pick the family from config.json"
        )
    cls._geometry(config)  # fail on a mismatched vision tower before loading weights
    check_safetensors(cls, path_or_id)
    source = str(path_or_id)
    with quiet_progress():
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
                use_safetensors=True,  # never unpickle weights (a hub id is not checked beforehand)
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"cannot load the {cls.family} checkpoint {source}: {exc}. A checkpoint needs "
                "config.json, the weights, the tokenizer files and preprocessor_config.json"
            ) from exc
    # Loaded on the CPU first, then moved: device_map would need `accelerate`. (The stubs
    # of PreTrainedModel.to are wrapped by a decorator that mypy misreads.)
    model.to(torch_device)  # type: ignore[arg-type]
    quantized = quantize_language_model(
        cls.language_model(model), quantization, torch_device, torch_dtype
    )
    vlm = cls(
        model,
        tokenizer,
        name=source,
        normalization=Normalization.from_processor_dict(processor),
        random_weights=bool(getattr(config, RANDOM_WEIGHTS_KEY, False)),
        prompt=resolve_prompt(prompt, tokenizer, getattr(config, PROMPT_KEY, None)),
        image_fit=getattr(config, IMAGE_FIT_KEY, "resize"),
        max_tiles=max_tiles,
        placement=placement,
        quantization=quantized,
    )
    logger.info(
        "loaded %s %s on %s (%s, %s, prompt %s, quantization %s)",
        cls.family,
        source,
        torch_device,
        torch_dtype,
        attn_implementation,
        vlm.prompt_name,
        quantized.text(),
    )
    return vlm


def check_safetensors(cls: type[DrivingVLM], path_or_id: str | Path) -> None:
    """Refuse a checkpoint folder whose weights are only pickles (``pytorch_model.bin``), before
    anything of it is loaded: unpickling can run any code the file holds, so this package loads
    safetensors only, and says how to convert the weights where they can be trusted.

    Raises:
        ModelLoadError: the folder has pickle weights and no ``*.safetensors`` file.
    """
    path = Path(path_or_id).expanduser()
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickles = [name for name in PICKLE_WEIGHTS if (path / name).is_file()]
    if pickles:
        model_class = cls.model_class.__name__
        raise ModelLoadError(
            f"{path} has only pickle weights ({', '.join(pickles)}), which this package does not "
            "load: unpickling can run code. Convert them to safetensors where the file is "
            f'trusted: python -c "from transformers import {model_class} as M; '
            f"M.from_pretrained('{path}').save_pretrained('{path}', safe_serialization=True)\""
        )


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
