"""Train a scene model: a small LLaVA-OneVision that answers questions about the synthetic scenes.

The model is the real ``LlavaOnevisionForConditionalGeneration`` (SigLIP tower, projector,
Qwen2), trained end to end on scenes drawn from a seed, and saved with ``save_pretrained``
into the cache (or ``--out``), so ``--model`` of replay, eval, tune and the node take its
folder like any checkpoint. It is a proxy for a driving VLM, not one: it measures what pruning
costs a model that needs the pixels, on scenes whose answers are known. An interrupted run
resumes when run again. See :mod:`prune2drive_ros.training`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import ConfigError
from ..files import check_writable_folder
from ..training import REPORT_FILE, VARIANTS, cached_scene_model, variant
from .progress import add_progress_argument, progress_from

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive train``."""
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="default",
        help="default (~10 min on two CPU cores), quick (~1 min, for tests) or paper (729 "
        "tokens per view, for a GPU)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="checkpoint folder to create (default: the cache, where demo and tests look)",
    )
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Train (or find the cached) model and print where it is and what it reached."""
    progress = progress_from(args)
    if args.out is None:
        path = cached_scene_model(args.variant, progress=progress)
    else:
        path = _check_out(args.out)
        from ..training import train_scene_model  # torch: only once the flags are checked

        train_scene_model(variant(args.variant), path, progress=progress)
    report = json.loads((path / REPORT_FILE).read_text())
    held, prior = report["held_out"], report["majority"]
    print(f"scene model {args.variant}: {path}")
    print(
        f"drew the scenes in {report['draw_seconds']:.0f} s, trained {report['steps']} steps in "
        f"{report['seconds']:.0f} s; held-out exact match "
        f"{held['overall']:.1%} (answering every question with its commonest answer: "
        f"{prior['overall']:.1%})"
    )
    for kind, value in held["per_kind"].items():
        print(f"  {kind:12s} {value:6.1%}   (commonest answer {prior['per_kind'][kind]:.1%})")
    return 0


def _check_out(out: Path) -> Path:
    """``--out`` if a new checkpoint folder can be made there, checked before any training.

    Raises:
        ConfigError: it exists already, or its parent folder is missing or not writable.
    """
    if out.exists():
        raise ConfigError(f"--out {out} exists already; remove it to train again, or name another")
    check_writable_folder(out.parent)
    return out
