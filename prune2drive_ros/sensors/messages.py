"""ROS 2 messages the package writes into bags (rosbags' Jazzy types): one header and one
camera-info builder for the synthetic bags and the nuScenes conversion alike."""

from __future__ import annotations

from typing import Any

import numpy as np

from .sources import CAMERA_INFO_TYPE, typestore


def header(stamp_ns: int, frame_id: str) -> Any:
    """A ``std_msgs/msg/Header`` stamped ``stamp_ns``."""
    types = typestore().types
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    time = types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    return types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def pinhole_camera_info(intrinsic: np.ndarray, width: int, height: int, frame_id: str) -> Any:
    """The ``CameraInfo`` of a rectified pinhole camera (``intrinsic``: its 3 x 3 K; zero
    distortion, as nuScenes' images are), stamped 0: the writer stamps it with its image."""
    types = typestore().types
    k = np.asarray(intrinsic, dtype=np.float64).reshape(3, 3)
    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return types[CAMERA_INFO_TYPE](
        header=header(0, frame_id),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=k.reshape(-1),
        r=np.eye(3).reshape(-1),
        p=np.hstack([k, np.zeros((3, 1))]).reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )
