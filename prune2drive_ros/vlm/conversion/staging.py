"""Writing a converted checkpoint folder so that no reader ever sees half of one.

A conversion takes minutes and writes gigabytes; killed half-way, it must leave the target as
it was. :func:`staged_folder` hands out a new folder beside the target, and renames it into
place only when the conversion in it has finished. A non-empty target is replaced only when
asked to (``force``), and then the old folder is removed only once the new one is in place.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...errors import ConversionError
from ...files import give_default_modes, move_into_place, new_folder


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
        move_into_place(staging, target, replace=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
