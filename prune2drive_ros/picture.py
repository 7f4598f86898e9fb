"""The kept-token picture: the six views in a 2 x 3 grid, kept patches lit, dropped ones dimmed.

The views are laid out as seen from the car (front-left, front, front-right above; back-left,
back, back-right below). Each token covers a rectangle of its camera image
(:meth:`~prune2drive_ros.vlm.DrivingVLM.token_boxes`): patch (row, col) of a view's
``rows x cols`` grid (the decoder resizes the full frame to the encoder input, no crop), or for
views stitched into one image the part of the view its tile or thumbnail patch covers. The
image is dimmed except under kept tokens, which get a thin outline; each view is labelled with
its kept count. ``prune2drive viz`` writes it to a file, the node publishes it as a JPEG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from .pruning.selection import Selection
from .sensors.imaging import decode_image, encode_jpeg
from .sensors.sync import FrameSet
from .views import VIEWS

#: Grid layout as seen from the car.
LAYOUT: tuple[tuple[str, ...], ...] = (
    ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"),
    ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"),
)
#: Size of one view in the picture (16:9 like the nuScenes cameras).
TILE_SIZE: tuple[int, int] = (480, 270)
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


def kept_tokens_grid(
    frames: FrameSet,
    selection: Selection,
    boxes: Sequence[np.ndarray],
    topics: Mapping[str, str],
) -> np.ndarray:
    """The picture (RGB) of ``frames`` with ``selection`` kept: each view decoded at
    :data:`TILE_SIZE` (``topics`` name a view in a decode error), the fast way: it is for
    people, not the model."""
    tiles = [
        decode_image(frames.messages[view], topic=topics[view], size=TILE_SIZE, resize_mode="fast")
        for view in VIEWS
    ]
    return render_grid(tiles, selection, boxes)


def kept_tokens_jpeg(
    frames: FrameSet,
    selection: Selection,
    boxes: Sequence[np.ndarray],
    topics: Mapping[str, str],
) -> bytes:
    """:func:`kept_tokens_grid` as JPEG bytes (for a ``sensor_msgs/CompressedImage``)."""
    return encode_jpeg(kept_tokens_grid(frames, selection, boxes, topics))
