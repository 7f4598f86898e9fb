"""Visual-token pruners: batched T-FPS, its reference, baselines, budgets. Torch only, no ROS.

Every pruner has one signature,
``pruner(tokens, budgets, *, seed=0, grid=None, **options) -> Selection`` with ``tokens`` of
shape ``[views, tokens, dim]`` and ``grid`` the ``(rows, cols)`` raster of each view's tokens
(content-based pruners ignore it), so callers pick one by name from :data:`PRUNERS` (or
:func:`get_pruner`) and never special-case it.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .baselines import dart_select, fastv_select, grid_select, random_select
from .budget import budgets_from_rates, check_budgets, validate_rates
from .reference import reference_tfps
from .selection import Selection, gather_kept
from .tfps import tfps, tfps_cover, tfps_shared

#: Pruner name -> pruner, all with the one signature of the module docstring.
PRUNERS: dict[str, Callable[..., Selection]] = {
    "tfps": tfps,
    "tfps_shared": tfps_shared,
    "tfps_cover": tfps_cover,
    "random": random_select,
    "grid": grid_select,
    "dart": dart_select,
    "fastv": fastv_select,
}


def get_pruner(name: str) -> Callable[..., Selection]:
    """The pruner registered as ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones); a ``ValueError`` too.
    """
    try:
        return PRUNERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown pruner {name!r}; expected one of {', '.join(PRUNERS)}"
        ) from None


__all__ = [
    "PRUNERS",
    "Selection",
    "budgets_from_rates",
    "check_budgets",
    "dart_select",
    "fastv_select",
    "gather_kept",
    "get_pruner",
    "grid_select",
    "random_select",
    "reference_tfps",
    "tfps",
    "tfps_cover",
    "tfps_shared",
    "validate_rates",
]
