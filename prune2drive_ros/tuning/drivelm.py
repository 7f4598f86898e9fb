"""DriveLM-nuScenes question files (``v1_1_train_nus.json``, ``v1_1_val_nus_q_only.json``).

The format, as OpenDriveLab/DriveLM publishes it (``challenge/data/train_sample.json``,
``challenge/test_eval.json``)::

    {scene_token: {
        "scene_description": str,                      # train files only
        "key_frames": {frame_token: {
            "key_object_infos": {"<c1,CAM_BACK,1088.3,497.5>": {...}},   # train files only
            "QA": {"perception": [qa, ...], "prediction": [...], "planning": [...],
                   "behavior": [...]},
            "image_paths": {"CAM_FRONT": "../nuscenes/samples/CAM_FRONT/<name>.jpg", ...}}}}}

    qa = {"Q": str, "A": str, "C": null, "con_up": null, "con_down": null,
          "cluster": null, "layer": null, "tag": [0]}   # "tag" in challenge files only

The challenge numbers the questions of a frame in the order perception, prediction, planning,
behavior and names them ``<scene>_<frame>_<index>``; :attr:`DriveLMItem.id` does the same so
that predictions can be written in the challenge's output format.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ConfigError, QuestionError
from ..files import read_text
from ..views import VIEWS
from .scoring import Score, challenge_keep, is_choice_answer, score_answers

logger = logging.getLogger(__name__)

#: The question categories of a key frame, in the challenge's order.
CATEGORIES: tuple[str, ...] = ("perception", "prediction", "planning", "behavior")

# The challenge appends "Please select the correct answer from the following options: A. ...
# B. ... C. ... D. ..." to multiple-choice questions.
_OPTIONS = re.compile(r"\bA\.\s.*\bB\.\s", re.DOTALL)
_IMAGE_ANCHORS = ("samples", "sweeps")


@dataclass(frozen=True)
class DriveLMItem:
    """One DriveLM question with its key frame's six images.

    Attributes:
        scene: scene token.
        frame: key-frame (nuScenes sample) token.
        index: position among the frame's questions in :data:`CATEGORIES` order.
        category: one of :data:`CATEGORIES`.
        question: the question text.
        answer: the reference answer; None in question-only files.
        tags: challenge metric tags (0 accuracy, 1 GPT, 2 language, 3 match); empty in
            training files, where :func:`~prune2drive_ros.tuning.scoring.score_answers` routes
            by the answer instead.
        is_multiple_choice: the question lists options A-D or the answer is a choice letter.
        images: image file per view, in :data:`~prune2drive_ros.views.VIEWS` order, resolved
            against the nuScenes root.
        scene_description: the scene's description ("" when the file has none).
    """

    scene: str
    frame: str
    index: int
    category: str
    question: str
    answer: str | None
    tags: tuple[int, ...]
    is_multiple_choice: bool
    images: tuple[Path, ...]
    scene_description: str = ""

    @property
    def id(self) -> str:
        """The challenge's question id, ``<scene>_<frame>_<index>``."""
        return f"{self.scene}_{self.frame}_{self.index}"

    def image(self, view: str) -> Path:
        """Image file of ``view`` (a name from :data:`~prune2drive_ros.views.VIEWS`)."""
        if view not in VIEWS:
            raise ValueError(f"unknown camera view {view!r}; expected one of {', '.join(VIEWS)}")
        return self.images[VIEWS.index(view)]


def resolve_image(raw: str, nuscenes_root: Path) -> Path:
    """Where a DriveLM image path lies under ``nuscenes_root``.

    DriveLM writes paths relative to its own checkout (``../nuscenes/samples/CAM_FRONT/x.jpg``,
    ``data/nuscenes/samples/...`` in older files); the part from the last ``samples`` or
    ``sweeps`` folder on is what nuScenes itself has, so that part is joined to the root.
    """
    parts = PurePosixPath(raw.replace("\\", "/")).parts
    anchors = [i for i, part in enumerate(parts) if part in _IMAGE_ANCHORS]
    if not anchors:
        raise QuestionError(
            f"image path {raw!r} has no samples/ or sweeps/ folder; expected a nuScenes path "
            "such as ../nuscenes/samples/CAM_FRONT/<name>.jpg"
        )
    return nuscenes_root.joinpath(*parts[anchors[-1] :])


def load_drivelm(
    json_path: str | Path,
    nuscenes_root: str | Path,
    *,
    limit: int | None = None,
    seed: int = 0,
    categories: Iterable[str] | None = None,
    check_images: bool = True,
) -> list[DriveLMItem]:
    """Read a DriveLM-nuScenes JSON file into items, in file order.

    Args:
        json_path: the DriveLM file.
        nuscenes_root: the nuScenes folder holding ``samples/``; image paths are resolved
            against it (see :func:`resolve_image`).
        limit: keep this many items, drawn at random with ``seed`` (without replacement) and
            returned in file order, so that a frame's questions stay together; None keeps all.
        seed: seed of that draw; the same seed and file give the same items.
        categories: keep only these of :data:`CATEGORIES` (all by default).
        check_images: check that every kept item's six images exist.

    Raises:
        QuestionError: the file is missing, not JSON or not in the DriveLM format (the message
            says where), or a frame lacks a view.
        ConfigError: bad ``limit`` or ``categories``, the nuScenes root is not a folder, or
            images are missing under it.
    """
    path = Path(json_path)
    root = Path(nuscenes_root)
    wanted = _check_categories(categories)
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1 (or None for every item), got {limit}")
    if check_images and not root.is_dir():
        raise ConfigError(
            f"nuScenes root {root} is not a folder; give the folder that holds samples/CAM_FRONT"
        )
    items = [item for item in _parse(_read_json(path), path, root) if item.category in wanted]
    if not items:
        raise QuestionError(f"{path} holds no questions in categories {', '.join(wanted)}")
    if limit is not None and limit < len(items):
        keep = sorted(random.Random(seed).sample(range(len(items)), limit))
        items = [items[i] for i in keep]
    if check_images:
        _check_images(items, root)
    logger.info("loaded %d DriveLM questions from %s", len(items), path)
    return items


def score_drivelm(
    items: Sequence[DriveLMItem],
    predictions: Sequence[str],
    *,
    challenge_filter: bool = True,
    same_camera: bool = False,
) -> Score:
    """Score predictions (one per item, same order) as the DriveLM challenge does locally.

    With ``challenge_filter`` only the items the official evaluation scores are used (see
    :func:`~prune2drive_ros.tuning.scoring.challenge_keep`); items are routed to metrics by
    their tags, or by their answers when untagged.

    Raises:
        QuestionError: an item has no reference answer.
        ValueError: the number of predictions differs from the number of items.
    """
    if len(predictions) != len(items):
        raise ValueError(f"got {len(predictions)} predictions for {len(items)} items")
    unanswered = [item.id for item in items if item.answer is None]
    if unanswered:
        raise QuestionError(
            f"{len(unanswered)} item(s) have no reference answer (first: {unanswered[0]}); "
            "a question-only file cannot be scored"
        )
    references = [item.answer or "" for item in items]
    keep = [True] * len(items)
    if challenge_filter:
        keep = challenge_keep(
            [f"{item.scene}/{item.frame}" for item in items],
            [item.question for item in items],
            predictions,
            references,
        )
    chosen = [i for i, kept in enumerate(keep) if kept]
    return score_answers(
        [predictions[i] for i in chosen],
        [references[i] for i in chosen],
        [items[i].tags for i in chosen],
        same_camera=same_camera,
    )


def _check_categories(categories: Iterable[str] | None) -> tuple[str, ...]:
    if categories is None:
        return CATEGORIES
    wanted = tuple(categories)
    unknown = [c for c in wanted if c not in CATEGORIES]
    if unknown or not wanted:
        raise ConfigError(
            f"unknown or no DriveLM categories {unknown or wanted}; "
            f"choose from {', '.join(CATEGORIES)}"
        )
    return wanted


def _read_json(path: Path) -> Any:
    text = read_text(
        path,
        what="DriveLM file",
        remedy="give the path of a DriveLM-nuScenes JSON file such as v1_1_train_nus.json",
        error=QuestionError,
    )
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise QuestionError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno} "
            f"(character {err.pos})"
        ) from err


def _mapping(value: Any, where: str, path: Path) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise QuestionError(
            f"{path}: {where} is {type(value).__name__}, expected an object; "
            "is this a DriveLM-nuScenes file?"
        )
    return value


def _text(qa: Mapping[str, Any], key: str, where: str, path: Path) -> str:
    value = qa.get(key)
    if not isinstance(value, str):
        raise QuestionError(f'{path}: {where} has no text "{key}" (got {value!r})')
    return value


def _parse(data: Any, path: Path, root: Path) -> Iterable[DriveLMItem]:
    for scene, scene_data in _mapping(data, "the top level", path).items():
        scene_data = _mapping(scene_data, f"scene {scene}", path)
        description = scene_data.get("scene_description") or ""
        frames = _mapping(scene_data.get("key_frames"), f'scene {scene} "key_frames"', path)
        for frame, frame_data in frames.items():
            where = f"scene {scene} frame {frame}"
            frame_data = _mapping(frame_data, where, path)
            images = _images(frame_data.get("image_paths"), where, path, root)
            qa_lists = _mapping(frame_data.get("QA"), f'{where} "QA"', path)
            index = 0
            for category in CATEGORIES:
                qas = qa_lists.get(category, [])
                if not isinstance(qas, list):
                    raise QuestionError(f'{path}: {where} "QA"/"{category}" is not a list')
                for qa in qas:
                    yield _item(qa, scene, frame, index, category, images, description, path)
                    index += 1


def _images(raw: Any, where: str, path: Path, root: Path) -> tuple[Path, ...]:
    table = _mapping(raw, f'{where} "image_paths"', path)
    missing = [view for view in VIEWS if not isinstance(table.get(view), str)]
    if missing:
        raise QuestionError(
            f"{path}: {where} has no image path for view(s) {', '.join(missing)}; "
            f"every key frame needs all of {', '.join(VIEWS)}"
        )
    return tuple(resolve_image(table[view], root) for view in VIEWS)


def _item(
    qa: Any,
    scene: str,
    frame: str,
    index: int,
    category: str,
    images: tuple[Path, ...],
    description: str,
    path: Path,
) -> DriveLMItem:
    where = f"scene {scene} frame {frame} {category} question {index}"
    qa = _mapping(qa, where, path)
    question = _text(qa, "Q", where, path)
    answer = _text(qa, "A", where, path) if qa.get("A") is not None else None
    tags = qa.get("tag") or []
    if not isinstance(tags, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in tags
    ):
        raise QuestionError(f'{path}: {where} has "tag" {tags!r}, expected a list of integers')
    return DriveLMItem(
        scene=scene,
        frame=frame,
        index=index,
        category=category,
        question=question,
        answer=answer,
        tags=tuple(tags),
        is_multiple_choice=bool(_OPTIONS.search(question))
        or (answer is not None and is_choice_answer(answer)),
        images=images,
        scene_description=str(description),
    )


def _check_images(items: Sequence[DriveLMItem], root: Path) -> None:
    seen: set[Path] = set()
    missing: list[tuple[Path, str, DriveLMItem]] = []
    for item in items:
        for view, image in zip(VIEWS, item.images, strict=True):
            if image not in seen:
                seen.add(image)
                if not image.is_file():
                    missing.append((image, view, item))
    if missing:
        image, view, item = missing[0]
        raise ConfigError(
            f"{len(missing)} of {len(seen)} image files are missing under nuScenes root {root}, "
            f"first {image} ({view} of frame {item.frame}); DriveLM paths such as "
            "../nuscenes/samples/CAM_FRONT/x.jpg are read as <root>/samples/CAM_FRONT/x.jpg, so "
            "give the folder that holds samples/"
        )
