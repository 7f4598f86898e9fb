"""DriveLM on bags: a DriveLM-nuScenes file -> the questions file (JSON Lines) of a nuScenes bag.

DriveLM keys its questions by nuScenes sample token (``scene -> key_frames -> sample``); a bag
written by ``prune2drive nuscenes2bag`` is replayed by stamp. :func:`drivelm_questions` pairs
them: each question of a key frame becomes a :class:`~..sensors.questions.QAItem` at the key
frame's ``frame_stamp_ns``, the newest of its six camera stamps. That is the stamp of the frame
set the node's synchronizer forms of exactly those six images, so ``replay``, the node (``ros2
bag play`` + service calls) and ``tune``/``eval --bag BAG --questions Q`` answer it on the key
frame's own images. Each item keeps the reference answer, the DriveLM tags (none in DriveLM's
own ``v1_1_train_nus.json``: the score then routes by the answer, as
:func:`~.scoring.score_answers` documents), the category as its ``kind`` and the challenge's id
``<scene>_<frame>_<index>``; a bag's DriveLM questions file is drawn by whole key frames, so
``eval --bag`` scores it by the same code and rules as ``eval --drivelm``.

The stamps come from one of:

- a bag's key-frame index (``<bag>.keyframes.json``, :mod:`~..sensors.nuscenes`): the key frames
  of that bag's scene;
- the nuScenes tables (read with the devkit, as ``nuscenes2bag`` reads them): every key frame
  of the dataset, for bags converted from it (the stamp is computed the same way as the index's).

A DriveLM key frame absent from the source is skipped and counted. A key frame present whose
image files differ from DriveLM's ``image_paths`` (another nuScenes release, a mixed-up index)
is an error: its answers would be about other images.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import BagError, ConfigError, QuestionError
from ..files import check_output_file, read_text, write_atomically
from ..sensors.nuscenes import INDEX_FORMAT, keyframe_index_path, load_devkit
from ..sensors.questions import QAItem, write_questions
from ..views import VIEWS
from .drivelm import DriveLMItem, load_drivelm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyFrame:
    """Where a nuScenes sample lies in a bag: the stamp its questions are asked at (the newest
    of its six camera stamps) and its image file per view (relative to the dataset root)."""

    frame_stamp_ns: int
    files: Mapping[str, str]


@dataclass(frozen=True)
class DriveLMQuestions:
    """The questions :func:`drivelm_questions` made.

    Attributes:
        items: the questions, in the DriveLM file's order.
        frames: key frames they are about.
        skipped: (scene token, sample token) of the DriveLM key frames not in the source.
        source: the source of the stamps, for people.
    """

    items: list[QAItem]
    frames: int
    skipped: list[tuple[str, str]]
    source: str


def bag_key_frames(bag: str | os.PathLike[str]) -> tuple[dict[str, KeyFrame], str]:
    """The key frames of a bag written by ``prune2drive nuscenes2bag``, by sample token, from
    its ``<bag>.keyframes.json``; and a description of the bag.

    Raises:
        BagError: no bag or no index beside it (convert the scene with ``nuscenes2bag``), or an
            index that is not JSON or not in the format this package writes.
    """
    bag = Path(bag)
    index_path = keyframe_index_path(bag)
    if not bag.exists():
        raise BagError(f"bag {bag} does not exist; give a bag written by prune2drive nuscenes2bag")
    remedy = (
        "DriveLM questions are paired with a bag through the key-frame index that `prune2drive "
        "nuscenes2bag DATAROOT OUT` writes beside each bag: convert the scene with it (or use "
        "--nuscenes DATAROOT for a bag converted from that dataset)"
    )
    if not index_path.is_file():
        raise BagError(f"bag {bag} has no key-frame index {index_path}; {remedy}")
    text = read_text(index_path, what="key-frame index", remedy=remedy, error=BagError)
    try:
        index = json.loads(text)
    except json.JSONDecodeError as err:
        raise BagError(f"key-frame index {index_path} is not valid JSON: {err}; {remedy}") from err
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise BagError(
            f"{index_path} is not a key-frame index of format {INDEX_FORMAT} (got {found!r}); "
            f"{remedy}"
        )
    try:
        frames = {
            token: KeyFrame(int(entry["frame_stamp_ns"]), dict(entry["files"]))
            for token, entry in index["samples"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BagError(f"key-frame index {index_path} lacks {exc}; {remedy}") from exc
    return frames, f"bag {bag} (scene {index.get('scene')})"


def nuscenes_key_frames(
    dataroot: str | os.PathLike[str], version: str, tokens: Iterable[str]
) -> tuple[dict[str, KeyFrame], str]:
    """The key frames of the samples ``tokens`` that nuScenes ``version`` at ``dataroot`` has
    (read with the devkit), by sample token; and a description of the dataset.

    Raises:
        ConfigError: the devkit is not installed.
        BagError: the dataset lacks tables (as ``nuscenes2bag`` says).
    """
    root = Path(dataroot).absolute()
    nusc = load_devkit(root, version)
    frames: dict[str, KeyFrame] = {}
    for token in tokens:
        try:
            sample = nusc.get("sample", token)
        except KeyError:
            continue
        images = {view: nusc.get("sample_data", sample["data"][view]) for view in VIEWS}
        frames[token] = KeyFrame(
            max(int(image["timestamp"]) * 1000 for image in images.values()),
            {view: image["filename"] for view, image in images.items()},
        )
    return frames, f"nuScenes {version} at {root}"


def drivelm_questions(
    items: Sequence[DriveLMItem], key_frames: Mapping[str, KeyFrame], source: str
) -> DriveLMQuestions:
    """``items`` (a DriveLM file's, :func:`~.drivelm.load_drivelm`) as questions at their key
    frames' stamps; key frames not in ``key_frames`` are skipped (and logged with a count).

    Raises:
        QuestionError: no key frame is in ``key_frames``, or a key frame's image files differ
            from DriveLM's.
    """
    questions: list[QAItem] = []
    skipped: dict[tuple[str, str], None] = {}
    written: set[tuple[str, str]] = set()
    for item in items:
        frame = key_frames.get(item.frame)
        if frame is None:
            skipped[item.scene, item.frame] = None
            continue
        if (item.scene, item.frame) not in written:
            _check_files(item, frame, source)
            written.add((item.scene, item.frame))
        questions.append(
            QAItem(
                stamp_ns=frame.frame_stamp_ns,
                question=item.question,
                answer=item.answer,
                kind=item.category,
                tags=item.tags,
                id=item.id,
            )
        )
    missing = list(skipped)
    if not questions:
        raise QuestionError(
            f"none of the {len(missing)} DriveLM key frames is in {source} (e.g. scene "
            f"{missing[0][0]} sample {missing[0][1]}): give the bag of a scene the DriveLM file "
            "asks about, or the nuScenes release it was made from (--version)"
        )
    if missing:
        logger.warning(
            "skipped %d of %d DriveLM key frames, not in %s (e.g. scene %s sample %s); wrote "
            "the questions of the other %d",
            len(missing),
            len(missing) + len(written),
            source,
            *missing[0],
            len(written),
        )
    return DriveLMQuestions(questions, len(written), missing, source)


def write_drivelm_questions(
    drivelm: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    bag: str | os.PathLike[str] | None = None,
    nuscenes: str | os.PathLike[str] | None = None,
    version: str = "v1.0-mini",
    force: bool = False,
) -> DriveLMQuestions:
    """Write the questions of DriveLM file ``drivelm`` on the key frames of ``bag`` (its index)
    or of the nuScenes dataset ``nuscenes`` to ``out`` (atomically; see :func:`drivelm_questions`).

    Raises:
        ConfigError: not exactly one of ``bag`` and ``nuscenes``, or ``out`` cannot be written
            (:func:`~..files.check_output_file`: a folder, in a missing or read-only folder, an
            input, or an existing file without ``force``).
        QuestionError: an unreadable or malformed DriveLM file, or no key frame in the source.
        BagError: as :func:`bag_key_frames` and :func:`nuscenes_key_frames`.
    """
    if (bag is None) == (nuscenes is None):
        raise ConfigError("give the frames either as a bag (--bag) or as nuScenes (--nuscenes)")
    inputs = [path for path in (drivelm, bag) if path is not None]
    out = check_output_file(out, force=force, inputs=inputs)
    # The images are in the bag (or checked against the tables): their files need not be here.
    items = load_drivelm(Path(drivelm), Path(nuscenes or "."), check_images=False)
    if bag is not None:
        key_frames, source = bag_key_frames(bag)
    else:
        assert nuscenes is not None
        tokens = dict.fromkeys(item.frame for item in items)
        key_frames, source = nuscenes_key_frames(nuscenes, version, tokens)
    result = drivelm_questions(items, key_frames, source)
    write_atomically(out, lambda tmp: write_questions(tmp, result.items))
    return result


def _check_files(item: DriveLMItem, frame: KeyFrame, source: str) -> None:
    """Raise when DriveLM's image of a view is not the key frame's (compared by file name:
    DriveLM's paths are relative to its own checkout)."""
    for view, image in zip(VIEWS, item.images, strict=True):
        expected = PurePosixPath(str(frame.files.get(view, ""))).name
        if image.name != expected:
            raise QuestionError(
                f"DriveLM key frame {item.frame} (scene {item.scene}) names {view} image "
                f"{image.name}, but in {source} that sample's {view} image is "
                f"{expected or 'missing'}: the DriveLM file and the bag or dataset are of "
                "different nuScenes releases"
            )
