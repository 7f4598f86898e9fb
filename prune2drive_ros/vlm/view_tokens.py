"""Where each view's visual tokens are: in the encoder's output, the prompt, the prefix, the image.

Pruners and selections see the visual tokens as a ``[V, tokens_per_view]`` grid, one row per
view. The model sees them elsewhere: one prompt image per view, or (DriveLMM-o1's layout) the
six views stitched into ONE image whose tokens belong to the view their patch lies in
(:mod:`.stitching`); there each view's tokens are in stitched order and zero-padded to
``tokens_per_view``, and only ``view_tokens[v]`` of them are real. :class:`ViewTokens` maps
between the grid and those places, so that the adapter never special-cases the layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..pruning.selection import Selection
from ..views import VIEWS
from .results import ViewGeometry


class ViewTokens:
    """The per-view token grid of one model's :class:`~.results.ViewGeometry`, on ``device``."""

    def __init__(self, geometry: ViewGeometry, device: torch.device) -> None:
        self.tokens_per_view = geometry.tokens_per_view
        self.view_tokens = geometry.view_tokens
        self.patch_grid = geometry.patch_grid
        self.layout = geometry.layout
        self.device = device
        #: Stitched views: each view's token indices in the stitched image, on the device.
        self._view_index = [
            torch.as_tensor(indices, device=device)
            for indices in (self.layout.view_indices if self.layout is not None else ())
        ]

    @property
    def image_tokens(self) -> int:
        """Tokens of one prompt image before pruning: a view's, or the whole stitched image's."""
        return self.layout.tokens if self.layout is not None else self.tokens_per_view

    def keep_all(self) -> Selection:
        """Every real token of every view: the unpruned model as a selection."""
        return Selection.keep_all(len(VIEWS), self.tokens_per_view, self.device, self.view_tokens)

    def per_view(self, features: torch.Tensor) -> torch.Tensor:
        """The encoder's ``[images, tokens, D]`` output -> ``[V, tokens_per_view, D]``.

        One image per view: unchanged. Stitched: the tiles' tokens gathered per view, each
        view's in stitched order, zero-padded to :attr:`tokens_per_view`.
        """
        if self.layout is None:
            return features
        tokens = features.reshape(-1, features.shape[-1])
        padded = torch.cat([tokens, tokens.new_zeros(1, tokens.shape[-1])])
        index = torch.full(
            (len(VIEWS), self.tokens_per_view), tokens.shape[0], device=tokens.device
        )
        for v, count in enumerate(self.view_tokens):
            index[v, :count] = self._view_index[v]
        return padded[index]

    def kept(self, visual: torch.Tensor, selection: Selection | None) -> list[torch.Tensor]:
        """Per view, the indices of ``selection``'s kept tokens of ``visual`` on its device
        (every real token when ``selection`` is None).

        Raises:
            ValueError: ``visual`` or ``selection`` is not over this model's views and tokens.
        """
        views, tokens = len(VIEWS), self.tokens_per_view
        if tuple(visual.shape[:2]) != (views, tokens):
            raise ValueError(
                f"visual tokens of shape {tuple(visual.shape)}; expected [{views}, {tokens}, D] "
                "from encode_views"
            )
        if selection is None:
            return [torch.arange(count, device=visual.device) for count in self.view_tokens]
        if tuple(selection.mask.shape) != (views, tokens):
            raise ValueError(
                f"selection over {tuple(selection.mask.shape)} does not match {views} views of "
                f"{tokens} tokens"
            )
        return [kept.to(visual.device) for kept in selection.per_view()]

    def image_slots(
        self, visual: torch.Tensor, kept_per_view: Sequence[torch.Tensor]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image placeholder of the prompt: its kept embeddings and their indices in it.

        One image per view, or for stitched views one image holding every view's kept tokens
        in stitched order (the order and places they have in the unpruned image).
        """
        if self.layout is None:
            return [(visual[v].index_select(0, kept), kept) for v, kept in enumerate(kept_per_view)]
        stitched = torch.cat(
            [self._view_index[v].index_select(0, kept) for v, kept in enumerate(kept_per_view)]
        )
        embeds = torch.cat(
            [visual[v].index_select(0, kept) for v, kept in enumerate(kept_per_view)]
        )
        order = stitched.argsort()
        return [(embeds.index_select(0, order), stitched.index_select(0, order))]

    def prefix_rows(self, segments: Sequence[int], separators: int) -> torch.Tensor:
        """``[V, tokens_per_view]``: the row of each view's tokens in the unpruned prefix whose
        text between the images is ``segments`` tokens long, each image followed by
        ``separators`` tokens (padding rows of stitched views point at the first token; they
        are never kept)."""
        if self.layout is not None:
            rows = torch.zeros(len(VIEWS), self.tokens_per_view, dtype=torch.long)
            for v, indices in enumerate(self.layout.view_indices):
                rows[v, : len(indices)] = torch.as_tensor(indices) + segments[0]
            return rows.to(self.device)
        span = self.tokens_per_view + separators
        starts = [sum(segments[: v + 1]) + v * span for v in range(len(VIEWS))]
        tokens = torch.arange(self.tokens_per_view)
        return torch.stack([tokens + start for start in starts]).to(self.device)

    def boxes(self) -> list[np.ndarray]:
        """Per view, ``[view_tokens[v], 4]`` (x0, y0, x1, y1) of each token on its camera
        image, in [0, 1]."""
        if self.layout is not None:
            return [self.layout.view_boxes(v) for v in range(len(VIEWS))]
        assert self.patch_grid is not None
        rows, cols = self.patch_grid
        r, c = np.divmod(np.arange(rows * cols), cols)
        boxes = np.stack([c / cols, r / rows, (c + 1) / cols, (r + 1) / rows], axis=1)
        return [boxes] * len(VIEWS)
