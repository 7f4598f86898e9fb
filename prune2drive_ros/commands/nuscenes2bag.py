"""Convert nuScenes (devkit layout) to rosbag2: one bag per scene, with a key-frame index each.

DATAROOT is the nuScenes folder as the devkit wants it (``samples/``, ``sweeps/``, ``maps/``
and the tables under ``<version>/``); it is read with the official nuscenes-devkit, an optional
extra: ``pip install -e ".[nuscenes]"``. Each scene becomes the bag ``OUT/<scene>`` (the six
cameras' JPEGs as recorded, CameraInfo, /tf and /tf_static) and the key-frame index
``OUT/<scene>.keyframes.json`` (sample token -> the six key-frame stamps and image files), so
DriveLM questions can be attached to a bag's frames. Every camera frame (12 Hz) is written
unless ``--key-frames-only`` (2 Hz). Nothing is written before everything has been checked; see
``prune2drive_ros.sensors.nuscenes`` for the format.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..sensors.nuscenes import convert_nuscenes
from .progress import add_progress_argument, progress_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive nuscenes2bag``."""
    parser.add_argument("dataroot", type=Path, help="the nuScenes folder (holds samples/, maps/)")
    parser.add_argument("out", type=Path, help="folder to create for the bags and indexes")
    parser.add_argument(
        "--version", default="v1.0-mini", help="table folder under DATAROOT (v1.0-mini)"
    )
    parser.add_argument(
        "--scene",
        dest="scenes",
        metavar="NAME",
        nargs="+",
        action="extend",
        default=[],
        help="scenes to convert, e.g. scene-0061 (default: all of the version)",
    )
    parser.add_argument(
        "--storage", choices=("mcap", "sqlite3"), default="mcap", help="storage plugin (mcap)"
    )
    parser.add_argument(
        "--key-frames-only",
        action="store_true",
        help="write only the 2 Hz key frames (samples/), not the 12 Hz sweeps",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into an existing OUT, replacing the bags and indexes of the scenes converted",
    )
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Convert, then say what was written and how fast."""
    result = convert_nuscenes(
        args.dataroot,
        args.out,
        version=args.version,
        scenes=args.scenes,
        storage=args.storage,
        key_frames_only=args.key_frames_only,
        force=args.force,
        progress=progress_from(args),
    )
    for bag in result.bags:
        print(
            f"wrote bag {bag.path} ({bag.images} frames, {bag.samples} key frames, "
            f"{(bag.end_ns - bag.start_ns) / 1e9:.1f} s) and index {bag.index_path}"
        )
    print(f"converted {result.speed()}")
    return 0
