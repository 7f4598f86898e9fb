"""Checkpoints published in their authors' original format -> transformers folders.

Each original format has one module here exposing ``NAME`` (the format's name on the command
line), ``TITLE`` (one line: which checkpoints use it), ``missing(folder) -> list[str]`` (what the
folder lacks to be in this format; empty when it is one) and ``convert(source, target, **options)
-> Path``. :data:`FORMATS` maps names to modules, imported only when used, so that
``prune2drive convert --help`` stays fast. :func:`convert_checkpoint` picks the format from the
folder when none is named; a folder that is in no format gets a :class:`ConversionError` listing
what each format misses.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from ...errors import ConversionError

#: format name -> module implementing it.
FORMATS: dict[str, str] = {
    "llava_next": "prune2drive_ros.vlm.conversion.llava_next",
    "internvl_chat": "prune2drive_ros.vlm.conversion.internvl_chat",
}


def format_module(name: str) -> ModuleType:
    """The module of format ``name``, or a ConversionError listing the known formats."""
    try:
        return importlib.import_module(FORMATS[name])
    except KeyError:
        raise ConversionError(
            f"unknown checkpoint format {name!r}; known formats: {', '.join(FORMATS)}"
        ) from None


def detect_format(source: str | Path) -> ModuleType:
    """The format module whose layout ``source`` follows.

    Raises:
        ConversionError: ``source`` is not a folder, or follows no known format (the message
            says, per format, what is missing).
    """
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ConversionError(f"{folder} is not a folder; give the checkpoint's folder")
    reasons = []
    for name in FORMATS:
        module = format_module(name)
        missing = module.missing(folder)
        if not missing:
            return module
        reasons.append(f"{name} ({module.TITLE}): {'; '.join(missing)}")
    raise ConversionError(
        f"{folder} is in no original format this package converts:\n  " + "\n  ".join(reasons)
    )


def convert_checkpoint(
    source: str | Path, target: str | Path, *, format: str | None = None, **options: Any
) -> Path:
    """Convert the original-format checkpoint in ``source`` into a transformers folder ``target``.

    ``format`` names the original format (:data:`FORMATS`); None detects it. ``options`` go to
    the format's ``convert``. Converting the same source twice gives byte-identical files.
    """
    module = detect_format(source) if format is None else format_module(format)
    if format is not None:
        missing = module.missing(Path(source).expanduser())
        if missing:
            raise ConversionError(
                f"{source} is not a {format} checkpoint ({module.TITLE}): {'; '.join(missing)}"
            )
    result: Path = module.convert(Path(source).expanduser(), Path(target).expanduser(), **options)
    return result


__all__ = ["FORMATS", "convert_checkpoint", "detect_format", "format_module"]
