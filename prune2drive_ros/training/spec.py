"""What a scene model is: its shape, its data and its training schedule, as named variants.

A scene model is a real ``LlavaOnevisionForConditionalGeneration`` (SigLIP tower, 2-layer MLP
projector, Qwen2 decoder) trained by :mod:`.trainer` on the package's own six-camera scenes
(:mod:`prune2drive_ros.sensors.scene`). The variants trade size for training time:

* ``default``: 112 px views in 14 px patches (8 x 8 = 64 tokens per view, 384 per frame set),
  a 2-layer SigLIP and a 4-layer Qwen2 of width 128. Sized to train on two CPU cores in about
  ten minutes: 64 tokens per view keep every vehicle at least a patch wide while leaving room to
  prune (10 % keeps 6 tokens a view), and width 128 is what a 4-layer decoder needs to route a
  question to its view's tokens and count there.
* ``quick``: the same layout, narrower and shorter; trains in about a minute, for tests.
* ``paper``: the paper's layout (384 px, 27 x 27 = 729 tokens per view) at width 256; for a GPU.

The cache folder of a variant is named by a digest of its spec, so changing a spec retrains.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

#: The training report in a finished checkpoint folder, written last (so its presence means
#: the training finished).
REPORT_FILE = "scene_model.json"
#: Bump when the training code changes what a spec produces.
TRAINING_VERSION = "2"


@dataclass(frozen=True)
class SceneModelSpec:
    """Shape, data and schedule of one scene model.

    Attributes:
        name: the variant's name.
        image_size, patch_size: each view is ``image_size`` px square, cut into patches.
        render_size: the scenes are drawn at this (width, height) and resized to
            ``image_size``, as a camera frame is (drawing at the model size would alias).
        vision_width, vision_layers, text_width, text_layers, heads: the two transformers' sizes
            (MLPs are 2x / 3x wide; the decoder has half as many KV heads as query heads).
        train_scenes, eval_scenes: scenes drawn once and reused for training; held-out scenes
            (from another seed, never trained on) for the running accuracy.
        steps, batch, learning_rate, warmup: AdamW with linear warmup and cosine decay.
        patch_loss: weight of the per-patch auxiliary loss (vehicle cover and centres per
            patch, predicted from the projector's output), which teaches the tower where
            vehicles are long before answers alone would.
        bf16: run the training forward in bfloat16 autocast where the CPU has native bfloat16
            (float32 weights and optimizer; evaluation in float32). The result then depends on
            the CPU's bfloat16 kernels (AMX or AVX512-BF16, or none: float32).
        threads: the intra-op threads training runs on, whatever the process uses otherwise
            (set for the training and restored after). Weight gradients (matmul, layer norm)
            and large sums are reduced in per-thread partial sums, so another thread count
            gives other float32 roundings and, after a few hundred steps, other weights (the
            quick variant: 65.0 % held-out at one thread, 68.0 % at two). Two in every variant:
            the cores they are sized for (a bigger machine still trains on two; one core runs
            both threads, slower).
        seed: seed of the weights, the training scenes and the batch order.

    Trained from the same spec with the same torch, the weights are bit-identical on any CPU
    whose kernels are the same (same instruction set, same MKL/oneDNN code path), whatever
    thread count the process has; CPUs of other instruction sets round differently.
    """

    name: str
    image_size: int = 112
    patch_size: int = 14
    render_size: tuple[int, int] = (448, 252)
    vision_width: int = 128
    vision_layers: int = 2
    text_width: int = 128
    text_layers: int = 4
    heads: int = 4
    train_scenes: int = 2400
    eval_scenes: int = 200
    steps: int = 600
    batch: int = 8
    learning_rate: float = 2e-3
    warmup: int = 100
    patch_loss: float = 1.0
    bf16: bool = True
    threads: int = 2
    seed: int = 0

    @property
    def grid(self) -> int:
        """Patches per side of a view."""
        return self.image_size // self.patch_size

    def digest(self) -> str:
        """A short hash of the spec and :data:`TRAINING_VERSION`: names its cache folder."""
        text = json.dumps([TRAINING_VERSION, asdict(self)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def vision_config(self) -> dict[str, Any]:
        """SigLIP sizes."""
        return {
            "hidden_size": self.vision_width,
            "intermediate_size": 2 * self.vision_width,
            "num_hidden_layers": self.vision_layers,
            "num_attention_heads": self.heads,
        }

    def text_config(self) -> dict[str, Any]:
        """Qwen2 sizes."""
        return {
            "hidden_size": self.text_width,
            "intermediate_size": 3 * self.text_width,
            "num_hidden_layers": self.text_layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": max(1, self.heads // 2),
        }


#: The named variants (see the module docstring).
VARIANTS: dict[str, SceneModelSpec] = {
    "default": SceneModelSpec(name="default"),
    "quick": SceneModelSpec(
        name="quick",
        vision_width=64,
        vision_layers=1,
        text_width=64,
        text_layers=2,
        train_scenes=600,
        eval_scenes=100,
        steps=300,
        batch=8,
        learning_rate=3e-3,
        warmup=30,
        # float32: at this width bfloat16 saves nothing, and its result depends on the CPU's
        # bfloat16 kernels (held-out 60.6 % with AMX on a Xeon, 72.6 % on an EPYC; 68.0 % in
        # float32 on the Xeon, 72 s instead of 94 s).
        bf16=False,
    ),
    "paper": SceneModelSpec(
        name="paper",
        image_size=384,
        render_size=(768, 432),
        vision_width=256,
        vision_layers=4,
        text_width=256,
        text_layers=4,
        train_scenes=8000,
        eval_scenes=400,
        steps=4000,
        batch=16,
        learning_rate=1e-3,
        warmup=200,
    ),
}


def spec_of_report(report: dict[str, Any]) -> SceneModelSpec:
    """The spec a training report (``REPORT_FILE``'s ``spec``) was trained from.

    Raises:
        ValueError: the report holds no spec this version can read.
    """
    fields = report.get("spec")
    if not isinstance(fields, dict):
        raise ValueError(f"{REPORT_FILE} holds no spec")
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    try:
        return SceneModelSpec(**values)
    except TypeError as exc:
        raise ValueError(f"{REPORT_FILE}'s spec is not one this version trains: {exc}") from None


def variant(name: str) -> SceneModelSpec:
    """The spec of variant ``name`` (a ValueError naming the variants otherwise)."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(
            f"unknown scene model variant {name!r}; expected one of {', '.join(VARIANTS)}"
        ) from None
