"""Convert a nuScenes camera recording (Foxglove MCAP, ROS 1 bag, rosbag2) into a rosbag2.

IN is a Foxglove protobuf MCAP file (foxglove's nuscenes2mcap), a ROS 1 bag (nuscenes2bag) or a
rosbag2 bag, told apart by content. OUT is a new rosbag2 folder (CDR) that ``ros2 bag play``
publishes and every prune2drive command reads without flags: the six cameras as
``sensor_msgs/msg/CompressedImage`` (``Image`` with ``--raw``) on ``/CAM_*/image_rect_compressed``
(``/CAM_*/image_rect``), their calibrations as ``sensor_msgs/msg/CameraInfo`` on
``/CAM_*/camera_info`` where IN has them. Header stamps (each image's own time), frame ids and
log times are kept and the JPEG bytes are copied, never re-encoded; other topics are left out.
Camera topics are found as replay finds them: the nuScenes names, in upper or lower case, or
those ``--topic`` gives.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BagError
from ..sensors.bag import open_camera_bag
from ..sensors.conversion import convert_to_rosbag2
from ..sensors.sources import STORAGES
from .argtypes import topic_remap
from .options import remove_bag
from .progress import add_progress_argument, progress_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive bag-convert``."""
    parser.add_argument(
        "input",
        type=Path,
        metavar="IN",
        help="Foxglove .mcap, ROS 1 .bag, or rosbag2 folder or file",
    )
    parser.add_argument(
        "out", type=Path, metavar="OUT", help="rosbag2 folder to create (must not exist)"
    )
    parser.add_argument(
        "--storage", choices=tuple(STORAGES), default="mcap", help="storage plugin (mcap)"
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="the cameras are sensor_msgs/Image (foxglove.RawImage) on /<VIEW>/image_rect",
    )
    parser.add_argument(
        "--topic",
        type=topic_remap,
        action="append",
        metavar="VIEW:=TOPIC",
        help="the input topic of one camera view, e.g. CAM_FRONT:=/cam_front/image/compressed "
        "(repeat for each view named otherwise)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace OUT if it is an existing bag folder"
    )
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Convert IN into OUT and say what was written."""
    out: Path = args.out
    if out.exists() and args.input.resolve().is_relative_to(out.resolve()):
        raise BagError(f"IN {args.input} lies in OUT {out}; write the rosbag2 to a new folder")
    with open_camera_bag(args.input, dict(args.topic or ()), not args.raw) as bag:
        if out.exists():
            if not args.force:
                raise BagError(f"{out} exists already; pass --force to replace it")
            remove_bag(out)
        converted = convert_to_rosbag2(bag, out, args.storage, progress=progress_from(args))
    print(
        f"wrote rosbag2 {converted.path} ({args.storage}, {converted.messages} messages) from "
        f"{converted.source_format} {args.input}:"
    )
    for target, topic in sorted(converted.topics.items()):
        print(f"  {target} <- {topic}")
    return 0
