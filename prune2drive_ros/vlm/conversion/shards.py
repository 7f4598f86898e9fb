"""Reading an original checkpoint's tensors one at a time, and writing converted ones in shards.

A 7B-8B checkpoint is 15-17 GB in bfloat16: converting it must never hold it whole in memory.
:class:`SourceTensors` opens the checkpoint's weight files when a tensor of theirs is first asked
for (safetensors lazily with ``safe_open``; PyTorch ``.bin`` files memory-mapped, with
``weights_only``) and hands out one tensor at a time by name; :func:`write_shards` takes the
converted tensors as a plan (name -> a function reading it) and writes each shard as soon as it
is full, so memory holds at most one shard. Names, shard order and the index are sorted, and
safetensors writes its header deterministically, so converting twice gives identical files.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ...errors import ConversionError
from ...progress import NO_PROGRESS, Progress

#: Weight file layouts an original checkpoint may have, in the order transformers prefers them.
WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)
INDEX = "model.safetensors.index.json"

#: Converted name -> a function that reads and converts that tensor when called.
Producer = Callable[[], torch.Tensor]


def weight_file(folder: Path) -> Path | None:
    """The weight file (an index or a single file) of ``folder``, or None when it has none."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def missing_weights(folder: Path) -> list[str]:
    """What a format's ``missing`` says when ``folder`` has no weights (empty: it has some)."""
    if weight_file(folder) is None:
        return [f"no weights ({', '.join(WEIGHT_FILES)})"]
    return []


class SourceTensors:
    """The tensors of a checkpoint folder, read by name only when asked for.

    Use as a context manager: the weight files opened inside the ``with`` block stay open
    until it ends. Listing names reads only the index (or the one weight file's header).

    Raises:
        ConversionError: the folder has no weights, its index names a file that is not there, or
            a weight file is truncated or corrupt (each naming the file and what to do).
    """

    def __init__(self, folder: Path) -> None:
        path = weight_file(folder)
        if path is None:
            raise ConversionError(f"{folder} has {missing_weights(folder)[0]}")
        self._folder = folder
        self._single = None if path.name.endswith(".index.json") else path.name
        self._weight_map: dict[str, str] = {}
        if self._single is None:
            with _reading(path):
                self._weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        self._stack = ExitStack()
        self._open: dict[str, Any] = {}

    def __enter__(self) -> SourceTensors:
        return self

    def __exit__(self, *exc: object) -> None:
        self._open.clear()
        self._stack.close()

    def names(self) -> list[str]:
        """Every tensor name of the checkpoint, sorted."""
        return sorted(self._map())

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor ``name``, read without loading it."""
        file = self._file(name)
        handle = self._handle(file)
        with _reading(self._folder / file):
            if isinstance(handle, dict):
                return tuple(handle[name].shape)
            return tuple(handle.get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name``, read now."""
        file = self._file(name)
        handle = self._handle(file)
        with _reading(self._folder / file):
            if isinstance(handle, dict):
                # A clone: memory-mapped tensors may share storage (tied weights), which
                # safetensors refuses to write.
                tensor: torch.Tensor = handle[name].clone()
                return tensor
            read: torch.Tensor = handle.get_tensor(name)
            return read

    def _file(self, name: str) -> str:
        return self._map()[name]

    def _map(self) -> dict[str, str]:
        """Tensor name -> weight file; a single weight file lists its names when first opened."""
        if self._single is not None and not self._weight_map:
            self._weight_map = dict.fromkeys(self._handle(self._single).keys(), self._single)
        return self._weight_map

    def _handle(self, file: str) -> Any:
        """Weight file ``file``, opened on first use: a safetensors handle or a mapped dict."""
        if file not in self._open:
            path = self._folder / file
            if not path.is_file():
                raise ConversionError(
                    f"{self._folder}'s weight index names {file}, which is not there; "
                    "download every shard of the checkpoint"
                )
            with _reading(path):
                if file.endswith(".safetensors"):
                    self._open[file] = self._stack.enter_context(safe_open(str(path), "pt"))
                else:  # memory-mapped: a .bin file is read page by page, not loaded whole
                    self._open[file] = torch.load(
                        path, map_location="cpu", mmap=True, weights_only=True
                    )
        return self._open[file]


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn a truncated or corrupt weight file into a ConversionError naming it."""
    try:
        yield
    except (
        OSError,
        SafetensorError,
        RuntimeError,
        KeyError,
        ValueError,
        pickle.UnpicklingError,
    ) as exc:
        raise ConversionError(
            f"cannot read {path}: {exc}; the file may be incomplete (download it again)"
        ) from exc


def write_shards(
    folder: Path,
    plan: Mapping[str, Producer],
    *,
    shard_bytes: int,
    progress: Progress = NO_PROGRESS,
) -> list[Path]:
    """Write the tensors of ``plan`` into safetensors shards under ``folder``, in name order.

    Each tensor is read (its producer called) only when the writer reaches it. One shard is
    ``model.safetensors``; several are ``model-0000i-of-0000n.safetensors`` with
    ``model.safetensors.index.json``, as ``save_pretrained`` names them. ``progress`` reports
    the tensors written. Returns the files written.
    """
    batches = list(_write_batches(folder, plan, shard_bytes, progress))
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
    (folder / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return [*written, folder / INDEX]


def _write_batches(
    folder: Path, plan: Mapping[str, Producer], shard_bytes: int, progress: Progress
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

    with progress(total=len(plan), desc="tensors", unit="tensor") as bar:
        for name in sorted(plan):
            tensor = plan[name]()
            nbytes = tensor.numel() * tensor.element_size()
            if batch and size + nbytes > shard_bytes:
                yield flush()
                batch, size = {}, 0
            batch[name] = tensor.contiguous()
            size += nbytes
            bar.update()
    if batch or count == 0:
        yield flush()
