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

import sys
from typing import Any, cast

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

    def last_token_attention(
        self, hidden: torch.Tensor, position_ids: torch.Tensor, index: int
    ) -> torch.Tensor:
        """``[q]``: the attention the last of ``hidden``'s ``q`` tokens pays each of them in
        layer ``index`` (whose input ``hidden`` is), averaged over heads: FastV's score.

        Only that one query is computed (its key projections and one softmax row), from the
        layer's own norm, projections and rotary embedding, so the model itself keeps SDPA or
        FlashAttention and never materialises attention weights.
        """
        layer: Any = self.layers[index]
        attention: Any = layer.self_attn
        rope = sys.modules[type(attention).__module__].apply_rotary_pos_emb
        x = layer.input_layernorm(hidden)
        head_dim = int(attention.head_dim)
        cos, sin = self.rotary(hidden, position_ids)
        query = attention.q_proj(x[:, -1:]).view(1, 1, -1, head_dim).transpose(1, 2)
        keys = attention.k_proj(x).view(1, x.shape[1], -1, head_dim).transpose(1, 2)
        query, _ = rope(query, query, cos[:, -1:], sin[:, -1:])
        keys, _ = rope(keys, keys, cos, sin)
        groups = query.shape[1] // keys.shape[1]
        keys = keys.repeat_interleave(groups, dim=1)  # grouped-query heads share keys
        logits = (query @ keys.transpose(-1, -2)).float() * head_dim**-0.5
        weights: torch.Tensor = logits.softmax(dim=-1).mean(dim=1)[0, 0]
        return weights

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
