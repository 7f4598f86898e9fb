"""Where the visual tokens are pruned: after the projector, or inside the language model.

``projector`` (the default) is where the Prune2Drive paper's text puts T-FPS: "directly after
the visual encoder output", before the language model. ``layer:K`` is where its public
reference code prunes (``fastv_forward`` in its vendored ``modeling_llama.py``; K = 1 in its
``inference.py``, K = 3 in its rate search): the first K decoder layers run on every token, the
pruner selects on the hidden states entering layer K, and the later layers (and their KV cache)
hold only the kept tokens, which keep their original positions. ``layer:0`` is ``projector``.
FastV (attention-ranked) needs K >= 1. Torch-free, so the config schema can check it.
"""

from __future__ import annotations

from .errors import ConfigError

PROJECTOR = "projector"
#: Pruners that rank tokens by the language model's attention: they run at layer:K, K >= 1.
ATTENTION_PRUNERS = frozenset({"fastv"})


def decoder_placement_needed(pruner: str, setting: str) -> ConfigError:
    """The error for attention-ranked ``pruner`` asked to prune before the decoder, where it
    has no attention to rank by; ``setting`` is how the user sets a placement (a parameter, a
    flag)."""
    return ConfigError(
        f"pruner {pruner} ranks tokens by the language model's attention, so it prunes inside "
        f"it: set {setting} with K >= 1 (FastV's K is 2)"
    )


def prune_layer(placement: str) -> int:
    """The decoder layer whose input is pruned: 0 for ``projector``, K for ``layer:K``.

    Raises:
        ConfigError: neither form (the message shows both).
    """
    if placement == PROJECTOR:
        return 0
    kind, _, layer = placement.partition(":")
    if kind == "layer" and layer.isdigit():
        return int(layer)
    raise ConfigError(
        f"placement {placement!r} is neither 'projector' (prune after the vision projector, as "
        "the paper's text) nor 'layer:K' (prune the hidden states entering decoder layer K, as "
        "its reference code does with K = 1 or 3)"
    )
