"""The decoder run layer by layer, so that its layers may hold different tokens.

Pruning inside the language model (``placement: layer:K``, what the Prune2Drive reference
code does) runs the first K decoder layers on every token and the rest on the kept ones, so
their KV caches differ in length. transformers' decoder forward builds one causal mask from the
cache's first layer for all layers; :class:`LayerRunner` runs the same layer loop (rotary
embedding once per call, each layer with the cache, the final norm) with a mask made from each
layer's own cache length. The new tokens always follow everything cached, so the mask is "every
cached token, and the new ones causally": SDPA gets it as a boolean mask (``None`` for a single
new token), FlashAttention-2 needs none (its causal mask is bottom-right aligned, which is that
same mask). Position ids reach the rotary embedding only, never the layers, so gapped original
positions are not mistaken for packed sequences.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from transformers import DynamicCache


class LayerRunner:
    """Runs ``decoder``'s layers ``[start, stop)`` on hidden states with a shared cache."""

    def __init__(self, decoder: nn.Module, cache_kwarg: str, attn_implementation: str) -> None:
        self.layers = cast(nn.ModuleList, decoder.layers)
        self.rotary = cast(nn.Module, decoder.rotary_emb)
        self.final_norm = cast(nn.Module, decoder.norm)
        self.cache_kwarg = cache_kwarg
        self.masked = attn_implementation != "flash_attention_2"

    def __len__(self) -> int:
        return len(self.layers)

    def run(
        self,
        hidden: torch.Tensor,
        position_ids: torch.Tensor,
        cache: DynamicCache,
        start: int = 0,
        stop: int | None = None,
    ) -> torch.Tensor:
        """``hidden`` ``[1, q, D]`` through layers ``start`` to ``stop`` (default: the last),
        appending to their caches; ``position_ids`` as the decoder takes them."""
        stop = len(self.layers) if stop is None else stop
        embeddings = self.rotary(hidden, position_ids)
        masks: dict[int, torch.Tensor | None] = {}
        for index in range(start, stop):
            past = cache.get_seq_length(index) if index < len(cache.layers) else 0
            if past not in masks:
                masks[past] = self._mask(past, hidden.shape[1], hidden.device)
            hidden = self.layers[index](
                hidden,
                attention_mask=masks[past],
                position_embeddings=embeddings,
                position_ids=None,
                use_cache=True,
                **{self.cache_kwarg: cache},
            )
        return hidden

    def norm(self, hidden: torch.Tensor) -> torch.Tensor:
        """The decoder's final norm."""
        normed: torch.Tensor = self.final_norm(hidden)
        return normed

    def _mask(self, past: int, new: int, device: torch.device) -> torch.Tensor | None:
        """``[1, 1, new, past + new]`` True where a new token may attend (None: no mask)."""
        if not self.masked or new == 1:
            return None
        keys = torch.arange(past + new, device=device)
        queries = torch.arange(new, device=device) + past
        return (keys[None, :] <= queries[:, None])[None, None]
