"""Foxglove protobuf MCAP files (foxglove's nuscenes2mcap), read with ``mcap`` and
``mcap-protobuf-support``.

Each supported Foxglove schema becomes its ``sensor_msgs`` namesake of the ``rosbags`` typestore,
so everything downstream (the synchronizer, :mod:`.imaging`, ``bag-convert``) handles one kind of
message: ``foxglove.CompressedImage`` -> ``CompressedImage`` (the JPEG bytes are the recorded
ones), ``foxglove.RawImage`` -> ``Image`` (the encoding names are sensor_msgs' own, so the
decoder names one it does not read), ``foxglove.CameraCalibration`` -> ``CameraInfo``.

The header stamp is the message's own ``timestamp``, never the log time: the nuScenes converters
log key-frame images at the lidar's time, ~35 ms after the camera fired, and pairing the six
views on log times would mix frames. Decoding uses the schema the file carries (its protobuf
``FileDescriptorSet``), so no generated Foxglove classes are needed to read.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zstandard
from google.protobuf.message import DecodeError as ProtobufDecodeError
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Channel, Schema
from mcap.summary import Summary
from mcap_protobuf.decoder import DecoderFactory

from .sources import (
    CAMERA_INFO_TYPE,
    IMAGE_TYPES,
    Record,
    Source,
    TopicInfo,
    cannot_read,
    typestore,
)

MCAP_MAGIC = b"\x89MCAP0\r\n"
#: The profile rosbag2's MCAP storage writes; such files are rosbag2, read with ``rosbags``.
ROS2_PROFILE = "ros2"
_REPAIR = "`mcap recover` rebuilds the summary of a file whose recording was cut off"


def _stamp(proto: Any) -> Any:
    types = typestore().types
    time = types["builtin_interfaces/msg/Time"](
        sec=proto.timestamp.seconds, nanosec=proto.timestamp.nanos
    )
    return types["std_msgs/msg/Header"](stamp=time, frame_id=proto.frame_id)


def _bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def _compressed_image(proto: Any) -> Any:
    return typestore().types[IMAGE_TYPES[0]](
        header=_stamp(proto), format=proto.format, data=_bytes(proto.data)
    )


def _raw_image(proto: Any) -> Any:
    return typestore().types[IMAGE_TYPES[1]](
        header=_stamp(proto),
        height=proto.height,
        width=proto.width,
        encoding=proto.encoding,
        is_bigendian=0,  # Foxglove's 16-bit encodings are little-endian
        step=proto.step,
        data=_bytes(proto.data),
    )


def _matrix(values: Collection[float], size: int, name: str, default: np.ndarray) -> np.ndarray:
    """A CameraInfo matrix: Foxglove leaves unused ones empty, ROS wants them at full size."""
    if not values:
        return default
    if len(values) != size:
        raise ValueError(f"foxglove.CameraCalibration.{name} has {len(values)} values, not {size}")
    return np.array(values, dtype=np.float64)


def _camera_info(proto: Any) -> Any:
    types = typestore().types
    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return types[CAMERA_INFO_TYPE](
        header=_stamp(proto),
        height=proto.height,
        width=proto.width,
        distortion_model=proto.distortion_model,
        d=np.array(proto.D, dtype=np.float64),
        k=_matrix(proto.K, 9, "K", np.zeros(9)),  # all zero: "uncalibrated" in ROS
        r=_matrix(proto.R, 9, "R", np.eye(3).reshape(-1)),  # a monocular camera's
        p=_matrix(proto.P, 12, "P", np.zeros(12)),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


#: Foxglove schema -> (the ROS 2 type it is read as, the conversion).
CONVERSIONS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "foxglove.CompressedImage": (IMAGE_TYPES[0], _compressed_image),
    "foxglove.RawImage": (IMAGE_TYPES[1], _raw_image),
    "foxglove.CameraCalibration": (CAMERA_INFO_TYPE, _camera_info),
}


def mcap_profile(path: Path) -> str | None:
    """The profile in the header of the MCAP file ``path`` (``"ros2"`` for rosbag2's storage),
    or None when ``path`` is no readable MCAP file."""
    with path.open("rb") as stream:
        if stream.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            return None
        stream.seek(0)
        try:
            return make_reader(stream).get_header().profile
        except (McapError, struct.error, ValueError):
            return None


class FoxgloveSource(Source):
    """An MCAP file of protobuf messages in Foxglove's schemas."""

    FORMAT = "Foxglove MCAP"
    IMAGE_TYPE_NAMES = ("foxglove.CompressedImage", "foxglove.RawImage")
    corrupt_errors = (
        McapError,
        ProtobufDecodeError,
        zstandard.ZstdError,
        RuntimeError,  # lz4.frame's decompression errors
        OSError,
        ValueError,  # including mcap's CRCValidationError
        KeyError,
        struct.error,
    )

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._stream = path.open("rb")
        try:
            self._reader = make_reader(
                self._stream, validate_crcs=True, decoder_factories=[DecoderFactory()]
            )
            summary = self._reader.get_summary()
            if summary is None or summary.statistics is None:
                raise McapError("it has no summary section")
        except self.corrupt_errors as exc:
            self._stream.close()
            raise cannot_read(path, exc, _REPAIR) from exc
        self._summary = summary
        self._topics = _topic_infos(summary)

    @property
    def topics(self) -> dict[str, TopicInfo]:
        return self._topics

    @property
    def start_ns(self) -> int:
        assert self._summary.statistics is not None  # checked on opening
        return self._summary.statistics.message_start_time

    @property
    def end_ns(self) -> int:
        assert self._summary.statistics is not None
        return self._summary.statistics.message_end_time

    def read(
        self, topics: Collection[str], start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[Record]:
        for schema, channel, message, proto in self._reader.iter_decoded_messages(
            list(topics), starting_at=start_ns, ending_before=stop_ns
        ):
            assert schema is not None  # topics asked for are readable: they have a schema
            yield channel.topic, message.log_time, CONVERSIONS[schema.name][1](proto)

    def close(self) -> None:
        self._stream.close()


def _topic_infos(summary: Summary) -> dict[str, TopicInfo]:
    """Every topic of the file: a topic is readable when all its channels carry one supported
    Foxglove schema in protobuf."""
    assert summary.statistics is not None
    counts = summary.statistics.channel_message_counts
    infos: dict[str, TopicInfo] = {}
    for channel in summary.channels.values():
        schema = summary.schemas.get(channel.schema_id)
        recorded_as = _recorded_as(channel, schema)
        msgtype = _read_as(channel, schema)
        count = counts.get(channel.id, 0)
        if (seen := infos.get(channel.topic)) is not None:
            count += seen.count
            if (seen.msgtype, seen.recorded_as) != (msgtype, recorded_as):
                msgtype, recorded_as = None, f"{seen.recorded_as} and {recorded_as}"
        infos[channel.topic] = TopicInfo(msgtype, recorded_as, count)
    return infos


def _read_as(channel: Channel, schema: Schema | None) -> str | None:
    """The ROS 2 type a channel's messages are read as; None when they cannot be."""
    if schema is None or (channel.message_encoding, schema.encoding) != ("protobuf", "protobuf"):
        return None
    return CONVERSIONS[schema.name][0] if schema.name in CONVERSIONS else None


def _recorded_as(channel: Channel, schema: Schema | None) -> str:
    if schema is None:
        return f"schemaless {channel.message_encoding} messages"
    return schema.name if schema.encoding == "protobuf" else f"{schema.encoding} {schema.name}"
