"""rosbag2 recordings (sqlite3 and mcap) of the six cameras, read with ``rosbags``, no ROS needed.

:func:`open_camera_bag` validates a bag up front (missing path, no metadata.yaml,
corrupt or truncated storage, missing camera topics each give a :class:`BagError` saying what to
do) and yields the *raw deserialised* messages in recording order; it decodes no pixels, so the
one decoder in :mod:`.imaging` serves replay exactly as it serves the live node.
Frame sets come from the same :class:`~.sync.ApproximateSync` policy the node uses.
Synthetic bags are written by :mod:`.synthetic`.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rosbags.rosbag2 import Reader, ReaderError
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from ..errors import BagError, QuestionError
from ..views import VIEWS, check_view, image_topic
from .sync import DEFAULT_QUEUE_SIZE, DEFAULT_SLOP_S, ApproximateSync, FrameSet

if TYPE_CHECKING:
    from ..config import DriveVLMConfig

logger = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Image")
#: Default largest distance between a question's stamp and the frame set answering it, ms.
DEFAULT_MAX_GAP_MS = 100.0

# Storage files that are not rosbag2 (Reader raises these on corrupt files besides ReaderError).
_CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    ReaderError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    OverflowError,  # an mcap record length field of garbage: seek() past any file size
    struct.error,
)
try:  # sqlite3 storage is read through apsw; its errors do not derive from the ones above
    import apsw

    _CORRUPT_ERRORS += (apsw.Error,)
except ImportError:  # pragma: no cover - apsw is a dependency of rosbags
    pass


@functools.cache
def typestore() -> Typestore:
    """The message types bags are read and written with (Jazzy's; image types are unchanged
    since Humble)."""
    return get_typestore(Stores.ROS2_JAZZY)


@dataclass(frozen=True)
class BagMessage:
    """One camera message as recorded: the raw deserialised message, not decoded."""

    view: str
    topic: str
    stamp_ns: int  # header stamp
    log_time_ns: int  # when the recorder received it
    msg: Any


class CameraBag:
    """A validated rosbag2 recording of the six cameras; use as a context manager.

    ``topics`` maps views to topics and may name only some views (the others keep their
    defaults, :func:`~prune2drive_ros.views.image_topic` with ``compressed``). ``slop_s`` and
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
        self._reader = _open_reader(self.path)
        try:
            self._connections = self._camera_connections()
        except BagError:
            self._reader.close()
            raise
        self._view_of = {topic: view for view, topic in self.topics.items()}

    # --- metadata ----------------------------------------------------------------------------

    @property
    def start_ns(self) -> int:
        """Recording time of the first message, ns."""
        return self._reader.start_time

    @property
    def end_ns(self) -> int:
        """Recording time of the last message, ns."""
        return max(self._reader.start_time, self._reader.end_time - 1)

    @property
    def message_counts(self) -> dict[str, int]:
        """Messages per topic, all topics of the bag."""
        return {name: info.msgcount for name, info in self._reader.topics.items()}

    @property
    def msgtypes(self) -> dict[str, str | None]:
        """Message type per topic, all topics of the bag."""
        return {name: info.msgtype for name, info in self._reader.topics.items()}

    def time_range(self) -> str:
        """The recording's time range, for messages to people."""
        return f"{self.start_ns} .. {self.end_ns} ns ({(self.end_ns - self.start_ns) / 1e9:.3f} s)"

    # --- reading -----------------------------------------------------------------------------

    def messages(
        self, start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[BagMessage]:
        """Camera messages in recording order, optionally with log time in [start_ns, stop_ns)."""
        store = typestore()
        raw_messages = self._reader.messages(self._connections, start=start_ns, stop=stop_ns)
        last_good = start_ns or self.start_ns
        while True:
            try:
                item = next(raw_messages, None)
                if item is None:
                    return
                connection, log_time, raw = item
                msg: Any = store.deserialize_cdr(raw, connection.msgtype)
            except _CORRUPT_ERRORS as exc:
                raise BagError(
                    f"bag {self.path} is truncated or corrupt after {last_good} ns: "
                    f"{str(exc).rstrip('.')}; "
                    "re-record or copy it again (`ros2 bag reindex` rebuilds metadata only)"
                ) from exc
            last_good = log_time
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            yield BagMessage(
                self._view_of[connection.topic], connection.topic, stamp, log_time, msg
            )

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
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> CameraBag:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _camera_connections(self) -> list[Any]:
        """The connections of the camera topics; BagError naming what is missing and the fix."""
        present = self._reader.topics
        images = [
            f"{n} ({i.msgtype})" for n, i in sorted(present.items()) if i.msgtype in IMAGE_TYPES
        ]
        for view, topic in self.topics.items():
            info = present.get(topic)
            if info is None:
                raise BagError(
                    f"bag {self.path} has no topic {topic} for {view}; image topics in the bag: "
                    f"{', '.join(images) or 'none'}. Remap the view to one of them (topics="
                    f"{{'{view}': '/your/topic'}}, or `--topic {view}:=/your/topic` on the CLI)"
                )
            if info.msgtype not in IMAGE_TYPES:
                raise BagError(
                    f"bag {self.path}: topic {topic} for {view} carries {info.msgtype}, not "
                    f"{' or '.join(IMAGE_TYPES)}; image topics in the bag: "
                    f"{', '.join(images) or 'none'}"
                )
        wanted = set(self.topics.values())
        return [c for c in self._reader.connections if c.topic in wanted]


def open_camera_bag(
    path: str | os.PathLike[str],
    topics: Mapping[str, str] | None = None,
    compressed: bool = True,
    *,
    slop_s: float = DEFAULT_SLOP_S,
    queue_size: int = DEFAULT_QUEUE_SIZE,
) -> CameraBag:
    """Open and validate a camera bag (a rosbag2 folder, or a single .mcap/.db3 file)."""
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


def _open_reader(path: Path) -> Reader:
    if not path.exists():
        raise BagError(
            f"bag {path} does not exist; record one with `ros2 bag record` or write a synthetic "
            f"one with `prune2drive make-bag {path}`"
        )
    try:
        reader = Reader(path)
    except FileNotFoundError:
        raise BagError(
            f"{path} is not a rosbag2 folder: metadata.yaml is missing. If only that file was "
            "lost, `ros2 bag reindex` rebuilds it; or pass the .mcap/.db3 file itself"
        ) from None
    except ReaderError as exc:
        raise BagError(
            f"{path} is not a rosbag2 bag ({exc}); pass a bag folder or a .mcap/.db3 file"
        ) from None
    try:
        reader.open()
    except _CORRUPT_ERRORS as exc:
        raise BagError(
            f"bag {path} cannot be read, it is truncated or corrupt: {str(exc).rstrip('.')}. "
            "Re-record or copy it again; `ros2 bag reindex` helps only when metadata.yaml is stale"
        ) from exc
    return reader
