"""Where camera messages come from: one reader interface over the recording formats.

nuScenes reaches users in three formats: rosbag2 (sqlite3 or mcap storage, CDR; what
``ros2 bag record`` and :mod:`.synthetic` write), ROS 1 bags (foxglove's nuscenes2bag) and
Foxglove protobuf MCAP files (foxglove's nuscenes2mcap, in :mod:`.foxglove`). Each format is a
:class:`Source` that yields the messages of the topics asked for as ``rosbags`` ROS 2 messages
(``sensor_msgs/msg/CompressedImage``, ``Image``, ``CameraInfo``) in log-time order, so
:class:`~.bag.CameraBag`, the synchronizer and the one image decoder in :mod:`.imaging` see the
same objects whatever the file was; image bytes are handed through untouched.
:func:`~.bag.open_source` picks the source from the file's content, not its name.
"""

from __future__ import annotations

import functools
import struct
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rosbags import rosbag1, rosbag2
from rosbags.rosbag2 import StoragePlugin
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from ..errors import BagError

IMAGE_TYPES = ("sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Image")
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"

#: rosbag2 storages the package writes (``--storage``) -> rosbags' storage plugins.
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

#: One message as a source yields it: topic, log time (ns), ROS 2 message.
Record = tuple[str, int, Any]


@functools.cache
def typestore() -> Typestore:
    """The message types bags are read and written with (Jazzy's; image types are unchanged
    since Humble)."""
    return get_typestore(Stores.ROS2_JAZZY)


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a recording."""

    #: The ROS 2 type its messages are yielded as; None when this package cannot read them.
    msgtype: str | None
    #: The type as the file records it, for messages to people (a ROS 1 type, a protobuf schema).
    recorded_as: str
    count: int


class Source(ABC):
    """An open recording: its topics, time range and messages; close it when done."""

    #: The format, for messages to people.
    FORMAT: ClassVar[str]
    #: The image types as this format names them, for messages to people.
    IMAGE_TYPE_NAMES: ClassVar[tuple[str, ...]]

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    @abstractmethod
    def topics(self) -> dict[str, TopicInfo]:
        """Every topic of the recording."""

    @property
    @abstractmethod
    def start_ns(self) -> int:
        """Log time of the first message, ns."""

    @property
    @abstractmethod
    def end_ns(self) -> int:
        """Log time of the last message, ns."""

    #: What the reading library raises on corrupt or truncated data while reading messages.
    corrupt_errors: tuple[type[BaseException], ...]

    @abstractmethod
    def read(
        self, topics: Collection[str], start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[Record]:
        """Messages of ``topics`` (each readable: its ``msgtype`` is not None) in log-time
        order, optionally with log time in [start_ns, stop_ns); may raise ``corrupt_errors``."""

    @abstractmethod
    def close(self) -> None:
        """Close the files (idempotent)."""


def cannot_read(path: Path, exc: BaseException | str, repair: str) -> BagError:
    """The error for a recording that fails to open, truncated or corrupt; ``repair`` says
    what the format's tools can rebuild."""
    return BagError(
        f"bag {path} cannot be read, it is truncated or corrupt: {str(exc).rstrip('.')}. "
        f"Re-record or copy it again; {repair}"
    )


# Storage files that are not rosbag2 (Reader raises these on corrupt files besides ReaderError).
_ROSBAG2_CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    rosbag2.ReaderError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    OverflowError,  # an mcap record length field of garbage: seek() past any file size
    struct.error,
)
try:  # sqlite3 storage is read through apsw; its errors do not derive from the ones above
    import apsw

    _ROSBAG2_CORRUPT_ERRORS += (apsw.Error,)
except ImportError:  # pragma: no cover - apsw is a dependency of rosbags
    pass


class _RosbagsSource(Source):
    """A recording read through a ``rosbags`` reader (``self._reader``): its time range and
    its messages, deserialised as ROS 2 messages by :meth:`_decode`."""

    _reader: Any

    @property
    def start_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        return int(max(self._reader.start_time, self._reader.end_time - 1))

    def read(
        self, topics: Collection[str], start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[Record]:
        store = typestore()
        connections = [c for c in self._reader.connections if c.topic in topics]
        for connection, log_time, raw in self._reader.messages(
            connections, start=start_ns, stop=stop_ns
        ):
            yield connection.topic, log_time, self._decode(store, raw, connection.msgtype)

    def _decode(self, store: Typestore, raw: bytes, msgtype: str) -> Any:
        """One recorded message as a ROS 2 message."""
        return store.deserialize_cdr(raw, msgtype)


class Rosbag2Source(_RosbagsSource):
    """A rosbag2 folder, or one of its .mcap/.db3 files, read with ``rosbags``."""

    FORMAT = "rosbag2"
    IMAGE_TYPE_NAMES = IMAGE_TYPES
    corrupt_errors = _ROSBAG2_CORRUPT_ERRORS

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._reader = rosbag2.Reader(path)
        except FileNotFoundError:
            raise BagError(
                f"{path} is not a rosbag2 folder: metadata.yaml is missing. If only that file "
                "was lost, `ros2 bag reindex` rebuilds it; or pass the .mcap/.db3 file itself"
            ) from None
        except rosbag2.ReaderError as exc:
            raise BagError(
                f"{path} is not a rosbag2 bag ({exc}); pass a bag folder or a .mcap/.db3 file "
                "(rosbag2), a Foxglove protobuf .mcap file or a ROS 1 .bag file"
            ) from None
        try:
            self._reader.open()
        except self.corrupt_errors as exc:
            raise cannot_read(
                path, exc, "`ros2 bag reindex` helps only when metadata.yaml is stale"
            ) from exc

    @property
    def topics(self) -> dict[str, TopicInfo]:
        return {
            name: TopicInfo(info.msgtype, info.msgtype or "several types", info.msgcount)
            for name, info in self._reader.topics.items()
        }

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()


#: ROS 1 types read as their ROS 2 namesakes: the same fields on the wire (Header less seq).
_ROS1_TYPES = (*IMAGE_TYPES, CAMERA_INFO_TYPE)


class Rosbag1Source(_RosbagsSource):
    """A ROS 1 bag (foxglove's nuscenes2bag writes them), read with ``rosbags.rosbag1``.

    Messages of :data:`_ROS1_TYPES` are converted to their ROS 2 types on the byte level
    (``ros1_to_cdr``; it drops the header's ``seq``, the only wire difference), so the image
    bytes are the recorded ones. A connection whose message definition differs from ROS 1
    Noetic's (its md5 sum) is not read: its bytes would be misparsed.
    """

    FORMAT = "ROS 1 bag"
    IMAGE_TYPE_NAMES = tuple(t.replace("/msg/", "/") for t in IMAGE_TYPES)
    corrupt_errors = (rosbag1.ReaderError, SerdeError, OSError, ValueError, struct.error)

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._reader = rosbag1.Reader(path)
        try:
            self._reader.open()
        except self.corrupt_errors as exc:
            raise cannot_read(
                path, exc, "`rosbag reindex` rebuilds the index of a recording that was cut off"
            ) from exc
        noetic = get_typestore(Stores.ROS1_NOETIC)
        known = {t: noetic.generate_msgdef(t)[1] for t in _ROS1_TYPES}
        self._readable = {
            c.id for c in self._reader.connections if known.get(c.msgtype) == c.digest
        }

    @property
    def topics(self) -> dict[str, TopicInfo]:
        infos = {}
        for name, info in self._reader.topics.items():
            readable = all(c.id in self._readable for c in info.connections)
            recorded_as = f"ROS 1 {str(info.msgtype).replace('/msg/', '/')}"
            if not readable and info.msgtype in _ROS1_TYPES:
                recorded_as += " of a definition unlike ROS 1 Noetic's (another md5 sum)"
            infos[name] = TopicInfo(info.msgtype if readable else None, recorded_as, info.msgcount)
        return infos

    def _decode(self, store: Typestore, raw: bytes, msgtype: str) -> Any:
        return store.deserialize_cdr(store.ros1_to_cdr(raw, msgtype), msgtype)

    def close(self) -> None:
        if self._reader.bio is not None:
            self._reader.close()
