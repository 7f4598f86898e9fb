"""Write any camera recording :mod:`.bag` reads as a rosbag2 that ``ros2 bag play`` publishes.

The six camera topics become ``sensor_msgs/msg/CompressedImage`` (or ``Image``) on the default
topics (``/CAM_FRONT/image_rect_compressed``, ...), whatever they were called in the input, so
the node and every command read the result without remapping; each view's calibration, where
the input has one, becomes ``sensor_msgs/msg/CameraInfo`` on ``/CAM_FRONT/camera_info``, ....
Messages keep their header (stamp: the image's own time; frame_id) and their log time, and the
image bytes are copied, never re-encoded. Other topics (lidar, radar, ...) are left out.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rosbags.rosbag2 import Writer

from ..errors import BagError
from ..progress import NO_PROGRESS, Progress
from ..views import camera_info_topic, image_topic
from .bag import CameraBag
from .sources import CAMERA_INFO_TYPE, IMAGE_TYPES, STORAGES, typestore


@dataclass(frozen=True)
class Converted:
    """What :func:`convert_to_rosbag2` wrote."""

    path: Path
    source_format: str
    messages: int
    #: output topic -> input topic
    topics: dict[str, str]


def convert_to_rosbag2(
    bag: CameraBag,
    out: Path,
    storage: Literal["mcap", "sqlite3"] = "mcap",
    *,
    progress: Progress = NO_PROGRESS,
) -> Converted:
    """Write the cameras and calibrations of the open ``bag`` to the new rosbag2 folder ``out``.

    ``out`` must not exist; a failed or interrupted conversion removes it again.

    Raises:
        BagError: ``out`` exists, or the input breaks off (after what was read).
    """
    if out.exists():
        raise BagError(f"{out} exists already; choose a new path or remove it first")
    store = typestore()
    present = bag.source.topics
    sources = {
        topic: (image_topic(view, present[topic].msgtype == IMAGE_TYPES[0]), present[topic].msgtype)
        for view, topic in bag.topics.items()
    }
    sources |= {
        topic: (camera_info_topic(view), CAMERA_INFO_TYPE)
        for view, topic in bag.calibration_topics().items()
    }
    total = sum(present[topic].count for topic in sources)
    written = 0
    try:
        with Writer(out, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage]) as writer:
            connections = {
                topic: writer.add_connection(target, str(msgtype), typestore=store)
                for topic, (target, msgtype) in sources.items()
            }
            with progress(total=total, desc=f"writing {out.name}", unit="msg") as bar:
                for topic, log_time, msg in bag.read(sources):
                    connection = connections[topic]
                    data = store.serialize_cdr(msg, connection.msgtype)
                    writer.write(connection, log_time, data)
                    written += 1
                    bar.update()
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return Converted(
        out, bag.source.FORMAT, written, {target: topic for topic, (target, _) in sources.items()}
    )
