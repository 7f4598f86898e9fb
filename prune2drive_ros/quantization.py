"""The language model's weight-only quantisation schemes, without importing torch.

:mod:`~prune2drive_ros.vlm.quantization` applies them (with torchao) and
:mod:`~prune2drive_ros.config` offers them as the ``quantization`` choices; the config (read by
the launch file) must stay importable without torch, so the names live here.
"""

from __future__ import annotations

#: No quantisation: the language model's weights stay in the model dtype.
NO_QUANTIZATION = "none"
#: Weight-only schemes of the language model: ``int8`` (per output channel) and ``int4``
#: (groups of up to 128 input channels). The vision tower, projector, embeddings and LM head
#: always stay in the model dtype.
QUANTIZATIONS: tuple[str, ...] = (NO_QUANTIZATION, "int8", "int4")
