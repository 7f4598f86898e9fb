"""Checkpoints published in their authors' original format -> transformers folders.

Each original format is one module here, named as the format is on the command line, that
is a :class:`CheckpointFormat` (what it defines is described there). :data:`FORMATS` lists the
formats and imports a format's module (and torch) only when it is used, so that
``prune2drive convert --help`` stays fast: adding a format is a module and its name there.

:func:`convert_checkpoint` is the one way in, for the command and for Python callers: it picks
the format from the folder when none is named (a folder that is in no format gets a
:class:`ConversionError` listing what each format misses), resolves the prompt, and has the
format write into a staging folder that replaces the target only once it is complete
(:mod:`.staging`). What the environment would leave in the written files (transformers records
in tokenizer_config.json whether ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` forced
``local_files_only`` while the tokenizer was read) is taken out (:data:`LOAD_KEYS`), so that a
conversion gives the same bytes wherever and however it runs.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from ...errors import ConversionError
from ...progress import NO_PROGRESS, Progress
from ...prompts import PROMPTS
from ...registry import Registry
from .staging import staged_folder


class CheckpointFormat(Protocol):
    """What a format's module defines (the module itself is the plug-in :data:`FORMATS` loads).

    Attributes:
        TITLE: one line: which checkpoints use the format.
    """

    TITLE: str

    def missing(self, folder: Path) -> list[str]:
        """What ``folder`` lacks to be in this format; empty when it is one."""

    def default_prompt(self, folder: Path) -> str | None:
        """The named prompt of the paper's checkpoint in this format, for ``folder``."""

    def convert(
        self,
        source: Path,
        folder: Path,
        *,
        prompt: str | None,
        shard_bytes: int,
        progress: Progress,
        **options: Any,
    ) -> None:
        """Write the converted checkpoint of ``source`` into the existing empty ``folder``."""


#: Format name -> its module in this package, imported on first use (:func:`__getattr__`).
FORMATS: Registry[CheckpointFormat] = Registry(
    "checkpoint format",
    {name: f"{__name__}:{name}" for name in ("llava_next", "internvl_chat")},
    error=ConversionError,
)
#: The largest safetensors shard a conversion writes (what ``save_pretrained`` uses by default).
SHARD_BYTES = 5 * 1024**3
#: tokenizer_config.json keys that say how the tokenizer was read during the conversion, not
#: what it is: transformers writes ``local_files_only`` (true when ``HF_HUB_OFFLINE`` or
#: ``TRANSFORMERS_OFFLINE`` is set) and ``is_local``; the others are from_pretrained arguments
#: it would write the same way when given.
LOAD_KEYS = (
    "local_files_only",
    "is_local",
    "cache_dir",
    "_commit_hash",
    "revision",
    "subfolder",
    "token",
    "trust_remote_code",
    "force_download",
    "proxies",
)


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


def edit_json(
    path: Path, change: Callable[[dict[str, Any]], dict[str, Any]], *, ensure_ascii: bool = True
) -> None:
    """Rewrite the JSON object in ``path`` as ``change`` returns it, formatted as transformers
    writes its files (indent 2, sorted keys, a final newline; ``ensure_ascii`` as the file
    was: True for configs, False for tokenizer_config.json)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    text = json.dumps(change(data), indent=2, sort_keys=True, ensure_ascii=ensure_ascii) + "\n"
    path.write_text(text, encoding="utf-8")


def without_load_keys(tokenizer_config: dict[str, Any]) -> dict[str, Any]:
    """``tokenizer_config`` without :data:`LOAD_KEYS`."""
    return {key: value for key, value in tokenizer_config.items() if key not in LOAD_KEYS}


def _normalise(folder: Path) -> None:
    """Take what the environment leaves in a converted ``folder``'s files out of them."""
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        edit_json(tokenizer_config, without_load_keys, ensure_ascii=False)


def _check_options(checkpoint_format: CheckpointFormat, name: str, options: dict[str, Any]) -> None:
    """Refuse options the format's ``convert`` does not take (``--vision-tower`` of an
    InternVL checkpoint), naming the ones it does."""
    taken = [
        parameter
        for parameter, spec in inspect.signature(checkpoint_format.convert).parameters.items()
        if spec.kind is inspect.Parameter.KEYWORD_ONLY
        and parameter not in ("prompt", "shard_bytes", "progress")
    ]
    unknown = sorted(set(options) - set(taken))
    if unknown:
        flags = ", ".join(f"--{option.replace('_', '-')}" for option in unknown)
        raise ConversionError(
            f"{flags} ({', '.join(unknown)}) does not apply to a {name} checkpoint "
            f"({checkpoint_format.TITLE}); it takes {', '.join(taken) or 'no options'}"
        )


def __getattr__(name: str) -> ModuleType:
    """A format's module as this package's attribute, imported on first use: what
    ``FORMATS[name]`` returns."""
    if name not in FORMATS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module(f".{name}", __name__)


def detect_format(source: str | Path) -> CheckpointFormat:
    """The format whose layout ``source`` follows.

    Raises:
        ConversionError: ``source`` is not a folder, or follows no known format (the message
            says, per format, what is missing).
    """
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ConversionError(f"{folder} is not a folder; give the checkpoint's folder")
    reasons = []
    for name, checkpoint_format in FORMATS.items():
        missing = checkpoint_format.missing(folder)
        if not missing:
            return checkpoint_format
        reasons.append(f"{name} ({checkpoint_format.TITLE}): {'; '.join(missing)}")
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
    progress: Progress = NO_PROGRESS,
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
        progress: reports the tensors written (quiet by default).
        options: format-specific options of the format's ``convert`` (``llava_next``:
            ``vision_tower``, ``image_fit``); one left None is not given.

    Converting the same source twice gives byte-identical files, whatever ``HF_HUB_OFFLINE``,
    ``TRANSFORMERS_OFFLINE`` or ``HF_HOME`` say (:data:`LOAD_KEYS`). Returns ``target``.

    Raises:
        ConversionError: ``source`` is in no (or not in the named) format, it cannot be
            converted, the prompt is unknown, an option does not apply to the format, or
            ``target`` is not empty and ``force`` is off.
    """
    source, target = Path(source).expanduser(), Path(target).expanduser()
    checkpoint_format = detect_format(source) if format is None else FORMATS[format]
    if format is not None:
        missing = checkpoint_format.missing(source)
        if missing:
            raise ConversionError(
                f"{source} is not a {format} checkpoint ({checkpoint_format.TITLE}): "
                f"{'; '.join(missing)}"
            )
    if isinstance(prompt, Default):
        prompt = checkpoint_format.default_prompt(source)
    if prompt is not None and prompt not in PROMPTS:
        raise ConversionError(
            f"unknown prompt {prompt!r}; give one of {', '.join(PROMPTS)}, or None for none"
        )
    options = {name: value for name, value in options.items() if value is not None}
    _check_options(checkpoint_format, format or _name_of(checkpoint_format), options)
    with staged_folder(target, source=source, force=force) as folder:
        checkpoint_format.convert(
            source, folder, prompt=prompt, shard_bytes=shard_bytes, progress=progress, **options
        )
        _normalise(folder)
    return target


def _name_of(checkpoint_format: CheckpointFormat) -> str:
    """The name :data:`FORMATS` knows ``checkpoint_format`` by."""
    return next(name for name, known in FORMATS.items() if known is checkpoint_format)


__all__ = [
    "FORMATS",
    "FORMAT_DEFAULT",
    "LOAD_KEYS",
    "SHARD_BYTES",
    "CheckpointFormat",
    "Default",
    "convert_checkpoint",
    "detect_format",
    "edit_json",
    "read_config",
    "without_load_keys",
]
