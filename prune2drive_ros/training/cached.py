"""The scene models in the user cache: trained on first use, reused after."""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

from ..cache import cache_dir
from ..errors import ConfigError
from ..progress import NO_PROGRESS, Progress
from .spec import REPORT_FILE, variant

logger = logging.getLogger(__name__)

#: What a finished checkpoint folder holds: ``save_pretrained``'s config, and the training
#: report, which :func:`~.trainer.train_scene_model` writes last.
FINISHED_FILES: tuple[str, ...] = ("config.json", REPORT_FILE)


def scene_model_path(name: str) -> Path:
    """Where variant ``name`` lives in the cache (named by its spec's digest)."""
    spec = variant(name)
    return cache_dir() / f"scene-{spec.name}-{spec.digest()}"


def is_finished(path: Path) -> bool:
    """Whether folder ``path`` holds a scene model whose training finished.

    The trainer saves into ``<path>.partial/model`` and renames that to ``path`` once the
    report (written last) is in it, so an interrupted run leaves no ``path``; a folder without
    the report (copied half-way, or left by hand) is not taken for a model.
    """
    return path.is_dir() and all((path / name).is_file() for name in FINISHED_FILES)


def trained_scene_model(name: str = "default") -> Path | None:
    """The cached checkpoint folder of variant ``name`` when it is there and finished, else
    None; never trains (see :func:`cached_scene_model`)."""
    path = scene_model_path(name)
    return path if is_finished(path) else None


def require_trained(name: str, instead: str) -> Path:
    """The finished checkpoint of variant ``name`` for a command that must not train one (it
    takes minutes): a ConfigError naming the command that does, and ``instead``, otherwise.

    Raises:
        ConfigError: no finished ``name`` in the cache.
    """
    path = trained_scene_model(name)
    if path is None:
        raise ConfigError(
            f"scene model {name!r} is not trained ({why_not_trained(name)}); run `prune2drive "
            f"train --variant {name}` first, or {instead}"
        )
    return path


def why_not_trained(name: str = "default") -> str:
    """Why :func:`trained_scene_model` finds no model (for a warning that says what to run)."""
    path = scene_model_path(name)
    partial = path.with_name(path.name + ".partial")
    if path.exists():
        return (
            f"{path} is no finished scene model, it lacks {' or '.join(FINISHED_FILES)}: "
            "remove it first"
        )
    if partial.exists():
        return f"its training was interrupted; `prune2drive train` resumes it from {partial}"
    return f"none in {path}"


def cached_scene_model(name: str = "default", *, progress: Progress = NO_PROGRESS) -> Path:
    """The checkpoint folder of variant ``name``, training it first when it is not cached
    (resuming an interrupted run). One process trains; concurrent callers (parallel test
    workers) wait for it on a lock file and then load its result.

    Raises:
        FileExistsError: the folder is there but unfinished (see :func:`is_finished`).
    """
    path = scene_model_path(name)
    if is_finished(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if not is_finished(path):
            if path.exists():
                raise FileExistsError(why_not_trained(name))
            logger.warning(
                "training scene model %r into %s (once; later runs reuse it)", name, path
            )
            from .trainer import train_scene_model  # torch: only when training

            train_scene_model(variant(name), path, progress=progress)
    return path
