"""A tiny nuScenes dataset in the devkit's layout, written in code for the converter's tests.

:func:`write_nuscenes` writes what the real ``nuscenes-devkit`` loads (``NuScenes(version,
dataroot)``): all 13 tables under ``<root>/<version>/`` (the devkit opens every one; ``instance``
and ``sample_annotation`` may be empty, ``map`` may not: the devkit maps every log to a map and
checks that the map's PNG under ``maps/`` exists), and the camera JPEGs under ``samples/`` (key
frames) and ``sweeps/`` (the rest). Its timing is nuScenes': cameras at 12 Hz, a key frame every
6th camera frame (2 Hz samples), a sample's timestamp is the lidar's, and the six cameras fire
in order from ~43 ms (CAM_FRONT_LEFT; CAM_FRONT ~35 ms) to ~0.5 ms before it (offsets taken
from scene-0061 of v1.0-mini), timestamps in microseconds, ``ego_pose`` token = sample_data token.
Each scene's camera chains begin with sweeps before the first key frame and end with sweeps
after the last one, so a converter must follow ``prev`` as well as ``next``. LIDAR_TOP
sample_data rows exist for the key frames (as in nuScenes) but their files are not written: a
camera converter must not need them.

Only the facts the converter's tests check are recorded in :class:`NuScenesFixture`; anything
else the devkit wants (categories, logs, visibility levels) is filled with plausible values.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from prune2drive_ros.sensors.imaging import encode_jpeg

#: Firing offset of each camera before the sample (lidar) timestamp, µs (nuScenes scene-0061).
FIRING_OFFSETS_US: dict[str, int] = {
    "CAM_FRONT_LEFT": -43_107,
    "CAM_FRONT": -35_491,
    "CAM_FRONT_RIGHT": -27_612,
    "CAM_BACK_RIGHT": -20_058,
    "CAM_BACK": -10_426,
    "CAM_BACK_LEFT": -528,
}
#: Yaw of each camera on the car, degrees (left positive), roughly nuScenes' rig.
CAMERA_YAW_DEG: dict[str, float] = {
    "CAM_FRONT": 0.0,
    "CAM_FRONT_LEFT": 55.0,
    "CAM_FRONT_RIGHT": -55.0,
    "CAM_BACK": 180.0,
    "CAM_BACK_LEFT": 110.0,
    "CAM_BACK_RIGHT": -110.0,
}
SAMPLE_PERIOD_US = 500_000  # 2 Hz key frames
FRAMES_PER_SAMPLE = 6  # 12 Hz cameras
LEADING_SWEEPS = 2  # camera frames before a scene's first key frame
TRAILING_SWEEPS = 3  # camera frames after its last key frame
SCENE_NAMES = ("scene-0061", "scene-0103")
# Rotation from a camera's optical frame (z forward, x right, y down) to a forward-looking
# camera in the car frame (x forward, y left, z up), w x y z: what nuScenes' CAM_FRONT has.
_OPTICAL_TO_BODY = (0.5, -0.5, 0.5, -0.5)


@dataclass(frozen=True)
class Pose:
    """A rigid transform as nuScenes writes it: translation (m), rotation w x y z."""

    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]


@dataclass(frozen=True)
class FixtureImage:
    """One camera sample_data row and its file."""

    token: str
    channel: str
    timestamp_us: int
    filename: str  # relative to the dataset root, as nuScenes stores it
    key_frame: bool
    ego_pose: Pose


@dataclass(frozen=True)
class FixtureScene:
    """What one scene holds, for comparing a converter's output with."""

    name: str
    token: str
    samples: tuple[tuple[str, int], ...]  # (sample token, timestamp µs), in time order
    images: tuple[FixtureImage, ...]  # in time order
    cameras: dict[str, Pose]  # calibrated_sensor of each camera (the camera in the car)
    intrinsics: dict[str, list[list[float]]]  # camera_intrinsic of each camera


@dataclass(frozen=True)
class NuScenesFixture:
    """A dataset written by :func:`write_nuscenes`."""

    root: Path
    version: str
    width: int
    height: int
    scenes: tuple[FixtureScene, ...]

    def scene(self, name: str) -> FixtureScene:
        """The scene called ``name``."""
        return next(s for s in self.scenes if s.name == name)


def token(*parts: object) -> str:
    """A nuScenes-style 32-hex token, deterministic from ``parts``."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def write_nuscenes(
    root: Path,
    *,
    version: str = "v1.0-mini",
    samples_per_scene: int = 3,
    width: int = 64,
    height: int = 36,
) -> NuScenesFixture:
    """Write two scenes (:data:`SCENE_NAMES`) of ``samples_per_scene`` samples to ``root``."""
    rng = np.random.default_rng(23)
    tables: dict[str, list[dict[str, Any]]] = {
        "attribute": [{"token": token("attr"), "name": "vehicle.moving", "description": ""}],
        "category": [{"token": token("cat"), "name": "vehicle.car", "description": ""}],
        "visibility": [
            {"token": str(i), "level": level, "description": f"visibility of {level}"}
            for i, level in enumerate(("v0-40", "v40-60", "v60-80", "v80-100"), start=1)
        ],
        "instance": [],
        "sample_annotation": [],
        "sensor": [
            {"token": token("sensor", ch), "channel": ch, "modality": "camera"}
            for ch in FIRING_OFFSETS_US
        ]
        + [{"token": token("sensor", "LIDAR_TOP"), "channel": "LIDAR_TOP", "modality": "lidar"}],
    }
    for name in ("calibrated_sensor", "ego_pose", "log", "sample", "sample_data", "scene"):
        tables[name] = []
    scenes = tuple(
        _write_scene(root, tables, name, number, samples_per_scene, width, height, rng)
        for number, name in enumerate(SCENE_NAMES)
    )
    map_file = f"maps/{token('map')}.png"
    (root / "maps").mkdir(parents=True)
    Image.new("L", (8, 8), 255).save(root / map_file)
    tables["map"] = [
        {
            "token": token("map"),
            "log_tokens": [log["token"] for log in tables["log"]],
            "category": "semantic_prior",
            "filename": map_file,
        }
    ]
    (root / version).mkdir(parents=True)
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows, indent=0))
    return NuScenesFixture(root, version, width, height, scenes)


def _write_scene(
    root: Path,
    tables: dict[str, list[dict[str, Any]]],
    name: str,
    number: int,
    samples: int,
    width: int,
    height: int,
    rng: np.random.Generator,
) -> FixtureScene:
    """Add one scene's rows to ``tables`` and write its JPEGs."""
    scene_token, log_token = token("scene", name), token("log", name)
    start_us = 1_532_402_927_647_951 + number * 3_600_000_000  # an hour apart, as logs are
    log_name = f"n015-2018-07-24-{11 + number:02d}-22-45+0800"
    tables["log"].append(
        {
            "token": log_token,
            "logfile": log_name,
            "vehicle": "n015",
            "date_captured": "2018-07-24",
            "location": "singapore-onenorth",
        }
    )
    cameras, intrinsics = {}, {}
    for ch in FIRING_OFFSETS_US:
        cameras[ch] = _camera_pose(ch)
        fx = 1266.4 * width / 1600
        intrinsics[ch] = [[fx, 0.0, width / 2 + 0.3], [0.0, fx, height / 2 - 0.2], [0, 0, 1]]
        tables["calibrated_sensor"].append(
            {
                "token": token("calib", name, ch),
                "sensor_token": token("sensor", ch),
                "translation": list(cameras[ch].translation),
                "rotation": list(cameras[ch].rotation),
                "camera_intrinsic": intrinsics[ch],
            }
        )
    tables["calibrated_sensor"].append(
        {
            "token": token("calib", name, "LIDAR_TOP"),
            "sensor_token": token("sensor", "LIDAR_TOP"),
            "translation": [0.94, 0.0, 1.84],
            "rotation": [0.707, 0.0, 0.0, -0.707],
            "camera_intrinsic": [],
        }
    )
    sample_times = [start_us + k * SAMPLE_PERIOD_US for k in range(samples)]
    sample_tokens = [token("sample", name, k) for k in range(samples)]
    for k, (tok, ts) in enumerate(zip(sample_tokens, sample_times, strict=True)):
        tables["sample"].append(
            {
                "token": tok,
                "timestamp": ts,
                "prev": sample_tokens[k - 1] if k else "",
                "next": sample_tokens[k + 1] if k + 1 < samples else "",
                "scene_token": scene_token,
            }
        )
    tables["scene"].append(
        {
            "token": scene_token,
            "log_token": log_token,
            "nbr_samples": samples,
            "first_sample_token": sample_tokens[0],
            "last_sample_token": sample_tokens[-1],
            "name": name,
            "description": f"fixture scene {number}",
        }
    )
    images: list[FixtureImage] = []
    frames = range(-LEADING_SWEEPS, (samples - 1) * FRAMES_PER_SAMPLE + TRAILING_SWEEPS + 1)
    for ch, offset in FIRING_OFFSETS_US.items():
        chain: list[dict[str, Any]] = []
        for k in frames:
            key = k % FRAMES_PER_SAMPLE == 0
            nearest = min(max(round(k / FRAMES_PER_SAMPLE), 0), samples - 1)
            jitter = 0 if key else int(rng.integers(-500, 500))
            ts = start_us + round(k * SAMPLE_PERIOD_US / FRAMES_PER_SAMPLE) + offset + jitter
            folder = "samples" if key else "sweeps"
            image = FixtureImage(
                token=token("sd", name, ch, k),
                channel=ch,
                timestamp_us=ts,
                filename=f"{folder}/{ch}/{log_name}__{ch}__{ts}.jpg",
                key_frame=key,
                ego_pose=_ego_pose(ts - start_us, number),
            )
            images.append(image)
            chain.append(_sample_data(image, sample_tokens[nearest], name, width, height))
            _write_jpeg(root / image.filename, width, height, k, ch)
        _link(chain)
        tables["sample_data"] += chain
    lidar = [
        FixtureImage(
            token("sd", name, "LIDAR_TOP", k),
            "LIDAR_TOP",
            ts,
            f"samples/LIDAR_TOP/{log_name}__LIDAR_TOP__{ts}.pcd.bin",
            True,
            _ego_pose(ts - start_us, number),
        )
        for k, ts in enumerate(sample_times)
    ]
    lidar_rows = [
        _sample_data(image, tok, name, 0, 0)
        for image, tok in zip(lidar, sample_tokens, strict=True)
    ]
    _link(lidar_rows)
    tables["sample_data"] += lidar_rows
    tables["ego_pose"] += [
        {
            "token": image.token,  # nuScenes: the ego pose token is the sample_data token
            "timestamp": image.timestamp_us,
            "translation": list(image.ego_pose.translation),
            "rotation": list(image.ego_pose.rotation),
        }
        for image in [*images, *lidar]
    ]
    images.sort(key=lambda im: im.timestamp_us)
    return FixtureScene(
        name,
        scene_token,
        tuple(zip(sample_tokens, sample_times, strict=True)),
        tuple(images),
        cameras,
        intrinsics,
    )


def _sample_data(
    image: FixtureImage, sample_token: str, scene: str, width: int, height: int
) -> dict[str, Any]:
    """The sample_data row of ``image`` (``prev``/``next`` are linked by :func:`_link`)."""
    lidar = image.channel == "LIDAR_TOP"
    return {
        "token": image.token,
        "sample_token": sample_token,
        "ego_pose_token": image.token,
        "calibrated_sensor_token": token("calib", scene, image.channel),
        "timestamp": image.timestamp_us,
        "fileformat": "pcd" if lidar else "jpg",
        "is_key_frame": image.key_frame,
        "height": height,
        "width": width,
        "filename": image.filename,
        "prev": "",
        "next": "",
    }


def _link(chain: list[dict[str, Any]]) -> None:
    """Link one sensor's rows of a scene through ``prev``/``next`` (empty at the scene's ends)."""
    for earlier, later in itertools.pairwise(chain):
        earlier["next"], later["prev"] = later["token"], earlier["token"]


def _camera_pose(channel: str) -> Pose:
    """The camera in the car frame: on the roof, looking out at its yaw."""
    yaw = math.radians(CAMERA_YAW_DEG[channel])
    turn = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
    return Pose(
        (round(1.0 * math.cos(yaw) + 0.5, 4), round(0.5 * math.sin(yaw), 4), 1.5),
        _quaternion_product(turn, _OPTICAL_TO_BODY),
    )


def _ego_pose(elapsed_us: int, scene_number: int) -> Pose:
    """The car driving at 5 m/s along a gentle left curve (different start per scene)."""
    t = elapsed_us / 1e6
    yaw = 0.05 * t + scene_number
    return Pose(
        (400.0 + 100 * scene_number + 5.0 * t, 1100.0 + 0.1 * t * t, 0.0),
        (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)),
    )


def _quaternion_product(
    a: tuple[float, float, float, float], b: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    """Hamilton product ``a * b`` of w x y z quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return (
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    )


def _write_jpeg(path: Path, width: int, height: int, frame: int, channel: str) -> None:
    """A small JPEG that differs per frame and camera (so a mix-up changes the bytes)."""
    shade = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    colour = np.array([frame * 37 % 256, list(FIRING_OFFSETS_US).index(channel) * 40, 128])
    rgb = ((shade.astype(int) + colour) % 256).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_jpeg(np.broadcast_to(rgb, (height, width, 3)).copy(), quality=80))
