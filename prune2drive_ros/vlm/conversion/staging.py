"""Writing a converted checkpoint folder so that no reader ever sees half of one.

A conversion takes minutes and writes gigabytes; killed half-way, it must leave the target as
it was. :func:`staged_folder` hands out a new folder beside the target, and renames it into
place only when the conversion in it has finished. A non-empty target is replaced only when
asked to (``force``), and then the old folder is removed only once the new one is in place.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...errors import ConversionError
from ...files import give_default_modes, new_folder


@contextmanager
def staged_folder(target: Path, *, source: Path, force: bool) -> Iterator[Path]:
    """A new empty folder beside ``target``, renamed to ``target`` when the block succeeds.

    Checked before anything is written (a conversion is long): ``target`` must not be
    ``source`` nor a file, and an existing non-empty ``target`` needs ``force``. On failure the
    staging folder is removed and ``target`` is untouched.

    Raises:
        ConversionError: ``target`` cannot be written as asked.
    """
    if target.resolve() == source.resolve():
        raise ConversionError(f"the target {target} is the source; give a new folder")
    if target.exists() and not target.is_dir():
        raise ConversionError(f"the target {target} is a file; give a folder")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ConversionError(
            f"the target {target} exists and is not empty; pass --force (force=True) to replace it"
        )
    staging = new_folder(target, "new")
    try:
        yield staging
        give_default_modes(staging)  # save_pretrained's weights are 0600, not for the node's user
        _replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing ``target`` is moved aside first and removed
    only once the new folder is in place (put back if that rename fails)."""
    if not target.exists():
        staging.rename(target)
        return
    old = new_folder(target, "old")
    os.replace(target, old)  # onto the empty folder just made, so the name stays ours
    try:
        staging.rename(target)
    except OSError:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
