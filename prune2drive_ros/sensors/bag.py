"""Recordings of the six cameras in any of the formats nuScenes reaches users in, no ROS needed.

:func:`open_camera_bag` opens a rosbag2 bag (a folder or one .mcap/.db3 file, CDR), a Foxglove
protobuf MCAP file (foxglove's nuscenes2mcap) or a ROS 1 bag (nuscenes2bag), telling them apart
by content (:func:`open_source`), and validates it up front (missing path, no metadata.yaml,
corrupt or truncated storage, missing camera topics each give a :class:`BagError` saying what to
do). It yields the *raw* messages as ``rosbags`` ROS 2 messages in recording order whatever the
format (:mod:`.sources`); it decodes no pixels, so the one decoder in :mod:`.imaging` serves
replay exactly as it serves the live node. Frame sets come from the same
:class:`~.sync.ApproximateSync` policy the node uses, on the images' own stamps.
Synthetic bags are written by :mod:`.synthetic`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import BagError, QuestionError
from ..views import VIEWS, check_view, image_topic
from .foxglove import ROS2_PROFILE, FoxgloveSource, mcap_profile
from .sources import (
    CAMERA_INFO_TYPE,
    IMAGE_TYPES,
    Record,
    Rosbag1Source,
    Rosbag2Source,
    Source,
    TopicInfo,
    typestore,
)
from .sync import DEFAULT_QUEUE_SIZE, DEFAULT_SLOP_S, ApproximateSync, FrameSet

if TYPE_CHECKING:
    from ..config import DriveVLMConfig

__all__ = [
    "DEFAULT_MAX_GAP_MS",
    "IMAGE_TYPES",
    "BagMessage",
    "CameraBag",
    "open_camera_bag",
    "open_config_bag",
    "open_source",
    "typestore",
]

logger = logging.getLogger(__name__)

#: Default largest distance between a question's stamp and the frame set answering it, ms.
DEFAULT_MAX_GAP_MS = 100.0
#: How every ROS 1 bag file starts (rosbags reads version 2.0 and names others it meets).
_ROS1_MAGIC = b"#ROSBAG V"


@dataclass(frozen=True)
class BagMessage:
    """One camera message as recorded: the raw deserialised message, not decoded."""

    view: str
    topic: str
    stamp_ns: int  # header stamp: the image's own time
    log_time_ns: int  # when the recorder received (or a converter logged) it
    msg: Any


class CameraBag:
    """A validated recording of the six cameras (any format :func:`open_source` reads); use as
    a context manager.

    ``topics`` maps views to topics and may name only some views (the others keep their
    defaults, :func:`~prune2drive_ros.views.image_topic` with ``compressed``). A default topic
    the bag lacks is read in lower case when the bag has that (``/cam_front/image_rect_compressed``,
    as foxglove's nuScenes converters now write), so common conversions need no remapping; any
    other topic given is taken as given. ``slop_s`` and
    ``queue_size`` are the synchronizer's (the node's ``sync_slop_s`` and ``sync_queue_size``),
    so a bag's frames pair exactly as the live node would pair them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        topics: Mapping[str, str] | None = None,
        compressed: bool = True,
        *,
        slop_s: float = DEFAULT_SLOP_S,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self.path = Path(path)
        self.topics: dict[str, str] = {v: image_topic(v, compressed) for v in VIEWS}
        for view, topic in (topics or {}).items():
            self.topics[check_view(view)] = topic
        self.slop_s, self.queue_size = slop_s, queue_size
        #: The format's reader; :meth:`read` reads any of its readable topics.
        self.source = open_source(self.path)
        try:
            self._read_lower_case_topics(compressed)
            self._check_camera_topics()
        except BagError:
            self.source.close()
            raise
        self._view_of = {topic: view for view, topic in self.topics.items()}

    # --- metadata ----------------------------------------------------------------------------

    @property
    def start_ns(self) -> int:
        """Recording time of the first message, ns."""
        return self.source.start_ns

    @property
    def end_ns(self) -> int:
        """Recording time of the last message, ns."""
        return self.source.end_ns

    @property
    def message_counts(self) -> dict[str, int]:
        """Messages per topic, all topics of the bag."""
        return {name: info.count for name, info in self.source.topics.items()}

    @property
    def msgtypes(self) -> dict[str, str | None]:
        """Message type per topic (the ROS 2 type it is read as; None: not readable), all
        topics of the bag."""
        return {name: info.msgtype for name, info in self.source.topics.items()}

    def calibration_topics(self) -> dict[str, str]:
        """The ``CameraInfo`` topic of each view that has one: ``camera_info`` beside the
        view's image topic, as ROS camera drivers and the nuScenes converters publish it."""
        present = self.source.topics
        found = {}
        for view, topic in self.topics.items():
            info_topic = f"{topic.rsplit('/', 1)[0]}/camera_info"
            if (info := present.get(info_topic)) is not None and info.msgtype == CAMERA_INFO_TYPE:
                found[view] = info_topic
        return found

    def time_range(self) -> str:
        """The recording's time range, for messages to people."""
        return f"{self.start_ns} .. {self.end_ns} ns ({(self.end_ns - self.start_ns) / 1e9:.3f} s)"

    # --- reading -----------------------------------------------------------------------------

    def messages(
        self, start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[BagMessage]:
        """Camera messages in recording order, optionally with log time in [start_ns, stop_ns);
        each stamped with its header stamp (the image's own time, whatever the log time)."""
        for topic, log_time, msg in self.read(self._view_of, start_ns, stop_ns):
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            yield BagMessage(self._view_of[topic], topic, stamp, log_time, msg)

    def read(
        self, topics: Collection[str], start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[Record]:
        """(topic, log time, ROS 2 message) of readable ``topics`` (cameras, calibrations) in
        recording order, optionally with log time in [start_ns, stop_ns).

        Raises:
            BagError: the recording breaks off or is corrupt (saying after which log time).
        """
        records = self.source.read(topics, start_ns, stop_ns)
        last_good = start_ns or self.start_ns
        while True:
            try:
                record = next(records, None)
            except self.source.corrupt_errors as exc:
                raise BagError(
                    f"bag {self.path} is truncated or corrupt after {last_good} ns: "
                    f"{str(exc).rstrip('.')}; re-record or copy it again (`ros2 bag reindex` "
                    "and `rosbag reindex` rebuild indexes only)"
                ) from exc
            if record is None:
                return
            last_good = record[1]
            yield record

    def frame_sets(self, sync: ApproximateSync | None = None) -> Iterator[FrameSet]:
        """Synchronized sets over the whole recording, in order (of ``sync``'s views; all six
        with the bag's slop and queue size by default)."""
        sync = sync or ApproximateSync(VIEWS, self.slop_s, self.queue_size)
        for message in self.messages():
            if message.view in sync.views:
                frame_set = sync.add(message.view, message.stamp_ns, message.msg)
                if frame_set is not None:
                    yield frame_set

    def nearest_frame_set(self, stamp_ns: int, max_gap_ns: int) -> FrameSet:
        """The complete frame set whose stamp is nearest ``stamp_ns``, at most ``max_gap_ns`` away.

        Raises :class:`QuestionError` when the stamp lies outside the recording by more than the
        gap, or no complete set lies within it (naming the views that sent nothing near the
        stamp, or saying that the slop is too tight). Only a window around the stamp is read.
        """
        if not self.start_ns - max_gap_ns <= stamp_ns <= self.end_ns + max_gap_ns:
            raise QuestionError(
                f"stamp {stamp_ns} ns lies outside bag {self.path} (recorded "
                f"{self.time_range()}) by more than {max_gap_ns / 1e6:.0f} ms; ask about a time "
                "inside the recording"
            )
        # Log times trail header stamps by the transport delay; a second of margin covers it.
        slop_ns = round(self.slop_s * 1e9)
        margin = max_gap_ns + slop_ns + 1_000_000_000
        sync = ApproximateSync(VIEWS, self.slop_s, self.queue_size)
        best: FrameSet | None = None
        heard: set[str] = set()  # views with a message stamped near enough to join a set
        for message in self.messages(stamp_ns - margin, stamp_ns + margin):
            if abs(message.stamp_ns - stamp_ns) <= max_gap_ns + slop_ns:
                heard.add(message.view)
            frame_set = sync.add(message.view, message.stamp_ns, message.msg)
            if frame_set is not None and (
                best is None or abs(frame_set.stamp_ns - stamp_ns) < abs(best.stamp_ns - stamp_ns)
            ):
                best = frame_set
        if best is None or abs(best.stamp_ns - stamp_ns) > max_gap_ns:
            nearest = "none" if best is None else f"the nearest is at {best.stamp_ns} ns"
            silent = [f"{view} ({self.topics[view]})" for view in VIEWS if view not in heard]
            why = (
                f"no message from {', '.join(silent)} near it: pick another stamp"
                if silent
                else f"all six views sent images near it, but their stamps spread more than "
                f"the sync slop of {self.slop_s * 1e3:g} ms: raise the slop (--sync-slop, "
                "the node's sync_slop_s)"
            )
            raise QuestionError(
                f"no complete six-view frame set within {max_gap_ns / 1e6:g} ms of stamp "
                f"{stamp_ns} ns in bag {self.path} ({nearest}): {why}"
            )
        return best

    # --- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the storage files (idempotent)."""
        self.source.close()

    def __enter__(self) -> CameraBag:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _read_lower_case_topics(self, compressed: bool) -> None:
        """Read default topics the bag lacks in lower case where the bag has them so."""
        present = self.source.topics
        lower = {
            view: topic.lower()
            for view, topic in self.topics.items()
            if topic == image_topic(view, compressed)
            and topic not in present
            and topic.lower() in present
        }
        if lower:
            logger.info(
                "bag %s names its camera topics in lower case (as foxglove's nuScenes converters "
                "do); reading %s",
                self.path,
                ", ".join(lower.values()),
            )
            self.topics.update(lower)

    def _check_camera_topics(self) -> None:
        """BagError unless every view's topic is in the bag and readable as images, naming what
        is missing or wrong and the fix."""
        present = self.source.topics
        images = _listing({n: i for n, i in present.items() if i.msgtype in IMAGE_TYPES})
        for view, topic in self.topics.items():
            info = present.get(topic)
            if info is None and images:
                raise BagError(
                    f"bag {self.path} has no topic {topic} for {view}; image topics in the bag: "
                    f"{images}. Remap the view to one of them (topics="
                    f"{{'{view}': '/your/topic'}}, or `--topic {view}:=/your/topic` on the CLI)"
                )
            if info is None:
                raise BagError(
                    f"{self.source.FORMAT} {self.path} has no topic {topic} for {view}, and no "
                    f"image topics at all; its topics: {_listing(present) or 'none'}. A camera "
                    f"topic carries {' or '.join(self.source.IMAGE_TYPE_NAMES)}"
                )
            if info.msgtype not in IMAGE_TYPES:
                raise BagError(
                    f"bag {self.path}: topic {topic} for {view} carries {info.recorded_as}, not "
                    f"{' or '.join(self.source.IMAGE_TYPE_NAMES)}; image topics in the bag: "
                    f"{images or 'none'}"
                )


def _listing(topics: Mapping[str, TopicInfo]) -> str:
    """``/topic (type), ...`` in name order, for messages to people."""
    return ", ".join(f"{name} ({info.recorded_as})" for name, info in sorted(topics.items()))


def open_camera_bag(
    path: str | os.PathLike[str],
    topics: Mapping[str, str] | None = None,
    compressed: bool = True,
    *,
    slop_s: float = DEFAULT_SLOP_S,
    queue_size: int = DEFAULT_QUEUE_SIZE,
) -> CameraBag:
    """Open and validate a camera bag: a rosbag2 folder or one of its .mcap/.db3 files, a
    Foxglove protobuf .mcap file or a ROS 1 .bag file."""
    return CameraBag(path, topics, compressed, slop_s=slop_s, queue_size=queue_size)


def open_config_bag(path: str | os.PathLike[str], config: DriveVLMConfig) -> CameraBag:
    """The bag at ``path`` read with ``config``'s topics and synchronizer settings: replay,
    viz and tuning pair a bag's frames exactly as the node configured so would."""
    return open_camera_bag(
        path,
        config.resolved_image_topics(),
        config.use_compressed,
        slop_s=config.sync_slop_s,
        queue_size=config.sync_queue_size,
    )


def open_source(path: str | os.PathLike[str]) -> Source:
    """The reader of the recording at ``path``, chosen by content, not name: a folder is a
    rosbag2 bag; a file a ROS 1 bag when it starts like one, a Foxglove MCAP when it is an MCAP
    file of another profile than rosbag2's (``ros2``); anything else goes to the rosbag2
    reader, which says what it lacks."""
    path = Path(path)
    if not path.exists():
        raise BagError(
            f"bag {path} does not exist; record one with `ros2 bag record` or write a synthetic "
            f"one with `prune2drive make-bag {path}`"
        )
    if path.is_file():
        with path.open("rb") as stream:
            if stream.read(len(_ROS1_MAGIC)) == _ROS1_MAGIC:
                return Rosbag1Source(path)
        if mcap_profile(path) not in (None, ROS2_PROFILE):
            return FoxgloveSource(path)
    return Rosbag2Source(path)
