"""The camera rig: the six nuScenes surround views, their order and their topic names.

The order is the one the Prune2Drive reference prompt uses (front, front-left, front-right,
back, back-left, back-right); every per-view tensor in this package follows it.
"""

from __future__ import annotations

VIEWS: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_LEFT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)

#: How a driving model is told which image is which (the text placed before each view's tokens).
VIEW_LABELS: dict[str, str] = {
    "CAM_FRONT": "front",
    "CAM_FRONT_LEFT": "front left",
    "CAM_FRONT_RIGHT": "front right",
    "CAM_BACK": "back",
    "CAM_BACK_LEFT": "back left",
    "CAM_BACK_RIGHT": "back right",
}


def image_topic(view: str, compressed: bool = True) -> str:
    """Default topic of ``view`` as the nuScenes-to-rosbag2 converters name it."""
    check_view(view)
    return f"/{view}/image_rect_compressed" if compressed else f"/{view}/image_rect"


def camera_info_topic(view: str) -> str:
    """Default ``sensor_msgs/msg/CameraInfo`` topic of ``view``."""
    check_view(view)
    return f"/{view}/camera_info"


def check_view(view: str) -> str:
    """Return ``view`` if it is one of :data:`VIEWS`, else raise a ValueError naming them."""
    if view not in VIEWS:
        raise ValueError(f"unknown camera view {view!r}; expected one of {', '.join(VIEWS)}")
    return view
