"""Reading the small text files a user hands in, and writing files readers must never see half.

Reading (questions, rates, params, DriveLM JSON) follows one rule: a missing file says how to
make one, any other failure (a folder, no permission, not UTF-8) names the file and the reason,
and both are the caller's domain error, so the CLI and the node report them as bad input rather
than crash.

Every output a command writes is first checked by :func:`check_output_file`, before any work
(a model load, an evaluation) that a mistake in it would waste or lose.

Writing (the rates file, feature-cache entries, the tuning report, its plots and Pareto front)
goes through :func:`write_atomically`, so every file the package writes is crash-safe and gets
the mode a plain ``open(path, "w")`` would give it. Answer lines, which must survive a run that
stops half-way, go through a :class:`LineWriter` instead: each line whole or not at all.
Folders (cached artefacts, trained and converted checkpoints) are built in a :func:`new_folder`
and renamed into place, their files given the same modes by :func:`give_default_modes`: what
the package writes is readable by every user the umask allows, as the node may run as another
user than the one who trained.
"""

from __future__ import annotations

import codecs
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import yaml

from .errors import ConfigError, Prune2DriveError


def read_text(
    path: str | os.PathLike[str], *, what: str, remedy: str, error: type[Prune2DriveError]
) -> str:
    """The UTF-8 text of the ``what`` file at ``path``, with ``\n`` line ends.

    A leading byte-order mark and CRLF (or CR) line ends are accepted, as editors on Windows
    write them. A byte that is not UTF-8 is reported by its line, which an editor can show,
    not by its offset in the file.

    Raises:
        error: ``"<what> <path> does not exist; <remedy>"``, or ``"cannot read <what> <path>:
            <reason>"`` for a file that exists but cannot be read as UTF-8 text.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; {remedy}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(
            f"cannot read {what} {path}: line {line} is not UTF-8 text (byte "
            f"0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


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


def check_output_file(
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """``path`` if a command may write its output file there: the one check of every output,
    made before any work, so that a mistake costs a second and not a model load or a lost result.

    Raises:
        ConfigError: ``path`` is a folder; its folder is missing or not writable; it is one of
            ``inputs`` (the files the command reads: writing would destroy them, ``force`` or
            not); or it exists and ``force`` is off.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name for the output")
    check_writable_folder(path.parent)
    if path.exists():
        for source in inputs:
            if Path(source).exists() and path.samefile(source):
                raise ConfigError(f"{path} is also an input ({source}); write the output elsewhere")
        if not force:
            raise ConfigError(f"{path} exists already; pass --force to replace it")
    return path


def check_writable_folder(folder: Path) -> None:
    """Refuse to write into ``folder`` before any work when it is missing or not writable.

    Raises:
        ConfigError: saying which, and what to do.
    """
    if not folder.is_dir():
        raise ConfigError(f"folder {folder} does not exist; create it or write elsewhere")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"folder {folder} is not writable; write elsewhere or fix its permissions"
        )


class LineWriter:
    """Lines of text appended to a binary file, each whole or not at all.

    A line goes to the operating system as soon as it is written (no buffer that a signal or a
    crash would lose), and a line the disk takes only part of (full, over quota) or that a
    signal interrupts is cut back off before the error goes on: a reader of JSON Lines meets
    every line written before and never half a line. Open it with :meth:`create`, or hand it an
    unbuffered file.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._end = file.tell()

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> LineWriter:
        """A writer of a new (or emptied) file ``path``, closed by leaving a ``with`` block."""
        return cls(Path(path).open("wb", buffering=0))

    def write(self, line: str) -> None:
        """Append ``line`` (ending in a newline).

        Raises:
            OSError: the file cannot take it; it ends after the previous line.
        """
        data = memoryview(line.encode("utf-8"))
        try:
            while data:
                data = data[self._file.write(data) :]  # an unbuffered file may take part of it
        except BaseException:
            self._file.truncate(self._end)
            self._file.seek(self._end)
            raise
        self._end = self._file.tell()

    def __enter__(self) -> LineWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._file.close()


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a new file beside ``path``, flush it to disk, rename it over ``path``.

    Readers (the node, other workers, the next run) see the old file or the new one, never half
    of one, even when the writer is killed or the machine loses power. The temporary file is
    created with mode ``0o666`` less the umask (0644 under the usual 022), as ``open`` would
    create ``path`` itself, not ``mkstemp``'s owner-only 0600, and keeps that mode whatever
    ``write`` does to it; it keeps ``path``'s suffix for
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
        mode = tmp.stat().st_mode & 0o777
        write(tmp)
        os.chmod(tmp, mode)  # a writer that replaced the file (safetensors' save_file) left 0600
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


def new_folder(target: Path, role: str) -> Path:
    """A new empty hidden folder ``.<name>.<role>.<random>`` beside ``target``.

    A folder is built there and renamed to ``target`` once complete, so that no reader sees half
    of it. It has the mode ``mkdir`` gives (0777 less the umask, 0755 under the usual 022), not
    ``mkdtemp``'s owner-only 0700: what is renamed into place is for everyone who may read its
    parent, such as a ROS node running as another user. The parent folder is created.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = target.with_name(f".{target.name}.{role}.{secrets.token_hex(4)}")
        try:
            path.mkdir()
            return path
        except FileExistsError:  # drawn before: draw again
            continue


def give_default_modes(folder: Path) -> None:
    """Give the files under ``folder`` the mode ``open`` gives a new file, and the folders the
    mode ``mkdir`` gives: 0666 and 0777 less the umask (0644 and 0755 under the usual 022).

    Savers that write through a private temporary file (safetensors' ``save_file``, and so
    ``save_pretrained``) leave owner-only 0600 weights, which a ROS node running as another
    user cannot load. The umask is read off ``folder``'s own mode, so ``folder`` must be one
    ``mkdir`` made (:func:`new_folder`): Python reads the umask only by setting it, which would
    race the other threads' file creation. Symbolic links are left alone.
    """
    mode = folder.stat().st_mode & 0o777
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, mode if path.is_dir() else mode & 0o666)


def move_into_place(staging: Path, target: Path, *, replace: bool) -> bool:
    """Rename the finished folder ``staging`` (made by :func:`new_folder` beside ``target``)
    to ``target``: the one way a folder the package builds appears, whole or not at all.

    With ``replace``, an existing ``target`` is moved aside first and removed only once the new
    folder is in place (put back if that rename fails), so a crash leaves the old folder or the
    new one. Without, an existing ``target`` (another process built it first) is kept and
    False returned; ``staging`` is then the caller's to remove.

    Raises:
        OSError: the rename failed for another reason.
    """
    if not replace:
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
            return False
        return True
    if not target.exists():
        staging.rename(target)
        return True
    old = new_folder(target, "old")
    os.replace(target, old)  # onto the empty folder just made, so the name stays ours
    try:
        staging.rename(target)
    except OSError:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return True
