"""Scenes for training and held-out evaluation, drawn once and kept in memory.

Each scene is one frame of :class:`~prune2drive_ros.sensors.scene.RoadScene` with
``segment_frames=1`` (every frame its own world): six views drawn at the spec's render size and
resized to the model's (as a camera frame is on its way to the encoder; with the ``fast``
resize, OpenCV's area averaging, which the cached scene models were trained on: the ``exact``
default would change every scene model's data and so retrain it), every question of
:func:`~prune2drive_ros.sensors.scene.all_scene_questions` with its answer, and per-patch
targets for the auxiliary loss (the share of each patch covered by cars and by buses, and
how many cars' and buses' centres fall in it). Drawing costs ~15 ms a scene, so the pool is
drawn once (a few thousand scenes, ~100 KB each) and batches are taken from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..progress import NO_PROGRESS, Progress
from ..sensors.imaging import resize
from ..sensors.scene import MASK_LABELS, RoadScene, all_scene_questions
from ..views import VIEWS
from .spec import SceneModelSpec

#: Per-patch targets: car cover, bus cover, then the vehicle centres in the patch as ordinal
#: channels (at least one car, at least two cars, at least one bus): far cars ahead crowd near
#: the vanishing point, two to a patch, and a count is what the questions ask.
PATCH_TARGETS = 5
#: Held-out scenes come from this seed offset, so no held-out world is ever trained on.
HELD_OUT_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class ScenePool:
    """Drawn scenes with their questions and answers.

    Attributes:
        images: ``[N, 6, S, S, 3]`` uint8 views, in :data:`~prune2drive_ros.views.VIEWS` order.
        patch_targets: ``[N, 6, grid * grid, PATCH_TARGETS]`` float32.
        questions, kinds: the question slots every scene answers (the same for all scenes).
        answers: ``[N][slot]`` reference answers.
    """

    images: np.ndarray
    patch_targets: np.ndarray
    questions: tuple[str, ...]
    kinds: tuple[str, ...]
    answers: list[list[str]]

    def __len__(self) -> int:
        return len(self.answers)


def draw_pool(
    spec: SceneModelSpec, *, held_out: bool, progress: Progress = NO_PROGRESS
) -> ScenePool:
    """The training scenes of ``spec`` (or its held-out ones), deterministic from its seed."""
    seed = spec.seed + (HELD_OUT_SEED_OFFSET if held_out else 0)
    count = spec.eval_scenes if held_out else spec.train_scenes
    size, grid = spec.image_size, spec.grid
    camera = RoadScene(seed, *spec.render_size, segment_frames=1)
    labels = RoadScene(seed, size, size, segment_frames=1)  # the same worlds at the model's size
    images = np.empty((count, len(VIEWS), size, size, 3), np.uint8)
    targets = np.zeros((count, len(VIEWS), grid * grid, PATCH_TARGETS), np.float32)
    answers: list[list[str]] = []
    questions: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    what = "held-out" if held_out else "training"
    with progress(total=count, desc=f"drawing {what} scenes", unit="scene") as bar:
        for k in range(count):
            drawn = camera.render(k)
            masks, centres = labels.masks(k), labels.centres(k)
            for v, view in enumerate(VIEWS):
                images[k, v] = resize(drawn[view], (size, size), "fast")
                targets[k, v] = _patch_targets(masks[view], centres[view], grid)
            asked = all_scene_questions(camera.facts(k))
            questions = tuple(q.question for q in asked)
            kinds = tuple(q.kind for q in asked)
            answers.append([q.answer for q in asked])
            bar.update()
    return ScenePool(images, targets, questions, kinds, answers)


def _patch_targets(
    mask: np.ndarray, centres: list[tuple[str, float, float]], grid: int
) -> np.ndarray:
    """``[grid * grid, PATCH_TARGETS]`` targets of one view from its label mask and centres."""
    size = mask.shape[0]
    patch = size // grid
    cells = mask.reshape(grid, patch, grid, patch).transpose(0, 2, 1, 3).reshape(grid * grid, -1)
    out = np.zeros((grid * grid, PATCH_TARGETS), np.float32)
    out[:, 0] = (cells == MASK_LABELS["car"]).mean(axis=1)
    out[:, 1] = (cells == MASK_LABELS["bus"]).mean(axis=1)
    cars = np.zeros(grid * grid, np.int64)
    for kind, u, v in centres:
        index = min(int(v * grid), grid - 1) * grid + min(int(u * grid), grid - 1)
        if kind == "car":
            cars[index] += 1
        else:
            out[index, 4] = 1.0
    out[:, 2], out[:, 3] = cars >= 1, cars >= 2
    return out
