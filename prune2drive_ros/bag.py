"""rosbag2 recordings (sqlite3 and mcap) read and written with ``rosbags``, no ROS needed.

Reading: :func:`open_camera_bag` validates a bag up front (missing path, no metadata.yaml,
corrupt or truncated storage, missing camera topics each give a :class:`BagError` saying what to
do) and yields the *raw deserialised* messages in recording order; it decodes no pixels, so the
one decoder in :mod:`prune2drive_ros.imaging` serves replay exactly as it serves the live node.
Frame sets come from the same :class:`~prune2drive_ros.sync.ApproximateSync` policy the node uses.

Writing: :func:`write_synthetic_bag` records what a nuScenes-to-rosbag2 converter would: six
``sensor_msgs/msg/CompressedImage`` JPEG topics at 12 Hz whose header stamps follow the nuScenes
firing sequence (the cameras fire one after another as the lidar sweeps past, ~8 ms apart, so
one frame's stamps spread over ~42 ms), a ``CameraInfo`` per image, and a questions file whose
reference answers are facts of the drawn scenes (:mod:`prune2drive_ros.scene`). Bags are written
in the newest rosbag2 format ``rosbags`` writes (version 9, as Jazzy's ``ros2 bag``); Humble's
``ros2 bag`` may need ``ros2 bag reindex`` before it plays them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore
from tqdm import tqdm

from .errors import BagError, QuestionError
from .imaging import encode_jpeg
from .questions import QAItem, write_questions
from .scene import CAMERAS, RoadScene, scene_questions
from .sync import DEFAULT_QUEUE_SIZE, DEFAULT_SLOP_S, ApproximateSync, FrameSet
from .views import VIEWS, camera_info_topic, check_view, image_topic

if TYPE_CHECKING:
    from .config import DriveVLMConfig

LOG = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Image")
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
#: Default largest distance between a question's stamp and the frame set answering it, ms.
DEFAULT_MAX_GAP_MS = 100.0
#: Spread of one frame's six stamps in synthetic bags, ms (nuScenes: ~42).
DEFAULT_JITTER_MS = 42.0
#: Trigger noise added to each synthetic stamp, +- ms.
_TRIGGER_NOISE_MS = 1.0
#: Delay between a synthetic header stamp and its recording (log) time, ms range.
_TRANSPORT_DELAY_MS = (1.0, 4.0)
_NS_PER_MS = 1_000_000

# Storage files that are not rosbag2 (Reader raises these on corrupt files besides ReaderError).
_CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    ReaderError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    OverflowError,  # an mcap record length field of garbage: seek() past any file size
    struct.error,
)
try:  # sqlite3 storage is read through apsw; its errors do not derive from the ones above
    import apsw

    _CORRUPT_ERRORS += (apsw.Error,)
except ImportError:  # pragma: no cover - apsw is a dependency of rosbags
    pass


@functools.cache
def typestore() -> Typestore:
    """The message types bags are read and written with (Jazzy's; image types are unchanged
    since Humble)."""
    return get_typestore(Stores.ROS2_JAZZY)


@dataclass(frozen=True)
class BagMessage:
    """One camera message as recorded: the raw deserialised message, not decoded."""

    view: str
    topic: str
    stamp_ns: int  # header stamp
    log_time_ns: int  # when the recorder received it
    msg: Any


class CameraBag:
    """A validated rosbag2 recording of the six cameras; use as a context manager.

    ``topics`` maps views to topics and may name only some views (the others keep their
    defaults, :func:`~prune2drive_ros.views.image_topic` with ``compressed``). ``slop_s`` and
    ``queue_size`` are the synchronizer's (the node's ``sync_slop_s`` and ``sync_queue_size``),
    so a bag's frames pair exactly as the live node would pair them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        topics: Mapping[str, str] | None = None,
        compressed: bool = True,
        *,
        slop_s: float = DEFAULT_SLOP_S,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self.path = Path(path)
        self.topics: dict[str, str] = {v: image_topic(v, compressed) for v in VIEWS}
        for view, topic in (topics or {}).items():
            self.topics[check_view(view)] = topic
        self.slop_s, self.queue_size = slop_s, queue_size
        self._reader = _open_reader(self.path)
        try:
            self._connections = self._camera_connections()
        except BagError:
            self._reader.close()
            raise
        self._view_of = {topic: view for view, topic in self.topics.items()}

    # --- metadata ----------------------------------------------------------------------------

    @property
    def start_ns(self) -> int:
        """Recording time of the first message, ns."""
        return self._reader.start_time

    @property
    def end_ns(self) -> int:
        """Recording time of the last message, ns."""
        return max(self._reader.start_time, self._reader.end_time - 1)

    @property
    def message_counts(self) -> dict[str, int]:
        """Messages per topic, all topics of the bag."""
        return {name: info.msgcount for name, info in self._reader.topics.items()}

    @property
    def msgtypes(self) -> dict[str, str | None]:
        """Message type per topic, all topics of the bag."""
        return {name: info.msgtype for name, info in self._reader.topics.items()}

    def time_range(self) -> str:
        """The recording's time range, for messages to people."""
        return f"{self.start_ns} .. {self.end_ns} ns ({(self.end_ns - self.start_ns) / 1e9:.3f} s)"

    # --- reading -----------------------------------------------------------------------------

    def messages(
        self, start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[BagMessage]:
        """Camera messages in recording order, optionally with log time in [start_ns, stop_ns)."""
        store = typestore()
        raw_messages = self._reader.messages(self._connections, start=start_ns, stop=stop_ns)
        last_good = start_ns or self.start_ns
        while True:
            try:
                item = next(raw_messages, None)
                if item is None:
                    return
                connection, log_time, raw = item
                msg: Any = store.deserialize_cdr(raw, connection.msgtype)
            except _CORRUPT_ERRORS as exc:
                raise BagError(
                    f"bag {self.path} is truncated or corrupt after {last_good} ns: "
                    f"{str(exc).rstrip('.')}; "
                    "re-record or copy it again (`ros2 bag reindex` rebuilds metadata only)"
                ) from exc
            last_good = log_time
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            yield BagMessage(
                self._view_of[connection.topic], connection.topic, stamp, log_time, msg
            )

    def frame_sets(self, sync: ApproximateSync | None = None) -> Iterator[FrameSet]:
        """Synchronized sets over the whole recording, in order (of ``sync``'s views; all six
        with the bag's slop and queue size by default)."""
        sync = sync or ApproximateSync(VIEWS, self.slop_s, self.queue_size)
        for message in self.messages():
            if message.view in sync.views:
                frame_set = sync.add(message.view, message.stamp_ns, message.msg)
                if frame_set is not None:
                    yield frame_set

    def nearest_frame_set(self, stamp_ns: int, max_gap_ns: int) -> FrameSet:
        """The complete frame set whose stamp is nearest ``stamp_ns``, at most ``max_gap_ns`` away.

        Raises :class:`QuestionError` when the stamp lies outside the recording by more than the
        gap, or no complete set lies within it (naming the views that sent nothing near the
        stamp, or saying that the slop is too tight). Only a window around the stamp is read.
        """
        if not self.start_ns - max_gap_ns <= stamp_ns <= self.end_ns + max_gap_ns:
            raise QuestionError(
                f"stamp {stamp_ns} ns lies outside bag {self.path} (recorded "
                f"{self.time_range()}) by more than {max_gap_ns / 1e6:.0f} ms; ask about a time "
                "inside the recording"
            )
        # Log times trail header stamps by the transport delay; a second of margin covers it.
        slop_ns = round(self.slop_s * 1e9)
        margin = max_gap_ns + slop_ns + 1_000_000_000
        sync = ApproximateSync(VIEWS, self.slop_s, self.queue_size)
        best: FrameSet | None = None
        heard: set[str] = set()  # views with a message stamped near enough to join a set
        for message in self.messages(stamp_ns - margin, stamp_ns + margin):
            if abs(message.stamp_ns - stamp_ns) <= max_gap_ns + slop_ns:
                heard.add(message.view)
            frame_set = sync.add(message.view, message.stamp_ns, message.msg)
            if frame_set is not None and (
                best is None or abs(frame_set.stamp_ns - stamp_ns) < abs(best.stamp_ns - stamp_ns)
            ):
                best = frame_set
        if best is None or abs(best.stamp_ns - stamp_ns) > max_gap_ns:
            nearest = "none" if best is None else f"the nearest is at {best.stamp_ns} ns"
            silent = [f"{view} ({self.topics[view]})" for view in VIEWS if view not in heard]
            why = (
                f"no message from {', '.join(silent)} near it: pick another stamp"
                if silent
                else f"all six views sent images near it, but their stamps spread more than "
                f"the sync slop of {self.slop_s * 1e3:g} ms: raise the slop (--sync-slop, "
                "the node's sync_slop_s)"
            )
            raise QuestionError(
                f"no complete six-view frame set within {max_gap_ns / 1e6:g} ms of stamp "
                f"{stamp_ns} ns in bag {self.path} ({nearest}): {why}"
            )
        return best

    # --- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the storage files (idempotent)."""
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> CameraBag:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _camera_connections(self) -> list[Any]:
        """The connections of the camera topics; BagError naming what is missing and the fix."""
        present = self._reader.topics
        images = [
            f"{n} ({i.msgtype})" for n, i in sorted(present.items()) if i.msgtype in IMAGE_TYPES
        ]
        for view, topic in self.topics.items():
            info = present.get(topic)
            if info is None:
                raise BagError(
                    f"bag {self.path} has no topic {topic} for {view}; image topics in the bag: "
                    f"{', '.join(images) or 'none'}. Remap the view to one of them (topics="
                    f"{{'{view}': '/your/topic'}}, or `--topic {view}:=/your/topic` on the CLI)"
                )
            if info.msgtype not in IMAGE_TYPES:
                raise BagError(
                    f"bag {self.path}: topic {topic} for {view} carries {info.msgtype}, not "
                    f"{' or '.join(IMAGE_TYPES)}; image topics in the bag: "
                    f"{', '.join(images) or 'none'}"
                )
        wanted = set(self.topics.values())
        return [c for c in self._reader.connections if c.topic in wanted]


def open_camera_bag(
    path: str | os.PathLike[str],
    topics: Mapping[str, str] | None = None,
    compressed: bool = True,
    *,
    slop_s: float = DEFAULT_SLOP_S,
    queue_size: int = DEFAULT_QUEUE_SIZE,
) -> CameraBag:
    """Open and validate a camera bag (a rosbag2 folder, or a single .mcap/.db3 file)."""
    return CameraBag(path, topics, compressed, slop_s=slop_s, queue_size=queue_size)


def open_config_bag(path: str | os.PathLike[str], config: DriveVLMConfig) -> CameraBag:
    """The bag at ``path`` read with ``config``'s topics and synchronizer settings: replay,
    viz and tuning pair a bag's frames exactly as the node configured so would."""
    return open_camera_bag(
        path,
        config.resolved_image_topics(),
        config.use_compressed,
        slop_s=config.sync_slop_s,
        queue_size=config.sync_queue_size,
    )


def _open_reader(path: Path) -> Reader:
    if not path.exists():
        raise BagError(
            f"bag {path} does not exist; record one with `ros2 bag record` or write a synthetic "
            f"one with `prune2drive make-bag {path}`"
        )
    try:
        reader = Reader(path)
    except FileNotFoundError:
        raise BagError(
            f"{path} is not a rosbag2 folder: metadata.yaml is missing. If only that file was "
            "lost, `ros2 bag reindex` rebuilds it; or pass the .mcap/.db3 file itself"
        ) from None
    except ReaderError as exc:
        raise BagError(
            f"{path} is not a rosbag2 bag ({exc}); pass a bag folder or a .mcap/.db3 file"
        ) from None
    try:
        reader.open()
    except _CORRUPT_ERRORS as exc:
        raise BagError(
            f"bag {path} cannot be read, it is truncated or corrupt: {str(exc).rstrip('.')}. "
            "Re-record or copy it again; `ros2 bag reindex` helps only when metadata.yaml is stale"
        ) from exc
    return reader


# --- synthetic bags --------------------------------------------------------------------------


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
    progress: bool = True,
) -> SyntheticBag:
    """Write a nuScenes-like six-camera bag to the new folder ``out`` and its questions file.

    Deterministic from ``seed``. ``questions_path`` defaults to :func:`default_questions_path`
    (its folder is created when missing). The bag folder is removed again if writing the bag or
    the questions fails.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be one of {', '.join(plugins)}, got {storage!r}")
    out = Path(out)
    if out.exists():
        raise BagError(f"{out} exists already; choose a new path or remove it first")
    questions_out = Path(questions_path) if questions_path else default_questions_path(out)
    stamps = frame_stamps(frames, seed=seed, rate_hz=rate_hz, jitter_ms=jitter_ms)
    scene = RoadScene(seed, width, height)
    items: list[QAItem] = []
    try:
        questions_out.parent.mkdir(parents=True, exist_ok=True)
        with Writer(out, version=Writer.VERSION_LATEST, storage_plugin=plugins[storage]) as writer:
            bag = _SyntheticWriter(writer, seed, width, height, quality)
            for k in tqdm(
                range(frames),
                desc=f"writing {out.name}",
                unit="frame",
                disable=None if progress else True,
            ):
                bag.write_frame(scene.render(k), stamps[k])
                items += [
                    QAItem(max(stamps[k].values()), t.question, t.answer)
                    for t in scene_questions(scene.facts(k), k)
                ]
        count = write_questions(questions_out, items)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    LOG.debug(
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
        info_type = "sensor_msgs/msg/CameraInfo"
        self._info_conn = {
            v: writer.add_connection(camera_info_topic(v), info_type, typestore=store)
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
            header = self._header(stamps[view], view)
            jpeg = np.frombuffer(encode_jpeg(images[view], self._quality), np.uint8)
            image = self._types[IMAGE_TYPES[0]](
                header=header, format="rgb8; jpeg compressed bgr8", data=jpeg
            )
            info = dataclasses.replace(self._infos[view], header=header)
            for conn, msg in ((self._image_conn[view], image), (self._info_conn[view], info)):
                data = self._store.serialize_cdr(msg, conn.msgtype)
                self._writer.write(conn, log_times[view], data)
                self.messages += 1
            self.first_ns = min(self.first_ns, log_times[view])
            self.last_ns = max(self.last_ns, log_times[view])

    def _header(self, stamp_ns: int, frame_id: str) -> Any:
        sec, nanosec = divmod(stamp_ns, 1_000_000_000)
        time = self._types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
        return self._types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def _camera_info(self, view: str, width: int, height: int) -> Any:
        """Rectified pinhole intrinsics of ``view`` (zero distortion, as nuScenes images are)."""
        fx, fy, cx, cy = CAMERAS[view].scaled(width, height)
        roi = self._types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        return self._types["sensor_msgs/msg/CameraInfo"](
            header=self._header(0, view),
            height=height,
            width=width,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], dtype=np.float64),
            r=np.eye(3).reshape(-1),
            p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], dtype=np.float64),
            binning_x=0,
            binning_y=0,
            roi=roi,
        )
