"""Convert a checkpoint published in its authors' original format into a transformers folder.

The paper's checkpoints are published the way their training code saves them (DriveMM: the
LLaVA-NeXT ``llava`` package's format; DriveLMM-o1: InternVL's remote-code ``internvl_chat``),
which transformers cannot load. ``prune2drive convert SOURCE TARGET`` writes a folder that
``prune2drive replay --model TARGET`` (and the node) load; the format is detected from SOURCE
unless ``--format`` names it, and the converted config names the prompt the checkpoint was
trained with (``--prompt``; by default the paper's checkpoint's). A failed or interrupted
conversion leaves no half-written TARGET; an existing non-empty TARGET is replaced only with
``--force`` (all of it :func:`~prune2drive_ros.vlm.conversion.convert_checkpoint`'s).

LLaVA-NeXT checkpoints (DriveMM) take two more flags: ``--vision-tower`` names the SigLIP
tower's config (a folder, or a hub id: see
:func:`~prune2drive_ros.vlm.conversion.llava_next.is_folder_name`) where the checkpoint's
``mm_vision_tower`` does not; ``--image-fit`` says how to feed each view to a checkpoint whose
``image_aspect_ratio`` tiles images (``anyres_max_9``), which is refused otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..prompts import PROMPTS
from ..vlm.conversion import FORMAT_DEFAULT, FORMATS, convert_checkpoint
from .progress import add_progress_argument, progress_from

#: ``--prompt`` value that writes no prompt into the converted config.
NO_PROMPT = "none"
#: ``--image-fit`` choices (``llava_next.FIT_CHOICES``; that module imports torch).
IMAGE_FITS = ("pad", "resize")


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
    parser.add_argument(
        "--vision-tower",
        metavar="PATH_OR_HUB_ID",
        default=None,
        help="llava_next: the SigLIP vision tower's config, a folder holding its config.json "
        "(a name starting with '.', '/' or '~') or a hub id such as "
        "google/siglip-so400m-patch14-384 (default: the checkpoint's mm_vision_tower)",
    )
    parser.add_argument(
        "--image-fit",
        choices=IMAGE_FITS,
        default=None,
        help="llava_next: convert a checkpoint whose image_aspect_ratio tiles each image "
        "(anyres, anyres_max_9, ...), which this package does not do, feeding each view as one "
        "image instead: pad (letterboxed with the mean colour, as LLaVA-NeXT trains multi-image "
        "samples) or resize (squashed); refused without it",
    )
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
        vision_tower=args.vision_tower,
        image_fit=args.image_fit,
    )
    print(f"wrote {target}; load it with: prune2drive replay --model {target} ...")
    return 0
