"""transformers VLMs with Prune2Drive pruning between the projector and the language model.

:func:`load_vlm` picks the family adapter from the checkpoint's ``config.json``; see
:mod:`.base` for the interface (and how to add a family) and :mod:`.tiny` for random-weight
checkpoints. Importing this package registers every family in :data:`FAMILIES`.
"""

from __future__ import annotations

from . import internvl, llava_onevision, qwen2_5_vl
from .base import (
    FAMILIES,
    RANDOM_WEIGHTS_NOTE,
    DrivingVLM,
    Generation,
    Positions,
    PrefillInputs,
    PrefillOutput,
    Timings,
    family_class,
    load_vlm,
)

__all__ = [
    "FAMILIES",
    "RANDOM_WEIGHTS_NOTE",
    "DrivingVLM",
    "Generation",
    "Positions",
    "PrefillInputs",
    "PrefillOutput",
    "Timings",
    "family_class",
    "internvl",
    "llava_onevision",
    "load_vlm",
    "qwen2_5_vl",
]
