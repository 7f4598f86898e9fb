"""InternVL 2.5 / 3 (the family of DriveLMM-o1) with Prune2Drive pruning.

Per view, one 448 px tile goes through InternViT (14 px patches: 32 x 32 plus a CLS token, which
the stock ``"default"`` feature strategy drops), a 0.5 pixel shuffle folds each 2 x 2 patch block
into one token (16 x 16 = 256 tokens, raster order) and the MLP projector maps them to the
language model. No dynamic tiling: InternVL's processor would cut a 16:9 camera image into up to
12 tiles plus a thumbnail, so views would get different token counts and no common grid; one tile
per view (what the processor does with ``max_patches=1``) gives every view the same 16 x 16 grid
that T-FPS, the per-view budgets and the grid baseline are defined on. The checkpoint's
``crop_to_patches`` setting is therefore not used.

DriveLMM-o1 was trained on the six views stitched into ONE image instead; its prompt
(``drivelmm_o1``) switches to that layout: the stitched image in InternVL's tiles (one 448 px
tile by default, as DriveLMM-o1's evaluation runs; ``max_tiles`` for its dynamic tiling), each
view's tokens being those whose patch lies in its part of the image (:mod:`.stitching`).

The stock processor writes each image as ``<img>`` + 256 ``<IMG_CONTEXT>`` + ``</img>``. The
prompt here writes the same: ``<img>`` and ``</img>`` are text tokens of the view line, so they
are never pruned and keep marking where a camera's tokens begin and end; ``<IMG_CONTEXT>`` is
the placeholder for the view's kept tokens. InternVL's language model uses 1-D RoPE, so the
shared position handling of :mod:`.base` applies unchanged.
"""

from __future__ import annotations

import torch
from transformers import InternVLForConditionalGeneration, PreTrainedConfig

from ..errors import ModelLoadError
from .base import DrivingVLM
from .results import ViewGeometry
from .stitching import StitchedLayout

#: The per-view layout (one InternViT tile per view), as InternVL 2.5 / 3 are built.
IMAGE_SIZE = 448
PATCH_SIZE = 14
DOWNSAMPLE_RATIO = 0.5
#: ImageNet normalisation, as InternVL checkpoints ship it in preprocessor_config.json.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class InternVLVLM(DrivingVLM):
    """InternVL 2.5 / 3: InternViT at 448 px, pixel shuffle 0.5, an MLP projector, Qwen2."""

    family = "internvl"
    model_class = InternVLForConditionalGeneration
    image_placeholder = "<IMG_CONTEXT>"
    image_markup = "<img>{image}</img>"

    @classmethod
    def _geometry(cls, config: PreTrainedConfig) -> ViewGeometry:
        grid = cls._tile_grid(config)
        return ViewGeometry(
            tokens_per_view=grid * grid,
            patch_grid=(grid, grid),
            image_size=(IMAGE_SIZE, IMAGE_SIZE),
        )

    @classmethod
    def _stitched_geometry(cls, config: PreTrainedConfig, max_tiles: int) -> ViewGeometry:
        # DriveLMM-o1: the six views as one image in InternVL's tiles (see .stitching).
        grid = cls._tile_grid(config)
        layout = StitchedLayout.plan(
            tile=IMAGE_SIZE, grid=grid, max_tiles=max_tiles, use_thumbnail=True
        )
        return ViewGeometry(
            tokens_per_view=max(layout.counts),
            patch_grid=None,
            image_size=layout.cell,
            layout=layout,
        )

    @classmethod
    def _tile_grid(cls, config: PreTrainedConfig) -> int:
        """Tokens per side of one tile, after checking the config gives InternVL's layout."""
        vision = config.vision_config
        size, patch = _pair(vision.image_size), _pair(vision.patch_size)
        ratio = float(config.downsample_ratio)
        expected = ((IMAGE_SIZE, IMAGE_SIZE), (PATCH_SIZE, PATCH_SIZE), DOWNSAMPLE_RATIO)
        if (size, patch, ratio) != expected:
            raise ModelLoadError(
                f"this InternVL checkpoint's vision tower takes {size[0]}x{size[1]} px tiles with "
                f"{patch[0]} px patches and downsample_ratio {ratio}; the per-view layout needs "
                f"{IMAGE_SIZE} px tiles with {PATCH_SIZE} px patches and downsample_ratio "
                f"{DOWNSAMPLE_RATIO} (one tile per view: 32 x 32 patches pixel-shuffled to 16 x 16 "
                "= 256 tokens, as in InternVL 2.5 / 3)"
            )
        strategy = config.vision_feature_select_strategy
        if strategy != "default":
            raise ModelLoadError(
                f"vision_feature_select_strategy is {strategy!r}; InternVL uses 'default' (drop "
                "InternViT's CLS token), without which the patches do not form the 32 x 32 grid "
                "the pixel shuffle needs"
            )
        grid = round(IMAGE_SIZE / PATCH_SIZE * DOWNSAMPLE_RATIO)
        if int(config.image_seq_length) != grid * grid:
            raise ModelLoadError(
                f"image_seq_length is {config.image_seq_length}, but a {IMAGE_SIZE} px tile gives "
                f"{grid * grid} tokens; the checkpoint's config contradicts its vision tower"
            )
        return grid

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # One tile per view (or the stitched image's tiles) is a batch of tiles to the stock
        # feature path (vision tower, CLS dropped, pixel shuffle, projector): [tiles, 256, D],
        # each tile in raster order of its 16 x 16 grid.
        features: torch.Tensor = self.model.model.get_image_features(
            pixel_values=pixel_values, return_dict=True
        ).pooler_output
        return features


def _pair(value: int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    """A config size that is an int or a (height, width) pair -> the pair."""
    if isinstance(value, int):
        return value, value
    first, second = (int(v) for v in value)
    return first, second
