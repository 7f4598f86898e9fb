"""Package attributes imported on first use (PEP 562), so that light imports stay light.

A package whose submodules import torch (pruning, training, vlm) or optuna (tuning) lists its
heavy names in a table; importing the package, or a torch-free submodule of it (a registry, a
spec, a constant a command's ``--help`` shows), then imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``name`` -> ``getattr(<package>.<table[name]>,
    name)``, imported when first asked for."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{module}", package), name)

    return __getattr__
