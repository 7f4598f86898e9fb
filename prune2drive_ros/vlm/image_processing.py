"""The six camera images -> the vision tower's pixel values, on the model's device.

What a transformers image processor does, cut to what the adapters need. The views arrive
decoded at the encoder's input size: the decoder resizes them (and letterboxes them, with
:attr:`ViewImageProcessor.pad_color`, for checkpoints trained on padded views) in its threads,
by default exactly as the family's processor does (PIL's bicubic; the model's ``image_resize``,
:mod:`~prune2drive_ros.sensors.imaging`). They go to the device as uint8 (a quarter of the float
bytes) and are rescaled and normalised there in one multiply-add with the checkpoint's image
mean and std. The result equals the transformers image processor's for inputs already at the
encoder size, and with the ``exact`` resize for camera frames of any size
(``test/test_preprocessing.py``). Views stitched into one image are stitched and cut into the
vision tower's tiles first (:mod:`.stitching`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import DecodeError, ModelLoadError
from ..views import VIEWS
from .checkpoint import IMAGE_FIT_KEY
from .results import IMAGE_FITS, ImageFit, Normalization
from .stitching import StitchedLayout


class ViewImageProcessor:
    """Camera images -> pixel values, for one model's normalisation, input size and layout.

    Attributes:
        image_size: (width, height) each view must be decoded to.
        pad_color: the letterbox colour (the image mean, as LLaVA's ``expand2square``) when the
            checkpoint was trained on views padded to a square; None: views are resized whole.

    Raises:
        ModelLoadError: ``image_fit`` is not one of :data:`~.results.IMAGE_FITS`.
    """

    def __init__(
        self,
        normalization: Normalization,
        image_fit: ImageFit,
        *,
        image_size: tuple[int, int],
        layout: StitchedLayout | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        if image_fit not in IMAGE_FITS:
            raise ModelLoadError(
                f"image fit {image_fit!r} is not one of {', '.join(IMAGE_FITS)} (config.json's "
                f"{IMAGE_FIT_KEY})"
            )
        self.image_size = image_size
        self.pad_color = _mean_colour(normalization) if image_fit == "pad" else None
        self.layout = layout
        self.device = device
        self.dtype = dtype
        scale = [normalization.rescale / s for s in normalization.std]
        offset = [-m / s for m, s in zip(normalization.mean, normalization.std, strict=True)]
        self._scale = torch.tensor(scale, device=device).view(1, 3, 1, 1)
        self._offset = torch.tensor(offset, device=device).view(1, 3, 1, 1)

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Six RGB uint8 ``H x W x 3`` arrays at :attr:`image_size` -> ``[V, 3, H, W]`` pixels
        (``[tiles, 3, H, W]`` for stitched views) in the model's dtype.

        Raises:
            DecodeError: wrong number of views, size, dtype or channel count.
        """
        if len(images) != len(VIEWS):
            raise DecodeError(f"got {len(images)} images; give one per view ({', '.join(VIEWS)})")
        width, height = self.image_size
        for name, image in zip(VIEWS, images, strict=True):
            if image.dtype != np.uint8 or image.shape != (height, width, 3):
                raise DecodeError(
                    f"{name} image is {image.dtype} {tuple(image.shape)}; the encoder takes RGB "
                    f"uint8 {height}x{width}x3 (decode or resize to {width}x{height} first)"
                )
        stacked = self.layout.tile_images(images) if self.layout is not None else np.stack(images)
        batch = torch.from_numpy(stacked).to(self.device, non_blocking=True)
        pixels = batch.permute(0, 3, 1, 2).float() * self._scale + self._offset
        return pixels.to(self.dtype)


def _mean_colour(normalization: Normalization) -> tuple[int, int, int]:
    """The image mean as 8-bit RGB: LLaVA pads with ``tuple(int(m * 255) for m in mean)``."""
    red, green, blue = (int(m * 255) for m in normalization.mean)
    return red, green, blue
