"""Checkpoints published in their authors' original format -> transformers folders.

Each original format has one module here exposing ``NAME`` (the format's name on the command
line), ``TITLE`` (one line: which checkpoints use it), ``missing(folder) -> list[str]`` (what the
folder lacks to be in this format; empty when it is one), ``default_prompt(folder) -> str |
None`` (the named prompt of the paper's checkpoint in this format) and ``convert(source, folder,
*, prompt, shard_bytes, progress, **options) -> None``, which writes the converted checkpoint
into the existing empty ``folder``. :data:`FORMATS` maps names to modules, imported only when
used, so that ``prune2drive convert --help`` stays fast.

:func:`convert_checkpoint` is the one way in, for the command and for Python callers: it picks
the format from the folder when none is named (a folder that is in no format gets a
:class:`ConversionError` listing what each format misses), resolves the prompt, and has the
format write into a staging folder that replaces the target only once it is complete
(:mod:`.staging`).
"""

from __future__ import annotations

import importlib
import json
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

from ...errors import ConversionError
from ...prompts import PROMPTS
from .staging import staged_folder

#: format name -> module implementing it.
FORMATS: dict[str, str] = {
    "llava_next": "prune2drive_ros.vlm.conversion.llava_next",
    "internvl_chat": "prune2drive_ros.vlm.conversion.internvl_chat",
}
#: The largest safetensors shard a conversion writes (what ``save_pretrained`` uses by default).
SHARD_BYTES = 5 * 1024**3


class Default(Enum):
    """The type of :data:`FORMAT_DEFAULT` (a one-member enum, so that mypy can tell it apart)."""

    FORMAT = "the format's default"


#: ``prompt`` of :func:`convert_checkpoint` when not given: the prompt of the paper's checkpoint
#: in the source's format (its module's ``default_prompt``).
FORMAT_DEFAULT = Default.FORMAT


def read_config(folder: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """``folder``'s config.json, or None and why not (for a format's ``missing``)."""
    path = folder / "config.json"
    if not path.is_file():
        return None, ["no config.json"]
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"config.json cannot be read: {exc}"]
    if not isinstance(config, dict):
        return None, ["config.json is not a JSON object"]
    return config, []


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
    source: str | Path,
    target: str | Path,
    *,
    format: str | None = None,
    prompt: str | Default | None = FORMAT_DEFAULT,
    force: bool = False,
    shard_bytes: int = SHARD_BYTES,
    progress: bool = False,
    **options: Any,
) -> Path:
    """Convert the original-format checkpoint in ``source`` into a transformers folder ``target``.

    Args:
        format: the original format (:data:`FORMATS`); None detects it.
        prompt: the named prompt (:data:`~prune2drive_ros.prompts.PROMPTS`) written into the
            converted config.json (``prompts.PROMPT_KEY``), which ``prompt: auto`` then uses;
            None writes none; :data:`FORMAT_DEFAULT` the one of the format's paper checkpoint.
        force: replace a non-empty ``target`` (removed only once the new folder is in place).
        shard_bytes: the largest safetensors shard written.
        progress: show a bar over the tensors.
        options: format-specific options of the format's ``convert``.

    Converting the same source twice gives byte-identical files. Returns ``target``.

    Raises:
        ConversionError: ``source`` is in no (or not in the named) format, it cannot be
            converted, the prompt is unknown, or ``target`` is not empty and ``force`` is off.
    """
    source, target = Path(source).expanduser(), Path(target).expanduser()
    module = detect_format(source) if format is None else format_module(format)
    if format is not None:
        missing = module.missing(source)
        if missing:
            raise ConversionError(
                f"{source} is not a {format} checkpoint ({module.TITLE}): {'; '.join(missing)}"
            )
    if isinstance(prompt, Default):
        prompt = module.default_prompt(source)
    if prompt is not None and prompt not in PROMPTS:
        raise ConversionError(
            f"unknown prompt {prompt!r}; give one of {', '.join(PROMPTS)}, or None for none"
        )
    with staged_folder(target, source=source, force=force) as folder:
        module.convert(
            source, folder, prompt=prompt, shard_bytes=shard_bytes, progress=progress, **options
        )
    return target


__all__ = [
    "FORMATS",
    "FORMAT_DEFAULT",
    "SHARD_BYTES",
    "Default",
    "convert_checkpoint",
    "detect_format",
    "format_module",
    "read_config",
]
