"""Visual-token pruners: batched T-FPS, its reference, baselines, budgets. Torch only, no ROS.

Every pruner has one signature,
``pruner(tokens, budgets, *, seed=0, grid=None, **options) -> Selection`` with ``tokens`` of
shape ``[views, tokens, dim]`` and ``grid`` the ``(rows, cols)`` raster of each view's tokens
(content-based pruners ignore it), so callers pick one by name from :data:`PRUNERS`
(``PRUNERS[name]``) and never special-case it. :data:`PRUNERS` (:mod:`.registry`) imports
without torch; the other names here import their module, and torch, on first use.
"""

from __future__ import annotations

from ..lazy import lazy_attributes
from .registry import PRUNERS

#: Name -> submodule, for the names imported on first use.
_LAZY: dict[str, str] = {
    "Selection": "selection",
    "gather_kept": "selection",
    "budgets_from_rates": "budget",
    "check_budgets": "budget",
    "validate_rates": "budget",
    "reference_tfps": "reference",
    "tfps": "fps",
    "tfps_cover": "fps",
    "tfps_shared": "fps",
    "dart_select": "baselines",
    "fastv_select": "baselines",
    "grid_select": "baselines",
    "random_select": "baselines",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = ["PRUNERS", *_LAZY]
