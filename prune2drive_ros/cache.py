"""Where generated artefacts live: the user cache folder, filled atomically.

Tiny checkpoints, synthetic bags and the tuner's feature cache are rebuilt deterministically
from a seed, so they are cached, never committed. Each is built in a temporary folder beside
its final place and renamed into place: concurrent processes (parallel test workers, several
tuning workers) never see half an artefact, and a build killed half-way leaves only a temporary
folder that the next build ignores.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .files import give_default_modes, move_into_place, new_folder

logger = logging.getLogger(__name__)

PACKAGE = "prune2drive_ros"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/prune2drive_ros`` (default ``~/.cache/prune2drive_ros``)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / PACKAGE


def features_dir() -> Path:
    """``cache_dir()/features``: the visual tokens shared by every study and ``eval`` run of
    this user (:mod:`prune2drive_ros.tuning.features`)."""
    return cache_dir() / "features"


def build_once(path: Path, build: Callable[[Path], object]) -> Path:
    """Return folder ``path``, calling ``build(tmp)`` to fill it first when it does not exist.

    ``build`` writes into the empty folder ``tmp``; it is renamed to ``path`` afterwards. When
    another process won the race, its result is kept and this one's copy discarded. The
    folder and its files get the modes ``mkdir`` and ``open`` give (:func:`give_default_modes`),
    so that a node running as another user can read them.
    """
    if path.is_dir():
        return path
    tmp = new_folder(path, "new")
    try:
        build(tmp)
        give_default_modes(tmp)
        if not move_into_place(tmp, path, replace=False):
            logger.debug("another process built %s first; keeping its copy", path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path
