"""The same nuScenes-like camera frames written in each format users bring, in code.

:func:`nuscenes_frames` draws the frames: six cameras firing in nuScenes' order ~8 ms apart at
12 Hz, a small distinct JPEG per image, and log times as the nuScenes converters write them
(every sixth frame a key frame, its images logged at the lidar's time, 35 ms after their own
stamps; the others 2 ms after). The writers record those frames in the *original* formats, each
with its own library: a Foxglove protobuf MCAP (``mcap-protobuf-support`` with
``foxglove-schemas-protobuf``, as foxglove's nuscenes2mcap), a ROS 1 bag (``rosbags.rosbag1``
with ROS 1 Noetic's types, as nuscenes2bag) and a rosbag2 bag (``rosbags.rosbag2``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from mcap_protobuf.writer import Writer as McapWriter
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as Ros2Writer
from rosbags.typesys import Stores, get_typestore

from prune2drive_ros.sensors.imaging import encode_jpeg
from prune2drive_ros.sensors.synthetic import frame_stamps
from prune2drive_ros.views import VIEWS, camera_info_topic, image_topic

#: Delay from a key frame's image stamps to their log time (the lidar's time), ns.
KEY_FRAME_DELAY_NS = 35_000_000
#: Delay from other images' stamps to their log time, ns.
DELAY_NS = 2_000_000
#: Every this many frames is a key frame (nuScenes: 2 Hz key frames of 12 Hz cameras).
KEY_FRAME_EVERY = 6
WIDTH, HEIGHT = 16, 8


@dataclass(frozen=True)
class Image:
    """One camera image as recorded."""

    view: str
    frame: int
    stamp_ns: int
    log_time_ns: int
    jpeg: bytes
    rgb: np.ndarray


def nuscenes_frames(frames: int = 8, seed: int = 5) -> list[Image]:
    """The images of ``frames`` frames, in log-time order."""
    rng = np.random.default_rng(seed)
    images = []
    for k, stamps in enumerate(frame_stamps(frames, seed=seed)):
        delay = KEY_FRAME_DELAY_NS if k % KEY_FRAME_EVERY == 0 else DELAY_NS
        for view in VIEWS:
            rgb = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            stamp = stamps[view]
            images.append(Image(view, k, stamp, stamp + delay, encode_jpeg(rgb), rgb))
    return sorted(images, key=lambda image: (image.log_time_ns, image.view))


def intrinsics(view: str) -> dict[str, list[float]]:
    """A distinct pinhole calibration per view (D, K, R, P as ROS lays them out)."""
    f = 100.0 + VIEWS.index(view)
    return {
        "D": [0.0] * 5,
        "K": [f, 0.0, WIDTH / 2, 0.0, f, HEIGHT / 2, 0.0, 0.0, 1.0],
        "R": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        "P": [f, 0.0, WIDTH / 2, 0.0, 0.0, f, HEIGHT / 2, 0.0, 0.0, 0.0, 1.0, 0.0],
    }


def _timestamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def write_foxglove_mcap(
    path: Path,
    images: list[Image],
    *,
    lower_case: bool = False,
    raw_encoding: str | None = None,
    camera_schema: type[Message] | None = None,
    extra: dict[str, Message] | None = None,
    topics: dict[str, str] | None = None,
) -> Path:
    """A Foxglove protobuf MCAP as nuscenes2mcap writes one: ``foxglove.CompressedImage`` on
    ``/CAM_*/image_rect_compressed`` (lower case with ``lower_case``, as its current version),
    ``foxglove.CameraCalibration`` on ``/CAM_*/camera_info`` with each image.

    ``raw_encoding`` writes ``foxglove.RawImage`` of that encoding on ``/CAM_*/image_rect``
    instead; ``camera_schema`` writes an empty message of that schema on the camera topics;
    ``extra`` adds one message per topic at the first log time; ``topics`` names the image
    topic of some views otherwise (their calibration goes to ``camera_info`` beside it).
    """
    with path.open("wb") as stream, McapWriter(stream) as writer:
        for topic, other in (extra or {}).items():
            writer.write_message(topic, other, log_time=images[0].log_time_ns)
        for image in images:
            topic = (topics or {}).get(image.view, image_topic(image.view, raw_encoding is None))
            info_topic = f"{topic.rsplit('/', 1)[0]}/camera_info"
            if lower_case:
                topic, info_topic = topic.lower(), info_topic.lower()
            common = {"timestamp": _timestamp(image.stamp_ns), "frame_id": image.view}
            message: Message
            if camera_schema is not None:
                message = camera_schema(timestamp=common["timestamp"])
            elif raw_encoding is not None:
                message = _raw_image(image, raw_encoding, common)
            else:
                message = CompressedImage(**common, data=image.jpeg, format="jpeg")
            writer.write_message(topic, message, log_time=image.log_time_ns)
            calib = intrinsics(image.view)
            info = CameraCalibration(
                **common,
                width=WIDTH,
                height=HEIGHT,
                distortion_model="plumb_bob",
                D=calib["D"],
                K=calib["K"],
                R=calib["R"],
                P=calib["P"],
            )
            writer.write_message(info_topic, info, log_time=image.log_time_ns)
    return path


def _raw_image(image: Image, encoding: str, common: dict[str, Any]) -> RawImage:
    pixels = {
        "rgb8": image.rgb,
        "bgr8": image.rgb[..., ::-1],
        "mono8": image.rgb[..., 0],
    }.get(encoding, image.rgb)
    pixels = np.ascontiguousarray(pixels)
    step = pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1)
    return RawImage(
        **common,
        width=WIDTH,
        height=HEIGHT,
        encoding=encoding,
        step=step,
        data=pixels.tobytes(),
    )


def _ros_messages(store: Any, image: Image, ros1: bool) -> tuple[Any, Any]:
    """The CompressedImage and CameraInfo of ``image`` in ``store``'s types."""
    types = store.types
    sec, nanosec = divmod(image.stamp_ns, 1_000_000_000)
    stamp = types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    seq = {"seq": image.frame} if ros1 else {}
    header = types["std_msgs/msg/Header"](**seq, stamp=stamp, frame_id=image.view)
    compressed = types["sensor_msgs/msg/CompressedImage"](
        header=header, format="jpeg", data=np.frombuffer(image.jpeg, np.uint8)
    )
    calib = {k if ros1 else k.lower(): np.array(v) for k, v in intrinsics(image.view).items()}
    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    info = types["sensor_msgs/msg/CameraInfo"](
        header=header,
        height=HEIGHT,
        width=WIDTH,
        distortion_model="plumb_bob",
        **calib,
        binning_x=0,
        binning_y=0,
        roi=roi,
    )
    return compressed, info


def write_ros1_bag(path: Path, images: list[Image], *, cameras: bool = True) -> Path:
    """A ROS 1 bag as nuscenes2bag writes one: ``sensor_msgs/CompressedImage`` and
    ``sensor_msgs/CameraInfo`` (ROS 1 Noetic's types). Without ``cameras``: a
    ``std_msgs/String`` topic only."""
    store = get_typestore(Stores.ROS1_NOETIC)
    with Ros1Writer(path) as writer:
        if cameras:
            _write_cameras(writer, store, images, ros1=True)
        else:
            conn = writer.add_connection(
                "/diagnostics_text", "std_msgs/msg/String", typestore=store
            )
            message = store.types["std_msgs/msg/String"](data="no cameras here")
            writer.write(conn, images[0].log_time_ns, store.serialize_ros1(message, conn.msgtype))
    return path


def write_rosbag2(
    path: Path, images: list[Image], storage: Literal["mcap", "sqlite3"] = "mcap"
) -> Path:
    """A rosbag2 bag of the same images and calibrations (Jazzy's types, CDR)."""
    from prune2drive_ros.sensors.bag import typestore

    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    with Ros2Writer(path, version=Ros2Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
        _write_cameras(writer, typestore(), images, ros1=False)
    return path


def _write_cameras(writer: Any, store: Any, images: list[Image], *, ros1: bool) -> None:
    """Each image and its calibration into an open rosbags Writer (ROS 1 or rosbag2)."""
    serialize = store.serialize_ros1 if ros1 else store.serialize_cdr
    conns = {
        (view, kind): writer.add_connection(topic, f"sensor_msgs/msg/{kind}", typestore=store)
        for view in VIEWS
        for topic, kind in (
            (image_topic(view), "CompressedImage"),
            (camera_info_topic(view), "CameraInfo"),
        )
    }
    for image in images:
        for kind, message in zip(
            ("CompressedImage", "CameraInfo"), _ros_messages(store, image, ros1), strict=True
        ):
            conn = conns[image.view, kind]
            writer.write(conn, image.log_time_ns, serialize(message, conn.msgtype))
