"""The ways a camera image is resized to the encoder input, without importing OpenCV or PIL.

:mod:`~prune2drive_ros.sensors.imaging` implements them and :mod:`~prune2drive_ros.config`
offers them as the ``image_resize`` choices; the config (read by the launch file and by every
command's ``--help``) stays light, so the names live here.
"""

from __future__ import annotations

from typing import Literal, cast, get_args

#: ``exact``: a full decode and PIL's bicubic resize, the pixels of each family's own image
#: processor; ``fast``: a reduced-scale JPEG decode and OpenCV's bilinear or area resize
#: (see :mod:`~prune2drive_ros.sensors.imaging`).
ResizeMode = Literal["exact", "fast"]
#: The resize modes, the default (what the checkpoints were trained on) first.
RESIZE_MODES: tuple[ResizeMode, ...] = get_args(ResizeMode)


def check_resize_mode(mode: str) -> ResizeMode:
    """``mode`` as a :data:`ResizeMode`.

    Raises:
        ValueError: it is not one of :data:`RESIZE_MODES`.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
    return cast(ResizeMode, mode)
