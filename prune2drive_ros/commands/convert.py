"""Convert a checkpoint published in its authors' original format into a transformers folder.

The paper's checkpoints are published the way their training code saves them (DriveMM: the
LLaVA-NeXT ``llava`` package's format), which transformers cannot load. ``prune2drive convert
SOURCE TARGET`` writes a folder that ``prune2drive replay --model TARGET`` (and the node) load;
the format is detected from SOURCE unless ``--format`` names it. The conversion is written into
a temporary folder beside TARGET and renamed into place, so a failed or interrupted conversion
leaves no half-written TARGET; an existing non-empty TARGET is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from ..errors import ConversionError
from ..vlm.conversion import FORMATS, convert_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive convert``."""
    parser.add_argument("source", type=Path, help="folder of the original checkpoint")
    parser.add_argument("target", type=Path, help="transformers folder to write")
    parser.add_argument(
        "--format", choices=tuple(FORMATS), default=None, help="original format (detected)"
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty TARGET")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Convert SOURCE into TARGET and say where it is."""
    source: Path = args.source.expanduser()
    target: Path = args.target.expanduser()
    if target.resolve() == source.resolve():
        raise ConversionError(f"TARGET {target} is SOURCE; give a new folder")
    if target.exists() and not target.is_dir():
        raise ConversionError(f"TARGET {target} is a file; give a folder")
    if target.is_dir() and any(target.iterdir()) and not args.force:
        raise ConversionError(
            f"TARGET {target} exists and is not empty; pass --force to replace it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        convert_checkpoint(source, staging, format=args.format, progress=not args.no_progress)
        _replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {target}; load it with: prune2drive replay --model {target} ...")
    return 0


def _replace(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing ``target`` is moved aside first and removed
    only once the new folder is in place."""
    if not target.exists():
        staging.rename(target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    old.rmdir()
    target.rename(old)
    try:
        staging.rename(target)
    except OSError:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
