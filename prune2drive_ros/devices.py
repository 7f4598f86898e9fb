"""Device names -> torch devices: one rule for the engine, the model loaders and the benchmarks.

A device is configuration (the ``device`` parameter, ``--device``), so a bad one is a
:class:`~prune2drive_ros.errors.ConfigError` that says what would work.
"""

from __future__ import annotations

import gc

import torch

from .errors import ConfigError


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when torch sees one, else the CPU), ``"cpu"`` or ``"cuda[:n]"``.

    Raises:
        ConfigError: an unknown or unsupported device, or CUDA asked for where there is none.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda[:n]") from exc
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported; use auto, cpu or cuda[:n]")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} asked for but CUDA is not available (torch {torch.__version__}); "
            "use device cpu (or auto), or install a CUDA build of torch"
        )
    return resolved


def allocated_bytes(device: str | torch.device) -> int | None:
    """Bytes torch's allocator holds on ``device`` when it is a CUDA device; None otherwise."""
    resolved = torch.device(device)
    if resolved.type != "cuda":
        return None
    return int(torch.cuda.memory_allocated(resolved))


def release_memory() -> None:
    """Give the memory of dropped models back: collect their reference cycles, then hand
    torch's cached CUDA blocks back to the driver (a no-op without CUDA)."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
