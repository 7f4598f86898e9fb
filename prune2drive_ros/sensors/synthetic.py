"""Synthetic nuScenes-like rosbag2 recordings of the six cameras, written with ``rosbags``.

:func:`write_synthetic_bag` records what a nuScenes-to-rosbag2 converter would: six
``sensor_msgs/msg/CompressedImage`` JPEG topics at 12 Hz whose header stamps follow the nuScenes
firing sequence (the cameras fire one after another as the lidar sweeps past, ~8 ms apart, so
one frame's stamps spread over ~42 ms), a ``CameraInfo`` per image, and a questions file whose
reference answers are facts of the drawn scenes (:mod:`.scene`). Bags are written in the newest
rosbag2 format ``rosbags`` writes (version 9, as Jazzy's ``ros2 bag``); Humble's ``ros2 bag``
may need ``ros2 bag reindex`` before it plays them. :mod:`.bag` reads them like any other.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rosbags.rosbag2 import Writer

from ..errors import BagError
from ..progress import NO_PROGRESS, Progress
from ..views import VIEWS, camera_info_topic, image_topic
from .imaging import encode_jpeg
from .messages import header, pinhole_camera_info
from .questions import QAItem, write_questions
from .scene import CAMERAS, RoadScene, scene_questions
from .sources import CAMERA_INFO_TYPE, IMAGE_TYPES, STORAGES, typestore

logger = logging.getLogger(__name__)

#: The order nuScenes' cameras fire in as the lidar sweeps past them.
FIRING_ORDER: tuple[str, ...] = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
)
#: First frame of synthetic bags: a nuScenes sample time (2018-07-24), so stamps look familiar.
SYNTHETIC_START_NS = 1_532_402_927_647_951_000
#: Spread of one frame's six stamps in synthetic bags, ms (nuScenes: ~42).
DEFAULT_JITTER_MS = 42.0
#: Trigger noise added to each synthetic stamp, +- ms.
_TRIGGER_NOISE_MS = 1.0
#: Delay between a synthetic header stamp and its recording (log) time, ms range.
_TRANSPORT_DELAY_MS = (1.0, 4.0)
_NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class SyntheticBag:
    """What :func:`write_synthetic_bag` wrote."""

    path: Path
    storage: str
    frames: int
    messages: int
    start_ns: int
    end_ns: int
    questions_path: Path
    questions: int


def default_questions_path(bag_path: str | os.PathLike[str]) -> Path:
    """``OUT.questions.jsonl`` beside the bag folder ``OUT`` (rosbag2 folders hold bag files
    only; ``ros2 bag`` tools would trip over extras inside)."""
    path = Path(bag_path)
    return path.with_name(path.name + ".questions.jsonl")


def max_jitter_ms(rate_hz: float) -> float:
    """Largest stamp spread per frame that keeps frames apart in recording order at ``rate_hz``
    (a frame's last message must be recorded before the next frame's first is stamped)."""
    return 1000.0 / rate_hz - 2 * _TRIGGER_NOISE_MS - _TRANSPORT_DELAY_MS[1]


def frame_stamps(
    frames: int,
    *,
    seed: int,
    rate_hz: float = 12.0,
    jitter_ms: float = DEFAULT_JITTER_MS,
    start_ns: int = SYNTHETIC_START_NS,
) -> list[dict[str, int]]:
    """Header stamps per frame and view: the cameras fire in :data:`FIRING_ORDER`, evenly over
    ``jitter_ms``, each with +-1 ms of trigger noise; frames are ``1 / rate_hz`` apart."""
    period_ms = 1000.0 / rate_hz
    if not 0 <= jitter_ms < max_jitter_ms(rate_hz):
        raise ValueError(
            f"jitter_ms={jitter_ms} must be >= 0 and below {max_jitter_ms(rate_hz):.1f} ms, "
            f"so that the frames of {rate_hz:g} Hz stay apart"
        )
    noise = np.random.default_rng([seed, 7]).uniform(-1, 1, (frames, len(FIRING_ORDER)))
    step_ms = jitter_ms / (len(FIRING_ORDER) - 1)
    return [
        {
            view: start_ns
            + round((k * period_ms + i * step_ms + _TRIGGER_NOISE_MS * noise[k, i]) * _NS_PER_MS)
            for i, view in enumerate(FIRING_ORDER)
        }
        for k in range(frames)
    ]


def write_synthetic_bag(
    out: str | os.PathLike[str],
    frames: int = 24,
    storage: Literal["mcap", "sqlite3"] = "mcap",
    seed: int = 0,
    width: int = 1600,
    height: int = 900,
    rate_hz: float = 12.0,
    jitter_ms: float = DEFAULT_JITTER_MS,
    *,
    questions_path: str | os.PathLike[str] | None = None,
    quality: int = 90,
    progress: Progress = NO_PROGRESS,
    scene_frames: int = 48,
    questions_per_frame: int = 3,
    mix: str = "default",
    density: str = "scene",
) -> SyntheticBag:
    """Write a nuScenes-like six-camera bag to the new folder ``out`` and its questions file.

    Deterministic from ``seed``. A new scene is drawn every ``scene_frames`` frames (1: every
    frame a new one, for evaluating a model on many scenes); each frame gets
    ``questions_per_frame`` questions drawn under question ``mix`` (:mod:`.scene`), and its
    traffic ``density`` is drawn per scene or per zone (:data:`.scene.DENSITY_MODES`).
    ``questions_path`` defaults to :func:`default_questions_path` (its folder is created when
    missing). The bag folder is removed again if writing the bag or the questions fails.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    out = Path(out)
    if out.exists():
        raise BagError(f"{out} exists already; choose a new path or remove it first")
    questions_out = Path(questions_path) if questions_path else default_questions_path(out)
    stamps = frame_stamps(frames, seed=seed, rate_hz=rate_hz, jitter_ms=jitter_ms)
    if scene_frames < 1:
        raise ValueError(f"scene_frames must be >= 1, got {scene_frames}")
    scene = RoadScene(seed, width, height, segment_frames=scene_frames, density=density)
    items: list[QAItem] = []
    try:
        questions_out.parent.mkdir(parents=True, exist_ok=True)
        with Writer(out, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage]) as writer:
            bag = _SyntheticWriter(writer, seed, width, height, quality)
            with progress(total=frames, desc=f"writing {out.name}", unit="frame") as bar:
                for k in range(frames):
                    bag.write_frame(scene.render(k), stamps[k])
                    items += [
                        QAItem(max(stamps[k].values()), t.question, t.answer, t.kind)
                        for t in scene_questions(
                            scene.facts(k), k, count=questions_per_frame, mix=mix, seed=seed
                        )
                    ]
                    bar.update()
        count = write_questions(questions_out, items)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    logger.debug(
        "wrote %s (%d frames, %s) and %d questions to %s",
        out,
        frames,
        storage,
        count,
        questions_out,
    )
    return SyntheticBag(
        path=out,
        storage=storage,
        frames=frames,
        messages=bag.messages,
        start_ns=bag.first_ns,
        end_ns=bag.last_ns,
        questions_path=questions_out,
        questions=count,
    )


class _SyntheticWriter:
    """Serialises one frame's images and camera infos into an open rosbags Writer."""

    def __init__(self, writer: Writer, seed: int, width: int, height: int, quality: int) -> None:
        store = typestore()
        self._writer, self._store, self._quality = writer, store, quality
        self._types = store.types
        self._rng = np.random.default_rng([seed, 11])
        self._image_conn = {
            v: writer.add_connection(image_topic(v), IMAGE_TYPES[0], typestore=store) for v in VIEWS
        }
        self._info_conn = {
            v: writer.add_connection(camera_info_topic(v), CAMERA_INFO_TYPE, typestore=store)
            for v in VIEWS
        }
        self._infos = {v: self._camera_info(v, width, height) for v in VIEWS}
        self.messages = 0
        self.first_ns: int = 2**63 - 1
        self.last_ns = 0

    def write_frame(self, images: Mapping[str, np.ndarray], stamps: Mapping[str, int]) -> None:
        """Write the six images and infos of one frame, in recording (log time) order."""
        lo, hi = _TRANSPORT_DELAY_MS
        delays = self._rng.uniform(lo, hi, len(VIEWS)) * _NS_PER_MS
        log_times = {v: stamps[v] + round(d) for v, d in zip(VIEWS, delays, strict=True)}
        for view in sorted(VIEWS, key=log_times.__getitem__):
            stamp = header(stamps[view], view)
            jpeg = np.frombuffer(encode_jpeg(images[view], self._quality), np.uint8)
            image = self._types[IMAGE_TYPES[0]](
                header=stamp, format="rgb8; jpeg compressed bgr8", data=jpeg
            )
            info = dataclasses.replace(self._infos[view], header=stamp)
            for conn, msg in ((self._image_conn[view], image), (self._info_conn[view], info)):
                data = self._store.serialize_cdr(msg, conn.msgtype)
                self._writer.write(conn, log_times[view], data)
                self.messages += 1
            self.first_ns = min(self.first_ns, log_times[view])
            self.last_ns = max(self.last_ns, log_times[view])

    def _camera_info(self, view: str, width: int, height: int) -> Any:
        """Rectified pinhole intrinsics of ``view`` (zero distortion, as nuScenes images are)."""
        fx, fy, cx, cy = CAMERAS[view].scaled(width, height)
        intrinsic = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
        return pinhole_camera_info(intrinsic, width, height, view)
