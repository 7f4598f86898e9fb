"""The model families by ``config.json`` ``model_type``, listed without importing torch.

:func:`~.loading.load_vlm` reads a checkpoint's ``model_type`` and loads it with the adapter
:data:`FAMILIES` names for it; an engine checks a configured family before anything loads, and
the tiny checkpoints are built per family. Each adapter module imports torch and transformers,
so the registry holds their paths (:class:`~prune2drive_ros.registry.Registry`): only the family
in use is imported.

Adding a family
---------------
Write ``vlm/<family>.py`` with a subclass of :class:`~.base.DrivingVLM` and add it to
:data:`FAMILIES` under the checkpoint's ``model_type``. Set:

* ``family``: that ``model_type`` again (:func:`~.loading.load_pretrained` refuses a checkpoint
  of another family with it);
* ``model_class``: the transformers class whose ``from_pretrained`` loads the checkpoint;
* ``image_placeholder``, the tokenizer's special token for one image (it must be a single
  added token), and ``image_markup``, how the family's processor writes one image around it
  (e.g. InternVL's ``<img>{image}</img>``): every named prompt
  (:mod:`~prune2drive_ros.prompts`) is built from it;

and implement the hooks:

* :meth:`~.base.DrivingVLM._geometry` validates the config (raise :class:`ModelLoadError` with
  the remedy when the vision tower does not give a fixed per-view token grid) and returns the
  :class:`~.results.ViewGeometry`;
* :meth:`~.base.DrivingVLM._encode`: pixel values ``[V, 3, H, W]`` -> prunable tokens
  ``[V, N, D]`` after the projector;
* :meth:`~.base.DrivingVLM._view_separator` (optional): unprunable embeddings placed after each
  view.

The decoder is taken from ``model.model.language_model`` (the layout of every transformers 5
VLM) and the head from ``model.get_output_embeddings()``; override
:attr:`~.base.DrivingVLM._decoder` when that differs. Families with multi-axis RoPE (Qwen2-VL's
M-RoPE) override :meth:`~.base.DrivingVLM._view_positions`,
:meth:`~.base.DrivingVLM._text_positions` and :meth:`~.base.DrivingVLM._decoder_position_ids`;
everything else (splicing, caching, decoding, timing) is shared. Then add the family's
random-weight recipe (special tokens, config per shape, image processor) to
:data:`~.tiny.RECIPES`, and the family to the tests by parametrising them over it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ModelLoadError
from ..registry import Registry

if TYPE_CHECKING:
    from .base import DrivingVLM

#: ``config.json``'s ``model_type`` -> the adapter class that loads such checkpoints.
FAMILIES: Registry[type[DrivingVLM]] = Registry(
    "model family",
    {
        "internvl": "prune2drive_ros.vlm.internvl:InternVLVLM",
        "llava_onevision": "prune2drive_ros.vlm.llava_onevision:LlavaOnevisionVLM",
        "qwen2_5_vl": "prune2drive_ros.vlm.qwen2_5_vl:Qwen2_5_VLVLM",
    },
    error=ModelLoadError,
    remedy="config.json's model_type names the family, and only these are supported; a "
    "checkpoint in its authors' original format converts with prune2drive convert",
)
