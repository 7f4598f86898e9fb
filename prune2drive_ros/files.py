"""Reading the small text files a user hands in (questions, rates, params, DriveLM JSON).

One rule for all of them: a missing file says how to make one, any other failure (a folder, no
permission, not UTF-8) names the file and the reason, and both are the caller's domain error,
so the CLI and the node report them as bad input rather than crash.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, Prune2DriveError


def read_text(
    path: str | os.PathLike[str], *, what: str, remedy: str, error: type[Prune2DriveError]
) -> str:
    """The UTF-8 text of the ``what`` file at ``path``.

    Raises:
        error: ``"<what> <path> does not exist; <remedy>"``, or ``"cannot read <what> <path>:
            <reason>"`` for a file that exists but cannot be read as UTF-8 text.
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; {remedy}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise error(f"cannot read {what} {path}: {reason}") from exc


def read_yaml(path: str | os.PathLike[str], *, what: str, remedy: str) -> Any:
    """The parsed YAML document of the ``what`` file at ``path`` (``None`` when it is empty).

    Raises:
        ConfigError: as :func:`read_text`, or ``"<what> <path> is not valid YAML at line L,
            column C: <reason>"``.
    """
    text = read_text(path, what=what, remedy=remedy, error=ConfigError)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{what} {path} is not valid YAML{where}: {err}") from err
