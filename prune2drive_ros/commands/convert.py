"""Convert a checkpoint published in its authors' original format into a transformers folder.

The paper's checkpoints are published the way their training code saves them (DriveMM: the
LLaVA-NeXT ``llava`` package's format; DriveLMM-o1: InternVL's remote-code ``internvl_chat``),
which transformers cannot load. ``prune2drive convert SOURCE TARGET`` writes a folder that
``prune2drive replay --model TARGET`` (and the node) load; the format is detected from SOURCE
unless ``--format`` names it, and the converted config names the prompt the checkpoint was
trained with (``--prompt``; by default the paper's checkpoint's). A failed or interrupted
conversion leaves no half-written TARGET; an existing non-empty TARGET is replaced only with
``--force`` (all of it :func:`~prune2drive_ros.vlm.conversion.convert_checkpoint`'s).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..prompts import PROMPTS
from ..vlm.conversion import FORMAT_DEFAULT, FORMATS, convert_checkpoint
from .progress import add_progress_argument, progress_from

#: ``--prompt`` value that writes no prompt into the converted config.
NO_PROMPT = "none"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive convert``."""
    parser.add_argument("source", type=Path, help="folder of the original checkpoint")
    parser.add_argument("target", type=Path, help="transformers folder to write")
    parser.add_argument(
        "--format", choices=tuple(FORMATS), default=None, help="original format (detected)"
    )
    parser.add_argument(
        "--prompt",
        choices=(*PROMPTS, NO_PROMPT),
        default=None,
        help="prompt the converted config names for 'prompt: auto' (default: that of the "
        f"paper's checkpoint in SOURCE's format; {NO_PROMPT}: name none)",
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty TARGET")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Convert SOURCE into TARGET and say where it is."""
    prompt = FORMAT_DEFAULT if args.prompt is None else args.prompt
    if prompt == NO_PROMPT:
        prompt = None
    target = convert_checkpoint(
        args.source,
        args.target,
        format=args.format,
        prompt=prompt,
        force=args.force,
        progress=progress_from(args),
    )
    print(f"wrote {target}; load it with: prune2drive replay --model {target} ...")
    return 0
