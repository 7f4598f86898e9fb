"""Show what the model sees: the six views in a 2 x 3 grid with the kept patches highlighted.

The views are laid out as seen from the car (front-left, front, front-right above; back-left,
back, back-right below). Each token covers a rectangle of its camera image
(:meth:`~prune2drive_ros.vlm.DrivingVLM.token_boxes`): patch (row, col) of a view's
``rows x cols`` grid (the decoder resizes the full frame to the encoder input, no crop), or for
views stitched into one image the part of the view its tile or thumbnail patch covers. The
image is dimmed except under kept tokens, which get a thin outline; each view is labelled with
its kept count.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..engine import Engine
from ..errors import ConfigError
from ..pruning.selection import Selection
from ..sensors.bag import open_config_bag
from ..sensors.imaging import decode_image
from ..sensors.sync import FrameSet
from ..views import VIEWS
from .options import add_engine_arguments, check_output_file, engine_config

logger = logging.getLogger(__name__)

#: Grid layout as seen from the car.
LAYOUT: tuple[tuple[str, ...], ...] = (
    ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"),
    ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"),
)
#: Size of one view in the picture (16:9 like the nuScenes cameras).
TILE_SIZE: tuple[int, int] = (480, 270)
#: How far from ``--stamp`` (or the middle of the recording) the frame set shown may lie; only
#: a window around it is read, not the whole recording.
WINDOW_NS = 1_000_000_000
#: Picture formats OpenCV writes without loss of the thin outlines.
PICTURE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
#: Brightness of dropped patches.
DIM = 0.3
KEPT_OUTLINE = (255, 210, 0)


def overlay_kept(image: np.ndarray, keep: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``image`` (RGB uint8) dimmed except where a kept token lies, each kept one outlined.

    ``keep`` is a bool per token, ``boxes`` the tokens' ``[count, 4]`` (x0, y0, x1, y1)
    rectangles on the image in [0, 1] (:meth:`~prune2drive_ros.vlm.DrivingVLM.token_boxes`).
    """
    height, width = image.shape[:2]
    scale = np.array([width, height, width, height])
    pixels = (boxes[keep[: len(boxes)]] * scale).round().astype(int)
    lit = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in pixels:
        lit[y0:y1, x0:x1] = True
    out = np.where(lit[..., None], image, (image * DIM).astype(np.uint8))
    for x0, y0, x1, y1 in pixels:
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), KEPT_OUTLINE, 1)
    return np.ascontiguousarray(out)


def render_grid(
    tiles: Sequence[np.ndarray], selection: Selection, boxes: Sequence[np.ndarray]
) -> np.ndarray:
    """The 2 x 3 picture from six RGB tiles (VIEWS order, equal sizes), their selection and
    their tokens' rectangles."""
    mask = selection.mask.cpu().numpy()
    labelled = {}
    for v, (view, tile) in enumerate(zip(VIEWS, tiles, strict=True)):
        image = overlay_kept(tile, mask[v], boxes[v])
        label = f"{view}  {selection.budgets[v]}/{len(boxes[v])} kept"
        cv2.rectangle(image, (0, 0), (10 + 9 * len(label), 24), (0, 0, 0), -1)
        cv2.putText(image, label, (5, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        labelled[view] = image
    return np.vstack([np.hstack([labelled[view] for view in row]) for row in LAYOUT])


def kept_tokens_picture(engine: Engine, frames: FrameSet, out: str | Path) -> Selection:
    """Prune ``frames`` as ``engine`` would and write the picture to ``out`` (PNG)."""
    if engine.unpruned:
        raise ConfigError("the engine keeps every token; give retention rates to visualise")
    selection = engine.select(frames)
    tiles = [
        decode_image(frames.messages[view], topic=engine.topics[view], size=TILE_SIZE)
        for view in VIEWS
    ]
    picture = render_grid(tiles, selection, engine.vlm.token_boxes())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise ConfigError(f"cannot write {out}; use a .png path in a writable folder")
    logger.info("wrote %s (%d of %d tokens kept)", out, selection.total, selection.mask.numel())
    return selection


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``prune2drive viz``."""
    parser.add_argument("bag", help="rosbag2 folder or file (sqlite3 or mcap)")
    parser.add_argument(
        "--stamp",
        type=int,
        help="header stamp in ns; the frame set nearest it within 1 s is shown (default: the "
        "middle of the recording)",
    )
    parser.add_argument("--out", default="kept_tokens.png", help="PNG to write")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """``prune2drive viz``: write the kept-token picture of the frame set nearest ``--stamp``
    (default: a frame set within a second of the middle of the recording)."""
    config = engine_config(args)
    out = check_output_file(args.out)
    if out.suffix.lower() not in PICTURE_SUFFIXES:
        raise ConfigError(f"--out {out} must end in {', '.join(PICTURE_SUFFIXES)}")
    with open_config_bag(args.bag, config) as bag:
        stamp = args.stamp if args.stamp is not None else (bag.start_ns + bag.end_ns) // 2
        frames = bag.nearest_frame_set(stamp, max_gap_ns=WINDOW_NS)
        engine = Engine.from_config(config)
        selection = kept_tokens_picture(engine, frames, out)
    print(
        f"wrote {args.out}: frames at {frames.stamp_ns} ns, kept "
        + ", ".join(f"{v}={k}" for v, k in zip(VIEWS, selection.budgets, strict=True))
    )
    return 0
