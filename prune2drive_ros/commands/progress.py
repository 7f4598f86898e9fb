"""The one place that draws progress bars: the reporter every command passes to the library.

Library functions report through a :class:`~prune2drive_ros.progress.Progress` and are quiet
by default; a command that shows progress adds ``--no-progress``
(:func:`add_progress_argument`) and passes :func:`progress_from` to them. Bars are tqdm's, drawn
only while stderr is a terminal (tqdm's ``disable=None``): a log redirected to a file
(``prune2drive tune ... 2> log``) gets no ``\\r`` redraws or escape codes.
"""

from __future__ import annotations

import argparse

from ..progress import NO_PROGRESS, Bar, Progress

__all__ = ["add_progress_argument", "progress_from", "terminal_bars"]


def terminal_bars(
    *, total: int | None, desc: str, unit: str, initial: int = 0, leave: bool = True
) -> Bar:
    """A tqdm bar on stderr, or a silent one when stderr is no terminal."""
    from tqdm import tqdm

    bar: Bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave, disable=None)
    return bar


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``, read back by :func:`progress_from`."""
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="do not draw progress bars (they are drawn only when stderr is a terminal)",
    )


def progress_from(args: argparse.Namespace) -> Progress:
    """The reporter a command passes to the library: bars unless ``--no-progress``."""
    return NO_PROGRESS if getattr(args, "no_progress", False) else terminal_bars
