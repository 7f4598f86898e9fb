"""The value types the model adapters take and give: geometry, normalisation, prefill inputs
and outputs, answers.

Plain data with no model behind them, so the decoding loop, the loader and the tests share them
without importing a family. The stage timings are :class:`~prune2drive_ros.timings.Timings`
(torch-free, the node's diagnostics read them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import DynamicCache

from ..errors import ModelLoadError
from ..pruning.selection import Selection
from ..views import VIEWS
from .stitching import StitchedLayout

#: How kept tokens are numbered: as in the unpruned sequence, or renumbered 0..L-1.
Positions = Literal["original", "compact"]

#: How a camera image becomes the encoder's square input: ``resize`` squashes it whole (SigLIP
#: and InternViT processors do), ``pad`` letterboxes it with the image mean first (LLaVA's
#: ``image_aspect_ratio: pad``, which DriveMM trains its multi-image inputs with).
ImageFit = Literal["resize", "pad"]
IMAGE_FITS: tuple[ImageFit, ...] = ("resize", "pad")


@dataclass(frozen=True)
class Generation:
    """One answer.

    Attributes:
        question: the question as asked.
        text: the decoded answer, special tokens removed.
        new_tokens: tokens generated, the stop token included.
        prompt_tokens: tokens the language model prefilled for it (shared prefix with the kept
            visual tokens and view separators, plus the question turn).
        visual_tokens: kept visual tokens over all views (separators not counted).
        selection: the kept tokens of each view (a pruner with shared budgets chooses how
            many per frame set; the kept-token picture draws them).
        finish: ``"stop"`` (a stop token), ``"length"`` (``max_new_tokens``), or why it was
            stopped (``"cancelled"``, ``"timeout"``, ``"shutdown"``: a StopSignal's reason).
    """

    question: str
    text: str
    new_tokens: int
    prompt_tokens: int
    visual_tokens: int
    selection: Selection = field(compare=False, repr=False)
    finish: str = "stop"

    @property
    def kept_per_view(self) -> tuple[int, ...]:
        """Kept visual tokens of each view, in :data:`~..views.VIEWS` order."""
        return self.selection.budgets


@dataclass(frozen=True)
class ViewGeometry:
    """What a family's vision tower gives per view.

    Attributes:
        tokens_per_view: prunable visual tokens per view (729 for LLaVA-OneVision); for
            stitched views the largest view's count (views are padded to it).
        patch_grid: (rows, cols) of those tokens in raster order, for the grid baseline and
            viz; None for stitched views, whose tokens form no common grid.
        image_size: (width, height) in pixels each view is decoded to.
        layout: where the tokens of six views stitched into one image lie; None when each
            view is its own image.
    """

    tokens_per_view: int
    patch_grid: tuple[int, int] | None
    image_size: tuple[int, int]
    layout: StitchedLayout | None = None

    @property
    def view_tokens(self) -> tuple[int, ...]:
        """Real tokens per view, in :data:`~prune2drive_ros.views.VIEWS` order."""
        if self.layout is not None:
            return self.layout.counts
        return (self.tokens_per_view,) * len(VIEWS)


@dataclass(frozen=True)
class Normalization:
    """Pixel normalisation from the checkpoint's ``preprocessor_config.json``.

    ``pixel = (uint8 * rescale - mean) / std`` per channel, as the transformers image
    processors compute it; folded into one multiply-add in
    :class:`~prune2drive_ros.vlm.image_processing.ViewImageProcessor`.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float

    @classmethod
    def from_processor_dict(cls, config: Mapping[str, Any]) -> Normalization:
        """Read an image-processor dict, honouring ``do_rescale`` and ``do_normalize``."""
        rescale = 1.0
        if config.get("do_rescale", True):
            rescale = float(config.get("rescale_factor", 1 / 255))
        if not config.get("do_normalize", True):
            return cls(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), rescale=rescale)
        mean, std = config.get("image_mean"), config.get("image_std")
        if mean is None or std is None:
            raise ModelLoadError(
                "the image processor config has do_normalize but no image_mean/image_std; "
                "copy preprocessor_config.json from the original checkpoint"
            )
        return cls(mean=_triple(mean), std=_triple(std), rescale=rescale)


@dataclass(frozen=True)
class PrefillInputs:
    """What the language model gets for one prefill: embeddings and explicit positions.

    Attributes:
        embeds: ``[1, L, D]`` text embeddings with the kept visual tokens spliced in.
        positions: ``[P, L]`` RoPE positions (P = 1 for 1-D RoPE).
        visual_tokens: kept visual tokens in ``embeds`` (separators not counted).
        separator_tokens: unprunable view separators in ``embeds``.
        text_tokens: text tokens in ``embeds``.
        next_position: the position the token after these gets.
    """

    embeds: torch.Tensor
    positions: torch.Tensor
    visual_tokens: int
    separator_tokens: int
    text_tokens: int
    next_position: int

    @property
    def length(self) -> int:
        """Tokens in ``embeds``."""
        return int(self.embeds.shape[1])

    def then(self, other: PrefillInputs) -> PrefillInputs:
        """These inputs followed by ``other`` (which must continue at ``next_position``)."""
        return PrefillInputs(
            embeds=torch.cat([self.embeds, other.embeds], dim=1),
            positions=torch.cat([self.positions, other.positions], dim=1),
            visual_tokens=self.visual_tokens + other.visual_tokens,
            separator_tokens=self.separator_tokens + other.separator_tokens,
            text_tokens=self.text_tokens + other.text_tokens,
            next_position=other.next_position,
        )


@dataclass
class PrefillOutput:
    """Logits of a prefill and the cache that now holds its keys and values.

    ``logits`` is ``[vocab]`` for the last position, or ``[L, vocab]`` when every position was
    asked for.
    """

    logits: torch.Tensor
    cache: DynamicCache


def _triple(values: Any) -> tuple[float, float, float]:
    items = [float(x) for x in values] if isinstance(values, list | tuple) else [float(values)] * 3
    if len(items) != 3:
        raise ModelLoadError(f"expected 3 channel values in the image processor, got {values!r}")
    return items[0], items[1], items[2]
