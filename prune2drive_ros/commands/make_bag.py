"""Write a synthetic nuScenes-like six-camera rosbag2 and its questions file.

The bag holds six ``sensor_msgs/msg/CompressedImage`` JPEG topics at 12 Hz with nuScenes' camera
firing sequence (stamps of one frame spread over ~42 ms), a ``CameraInfo`` per image, and drawn
road scenes; deterministic from ``--seed``. The questions file (JSON Lines, reference answers
taken from the drawn scenes) goes beside the bag folder as ``OUT.questions.jsonl`` unless
``--questions`` says otherwise: a rosbag2 folder should hold only the bag's own files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BagError
from ..sensors.scene import DENSITY_MODES, QUESTION_MIXES, QUESTIONS_PER_FRAME
from ..sensors.sources import STORAGES
from ..sensors.synthetic import (
    DEFAULT_JITTER_MS,
    default_questions_path,
    max_jitter_ms,
    write_synthetic_bag,
)
from .argtypes import at_least
from .options import remove_bag
from .progress import add_progress_argument, progress_from

#: nuScenes' camera rate.
_RATE_HZ = 12.0


def _jitter_ms(text: str) -> float:
    value = float(text)
    if not 0 <= value < max_jitter_ms(_RATE_HZ):
        raise argparse.ArgumentTypeError(
            f"must be in [0, {max_jitter_ms(_RATE_HZ):.1f}) ms at {_RATE_HZ:g} Hz, got {value}"
        )
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive make-bag``."""
    parser.add_argument("out", type=Path, help="bag folder to create (must not exist)")
    parser.add_argument("--frames", type=at_least(1), default=24, help="frames at 12 Hz (24 = 2 s)")
    parser.add_argument(
        "--storage", choices=tuple(STORAGES), default="mcap", help="storage plugin (mcap)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of scenes and jitter (0)")
    parser.add_argument("--width", type=at_least(16), default=1600, help="image width (1600)")
    parser.add_argument("--height", type=at_least(16), default=900, help="image height (900)")
    parser.add_argument(
        "--jitter-ms",
        type=_jitter_ms,
        default=DEFAULT_JITTER_MS,
        help=f"spread of one frame's six stamps in ms ({DEFAULT_JITTER_MS:g}, like nuScenes)",
    )
    parser.add_argument(
        "--scene-frames",
        type=at_least(1),
        default=48,
        help="frames per drawn scene; 1 draws a new scene every frame, to evaluate a model on "
        "many scenes (48)",
    )
    parser.add_argument(
        "--questions-per-frame", type=at_least(1), default=3, help="questions per frame (3)"
    )
    parser.add_argument(
        "--mix",
        choices=QUESTION_MIXES,
        default="default",
        help="question mix: default (every kind equally) or front (mostly CAM_FRONT)",
    )
    parser.add_argument(
        "--density",
        choices=DENSITY_MODES,
        default="scene",
        help="traffic density drawn per scene (scene: what the scene models train on) or per "
        "zone (zone: ahead, behind and beside each their own, so views differ: empty, sparse "
        "and busy in one frame set)",
    )
    parser.add_argument(
        "--questions", type=Path, default=None, help="questions file (default OUT.questions.jsonl)"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace OUT if it is an existing bag folder"
    )
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Write the bag and questions and say where they are."""
    out: Path = args.out
    questions: Path = args.questions or default_questions_path(out)
    if args.questions_per_frame > QUESTIONS_PER_FRAME:
        raise BagError(
            f"--questions-per-frame {args.questions_per_frame} is more than the "
            f"{QUESTIONS_PER_FRAME} different questions a frame has; ask at most that many"
        )
    if questions.is_dir():
        raise BagError(f"--questions {questions} is a folder; give a file name")
    if out.exists():
        if not args.force:
            raise BagError(f"{out} exists already; pass --force to replace it")
        remove_bag(out)
    info = write_synthetic_bag(
        out,
        frames=args.frames,
        storage=args.storage,
        seed=args.seed,
        width=args.width,
        height=args.height,
        rate_hz=_RATE_HZ,
        jitter_ms=args.jitter_ms,
        questions_path=questions,
        scene_frames=args.scene_frames,
        questions_per_frame=args.questions_per_frame,
        mix=args.mix,
        density=args.density,
        progress=progress_from(args),
    )
    seconds = (info.end_ns - info.start_ns) / 1e9
    print(
        f"wrote bag {info.path} ({info.storage}, {info.frames} frames of {args.width}x"
        f"{args.height}, {info.messages} messages, {seconds:.2f} s)"
    )
    print(f"wrote {info.questions} questions to {info.questions_path}")
    return 0
