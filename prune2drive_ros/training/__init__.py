"""A driving VLM trained here, on the package's own scenes, so that pruning's cost is measured.

:func:`train_scene_model` trains a variant of :data:`VARIANTS` into a folder;
:func:`cached_scene_model` returns the cached checkpoint of a variant, training it first when
missing; :func:`trained_scene_model` returns it only when a finished one is there (what an empty
``model`` parameter answers with). The result is an ordinary LLaVA-OneVision checkpoint: load it
with :func:`~prune2drive_ros.vlm.loading.load_vlm` or give its folder as the node's ``model``.
"""

from .cached import cached_scene_model, scene_model_path, trained_scene_model
from .spec import VARIANTS, SceneModelSpec, variant
from .trainer import REPORT_FILE, Accuracy, TrainReport, train_scene_model

__all__ = [
    "REPORT_FILE",
    "VARIANTS",
    "Accuracy",
    "SceneModelSpec",
    "TrainReport",
    "cached_scene_model",
    "scene_model_path",
    "train_scene_model",
    "trained_scene_model",
    "variant",
]
