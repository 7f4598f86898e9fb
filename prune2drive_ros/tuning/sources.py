"""Validation data for rate tuning: questions about six-camera frames, from a bag or DriveLM.

Two sources give the same thing, a :class:`ValidationSet` of :class:`Sample` items (a question,
its reference answer when known, and the :class:`Frame` it is asked about):

* a rosbag2 recording with a questions file (JSON Lines with stamps): each question is asked
  about the synchronized frame set nearest its stamp (:meth:`CameraBag.nearest_frame_set`),
  exactly as ``prune2drive replay`` answers it;
* a DriveLM-nuScenes JSON file with the nuScenes image folder (:func:`load_drivelm`).

Several questions usually share one frame, so the data is grouped by frame: the vision encoder
runs once per frame for a whole study (see :mod:`.features`), and each trial prefills a frame's
visual tokens once for all its questions.

A validation set is named two ways, for two purposes:

* :attr:`Frame.key` keys the feature cache on this machine. It is made of file *stamps*
  (:func:`file_stamp`: resolved path, size, modification time) and the frame's stamp in the
  bag: cheap (no file is read) and strict (a file rewritten in place gets a new key), so the
  cache never hands out tokens of a file that has since changed. A needless miss (``touch``, a
  copy elsewhere) costs one encoder call per frame, nothing worse.
* :attr:`ValidationSet.identity` names the data a *study* is scored on, and with it the study
  (see :mod:`.study`). It is made of *contents*: the SHA-256 of the questions or DriveLM file,
  the bag's own metadata (camera topics, message types and counts, first and last stamp; no
  path, no file times) and the samples drawn. The same data on another machine, in another
  folder, or touched, gives the same identity, so workers share the study and a re-run resumes
  it; a stamp there would silently start a fresh study instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DriveVLMConfig
from ..errors import ConfigError, QuestionError
from ..sensors.bag import DEFAULT_MAX_GAP_MS, CameraBag, open_config_bag
from ..sensors.imaging import Colour, decode_views
from ..sensors.questions import QAItem, read_questions
from ..sensors.resizing import ResizeMode
from ..sensors.sync import FrameSet
from ..views import VIEWS
from .drivelm import draw_groups, load_drivelm

logger = logging.getLogger(__name__)

#: Validation items of the reference search (Prune2Drive: 500 DriveLM questions).
DEFAULT_SAMPLES = 500
#: Skipped questions named one by one in messages; the rest are counted.
_NAMED_SKIPS = 10

#: What a frame reader returns: per view, (name of the source for messages, image message).
FrameMessages = Mapping[str, tuple[str, Any]]
#: A synchronized set's header stamp per view, sorted by view: what names it.
ViewStamps = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Frame:
    """Six camera images that one or more questions are asked about.

    Attributes:
        key: identity of the images for the feature cache (a hex digest; see the module doc).
        label: what to call the frame in messages (bag stamp or DriveLM frame token).
        read: returns the six undecoded image messages; called only when the cache misses.
    """

    key: str
    label: str
    read: Callable[[], FrameMessages] = field(compare=False, repr=False)


@dataclass(frozen=True)
class Sample:
    """One validation question about one frame (``kind``: its type, where the questions file
    names one, for accuracy per kind)."""

    id: str
    frame: Frame
    question: str
    answer: str | None
    tags: tuple[int, ...] = ()
    kind: str | None = None


@dataclass(frozen=True)
class ImageFile:
    """An image file's bytes shaped like ``sensor_msgs/msg/CompressedImage``.

    ``format`` is empty so that :func:`~..sensors.imaging.decode_image` (the one decoder)
    picks JPEG or PNG from the magic bytes.
    """

    data: bytes
    format: str = ""


class ValidationSet:
    """Samples in source order, grouped by frame; holds the open bag, so use it as a context.

    Attributes:
        samples: the validation questions (at least one).
        skipped: (sample id, reason) of questions that were drawn but cannot be used.
        description: the source, for people.
        identity: what the samples are, by content (see the module doc), for study names.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        skipped: Sequence[tuple[str, str]] = (),
        description: str,
        identity: str,
        resources: ExitStack | None = None,
    ) -> None:
        if not samples:
            raise QuestionError(f"the validation set from {description} is empty")
        self.samples = list(samples)
        self.skipped = list(skipped)
        self.description = description
        self.identity = identity
        self._resources = resources or ExitStack()

    @property
    def frames(self) -> list[Frame]:
        """The distinct frames, in the order their first question comes."""
        return list({sample.frame.key: sample.frame for sample in self.samples}.values())

    def by_frame(self) -> list[tuple[Frame, list[Sample]]]:
        """Each distinct frame with its samples (source order within and across frames)."""
        groups: dict[str, list[Sample]] = {}
        for sample in self.samples:
            groups.setdefault(sample.frame.key, []).append(sample)
        return [(group[0].frame, group) for group in groups.values()]

    @property
    def has_references(self) -> bool:
        """True when every sample has a reference answer (DriveLM scoring is possible)."""
        return all(sample.answer is not None for sample in self.samples)

    def summary(self) -> str:
        """One line: how many samples, frames and skipped questions, from where."""
        line = f"{len(self.samples)} questions on {len(self.frames)} frames from {self.description}"
        if self.skipped:
            line += f"; {len(self.skipped)} drawn questions skipped"
        return line

    def close(self) -> None:
        """Close the bag (idempotent)."""
        self._resources.close()

    def __enter__(self) -> ValidationSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_frame(
    messages: FrameMessages,
    size: tuple[int, int],
    pad: Colour | None = None,
    resize_mode: ResizeMode = "exact",
) -> list[np.ndarray]:
    """The six images of a frame as RGB arrays of ``size`` (letterboxed with ``pad``, resized
    as ``resize_mode`` says), in :data:`VIEWS` order (decoded in parallel by the decoder the
    engine uses)."""
    images = decode_views(
        {view: messages[view][1] for view in VIEWS},
        {view: messages[view][0] for view in VIEWS},
        size,
        pad,
        resize_mode,
    )
    return [images[view] for view in VIEWS]


def digest(*parts: object) -> str:
    """A stable short hex digest of ``parts`` (JSON-encoded, so types and order matter)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def file_stamp(path: Path) -> list[object]:
    """Resolved path, size and modification time of ``path`` (a file, or every file in a
    folder): enough to notice a replaced or rewritten file without reading its bytes. A cache
    key for this machine only (see the module doc): it changes with a copy or a ``touch``."""
    path = path.resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamp: list[object] = [str(path)]
    for item in files:
        stat = item.stat()
        stamp.append([item.relative_to(path).as_posix(), stat.st_size, stat.st_mtime_ns])
    return stamp


def content_digest(path: Path) -> str:
    """SHA-256 of the bytes of file ``path``, in hex: the same on every machine and path."""
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def bag_content(bag: CameraBag) -> dict[str, object]:
    """What a recording holds, from its own metadata: per view the topic, message type and
    message count, and the first and last stamp. Neither the path nor file times take part:
    a copy of the bag anywhere gives the same value, and any re-recording a different one."""
    counts, types = bag.message_counts, bag.msgtypes
    return {
        "views": {
            view: [topic, types.get(topic), counts.get(topic)] for view, topic in bag.topics.items()
        },
        "start_ns": bag.start_ns,
        "end_ns": bag.end_ns,
    }


# --------------------------------------------------------------------------------------------
# Bag + questions file
# --------------------------------------------------------------------------------------------


def bag_validation_set(
    bag_path: str | Path,
    questions_path: str | Path,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    config: DriveVLMConfig | None = None,
    max_gap_ms: float = DEFAULT_MAX_GAP_MS,
) -> ValidationSet:
    """Up to ``samples`` questions of a questions file, each on its nearest frame set of a bag.

    The bag is read with ``config``'s camera topics and synchronizer settings (default: the
    node's defaults), so its frames pair as the node would pair them.

    Questions are drawn in a random order fixed by ``seed`` and kept until ``samples`` of them
    lie inside the recording; those outside (or without a complete frame set within
    ``max_gap_ms``) are skipped and reported. The kept ones are returned in file order. A
    DriveLM questions file (every question has an ``id``; ``prune2drive drivelm-questions``)
    is drawn by whole key frames (the questions of one stamp), the last cut short, as
    :func:`~.drivelm.draw_frames` draws the DriveLM file itself: the same frames, seed and
    ``samples`` give the same questions either way. Their DriveLM tags route their scoring.

    Raises:
        QuestionError: the questions file is empty or no drawn question lies in the bag.
        BagError: the bag cannot be opened.
        ConfigError: ``samples`` is below 1.
    """
    _check_samples(samples)
    bag_path, questions_path = Path(bag_path), Path(questions_path)
    items = read_questions(questions_path)
    if not items:
        raise QuestionError(f"questions file {questions_path} holds no questions")
    resources = ExitStack()
    bag = resources.enter_context(open_config_bag(bag_path, config or DriveVLMConfig()))
    try:
        bag_stamp = file_stamp(bag_path)
        max_gap_ns = round(max_gap_ms * 1e6)
        # A frame set is named by all six stamps, not by its newest one: with another sync slop
        # or queue size the set with the same newest stamp can hold other images of the others.
        found: dict[int, tuple[FrameSet, ViewStamps]] = {}  # by stamp
        skipped: list[tuple[str, str]] = []
        frames: dict[ViewStamps, Frame] = {}

        def sample_id(index: int) -> str:
            return f"{questions_path.name}:{index + 1}"

        def usable(group: Sequence[int]) -> bool:
            stamp_ns = items[group[0]].stamp_ns  # one stamp per group
            try:
                frame_set = bag.nearest_frame_set(stamp_ns, max_gap_ns)
            except QuestionError as exc:
                skipped.extend((sample_id(index), str(exc)) for index in group)
                return False
            found[stamp_ns] = frame_set, tuple(sorted(frame_set.stamps.items()))
            return True

        chosen: dict[int, tuple[Sample, ViewStamps]] = {}
        for index in draw_groups(_draw_groups(items), samples, seed, usable):
            item = items[index]
            frame_set, stamps = found[item.stamp_ns]
            frame = frames.get(stamps)
            if frame is None:
                frame = _bag_frame(bag, bag_stamp, frame_set, item.stamp_ns, max_gap_ns)
                frames[stamps] = frame
            sample = Sample(
                sample_id(index), frame, item.question, item.answer, item.tags, item.kind
            )
            chosen[index] = (sample, stamps)
        _report_skips(skipped, f"bag {bag_path}", have=len(chosen))
        drawn = sorted(chosen)
        return ValidationSet(
            [chosen[i][0] for i in drawn],
            skipped=skipped,
            description=f"bag {bag_path} with questions {questions_path}",
            identity=digest(
                "bag",
                bag_content(bag),
                content_digest(questions_path),
                [(i + 1, chosen[i][1]) for i in drawn],
            ),
            resources=resources,
        )
    except BaseException:
        resources.close()
        raise


def _draw_groups(items: Sequence[QAItem]) -> list[list[int]]:
    """The positions of ``items`` as :func:`~.drivelm.draw_groups` draws them: each question
    alone, or, in a DriveLM questions file (every question has an ``id``), each stamp's
    questions together (a key frame's, in file order), for the challenge's per-frame filter."""
    if not all(item.id is not None for item in items):
        return [[index] for index in range(len(items))]
    by_stamp: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_stamp.setdefault(item.stamp_ns, []).append(index)
    return list(by_stamp.values())


def _bag_frame(
    bag: CameraBag, bag_stamp: list[object], frame_set: FrameSet, query_ns: int, max_gap_ns: int
) -> Frame:
    """``frame_set`` as a validation frame, read again through ``query_ns`` on a cache miss.

    The set is not kept in memory between the look-up and the encoding: hundreds of frames of
    six JPEGs would be, while a second look-up is a short read of the bag.
    """

    def read() -> FrameMessages:
        frames = bag.nearest_frame_set(query_ns, max_gap_ns)
        return {view: (bag.topics[view], frames.messages[view]) for view in VIEWS}

    stamps = sorted(frame_set.stamps.items())
    key = digest("bag-frame", bag_stamp, sorted(bag.topics.items()), stamps)
    return Frame(key=key, label=f"{bag.path.name}@{frame_set.stamp_ns}", read=read)


def _report_skips(skipped: Sequence[tuple[str, str]], where: str, *, have: int) -> None:
    """Log which drawn questions were skipped; raise when none is left."""
    if not skipped:
        return
    named = "; ".join(f"{sample_id}: {why}" for sample_id, why in skipped[:_NAMED_SKIPS])
    more = f" (and {len(skipped) - _NAMED_SKIPS} more)" if len(skipped) > _NAMED_SKIPS else ""
    if not have:
        raise QuestionError(
            f"none of the {len(skipped)} questions lies inside {where}: {named}{more}"
        )
    logger.warning(
        "skipped %d question(s) that lie outside %s: %s%s", len(skipped), where, named, more
    )


# --------------------------------------------------------------------------------------------
# DriveLM
# --------------------------------------------------------------------------------------------


def drivelm_validation_set(
    json_path: str | Path,
    nuscenes_root: str | Path,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> ValidationSet:
    """``samples`` DriveLM questions drawn with ``seed`` (all when the file has fewer).

    Raises:
        QuestionError, ConfigError: as :func:`~.drivelm.load_drivelm` (bad file, missing
            images, ...).
    """
    _check_samples(samples)
    json_path = Path(json_path)
    items = load_drivelm(json_path, nuscenes_root, limit=samples, seed=seed)
    frames: dict[tuple[Path, ...], Frame] = {}
    chosen = []
    for item in items:
        frame = frames.get(item.images)
        if frame is None:
            frame = frames[item.images] = _image_frame(item.images, label=item.frame)
        chosen.append(Sample(item.id, frame, item.question, item.answer, item.tags))
    return ValidationSet(
        chosen,
        description=f"DriveLM {json_path} (nuScenes root {nuscenes_root})",
        identity=digest("drivelm", content_digest(json_path), [s.id for s in chosen]),
    )


def _image_frame(images: Sequence[Path], *, label: str) -> Frame:
    """A frame of six image files (one per view, in :data:`VIEWS` order)."""

    def read() -> FrameMessages:
        return {
            view: (str(path), ImageFile(path.read_bytes()))
            for view, path in zip(VIEWS, images, strict=True)
        }

    key = digest("image-frame", [file_stamp(path) for path in images])
    return Frame(key=key, label=label, read=read)


def _check_samples(samples: int) -> None:
    if samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {samples}")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
