"""transformers VLMs with Prune2Drive pruning between the projector and the language model.

:func:`load_vlm` picks the family adapter from the checkpoint's ``config.json``. The modules:
:mod:`.base` (the :class:`DrivingVLM` interface, and how to add a family), :mod:`.prompt`,
:mod:`.results` (value types), :mod:`.decoding`, :mod:`.loading` (and the family registry),
:mod:`.flops`, and :mod:`.tiny` (random-weight checkpoints). Importing this package registers
every family in :data:`FAMILIES`.
"""

from __future__ import annotations

from . import internvl, llava_onevision, qwen2_5_vl
from .base import DrivingVLM
from .loading import FAMILIES, RANDOM_WEIGHTS_NOTE, family_class, load_vlm
from .results import Generation, Positions, PrefillInputs, PrefillOutput

__all__ = [
    "FAMILIES",
    "RANDOM_WEIGHTS_NOTE",
    "DrivingVLM",
    "Generation",
    "Positions",
    "PrefillInputs",
    "PrefillOutput",
    "family_class",
    "internvl",
    "llava_onevision",
    "load_vlm",
    "qwen2_5_vl",
]
