"""Reading an original checkpoint's tensors one at a time, and writing converted ones in shards.

A 7B-8B checkpoint is 15-17 GB in bfloat16: converting it must never hold it whole in memory.
:class:`SourceTensors` opens the checkpoint's shards (safetensors, lazily with ``safe_open``;
PyTorch ``.bin`` shards memory-mapped) and hands out one tensor at a time by name;
:func:`write_shards` takes the converted tensors as an iterator and writes each shard as soon as
it is full, so memory holds at most one shard. Names, shard order and the index are sorted, and
safetensors writes its header deterministically, so converting twice gives identical files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ...errors import ConversionError
from ...files import write_atomically

#: Weight file layouts an original checkpoint may have, index files first.
WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)
#: The largest shard :func:`write_shards` writes (what ``save_pretrained`` uses by default).
SHARD_BYTES = 5 * 1024**3


def weight_file(folder: Path) -> Path | None:
    """The weight file (an index or a single file) of ``folder``, or None when it has none."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


class SourceTensors:
    """The tensors of a checkpoint folder, read by name only when asked for.

    Use as a context manager: the shards stay open inside the ``with`` block.

    Raises:
        ConversionError: the folder has no weights, or an index names a shard that is missing.
    """

    def __init__(self, folder: Path) -> None:
        path = weight_file(folder)
        if path is None:
            raise ConversionError(
                f"{folder} has no weights; expected one of {', '.join(WEIGHT_FILES)}"
            )
        if path.name.endswith(".index.json"):
            weight_map: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        else:
            weight_map = {}
        self._folder = folder
        self._single = path.name  # the weight file itself when there is no index
        self._weight_map = weight_map
        self._stack = ExitStack()
        self._open: dict[str, Any] = {}

    def __enter__(self) -> SourceTensors:
        files = sorted(set(self._weight_map.values())) if self._weight_map else [self._single]
        for name in files:
            path = self._folder / name
            if not path.is_file():
                raise ConversionError(
                    f"{self._folder}'s weight index names {name}, which is not there; "
                    "download every shard of the checkpoint"
                )
            if name.endswith(".safetensors"):
                self._open[name] = self._stack.enter_context(safe_open(str(path), "pt"))
            else:  # memory-mapped: a .bin shard is read page by page, not loaded whole
                self._open[name] = torch.load(
                    path, map_location="cpu", mmap=True, weights_only=True
                )
        if not self._weight_map:
            self._weight_map = dict.fromkeys(self._open[self._single].keys(), self._single)
        return self

    def __exit__(self, *exc: object) -> None:
        self._open.clear()
        self._stack.close()

    def names(self) -> list[str]:
        """Every tensor name of the checkpoint, sorted."""
        return sorted(self._weight_map)

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name``, read now."""
        handle = self._open[self._weight_map[name]]
        if isinstance(handle, dict):
            tensor: torch.Tensor = handle[name]
            return tensor.clone()
        read: torch.Tensor = handle.get_tensor(name)
        return read


def write_shards(
    folder: Path, tensors: Iterable[tuple[str, torch.Tensor]], *, shard_bytes: int = SHARD_BYTES
) -> list[Path]:
    """Write ``(name, tensor)`` pairs into safetensors shards under ``folder``, in the given order.

    One shard is ``model.safetensors``; several are ``model-0000i-of-0000n.safetensors`` with
    ``model.safetensors.index.json``, as ``save_pretrained`` names them. Returns the files
    written.
    """
    batches = list(_write_batches(folder, tensors, shard_bytes))
    if len(batches) == 1:
        only, _, _ = batches[0]
        final = folder / "model.safetensors"
        only.rename(final)
        return [final]
    weight_map: dict[str, str] = {}
    total = 0
    written = []
    for number, (tmp, names, size) in enumerate(batches, start=1):
        final = folder / f"model-{number:05d}-of-{len(batches):05d}.safetensors"
        tmp.rename(final)
        weight_map.update(dict.fromkeys(names, final.name))
        total += size
        written.append(final)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    index_path = folder / "model.safetensors.index.json"
    write_atomically(
        index_path,
        lambda tmp: tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n"),
    )
    return [*written, index_path]


def _write_batches(
    folder: Path, tensors: Iterable[tuple[str, torch.Tensor]], shard_bytes: int
) -> Iterator[tuple[Path, list[str], int]]:
    """Write shards as they fill, under temporary names; yield (file, names, bytes) per shard."""
    batch: dict[str, torch.Tensor] = {}
    size = 0
    count = 0

    def flush() -> tuple[Path, list[str], int]:
        nonlocal count
        count += 1
        path = folder / f".shard-{count:05d}.safetensors"
        save_file(batch, str(path), metadata={"format": "pt"})
        return path, list(batch), size

    for name, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if batch and size + nbytes > shard_bytes:
            yield flush()
            batch, size = {}, 0
        batch[name] = tensor.contiguous()
        size += nbytes
    if batch or count == 0:
        yield flush()
