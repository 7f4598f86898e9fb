"""The scene models in the user cache: trained on first use, reused after."""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

from ..cache import cache_dir
from .spec import variant
from .trainer import train_scene_model

logger = logging.getLogger(__name__)


def scene_model_path(name: str) -> Path:
    """Where variant ``name`` lives in the cache (named by its spec's digest)."""
    spec = variant(name)
    return cache_dir() / f"scene-{spec.name}-{spec.digest()}"


def cached_scene_model(name: str = "default", *, progress: bool = True) -> Path:
    """The checkpoint folder of variant ``name``, training it first when it is not cached
    (resuming an interrupted run). One process trains; concurrent callers (parallel test
    workers) wait for it on a lock file and then load its result."""
    path = scene_model_path(name)
    if path.is_dir():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if not path.is_dir():
            logger.warning(
                "training scene model %r into %s (once; later runs reuse it)", name, path
            )
            train_scene_model(variant(name), path, progress=progress)
    return path
