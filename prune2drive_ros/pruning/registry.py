"""The pruners and T-FPS's metrics by name, listed without importing torch (``--help``, the
config's choices)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..registry import Registry

if TYPE_CHECKING:
    from .selection import Selection

#: T-FPS's distances between tokens (``metric=``): cosine is the paper's.
METRICS: tuple[str, ...] = ("cosine", "l2", "l1")

#: Pruner name -> pruner, all with the one signature of :mod:`prune2drive_ros.pruning`.
PRUNERS: Registry[Callable[..., Selection]] = Registry(
    "pruner",
    {
        "tfps": "prune2drive_ros.pruning.fps:tfps",
        "tfps_shared": "prune2drive_ros.pruning.fps:tfps_shared",
        "tfps_cover": "prune2drive_ros.pruning.fps:tfps_cover",
        "random": "prune2drive_ros.pruning.baselines:random_select",
        "grid": "prune2drive_ros.pruning.baselines:grid_select",
        "dart": "prune2drive_ros.pruning.baselines:dart_select",
        "fastv": "prune2drive_ros.pruning.baselines:fastv_select",
    },
)
