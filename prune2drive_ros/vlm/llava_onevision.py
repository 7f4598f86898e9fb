"""LLaVA-OneVision (and DriveMM, which is built on it) with Prune2Drive pruning.

Per view, one 384 px image goes through SigLIP (14 px patches: a 27 x 27 grid of 729 tokens)
and the projector; no anyres tiles. That is what transformers itself does for a prompt with
several images (``batch_num_images`` > 1), and the layout the Prune2Drive reference prunes in.
The stock model appends its learned ``image_newline`` embedding after each image's 729 tokens;
it is not a patch, so it is kept as the view separator and never pruned.

Smaller square towers load too: the scene model
this package trains (:mod:`prune2drive_ros.training`) sees 112 px views as 8 x 8 = 64 tokens.
"""

from __future__ import annotations

import torch
from transformers import LlavaOnevisionForConditionalGeneration, PreTrainedConfig

from ..errors import ModelLoadError
from .base import DrivingVLM
from .results import ViewGeometry

#: The per-view layout of LLaVA-OneVision and DriveMM, which Prune2Drive is defined on.
IMAGE_SIZE = 384
PATCH_SIZE = 14
#: SigLIP's normalisation (mean = std = 0.5 per channel), as LLaVA-OneVision checkpoints ship it.
SIGLIP_MEAN_STD = [0.5, 0.5, 0.5]


class LlavaOnevisionVLM(DrivingVLM):
    """LLaVA-OneVision: SigLIP-so400m at 384 px, a 2-layer MLP projector, Qwen2."""

    family = "llava_onevision"
    model_class = LlavaOnevisionForConditionalGeneration
    image_placeholder = "<image>"

    @classmethod
    def _geometry(cls, config: PreTrainedConfig) -> ViewGeometry:
        vision = config.vision_config
        size, patch = int(vision.image_size), int(vision.patch_size)
        if patch < 1 or size < patch:
            raise ModelLoadError(
                f"this LLaVA-OneVision checkpoint's vision tower takes {size} px images with "
                f"{patch} px patches, not even one patch per view; the per-view layout is a grid "
                f"of patches ({IMAGE_SIZE} px with {PATCH_SIZE} px patches: 27 x 27 = 729 tokens "
                "per view, as in LLaVA-OneVision/DriveMM with SigLIP-so400m-patch14-384)"
            )
        strategy = config.vision_feature_select_strategy
        if strategy != "full":
            raise ModelLoadError(
                f"vision_feature_select_strategy is {strategy!r}; LLaVA-OneVision uses 'full' "
                "(SigLIP has no CLS token to drop, 'default' would cut the 27 x 27 grid)"
            )
        grid = size // patch
        return ViewGeometry(
            tokens_per_view=grid * grid, patch_grid=(grid, grid), image_size=(size, size)
        )

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        views = pixel_values.shape[0]
        height, width = pixel_values.shape[-2:]
        sizes = torch.tensor([[height, width]] * views, device=self.device)
        # batch_num_images = [views] is the stock multi-image path: one base image per view,
        # no anyres tiles, image_newline appended after each view's 729 tokens.
        features = self.model.model.get_image_features(
            pixel_values=pixel_values,
            image_sizes=sizes,
            batch_num_images=torch.tensor([views]),
            return_dict=True,
        ).pooler_output
        return torch.stack(list(features))[:, : self.tokens_per_view]

    def _view_separator(self) -> torch.Tensor:
        newline: torch.Tensor = self.model.model.image_newline
        return newline.to(self.dtype).unsqueeze(0)
