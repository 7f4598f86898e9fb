"""Value types for the command-line flags, so every tool rejects a bad number the same way.

argparse turns the :class:`argparse.ArgumentTypeError` raised here into
``argument --repeats: must be at least 1, got 0`` and exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ..views import VIEWS


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


def finite_float(*, zero: bool) -> Callable[[str], float]:
    """A ``float`` flag type for finite numbers above zero, or of at least zero with ``zero``
    (durations and distances; weights that 0 switches off)."""
    bound = "of at least 0" if zero else "above 0"

    def number(text: str) -> float:
        value = float(text)
        if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value

    return number


positive_float = finite_float(zero=False)
non_negative_float = finite_float(zero=True)


def topic_remap(text: str) -> tuple[str, str]:
    """``VIEW:=TOPIC``, ROS's remapping syntax: the topic that carries one camera view."""
    view, separator, topic = text.partition(":=")
    if not separator or not topic.strip():
        raise argparse.ArgumentTypeError(
            f"write VIEW:=TOPIC, e.g. CAM_FRONT:=/cam_front/image/compressed; got {text!r}"
        )
    if view not in VIEWS:
        raise argparse.ArgumentTypeError(
            f"unknown camera view {view!r} in {text!r}; views: {', '.join(VIEWS)}"
        )
    return view, topic.strip()
