"""Analytic FLOPs of a language-model prefill, to put next to measured prefill speedups.

For ``L`` tokens through a decoder with hidden size ``h``, ``n_q`` query heads and ``n_kv``
key/value heads of size ``d`` (``q = n_q * d``, ``kv = n_kv * d``: grouped-query attention),
SwiGLU intermediate size ``m`` and vocabulary ``V``, one multiply-add counted as 2 FLOPs::

    per layer   projections  2 * L * h * (2 * q + 2 * kv)      q and o: h x q, k and v: h x kv
                attention    2 * q * L * (L + 1)               QK^T and AV, causal
                MLP          2 * L * 3 * h * m                 gate, up, down
    once        LM head      2 * h * V                         last position only

Attention is counted over the causal triangle (query ``i`` attends to ``i + 1`` keys), i.e.
half of the ``4 * L^2 * q`` a full square would cost: SDPA's causal kernels and FlashAttention
skip the masked blocks, so the triangle is what runs. The LM head is counted for the last
position only, because a prefill that feeds generation needs no other logits. Norms, RoPE,
softmax and residual adds (O(L * h), well under 1 %) are left out. This is the count FastV
and Prune2Drive report (``4 L h^2 + 2 L^2 h + 2 L h m`` multiply-adds per layer, for
multi-head attention over the full square and a two-matrix MLP), in FLOPs and with the GQA,
SwiGLU and causal terms of the models used here.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedConfig


@dataclass(frozen=True)
class DecoderShape:
    """The sizes the FLOPs depend on."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def from_config(cls, config: PreTrainedConfig) -> DecoderShape:
        """Read the text (decoder) config of a VLM or LM config."""
        text = config.get_text_config()
        hidden, heads = int(text.hidden_size), int(text.num_attention_heads)
        return cls(
            hidden=hidden,
            layers=int(text.num_hidden_layers),
            heads=heads,
            kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
            head_dim=int(getattr(text, "head_dim", None) or hidden // heads),
            intermediate=int(text.intermediate_size),
            vocab=int(text.vocab_size),
        )


def layer_flops(shape: DecoderShape, length: int) -> int:
    """FLOPs of one decoder layer over ``length`` tokens (see the module docstring)."""
    q = shape.heads * shape.head_dim
    kv = shape.kv_heads * shape.head_dim
    projections = 2 * length * shape.hidden * (2 * q + 2 * kv)
    attention = 2 * q * length * (length + 1)
    mlp = 2 * length * 3 * shape.hidden * shape.intermediate
    return projections + attention + mlp


def prefill_flops(shape: DecoderShape, length: int, *, kept: int | None = None, at: int = 0) -> int:
    """FLOPs of prefilling ``length`` tokens, of which only ``kept`` (default all) go on from
    decoder layer ``at`` (pruning at ``layer:at``; the first ``at`` layers pay full price).

    The layers after the cut attend to the kept tokens only: their queries and keys are both
    the kept ones, so the triangle term is that of ``kept`` tokens."""
    kept = length if kept is None else kept
    head = 2 * shape.hidden * shape.vocab
    return at * layer_flops(shape, length) + (shape.layers - at) * layer_flops(shape, kept) + head


def flops_ratio(shape: DecoderShape, pruned_length: int, full_length: int, *, at: int = 0) -> float:
    """Pruned over unpruned prefill FLOPs (pruned at decoder layer ``at``, 0: before the
    language model); its inverse bounds the prefill speedup."""
    pruned = prefill_flops(shape, full_length, kept=pruned_length, at=at)
    return pruned / prefill_flops(shape, full_length)
