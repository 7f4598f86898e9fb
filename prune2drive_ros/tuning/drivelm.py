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
behavior and names them ``<scene>_<frame>_<index>`` (``scene_id + "_" + frame_id + "_" +
str(i)`` in ``challenge/evaluation.py``); :attr:`DriveLMItem.id` does the same.

Its prediction file (``output.json``, what a submission's ``results`` hold) is a JSON list of
``{"id": ..., "question": ..., "answer": ...}``; evaluation.py reads only ``id`` and
``answer`` (the baseline's file also has ``gt_answer``). :func:`write_predictions` writes one,
:func:`read_predictions` reads one (or a ``submission.json``), :func:`match_predictions`
pairs it with a DriveLM file's questions for :func:`score_drivelm`.

A question-only file (the challenge's ``v1_1_val_nus_q_only.json``: ``"A": ""`` or no ``"A"``)
has no reference answers: its items have ``answer`` None and are never scored against empty
strings; the answers are on the challenge server.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, TypeVar

from ..errors import ConfigError, OutputError, QuestionError
from ..files import read_text, write_text_atomically
from ..views import VIEWS
from .ptb import Tokenizer
from .scoring import (
    CHALLENGE_RULES,
    Score,
    ScoringRules,
    is_choice_answer,
    odd_coordinates,
    score_questions,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

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
        answer: the reference answer; None in question-only files (no or an empty ``"A"``).
        tags: challenge metric tags (0 accuracy, 1 GPT, 2 language, 3 match); empty when the
            question has none (``"tag": []``, or no ``"tag"`` as in training files). Such a
            question among tagged ones is not scored, as the challenge's evaluation.py; where
            no question has tags, all are routed by their answers (see
            :func:`~prune2drive_ros.tuning.scoring.score_answers`).
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
        limit: keep this many items: whole key frames drawn at random with ``seed``, each with
            its questions in the challenge's order, the last one cut to the questions that
            reach ``limit`` (see :func:`draw_frames`); returned in file order. None keeps all.
        seed: seed of that draw; the same seed and file give the same items.
        categories: keep only these of :data:`CATEGORIES` (all by default). The challenge's
            per-frame filter takes each frame's first question as the one that finds its
            objects, which is a perception question: leave perception in for it.
        check_images: check that every kept item's six images exist.

    References and questions with an odd count of coordinates are logged as a warning (see
    :func:`~prune2drive_ros.tuning.scoring.odd_coordinates`).

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
        items = draw_frames(items, limit, seed)
    if check_images:
        _check_images(items, root)
    _warn_odd_coordinates(items, path)
    _log_untagged(items, path)
    logger.info("loaded %d DriveLM questions from %s", len(items), path)
    return items


def draw_frames(items: Sequence[DriveLMItem], limit: int, seed: int) -> list[DriveLMItem]:
    """``limit`` of ``items``: whole key frames in a random order fixed by ``seed``, the last
    one cut to its first questions; returned in file order.

    Frames, not single questions, because the challenge's per-frame filter needs each frame's
    first question (the one whose answer finds the objects the later ones are about) and its
    order; a frame cut short keeps its first questions, on which the filter is the challenge's.
    The reference search likewise took consecutive items (500-1000) of a challenge-format file.
    On the full training file (about 90 questions per frame) few frames make up ``limit``: a
    challenge-format file (``challenge/extract_data.py`` and ``convert_data.py``, 6-10 questions
    per frame) spreads them over more.
    """
    frames: dict[tuple[str, str], list[DriveLMItem]] = {}
    for item in items:
        frames.setdefault((item.scene, item.frame), []).append(item)
    chosen = {item.id for item in draw_groups(list(frames.values()), limit, seed)}
    return [item for item in items if item.id in chosen]


def draw_groups(
    groups: Sequence[Sequence[T]],
    limit: int,
    seed: int,
    usable: Callable[[Sequence[T]], bool] | None = None,
) -> list[T]:
    """Up to ``limit`` members of ``groups`` (key frames, in source order): whole groups in a
    random order fixed by ``seed`` (only its count of groups matters, not their contents), the
    last one cut to its first members; in draw order.

    ``usable`` is asked about each group before it is taken (a bag's frame set that lies outside
    the recording is not); the draw goes on past those it refuses. The draw of
    :func:`draw_frames` and of a bag's DriveLM questions file
    (:func:`~.sources.bag_validation_set`): the same frames in the same order give the same draw.
    """
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    chosen: list[T] = []
    for index in order:
        if len(chosen) == limit:
            break
        if usable is not None and not usable(groups[index]):
            continue
        chosen += groups[index][: limit - len(chosen)]
    return chosen


def score_drivelm(
    items: Sequence[DriveLMItem],
    predictions: Sequence[str],
    *,
    rules: ScoringRules = CHALLENGE_RULES,
    same_camera: bool = False,
    tokenizer: Tokenizer | None = None,
) -> Score:
    """Score predictions (one per item, same order) as the DriveLM challenge does locally.

    ``rules`` (default: the challenge's) set the accuracy mode, the per-frame filter and what
    becomes of items without tags (see :func:`~prune2drive_ros.tuning.scoring.score_questions`):
    items are routed to metrics by their tags; one with an empty tag list among tagged items is
    not scored, as the challenge's evaluation.py (``rules.untagged`` ``by_answer``: by its
    answer); where no item has tags, all are routed by their answers.

    Raises:
        QuestionError: an item has no reference answer.
        ValueError: the number of predictions differs from the number of items.
    """
    if len(predictions) != len(items):
        raise ValueError(f"got {len(predictions)} predictions for {len(items)} items")
    unanswered = [item.id for item in items if item.answer is None]
    if unanswered:
        raise QuestionError(
            f"{len(unanswered)} of {len(items)} question(s) have no reference answer (first: "
            f"{unanswered[0]}): a question-only file (such as the challenge's "
            "v1_1_val_nus_q_only.json) cannot be scored here; its answers are on the challenge "
            "server, or score with a DriveLM file that has them (e.g. a split of "
            "v1_1_train_nus.json)"
        )
    return score_questions(
        [f"{item.scene}_{item.frame}" for item in items],
        [item.question for item in items],
        predictions,
        [item.answer or "" for item in items],
        [item.tags for item in items],
        rules=rules,
        same_camera=same_camera,
        tokenizer=tokenizer,
    )


class Prediction(NamedTuple):
    """One answer of a prediction file (``output.json``): the challenge's question id, the
    question asked and the model's answer."""

    id: str
    question: str
    answer: str


def write_predictions(path: str | Path, predictions: Iterable[Prediction]) -> int:
    """Write ``predictions`` as the challenge's ``output.json`` (a JSON list of ``{"id",
    "question", "answer"}``, in the given order) to ``path``, atomically; return how many.

    The file is what ``challenge/prepare_submission.py`` puts under ``results`` for the test
    server, which looks every question of its file up by id: a submission must answer all of
    them.

    Raises:
        OutputError: the file cannot be written (a full disk); an older file is left whole.
    """
    records = [prediction._asdict() for prediction in predictions]
    try:
        write_text_atomically(path, json.dumps(records, ensure_ascii=False, indent=4) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write predictions file {path}: {exc.strerror or exc}") from exc
    return len(records)


def read_predictions(path: str | Path) -> dict[str, Prediction]:
    """The answers of a prediction file by question id.

    Reads the challenge's ``output.json`` (a list of objects with string ``id`` and
    ``answer``; ``question`` and other keys optional) or a ``submission.json`` (the same list
    under ``results``). A repeated id keeps its last answer, as evaluation.py's dict does, with
    a warning.

    Raises:
        QuestionError: the file is missing, not JSON, or not in that format (the message says
            which entry).
    """
    path = Path(path)
    text = read_text(
        path,
        what="prediction file",
        remedy="give the output.json that `prune2drive eval --save-predictions` (or the "
        "challenge's inference) wrote",
        error=QuestionError,
    )
    data = _loads(text, path)
    if isinstance(data, Mapping) and "results" in data:
        data = data["results"]
    if not isinstance(data, list):
        raise QuestionError(
            f'{path}: expected a JSON list of {{"id", "question", "answer"}} (the '
            f"challenge's output.json), got {type(data).__name__}"
        )
    found: dict[str, Prediction] = {}
    repeated: list[str] = []
    for number, entry in enumerate(data):
        where = f"entry {number}"
        entry = _mapping(entry, where, path)
        prediction = Prediction(
            id=_text(entry, "id", where, path),
            question=str(entry.get("question") or ""),
            answer=_text(entry, "answer", where, path),
        )
        if prediction.id in found:
            repeated.append(prediction.id)
        found[prediction.id] = prediction
    if repeated:
        logger.warning(
            "%s answers %d question id(s) more than once (first: %s); the last answer counts, "
            "as in the challenge's evaluation.py",
            path,
            len(repeated),
            repeated[0],
        )
    return found


@dataclass(frozen=True)
class Coverage:
    """How a prediction file covers the questions of a DriveLM file.

    Attributes:
        items: the questions it answers, in file order.
        predictions: their answers, in the same order.
        missing: ids of questions it does not answer (evaluation.py stops at the first with a
            ``KeyError``).
        unknown: ids it answers that the DriveLM file does not ask.
    """

    items: list[DriveLMItem]
    predictions: list[str]
    missing: list[str]
    unknown: list[str]


def match_predictions(
    items: Sequence[DriveLMItem], predictions: Mapping[str, Prediction]
) -> Coverage:
    """Pair the questions of a DriveLM file with the answers of a prediction file by id."""
    answered = [item for item in items if item.id in predictions]
    asked = {item.id for item in items}
    return Coverage(
        items=answered,
        predictions=[predictions[item.id].answer for item in answered],
        missing=[item.id for item in items if item.id not in predictions],
        unknown=[pid for pid in predictions if pid not in asked],
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
    return _loads(text, path)


def _loads(text: str, path: Path) -> Any:
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
    # The challenge's question-only file writes "A": "" where the training file has the answer.
    raw = qa.get("A")
    blank = raw is None or (isinstance(raw, str) and not raw.strip())
    answer = None if blank else _text(qa, "A", where, path)
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


def _log_untagged(items: Sequence[DriveLMItem], path: Path) -> None:
    """Say how the questions without tags will be scored (see :func:`score_drivelm`)."""
    untagged = [item.id for item in items if not item.tags]
    if not untagged:
        return
    if len(untagged) == len(items):
        logger.info(
            "%s: no question has DriveLM tags (not a challenge-format file; the challenge's "
            "evaluation.py needs them): the drivelm reward routes each by its answer",
            path,
        )
    else:
        logger.warning(
            "%s: %d of %d question(s) have no tags (first: %s); they are not scored, as the "
            "challenge's evaluation.py (--untagged-by-answer routes them by their answers)",
            path,
            len(untagged),
            len(items),
            untagged[0],
        )


def _warn_odd_coordinates(items: Sequence[DriveLMItem], path: Path) -> None:
    for what, texts in (
        ("reference answer", {item.id: item.answer or "" for item in items}),
        ("question", {item.id: item.question for item in items}),
    ):
        odd = [item_id for item_id, text in texts.items() if odd_coordinates(text)]
        if odd:
            logger.warning(
                "%s: %d %s(s) hold an odd count of coordinates (first: %s); the challenge's "
                "evaluation.py stops on such a text when it pairs its numbers (a numpy reshape "
                "error), this package drops the last number",
                path,
                len(odd),
                what,
                odd[0],
            )
