"""Turn DriveLM-nuScenes questions into a bag's questions file (JSON Lines with stamps).

Each question of a DriveLM key frame (a nuScenes sample) is written at the stamp of the frame
set of that sample's six camera images in a bag written by ``prune2drive nuscenes2bag``, with
its reference answer, DriveLM tags, category (as ``kind``) and the challenge's id, so that
``replay``, the node (``ros2 bag play`` and its service) and ``tune``/``eval --bag BAG
--questions Q`` ask DriveLM on the replayed bag; ``eval`` scores it as it scores ``--drivelm``.
The stamps come from the bag's key-frame index (``--bag BAG``: the key frames of its scene) or
from the nuScenes tables (``--nuscenes DATAROOT``: every key frame, for any bag converted from
that dataset; needs the nuscenes-devkit). DriveLM key frames not there are skipped and counted.
See ``prune2drive_ros.tuning.drivelm_bag``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..tuning.drivelm_bag import write_drivelm_questions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive drivelm-questions``."""
    parser.add_argument(
        "drivelm", type=Path, help="DriveLM-nuScenes JSON file (e.g. v1_1_train_nus.json)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--bag",
        type=Path,
        help="a bag written by prune2drive nuscenes2bag (its BAG.keyframes.json gives the stamps)",
    )
    source.add_argument(
        "--nuscenes",
        type=Path,
        metavar="DATAROOT",
        help="the nuScenes folder the bags were converted from (the tables give the stamps)",
    )
    parser.add_argument(
        "--version",
        default="v1.0-mini",
        help="table folder under DATAROOT, with --nuscenes (default %(default)s)",
    )
    parser.add_argument("--out", type=Path, required=True, help="questions file to write (.jsonl)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    """Write the questions file (key frames skipped are logged as a warning with their count)."""
    result = write_drivelm_questions(
        args.drivelm,
        args.out,
        bag=args.bag,
        nuscenes=args.nuscenes,
        version=args.version,
        force=args.force,
    )
    skipped = f", skipped {len(result.skipped)} not there" if result.skipped else ""
    print(
        f"wrote {len(result.items)} questions on {result.frames} DriveLM key frames of "
        f"{result.source}{skipped} to {args.out}"
    )
    return 0
