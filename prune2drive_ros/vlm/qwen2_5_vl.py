"""Qwen2.5-VL with Prune2Drive pruning, its 3-D rotary positions (M-RoPE) kept intact.

Per-view layout. Qwen2.5-VL takes any image whose sides are multiples of 28 (14 px patches,
merged 2 x 2 into one token), and its processor picks the size from a pixel range, so token
counts would vary with the input. Here every view gets one fixed pixel budget instead:
**896 x 504 px** (16:9, the shape of the nuScenes cameras' 1600 x 900 frames, so nothing is
cropped or stretched), that is 64 x 36 patches, merged to an **18 x 32 grid of 576 tokens** per
view (close to LLaVA-OneVision's 729, so budgets are comparable). The checkpoint's
``min_pixels``/``max_pixels`` are not used; the tiny checkpoints ship both equal to the budget
so that their processor resizes a 16:9 frame to exactly this size.

Vision tower. The window-attention ViT takes flattened patches in the processor's layout (each
row one 2 x 2 merge window's patch, channels x temporal x 14 x 14 values, the single image
repeated over the temporal patch size 2) plus ``grid_thw``; :meth:`Qwen2_5_VLVLM.patches` builds
that layout from the normalised ``[V, 3, H, W]`` pixels on the device, equal to
``Qwen2VLImageProcessorPil``'s output for an image already at the budget size. The merger's
output is in raster order of the 18 x 32 grid.

Positions. The language model rotates each token by three position ids (temporal, height,
width). The stock ``get_rope_index`` gives a text token ``(p, p, p)`` with ``p`` counting on
from the previous token's maximum, and the visual token in grid row ``r``, column ``c`` of an
image that starts at ``s`` the ids ``(s, s + r, s + c)``; the text after the image continues at
``s + max(rows, cols)``. ``positions="original"`` keeps exactly these ids for every kept token
and every text token (:meth:`Qwen2_5_VLVLM._view_positions` computes them from the kept indices,
so the full unpruned index is never built), and generation continues from the maximum + 1 on
all three axes, as the stock model does with its ``rope_deltas``. ``positions="compact"``
renumbers the pruned sequence 0..L-1 on all three axes alike, i.e. plain 1-D positions with the
images' 2-D layout dropped: there is no stock way to lay a pruned grid out in 3-D, so this is
the naive baseline to measure against.

The prompt wraps each view as Qwen2.5-VL's chat template does: ``<|vision_start|>``, the view's
``<|image_pad|>`` tokens, ``<|vision_end|>``; the two markers are text, never pruned.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedConfig, Qwen2_5_VLForConditionalGeneration

from ..errors import ModelLoadError
from .base import DrivingVLM
from .results import ViewGeometry

#: Fixed per-view pixel budget, (width, height): 16:9 like the nuScenes cameras.
IMAGE_SIZE = (896, 504)
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
#: Rotary axes of M-RoPE: temporal, height, width.
ROPE_AXES = 3


class Qwen2_5_VLVLM(DrivingVLM):
    """Qwen2.5-VL: a window-attention ViT with a 2 x 2 patch merger, Qwen2 with M-RoPE."""

    family = "qwen2_5_vl"
    model_class = Qwen2_5_VLForConditionalGeneration
    image_placeholder = "<|image_pad|>"
    image_markup = "<|vision_start|>{image}<|vision_end|>"

    @classmethod
    def _geometry(cls, config: PreTrainedConfig) -> ViewGeometry:
        vision = config.vision_config
        found = (
            _single(vision.patch_size),
            int(vision.spatial_merge_size),
            _single(vision.temporal_patch_size),
        )
        if found != (PATCH_SIZE, MERGE_SIZE, TEMPORAL_PATCH_SIZE):
            patch, merge, temporal = found
            raise ModelLoadError(
                f"this Qwen2.5-VL checkpoint's vision tower has {patch} px patches, "
                f"spatial_merge_size {merge} and temporal_patch_size {temporal}; the per-view "
                f"layout needs {PATCH_SIZE} px patches merged {MERGE_SIZE} x {MERGE_SIZE} with "
                f"temporal_patch_size {TEMPORAL_PATCH_SIZE} (a {IMAGE_SIZE[0]} x {IMAGE_SIZE[1]} "
                "px view = 18 x 32 = 576 tokens, as in Qwen2.5-VL)"
            )
        width, height = IMAGE_SIZE
        step = PATCH_SIZE * MERGE_SIZE
        rows, cols = height // step, width // step
        return ViewGeometry(
            tokens_per_view=rows * cols, patch_grid=(rows, cols), image_size=IMAGE_SIZE
        )

    def patches(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[V, 3, H, W]`` pixels -> the vision tower's flattened patches and ``grid_thw``.

        Returns ``[V * H/14 * W/14, 3 * 2 * 14 * 14]`` patches, ordered view by view, 2 x 2
        merge window by window in raster order, and within a window row-major (what
        ``Qwen2VLImageProcessorPil.patchify`` writes; each image repeated over the temporal
        patch), and ``grid_thw`` ``[V, 3]`` = ``(1, H/14, W/14)`` per view.
        """
        views, channels, height, width = pixel_values.shape
        p, m = PATCH_SIZE, MERGE_SIZE
        rows, cols = height // p, width // p
        windows = pixel_values.reshape(views, channels, rows // m, m, p, cols // m, m, p)
        # -> view, window row, window col, row in window, col in window, channel, y, x
        windows = windows.permute(0, 2, 5, 3, 6, 1, 4, 7)
        repeated = windows.unsqueeze(6).expand(*windows.shape[:6], TEMPORAL_PATCH_SIZE, p, p)
        flat = repeated.reshape(views * rows * cols, channels * TEMPORAL_PATCH_SIZE * p * p)
        grid = torch.tensor([[1, rows, cols]] * views, device=pixel_values.device)
        return flat, grid

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        flat, grid = self.patches(pixel_values)
        per_view = self.model.model.get_image_features(
            pixel_values=flat, image_grid_thw=grid, return_dict=True
        ).pooler_output
        return torch.stack(list(per_view))

    def _text_positions(self, start: int, count: int) -> tuple[torch.Tensor, int]:
        # Text tokens advance all three axes together, as get_rope_index numbers them.
        line = torch.arange(start, start + count, device=self.device)
        return line.expand(ROPE_AXES, count), start + count

    def _view_positions(
        self, start: int, kept: torch.Tensor, separators: int
    ) -> tuple[torch.Tensor, int]:
        # get_rope_index gives grid cell (r, c) of an image starting at `start` the ids
        # (start, start + r, start + c) and continues the text at start + max(rows, cols); the
        # kept tokens keep their cell's ids, whatever was pruned around them.
        assert self.patch_grid is not None  # every view is its own image in this family
        rows, cols = self.patch_grid
        kept = kept.to(self.device)
        grid = torch.stack([torch.zeros_like(kept), kept // cols, kept % cols]) + start
        after = start + max(rows, cols)
        tail, after = self._text_positions(after, separators)
        return torch.cat([grid, tail], dim=1), after

    def _decoder_position_ids(self, positions: torch.Tensor) -> torch.Tensor:
        # [3, L] -> [3, batch 1, L]: three rows make the text model read them as M-RoPE ids
        # without packed-sequence text ids, so its mask comes from the cache alone.
        return positions.unsqueeze(1)


def _single(value: int | list[int] | tuple[int, ...]) -> int:
    """A config size that may be written as a list of equal values -> one int (or -1 if not)."""
    if isinstance(value, int):
        return value
    values = {int(v) for v in value}
    return values.pop() if len(values) == 1 else -1
