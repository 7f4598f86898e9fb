"""Show what the model sees: the six views in a 2 x 3 grid with the kept patches highlighted.

The picture itself is :mod:`prune2drive_ros.picture`'s (the node publishes the same one);
this command picks the frame set from a bag and writes it to a file, atomically: a reader never
sees half a picture. The output (format, folder, not an input, not an existing file unless
``--force``) is checked before the model loads.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from ..errors import ConfigError, OutputError
from ..files import write_atomically
from ..sensors.bag import open_config_bag
from ..views import VIEWS
from .options import BAG_HELP, add_engine_arguments, check_output, engine_config

if TYPE_CHECKING:
    from ..engine import Engine
    from ..pruning.selection import Selection
    from ..sensors.sync import FrameSet

logger = logging.getLogger(__name__)

#: How far from ``--stamp`` (or the middle of the recording) the frame set shown may lie; only
#: a window around it is read, not the whole recording.
WINDOW_NS = 1_000_000_000
#: Picture formats OpenCV writes without loss of the thin outlines.
PICTURE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")


def kept_tokens_picture(engine: Engine, frames: FrameSet, out: str | Path) -> Selection:
    """Prune ``frames`` as ``engine`` would and write the picture to ``out`` (PNG), atomically.

    Raises:
        ConfigError: the engine prunes nothing. OutputError: the picture cannot be written.
    """
    from ..picture import kept_tokens_grid

    if engine.unpruned:
        raise ConfigError("the engine keeps every token; give retention rates to visualise")
    selection = engine.select(frames)
    picture = kept_tokens_grid(frames, selection, engine.vlm.token_boxes(), engine.topics)
    out = Path(out)

    def write(tmp: Path) -> None:
        # OpenCV says False, not why: the format is checked first, so it is the disk
        if not cv2.imwrite(str(tmp), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
            raise OSError(f"OpenCV could not write {tmp.name}")

    try:
        write_atomically(out, write)
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}; write elsewhere") from exc
    logger.info("wrote %s (%d of %d tokens kept)", out, selection.total, selection.mask.numel())
    return selection


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``prune2drive viz``."""
    parser.add_argument("bag", help=BAG_HELP)
    parser.add_argument(
        "--stamp",
        type=int,
        help="header stamp in ns; the frame set nearest it within 1 s is shown (default: the "
        "middle of the recording)",
    )
    parser.add_argument("--out", default="kept_tokens.png", help="PNG to write")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """``prune2drive viz``: write the kept-token picture of the frame set nearest ``--stamp``
    (default: a frame set within a second of the middle of the recording)."""
    config = engine_config(args)
    out = check_output(args, args.out)
    if out.suffix.lower() not in PICTURE_SUFFIXES:
        raise ConfigError(f"--out {out} must end in {', '.join(PICTURE_SUFFIXES)}")
    with open_config_bag(args.bag, config) as bag:
        stamp = args.stamp if args.stamp is not None else (bag.start_ns + bag.end_ns) // 2
        frames = bag.nearest_frame_set(stamp, max_gap_ns=WINDOW_NS)
        from ..engine import Engine

        engine = Engine.from_config(config)
        selection = kept_tokens_picture(engine, frames, out)
    print(
        f"wrote {args.out}: frames at {frames.stamp_ns} ns, kept "
        + ", ".join(f"{v}={k}" for v, k in zip(VIEWS, selection.budgets, strict=True))
    )
    return 0
