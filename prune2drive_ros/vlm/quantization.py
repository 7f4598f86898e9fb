"""Weight-only quantisation of a VLM's language model with torchao, once it is on its device.

The schemes (:data:`~prune2drive_ros.quantization.QUANTIZATIONS`), as torchao configures them:

* ``int8``: ``Int8WeightOnlyConfig`` (one scale per output channel); CPU and CUDA, any dtype.
* ``int4`` on CUDA: ``Int4WeightOnlyConfig`` in tinygemm's tile-packed layout, groups of up to
  128 input channels: bfloat16 on compute capability 8.0 or newer (A100, H100, Orin).
* ``int4`` on the CPU: ``IntxWeightOnlyConfig`` with int4 values in the same groups. torchao has
  no packed int4 kernel for x86 CPUs, so the values are stored one per byte and dequantised at
  every matmul: int4's accuracy with int8's memory, slower than unquantised. It is there to
  measure what int4 costs in answers on any machine, not to be fast on the CPU.

Why here, with torchao's ``quantize_``, rather than through transformers' ``TorchAoConfig`` at
``from_pretrained``: one path for checkpoints and the random-weight benchmark models alike; the
int4 layout is packed on the device that runs it (the loader reads weights on the CPU first,
where tinygemm's layout cannot be built); and handing torchao the decoder module itself keeps
the vision tower, the projector, the embeddings and the LM head in the model dtype by
construction, whatever each family names them. Every refusal comes before the weights load
(:func:`check_quantization`), so a scheme that cannot run never falls back to unquantised.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ModelLoadError
from ..quantization import NO_QUANTIZATION, QUANTIZATIONS

logger = logging.getLogger(__name__)

#: The largest group of input channels an int4 scale covers (torchao's and AWQ's usual size).
INT4_GROUP = 128
#: The smallest group tinygemm's CUDA kernel takes.
TINYGEMM_MIN_GROUP = 32


@dataclass(frozen=True)
class Quantization:
    """How the language model's weights are stored, for logs, diagnostics and benchmarks.

    Attributes:
        scheme: one of :data:`~prune2drive_ros.quantization.QUANTIZATIONS`.
        method: the torchao config applied ("" for ``none``).
        library: torchao and its version ("" for ``none``).
        group_size: input channels per int4 scale (None for int8 and none).
        language_model_bytes: bytes of the language model's weights as stored (quantised
            values and their scales; embeddings included, LM head not).
    """

    scheme: str
    method: str
    library: str
    group_size: int | None
    language_model_bytes: int

    def text(self) -> str:
        """``int4 (torchao 0.18.0 IntxWeightOnlyConfig, group 128)`` or ``none``."""
        if self.scheme == NO_QUANTIZATION:
            return NO_QUANTIZATION
        group = "" if self.group_size is None else f", group {self.group_size}"
        return f"{self.scheme} ({self.library} {self.method}{group})"

    def describe(self) -> dict[str, str]:
        """Diagnostics' key-value lines."""
        return {
            "quantization": self.text(),
            "language_model_weights_mb": f"{self.language_model_bytes / 1e6:.1f}",
        }


def unquantized(decoder: nn.Module) -> Quantization:
    """The record of a language model ``decoder`` whose weights stay in the model dtype."""
    return Quantization(NO_QUANTIZATION, "", "", None, weight_bytes(decoder))


def check_quantization(scheme: str, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse, before any weight loads, a scheme that cannot run on ``device`` in ``dtype``.

    Raises:
        ModelLoadError: an unknown scheme, torchao missing, or int4 on a GPU older than compute
            capability 8.0 or in a dtype other than bfloat16; each with the remedy.
    """
    if scheme not in QUANTIZATIONS:
        raise ModelLoadError(
            f"quantization {scheme!r} is not supported; use one of {', '.join(QUANTIZATIONS)}"
        )
    if scheme == NO_QUANTIZATION:
        return
    _torchao_version(scheme)
    if scheme == "int4" and device.type == "cuda":
        if dtype != torch.bfloat16:
            raise ModelLoadError(
                f"int4 on CUDA runs in bfloat16 only (torchao's tinygemm kernel), not "
                f"{str(dtype).removeprefix('torch.')}; use dtype bfloat16 (or auto), or "
                "quantization int8"
            )
        capability = torch.cuda.get_device_capability(device)
        if capability < (8, 0):
            raise ModelLoadError(
                f"int4 on CUDA needs compute capability 8.0 or newer (tinygemm); "
                f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}: use "
                "quantization int8"
            )


def quantize_language_model(
    decoder: nn.Module, scheme: str, device: torch.device, dtype: torch.dtype
) -> Quantization:
    """Quantise the linear layers of ``decoder`` (the language model) in place.

    Raises:
        ModelLoadError: as :func:`check_quantization`, and for an int4 group that the layers'
            widths leave too small for the CUDA kernel.
    """
    check_quantization(scheme, device, dtype)
    if scheme == NO_QUANTIZATION:
        return unquantized(decoder)
    before = weight_bytes(decoder)
    library = f"torchao {_torchao_version(scheme)}"
    config, group = _config(scheme, decoder, device)
    from torchao.quantization import quantize_

    quantize_(decoder, config)
    method = type(config).__name__
    quantization = Quantization(scheme, method, library, group, weight_bytes(decoder))
    logger.info(
        "quantised the language model to %s: its weights %.1f MB -> %.1f MB",
        quantization.text(),
        before / 1e6,
        quantization.language_model_bytes / 1e6,
    )
    return quantization


def weight_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s parameters and buffers as stored: a quantised weight (a torchao
    tensor subclass) counts the tensors it holds (values, scales, zero points)."""
    return sum(_stored_bytes(t) for t in itertools.chain(module.parameters(), module.buffers()))


def _stored_bytes(tensor: torch.Tensor) -> int:
    data = tensor.data if isinstance(tensor, nn.Parameter) else tensor
    if type(data) is not torch.Tensor and hasattr(data, "__tensor_flatten__"):
        names, _ = data.__tensor_flatten__()
        return sum(_stored_bytes(getattr(data, name)) for name in names)
    return data.numel() * data.element_size()


def _config(scheme: str, decoder: nn.Module, device: torch.device) -> tuple[Any, int | None]:
    """torchao's config of ``scheme`` on ``device``, and the int4 group size."""
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
    )
    from torchao.quantization.granularity import PerGroup

    if scheme == "int8":
        return Int8WeightOnlyConfig(), None
    group = int4_group(decoder)
    if device.type == "cuda":
        if group < TINYGEMM_MIN_GROUP:
            raise ModelLoadError(
                f"int4 on CUDA needs input widths divisible by {TINYGEMM_MIN_GROUP}; this "
                f"language model's allow groups of {group}: use quantization int8"
            )
        tinygemm = Int4WeightOnlyConfig(group_size=group, int4_packing_format="tile_packed_to_4d")
        return tinygemm, group
    int4 = torch.int4  # type: ignore[attr-defined]  # a dtype torch's stubs leave out
    return IntxWeightOnlyConfig(weight_dtype=int4, granularity=PerGroup(group)), group


def int4_group(decoder: nn.Module) -> int:
    """The largest power of two up to :data:`INT4_GROUP` that divides every linear layer's input
    width (128 for every published 7-8B model; smaller for the test models)."""
    widths = [m.in_features for m in decoder.modules() if isinstance(m, nn.Linear)]
    group = INT4_GROUP
    while group > 1 and any(width % group for width in widths):
        group //= 2
    return group


def _torchao_version(scheme: str) -> str:
    """torchao's version, or a ModelLoadError saying how to install it."""
    try:
        import torchao.quantization  # noqa: F401  (its import notes: see the package's __init__)
    except ImportError as exc:
        raise ModelLoadError(
            f"quantization {scheme} needs torchao, which is not installed ({exc}): pip install "
            "'prune2drive_ros[quantization]' (or pip install torchao), or use quantization none"
        ) from exc
    return importlib.metadata.version("torchao")
