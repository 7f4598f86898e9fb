"""The nuScenes dataset (nuscenes-devkit layout) as rosbag2 recordings, one bag per scene.

The tables are read with the official ``nuscenes-devkit`` (an optional extra, imported only
here: ``pip install -e ".[nuscenes]"``), the bags written with ``rosbags`` in the typestore of
:func:`.bag.typestore`, in the newest rosbag2 format (as :mod:`.synthetic` writes). A bag holds
what the node subscribes to, under :mod:`prune2drive_ros.views`' topic names, so ``prune2drive
replay`` reads it as is:

- ``/CAM_*/image_rect_compressed`` (``sensor_msgs/msg/CompressedImage``): the JPEG file's bytes,
  never re-encoded (nuScenes images are rectified already); header stamp = the sample_data
  timestamp (µs -> ns), frame_id = the channel (the camera's optical frame); recorded (log
  time) at the stamp, as a live recorder would have received it.
- ``/CAM_*/camera_info`` (``sensor_msgs/msg/CameraInfo``), one with every image under the same
  header: ROS consumers pair an image with the info of equal stamp (image_transport's
  CameraSubscriber, message_filters), and a once-per-camera info on a volatile topic would be
  missed by whoever subscribes after it played. K and P from calibrated_sensor's
  camera_intrinsic, ``plumb_bob`` with zero D, width and height of the sample_data. It costs
  ~0.4 kB against ~150 kB of JPEG.
- ``/tf`` (``tf2_msgs/msg/TFMessage``): ``map -> base_link`` from the ego pose of every image,
  stamped as the image (nuScenes gives every sample_data its own ego pose).
- ``/tf_static``: ``base_link -> CAM_*`` from calibrated_sensor (nuScenes writes quaternions
  w x y z, ROS x y z w), once at the bag's start, offered transient-local and reliable in
  metadata.yaml's ``offered_qos_profiles`` as ``ros2 bag record`` stores a latched topic, so
  ``ros2 bag play`` latches it for late subscribers.

Every camera frame (12 Hz: ``sweeps/`` and the ``samples/`` key frames) is written by default,
what the car saw; ``key_frames_only`` writes the 2 Hz key frames alone (nuScenes' key-frame-only
downloads have no ``sweeps/``). Every image is checked to exist before any bag is written, and a
bag is written beside its final place and moved there when complete, so a failure leaves no
half bag behind and replaces nothing.

Key-frame index. ``OUT/<scene>.keyframes.json`` lies beside the bag folder ``OUT/<scene>``
(rosbag2 folders should hold only the bag's own files; ``make-bag`` keeps its questions file
beside the bag for the same reason). It is the link from a nuScenes sample token (what DriveLM
keys its questions by) to the bag's stamps::

    {"format": 1,
     "dataroot": "/abs/path/to/nuscenes",          # the files below are relative to it
     "version": "v1.0-mini",
     "scene": "scene-0061", "scene_token": "cc8c0bf5...",   # DriveLM's top-level key
     "bag": "scene-0061",                          # the bag folder, beside this file
     "key_frames_only": false,
     "samples": {                                  # every sample of the scene, in time order
       "ca9a282c...": {                            # sample token (DriveLM's key-frame key)
         "scene": "scene-0061",
         "timestamp_ns": 1532402927647951000,      # the sample's (= the lidar's) time
         "frame_stamp_ns": 1532402927647423000,    # newest of the six stamps: the stamp of
                                                   # the node's frame set of these images
         "stamps_ns": {"CAM_FRONT": 1532402927612460000, ...},   # the six, VIEWS order
         "files": {"CAM_FRONT": "samples/CAM_FRONT/n015-...__CAM_FRONT__1532402927612460.jpg",
                   ...}}}}

A question about a sample is asked at its ``frame_stamp_ns``: replay's nearest frame set is then
exactly these six key-frame images.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Writer

from ..errors import BagError, ConfigError
from ..files import move_into_place, new_folder, write_text_atomically
from ..progress import NO_PROGRESS, Bar, Progress
from ..views import VIEWS, camera_info_topic, image_topic
from .messages import header, pinhole_camera_info
from .sources import CAMERA_INFO_TYPE, IMAGE_TYPES, STORAGES, typestore

logger = logging.getLogger(__name__)

#: The tables the devkit loads, every one of which must exist.
TABLES: tuple[str, ...] = (
    "attribute",
    "calibrated_sensor",
    "category",
    "ego_pose",
    "instance",
    "log",
    "map",
    "sample",
    "sample_annotation",
    "sample_data",
    "scene",
    "sensor",
    "visibility",
)
MAP_FRAME = "map"
BASE_FRAME = "base_link"
INDEX_FORMAT = 1
TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"
TF_TYPE = "tf2_msgs/msg/TFMessage"
INSTALL_HINT = 'pip install -e ".[nuscenes]" (or pip install nuscenes-devkit)'
#: rmw's "infinite" duration, as Jazzy's ``ros2 bag record`` writes it.
_INFINITE = QosTime(sec=9_223_372_036, nsec=854_775_807)
#: What a static transform broadcaster offers (transient local, reliable), as recorded.
TF_STATIC_QOS = Qos(
    QosHistory.UNKNOWN,
    0,
    QosReliability.RELIABLE,
    QosDurability.TRANSIENT_LOCAL,
    _INFINITE,
    _INFINITE,
    QosLiveliness.AUTOMATIC,
    _INFINITE,
    avoid_ros_namespace_conventions=False,
)
_JPEG_MAGIC = b"\xff\xd8"
_SCENES_LISTED = 30  # an unknown scene's error lists at most this many available ones


@dataclass(frozen=True)
class Pose:
    """A rigid transform as nuScenes stores it: translation (m), rotation w x y z."""

    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]


@dataclass(frozen=True)
class Camera:
    """A calibrated_sensor row of a camera: where it sits on the car and its intrinsics."""

    pose: Pose
    intrinsic: tuple[tuple[float, ...], ...]  # 3 x 3


@dataclass(frozen=True)
class CameraImage:
    """One camera sample_data row, with what writing it needs."""

    channel: str
    timestamp_us: int
    filename: str  # relative to the dataset root, as nuScenes stores it
    width: int
    height: int
    camera: str  # calibrated_sensor token
    ego_pose: Pose

    @property
    def stamp_ns(self) -> int:
        """The header stamp, ns."""
        return self.timestamp_us * 1000


@dataclass(frozen=True)
class Sample:
    """A nuScenes sample (2 Hz key frame) and its six camera images, in VIEWS order."""

    token: str
    timestamp_us: int
    images: dict[str, CameraImage]


@dataclass(frozen=True)
class ScenePlan:
    """Everything one scene's bag and index are written from; no devkit needed any more."""

    name: str
    token: str
    samples: tuple[Sample, ...]
    images: tuple[CameraImage, ...]  # in recording order
    cameras: dict[str, Camera]  # by calibrated_sensor token


@dataclass(frozen=True)
class SceneBag:
    """What :func:`convert_nuscenes` wrote for one scene."""

    scene: str
    path: Path
    index_path: Path
    images: int
    samples: int
    bytes: int  # bag files on disk
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class Conversion:
    """What :func:`convert_nuscenes` wrote, and how fast it wrote it (loading and checking
    the dataset before is not counted)."""

    bags: tuple[SceneBag, ...]
    seconds: float

    @property
    def images(self) -> int:
        """Camera frames written."""
        return sum(bag.images for bag in self.bags)

    @property
    def bytes(self) -> int:
        """Bag bytes written."""
        return sum(bag.bytes for bag in self.bags)

    def speed(self) -> str:
        """Frames/s and MB/s, for people."""
        seconds = max(self.seconds, 1e-9)
        return (
            f"{self.images} frames, {self.bytes / 1e6:.1f} MB in {self.seconds:.2f} s: "
            f"{self.images / seconds:.0f} frames/s, {self.bytes / 1e6 / seconds:.1f} MB/s"
        )


def keyframe_index_path(bag_path: str | os.PathLike[str]) -> Path:
    """``<bag>.keyframes.json`` beside the bag folder ``<bag>``."""
    path = Path(bag_path)
    return path.with_name(path.name + ".keyframes.json")


def convert_nuscenes(
    dataroot: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    version: str = "v1.0-mini",
    scenes: Sequence[str] = (),
    storage: Literal["mcap", "sqlite3"] = "mcap",
    key_frames_only: bool = False,
    force: bool = False,
    progress: Progress = NO_PROGRESS,
) -> Conversion:
    """Write one bag per scene (all of ``version``'s, or those named) under ``out``.

    ``out`` must not exist unless ``force``; with it, the bags and indexes of the scenes
    converted are replaced and nothing else in ``out`` is touched. Everything is checked
    (tables, scenes, image files, what would be replaced) before the first bag is written.
    Raises :class:`BagError` for a dataset that lacks something, :class:`ConfigError` for an
    unknown scene or a missing devkit, each naming the remedy.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    root, out = Path(dataroot).absolute(), Path(out)
    _check_out(out, force)
    plans = plan_scenes(root, version, scenes, key_frames_only=key_frames_only)
    for plan in plans:
        _check_replaceable(out / plan.name)
    out.mkdir(parents=True, exist_ok=True)
    bags = []
    started = time.perf_counter()
    total = sum(len(plan.images) for plan in plans)
    with progress(total=total, desc="nuscenes2bag", unit="frame") as bar:
        for plan in plans:
            bar.set_postfix_str(plan.name)
            bag = _write_scene(root, plan, out / plan.name, storage, bar)
            _write_index(root, version, plan, bag.path, key_frames_only)
            bags.append(bag)
    return Conversion(tuple(bags), time.perf_counter() - started)


def plan_scenes(
    dataroot: Path, version: str, scenes: Sequence[str] = (), *, key_frames_only: bool = False
) -> list[ScenePlan]:
    """Load the tables with the devkit and collect the named scenes' (default: all) images,
    checking that every image file exists."""
    nusc = load_devkit(dataroot, version)
    plans = [_plan_scene(nusc, scene, key_frames_only) for scene in _select(nusc, scenes)]
    _check_files(dataroot, version, plans, key_frames_only)
    return plans


def load_devkit(dataroot: Path, version: str) -> Any:
    """``nuscenes.nuscenes.NuScenes`` over ``dataroot``, after checking what it needs (so a
    missing table is named with its remedy, not reported as a bare FileNotFoundError)."""
    try:
        from nuscenes.nuscenes import NuScenes
    except ImportError as exc:
        raise ConfigError(
            f"reading nuScenes needs the nuScenes devkit ({exc}); install it with {INSTALL_HINT}"
        ) from None
    tables = dataroot / version
    archive = "v1.0-mini.tgz" if version == "v1.0-mini" else f"{version}_meta.tgz"
    if not dataroot.is_dir():
        raise BagError(
            f"nuScenes folder {dataroot} does not exist; pass the folder that holds samples/, "
            f"sweeps/, maps/ and {version}/"
        )
    if not tables.is_dir():
        found = sorted(p.parent.name for p in dataroot.glob("*/scene.json"))
        hint = f"pass --version {' or '.join(found)}, or " if found else ""
        raise BagError(
            f"{dataroot} has no table folder {version}/ (table folders there: "
            f"{', '.join(found) or 'none'}); {hint}extract {archive} into {dataroot}"
        )
    missing = [f"{name}.json" for name in TABLES if not (tables / f"{name}.json").is_file()]
    if missing:
        raise BagError(
            f"{tables} lacks the table(s) {', '.join(missing)}; the devkit needs all "
            f"{len(TABLES)}: extract {archive} into {dataroot} again"
        )
    logger.info("loading nuScenes %s from %s", version, dataroot)
    try:
        return NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except (AssertionError, OSError, ValueError, KeyError, IndexError) as exc:
        raise BagError(
            f"the nuScenes devkit cannot load {tables}: {exc!r}; extract {archive} "
            f"(tables and maps/) into {dataroot} again"
        ) from exc


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BagError(f"{out} is a file; choose a folder for the bags")
    if out.exists() and not force:
        raise BagError(
            f"{out} exists already; pass --force to write into it (replacing the bags of the "
            "scenes converted, nothing else) or choose a new OUT"
        )


def _check_replaceable(bag: Path) -> None:
    """Refuse to replace something at a bag's or its index's place that is not a bag folder
    and an index file (a typo in OUT must not delete other data)."""
    index = keyframe_index_path(bag)
    if bag.exists() and not (bag / "metadata.yaml").is_file():
        raise BagError(
            f"{bag} exists and is not a rosbag2 folder (no metadata.yaml); not replacing it "
            "even with --force: move it away or choose another OUT"
        )
    if index.is_dir():
        raise BagError(f"{index} is a folder; move it away or choose another OUT")


def _select(nusc: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    """The scene rows called ``names`` (each once, in the order given), or all of them."""
    by_name = {scene["name"]: scene for scene in nusc.scene}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        available = sorted(by_name)
        listed = ", ".join(available[:_SCENES_LISTED])
        more = len(available) - _SCENES_LISTED
        more_text = f" and {more} more" if more > 0 else ""
        raise ConfigError(
            f"no scene {', '.join(unknown)} in nuScenes {nusc.version}; it has "
            f"{len(available)}: {listed}{more_text}"
        )
    return [by_name[name] for name in dict.fromkeys(names)] if names else list(by_name.values())


def _plan_scene(nusc: Any, scene: dict[str, Any], key_frames_only: bool) -> ScenePlan:
    samples: list[Sample] = []
    token = scene["first_sample_token"]
    while token:
        record = nusc.get("sample", token)
        absent = [view for view in VIEWS if view not in record["data"]]
        if absent:
            raise BagError(
                f"sample {token} of {scene['name']} has no {', '.join(absent)} image; the "
                "node needs all six cameras: leave the scene out (--scene)"
            )
        key_frames = {view: _image(nusc, record["data"][view]) for view in VIEWS}
        samples.append(Sample(token, record["timestamp"], key_frames))
        token = record["next"]
    if key_frames_only:
        images = [image for sample in samples for image in sample.images.values()]
    else:
        first = nusc.get("sample", scene["first_sample_token"])["data"]
        images = [_image(nusc, token) for view in VIEWS for token in _chain(nusc, first[view])]
    images.sort(key=lambda image: (image.timestamp_us, VIEWS.index(image.channel)))
    cameras = {image.camera: _camera(nusc, image.camera) for image in images}
    return ScenePlan(scene["name"], scene["token"], tuple(samples), tuple(images), cameras)


def _chain(nusc: Any, token: str) -> list[str]:
    """The sample_data tokens of the sensor and scene of ``token``, in time order: nuScenes
    links one sensor's rows through prev/next, empty at the scene's ends, and sweeps may come
    before the first key frame."""
    while prev := nusc.get("sample_data", token)["prev"]:
        token = prev
    tokens = []
    while token:
        tokens.append(token)
        token = nusc.get("sample_data", token)["next"]
    return tokens


def _image(nusc: Any, token: str) -> CameraImage:
    record = nusc.get("sample_data", token)
    pose = nusc.get("ego_pose", record["ego_pose_token"])
    return CameraImage(
        channel=record["channel"],
        timestamp_us=record["timestamp"],
        filename=record["filename"],
        width=record["width"],
        height=record["height"],
        camera=record["calibrated_sensor_token"],
        ego_pose=_pose(pose),
    )


def _camera(nusc: Any, token: str) -> Camera:
    record = nusc.get("calibrated_sensor", token)
    return Camera(_pose(record), tuple(tuple(row) for row in record["camera_intrinsic"]))


def _pose(record: dict[str, Any]) -> Pose:
    """The pose of an ego_pose or calibrated_sensor row."""
    x, y, z = record["translation"]
    w, qx, qy, qz = record["rotation"]
    return Pose((x, y, z), (w, qx, qy, qz))


def _check_files(
    dataroot: Path, version: str, plans: Iterable[ScenePlan], key_frames_only: bool
) -> None:
    """Raise one BagError naming every scene that lacks image files, with the remedy."""
    lacking: list[tuple[ScenePlan, list[str]]] = []
    complete: list[str] = []
    for plan in plans:
        missing = [im.filename for im in plan.images if not (dataroot / im.filename).is_file()]
        if missing:
            lacking.append((plan, missing))
        else:
            complete.append(plan.name)
    if not lacking:
        return
    blobs = "v1.0-mini.tgz" if version == "v1.0-mini" else f"the {version}*_blobs.tgz parts"
    remedies = [f"extract {blobs} into {dataroot}"]
    if not key_frames_only and all(
        name.startswith("sweeps/") for _, missing in lacking for name in missing
    ):
        remedies.append("pass --key-frames-only (only sweeps/ images are missing)")
    if complete:
        remedies.append(f"convert only the complete scenes ({', '.join(complete)}) with --scene")
    scenes = "; ".join(
        f"{plan.name} ({len(missing)} of {len(plan.images)}, e.g. {missing[0]})"
        for plan, missing in lacking
    )
    raise BagError(
        f"{len(lacking)} scene(s) lack image files under {dataroot}: {scenes}. "
        f"To fix: {', or '.join(remedies)}"
    )


def _write_scene(dataroot: Path, plan: ScenePlan, path: Path, storage: str, bar: Bar) -> SceneBag:
    """Write ``plan``'s bag into a new folder beside ``path``, then move it to ``path``
    (replacing the bag there), so that no half-written bag is ever left at ``path``."""
    staging = new_folder(path, "new")
    try:
        bag = staging / path.name
        with Writer(bag, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage]) as w:
            scene = _SceneWriter(w, plan)
            for image in plan.images:
                scene.write_image(image, _read_jpeg(dataroot / image.filename))
                bar.update()
        size = sum(f.stat().st_size for f in bag.iterdir())
        move_into_place(bag, path, replace=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.debug("wrote %s (%d images, %s)", path, len(plan.images), storage)
    return SceneBag(
        scene=plan.name,
        path=path,
        index_path=keyframe_index_path(path),
        images=len(plan.images),
        samples=len(plan.samples),
        bytes=size,
        start_ns=plan.images[0].stamp_ns,
        end_ns=plan.images[-1].stamp_ns,
    )


def _read_jpeg(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BagError(f"cannot read {path}: {exc.strerror}; check its permissions") from exc
    if not data.startswith(_JPEG_MAGIC):
        raise BagError(f"{path} is not a JPEG file (truncated download?); extract it again")
    return data


def _write_index(
    dataroot: Path, version: str, plan: ScenePlan, bag: Path, key_frames_only: bool
) -> None:
    """The key-frame index of the module docstring."""
    samples = {
        sample.token: {
            "scene": plan.name,
            "timestamp_ns": sample.timestamp_us * 1000,
            "frame_stamp_ns": max(image.stamp_ns for image in sample.images.values()),
            "stamps_ns": {view: image.stamp_ns for view, image in sample.images.items()},
            "files": {view: image.filename for view, image in sample.images.items()},
        }
        for sample in plan.samples
    }
    index = {
        "format": INDEX_FORMAT,
        "dataroot": str(dataroot),
        "version": version,
        "scene": plan.name,
        "scene_token": plan.token,
        "bag": bag.name,
        "key_frames_only": key_frames_only,
        "samples": samples,
    }
    write_text_atomically(keyframe_index_path(bag), json.dumps(index, indent=1) + "\n")


class _SceneWriter:
    """Serialises one scene's messages into an open rosbags Writer."""

    def __init__(self, writer: Writer, plan: ScenePlan) -> None:
        store = typestore()
        self._writer, self._store, self._types = writer, store, store.types
        self._images = {
            v: writer.add_connection(image_topic(v), IMAGE_TYPES[0], typestore=store) for v in VIEWS
        }
        self._infos = {
            v: writer.add_connection(camera_info_topic(v), CAMERA_INFO_TYPE, typestore=store)
            for v in VIEWS
        }
        self._tf = writer.add_connection(TF_TOPIC, TF_TYPE, typestore=store)
        tf_static = writer.add_connection(
            TF_STATIC_TOPIC, TF_TYPE, typestore=store, offered_qos_profiles=[TF_STATIC_QOS]
        )
        self._info_msgs: dict[tuple[str, int, int], Any] = {}
        self._cameras = plan.cameras
        first = plan.samples[0].images  # the calibration of the scene's first key frame
        start_ns = plan.images[0].stamp_ns
        static = [
            self._transform(start_ns, BASE_FRAME, view, plan.cameras[first[view].camera].pose)
            for view in VIEWS
        ]
        self._write(tf_static, start_ns, self._types[TF_TYPE](transforms=static))

    def write_image(self, image: CameraImage, jpeg: bytes) -> None:
        """The image, its CameraInfo and the ego pose at its stamp."""
        stamp, view = image.stamp_ns, image.channel
        stamped = header(stamp, view)
        msg = self._types[IMAGE_TYPES[0]](
            header=stamped,
            format="bgr8; jpeg compressed bgr8",  # a standard colour JPEG, as image_transport
            data=np.frombuffer(jpeg, np.uint8),
        )
        self._write(self._images[view], stamp, msg)
        info = dataclasses.replace(self._camera_info(image), header=stamped)
        self._write(self._infos[view], stamp, info)
        pose = self._transform(stamp, MAP_FRAME, BASE_FRAME, image.ego_pose)
        self._write(self._tf, stamp, self._types[TF_TYPE](transforms=[pose]))

    def _write(self, connection: Any, log_time_ns: int, msg: Any) -> None:
        data = self._store.serialize_cdr(msg, connection.msgtype)
        self._writer.write(connection, log_time_ns, data)

    def _transform(self, stamp_ns: int, parent: str, child: str, pose: Pose) -> Any:
        types = self._types
        w, x, y, z = pose.rotation
        tx, ty, tz = pose.translation
        return types["geometry_msgs/msg/TransformStamped"](
            header=header(stamp_ns, parent),
            child_frame_id=child,
            transform=types["geometry_msgs/msg/Transform"](
                translation=types["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
                rotation=types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
            ),
        )

    def _camera_info(self, image: CameraImage) -> Any:
        """The (cached) CameraInfo of ``image``'s camera and size, header left to the caller."""
        key = (image.camera, image.width, image.height)
        if key not in self._info_msgs:
            intrinsic = np.array(self._cameras[image.camera].intrinsic, dtype=np.float64)
            self._info_msgs[key] = pinhole_camera_info(
                intrinsic, image.width, image.height, image.channel
            )
        return self._info_msgs[key]
