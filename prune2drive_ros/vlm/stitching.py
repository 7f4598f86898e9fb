"""Six views stitched into one image, InternVL-tiled, and each token traced back to its view.

DriveLMM-o1 sees the six cameras as ONE image: the views side by side in a 2 x 3 grid
(:data:`STITCH_LAYOUT`), which InternVL cuts into 448 px tiles (its ``dynamic_preprocess``:
the tile grid whose aspect ratio is closest to the image's, at most ``max_tiles`` tiles, plus a
448 px thumbnail of the whole image when there is more than one tile). Each tile gives a
16 x 16 grid of tokens (28 px each after the pixel shuffle). DriveLMM-o1's own evaluation and
demo run with ``max_tiles = 1`` (one 448 px image, 256 tokens for all six cameras, the
``--dynamic`` flag of its ``inference.py`` off); more tiles are InternVL's dynamic mode.

Prune2Drive prunes per view, so a view's tokens are those whose 28 px patch has its centre in
that view's cell of the stitched image, tile tokens and thumbnail tokens alike. Views then hold
different numbers of tokens (with one tile: 40, 48 or 40 per column of the grid, the middle
column being wider in patch centres); :class:`StitchedLayout` gives the counts, the stitched
index of each view's tokens (in stitched order, which is the prompt's order), and each token's
rectangle on its camera image, which the kept-token picture draws.

The stitched image is composed from the views decoded at :attr:`StitchedLayout.cell` (16:9,
the nuScenes cameras' aspect, large enough that the tiles are not upsampled), then resized to
the tile grid with PIL's bicubic filter, as the original resizes its stitched PNG. That is two
resizes where the original makes one from the full-size stitched image (whose size is not
known here), so the stitched layout is not tested against a reference processor. The grid is
the one the nuScenes devkit renders (front-left, front, front-right above; back-left, back,
back-right below); the arrangement of DriveLMM-o1's own stitched PNGs is not in its code and
their dataset is not reachable here, so this is an assumption to check against one of their
images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..sensors.imaging import resize
from ..views import VIEWS

#: The stitched image's grid of views (rows of columns).
STITCH_LAYOUT: tuple[tuple[str, ...], ...] = (
    ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"),
    ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"),
)
#: (width, height) of a nuScenes camera image: the stitched image's cells have its 16:9 aspect.
CAMERA_SIZE = (1600, 900)
CELL_ASPECT = (16, 9)


def closest_tile_grid(
    width: int, height: int, *, tile: int, max_tiles: int, min_tiles: int = 1
) -> tuple[int, int]:
    """InternVL's ``find_closest_aspect_ratio``: the (cols, rows) grid of tiles for an image.

    The candidates are every grid with ``min_tiles <= cols * rows <= max_tiles``, in order of
    tile count; the first with the closest aspect ratio wins, and a later one with the same
    ratio replaces it when the image has more than half the pixels of that grid.
    """
    grids = sorted(
        {
            (cols, rows)
            for n in range(min_tiles, max_tiles + 1)
            for cols in range(1, n + 1)
            for rows in range(1, n + 1)
            if min_tiles <= cols * rows <= max_tiles
        },
        key=lambda grid: grid[0] * grid[1],
    )
    aspect = width / height
    best, best_diff = (1, 1), math.inf
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


@dataclass(frozen=True)
class StitchedLayout:
    """Where each of the stitched image's tokens lies, for one tiling.

    Attributes:
        tile: side of one tile in pixels (448).
        grid: tokens per tile side (16).
        tiles: (cols, rows) of the tile grid.
        thumbnail: whether a thumbnail of the whole image follows the tiles.
    """

    tile: int
    grid: int
    tiles: tuple[int, int]
    thumbnail: bool

    @classmethod
    def plan(cls, *, tile: int, grid: int, max_tiles: int, use_thumbnail: bool) -> StitchedLayout:
        """The layout InternVL's dynamic tiling gives the stitched six-view image."""
        rows, cols = len(STITCH_LAYOUT), len(STITCH_LAYOUT[0])
        width, height = cols * CAMERA_SIZE[0], rows * CAMERA_SIZE[1]  # six 1600 x 900 cameras
        tiles = closest_tile_grid(width, height, tile=tile, max_tiles=max_tiles)
        return cls(tile=tile, grid=grid, tiles=tiles, thumbnail=use_thumbnail and tiles != (1, 1))

    @property
    def images(self) -> int:
        """Tiles the vision tower encodes (thumbnail included)."""
        return self.tiles[0] * self.tiles[1] + int(self.thumbnail)

    @property
    def tokens(self) -> int:
        """Tokens of the whole stitched image."""
        return self.images * self.grid * self.grid

    @cached_property
    def cell(self) -> tuple[int, int]:
        """(width, height) each view is decoded to: 16:9, and the stitched image no smaller
        than the tile grid in either direction."""
        rows, cols = len(STITCH_LAYOUT), len(STITCH_LAYOUT[0])
        need_w = math.ceil(self.tiles[0] * self.tile / cols)
        need_h = math.ceil(self.tiles[1] * self.tile / rows)
        unit = max(math.ceil(need_w / CELL_ASPECT[0]), math.ceil(need_h / CELL_ASPECT[1]))
        return unit * CELL_ASPECT[0], unit * CELL_ASPECT[1]

    @cached_property
    def _boxes(self) -> np.ndarray:
        """``[tokens, 4]`` (x0, y0, x1, y1) of every token on the stitched image, in [0, 1]."""
        cols, rows = self.tiles
        g = self.grid
        r, c = np.divmod(np.arange(g * g), g)
        boxes = []
        for t in range(cols * rows):
            ty, tx = divmod(t, cols)
            x0, y0 = (tx * g + c) / (cols * g), (ty * g + r) / (rows * g)
            boxes.append(np.stack([x0, y0, x0 + 1 / (cols * g), y0 + 1 / (rows * g)], axis=1))
        if self.thumbnail:
            boxes.append(np.stack([c / g, r / g, (c + 1) / g, (r + 1) / g], axis=1))
        return np.concatenate(boxes)

    @cached_property
    def token_views(self) -> np.ndarray:
        """``[tokens]`` index into :data:`VIEWS` of the view each token's centre lies in."""
        rows, cols = len(STITCH_LAYOUT), len(STITCH_LAYOUT[0])
        centre_x = (self._boxes[:, 0] + self._boxes[:, 2]) / 2
        centre_y = (self._boxes[:, 1] + self._boxes[:, 3]) / 2
        cell_col = np.minimum((centre_x * cols).astype(int), cols - 1)
        cell_row = np.minimum((centre_y * rows).astype(int), rows - 1)
        order = np.array([[VIEWS.index(view) for view in row] for row in STITCH_LAYOUT])
        views: np.ndarray = order[cell_row, cell_col]
        return views

    @cached_property
    def view_indices(self) -> tuple[np.ndarray, ...]:
        """Per view (VIEWS order), the stitched indices of its tokens, ascending."""
        return tuple(np.flatnonzero(self.token_views == v) for v in range(len(VIEWS)))

    @property
    def counts(self) -> tuple[int, ...]:
        """Tokens per view."""
        return tuple(len(indices) for indices in self.view_indices)

    def view_boxes(self, view: int) -> np.ndarray:
        """``[count, 4]`` rectangles of view ``view``'s tokens on its own camera image, in
        [0, 1] (clipped to the view where a patch straddles two)."""
        rows, cols = len(STITCH_LAYOUT), len(STITCH_LAYOUT[0])
        (cell_row,), (cell_col,) = np.nonzero(
            np.array([[VIEWS.index(v) == view for v in row] for row in STITCH_LAYOUT])
        )
        boxes = self._boxes[self.view_indices[view]].copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]] * cols - cell_col
        boxes[:, [1, 3]] = boxes[:, [1, 3]] * rows - cell_row
        clipped: np.ndarray = boxes.clip(0.0, 1.0)
        return clipped

    def stitch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The stitched RGB image from six views at :attr:`cell`, in :data:`VIEWS` order."""
        by_view = dict(zip(VIEWS, images, strict=True))
        return np.vstack([np.hstack([by_view[view] for view in row]) for row in STITCH_LAYOUT])

    def tile_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``[images, tile, tile, 3]`` uint8: the tiles in raster order, then the thumbnail."""
        canvas = self.stitch(images)
        cols, rows = self.tiles
        resized = resize(canvas, (cols * self.tile, rows * self.tile))
        size = self.tile
        tiles = [
            resized[ty * size : (ty + 1) * size, tx * size : (tx + 1) * size]
            for ty in range(rows)
            for tx in range(cols)
        ]
        if self.thumbnail:
            tiles.append(resize(canvas, (size, size)))
        return np.stack(tiles)
