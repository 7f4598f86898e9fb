"""Reading the small text files a user hands in, and writing files readers must never see half.

Reading (questions, rates, params, DriveLM JSON) follows one rule: a missing file says how to
make one, any other failure (a folder, no permission, not UTF-8) names the file and the reason,
and both are the caller's domain error, so the CLI and the node report them as bad input rather
than crash.

Writing (the rates file, feature-cache entries, the tuning report, its plots and Pareto front)
goes through :func:`write_atomically`, so every file the package writes is crash-safe and gets
the mode a plain ``open(path, "w")`` would give it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
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


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a new file beside ``path``, flush it to disk, rename it over ``path``.

    Readers (the node, other workers, the next run) see the old file or the new one, never half
    of one, even when the writer is killed or the machine loses power. The temporary file is
    created with mode ``0o666`` less the umask (0644 under the usual 022), as ``open`` would
    create ``path`` itself, not ``mkstemp``'s owner-only 0600; it keeps ``path``'s suffix for
    writers that pick a format from it (matplotlib's ``savefig``). The folder is created.

    Raises:
        OSError: the folder or the file cannot be written (no temporary file is left behind).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.stem}.tmp.{secrets.token_hex(4)}{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:  # another writer drew the same name: draw again
            continue
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` through :func:`write_atomically`."""
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
