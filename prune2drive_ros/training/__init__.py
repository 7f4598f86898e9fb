"""A driving VLM trained here, on the package's own scenes, so that pruning's cost is measured.

:func:`train_scene_model` trains a variant of :data:`VARIANTS` into a folder;
:func:`cached_scene_model` returns the cached checkpoint of a variant, training it first when
missing; :func:`trained_scene_model` returns it only when a finished one is there (what an empty
``model`` parameter answers with). The result is an ordinary LLaVA-OneVision checkpoint: load it
with :func:`~prune2drive_ros.vlm.loading.load_vlm` or give its folder as the node's ``model``.
The specs and the cache lookups import without torch; the trainer's names load it on first use.
"""

from __future__ import annotations

from ..lazy import lazy_attributes
from .cached import cached_scene_model, scene_model_path, trained_scene_model
from .spec import REPORT_FILE, VARIANTS, SceneModelSpec, variant

#: Name -> submodule, for the names imported on first use (they import torch).
_LAZY: dict[str, str] = {
    "Accuracy": "trainer",
    "TrainReport": "trainer",
    "train_scene_model": "trainer",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "REPORT_FILE",
    "VARIANTS",
    "SceneModelSpec",
    "cached_scene_model",
    "scene_model_path",
    "trained_scene_model",
    "variant",
    *_LAZY,
]
