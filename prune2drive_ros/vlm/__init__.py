"""transformers VLMs with Prune2Drive pruning between the projector and the language model.

:func:`load_vlm` picks the family adapter from the checkpoint's ``config.json``. The modules:

* :mod:`.base`: the :class:`DrivingVLM` interface and the pipeline it runs (how the language
  model sees the frames);
* :mod:`.families`: :data:`FAMILIES`, the adapters by ``model_type``, and how to add one;
  :mod:`.internvl`, :mod:`.llava_onevision`, :mod:`.qwen2_5_vl`: the adapters;
* :mod:`.image_processing`: camera images -> the vision tower's pixel values;
* :mod:`.view_tokens`: where each view's tokens are (per view, stitched, in the prefix, on the
  image); :mod:`.stitching`: the six views as one tiled image;
* :mod:`.prompt`: a prompt tokenised and cut at its images;
* :mod:`.layers`: the decoder run layer by layer; :mod:`.decoding`: greedy decoding and timing;
* :mod:`.results`: value types;
* :mod:`.loading`: reading a checkpoint; :mod:`.checkpoint`: the keys this package writes into
  its ``config.json``;
* :mod:`.flops`: prefill cost; :mod:`.tiny`: random-weight checkpoints;
* :mod:`.conversion`: checkpoints in their authors' original formats -> transformers folders.

Importing the package or :mod:`.families`, :mod:`.checkpoint` or :mod:`.conversion` imports
neither torch nor transformers (``--help`` and the registries' names stay fast); the model
names load their module, and torch, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes
from .checkpoint import RANDOM_WEIGHTS_NOTE
from .families import FAMILIES

if TYPE_CHECKING:  # the names __getattr__ gives, typed: a type checker cannot follow _LAZY
    from .base import DrivingVLM as DrivingVLM
    from .loading import load_vlm as load_vlm
    from .results import Generation as Generation
    from .results import Positions as Positions
    from .results import PrefillInputs as PrefillInputs
    from .results import PrefillOutput as PrefillOutput

#: Name -> submodule, for the names imported on first use.
_LAZY: dict[str, str] = {
    "DrivingVLM": "base",
    "load_vlm": "loading",
    "Generation": "results",
    "Positions": "results",
    "PrefillInputs": "results",
    "PrefillOutput": "results",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = ["FAMILIES", "RANDOM_WEIGHTS_NOTE", *_LAZY]
