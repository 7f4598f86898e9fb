"""The attention kernels the VLM adapters are written for, without importing torch.

:mod:`~prune2drive_ros.vlm.loading` checks a model load against this list and
:mod:`~prune2drive_ros.config` offers it as the ``attn_implementation`` choices; the config
(read by the launch file) must stay importable without torch, so the list lives here.
"""

from __future__ import annotations

#: Attention kernels the adapters are written for; neither needs attention weights.
ATTENTION_IMPLEMENTATIONS: tuple[str, ...] = ("sdpa", "flash_attention_2")
