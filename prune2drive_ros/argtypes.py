"""Value types for the command-line flags, so every tool rejects a bad number the same way.

argparse turns the :class:`argparse.ArgumentTypeError` raised here into
``argument --repeats: must be at least 1, got 0`` and exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def at_least(minimum: int) -> Callable[[str], int]:
    """An ``int`` flag type that refuses values below ``minimum``."""

    def integer(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return integer  # named so that argparse says "invalid integer value: 'x'"


def retention_rate(text: str) -> float:
    """A retention rate: the fraction of a view's tokens kept, in ``(0, 1]``."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {value}")
    return value
