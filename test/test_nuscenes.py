"""nuScenes -> rosbag2 (``prune2drive nuscenes2bag``) on a tiny dataset the real devkit loads."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nuscenes_fixture import SCENE_NAMES, FixtureScene, NuScenesFixture, Pose, write_nuscenes
from rosbags.interfaces import QosDurability
from rosbags.rosbag2 import Reader

from prune2drive_ros.commands import nuscenes2bag
from prune2drive_ros.errors import BagError, ConfigError
from prune2drive_ros.sensors.bag import open_camera_bag, typestore
from prune2drive_ros.sensors.nuscenes import keyframe_index_path
from prune2drive_ros.views import VIEWS, camera_info_topic

needs_devkit = pytest.mark.skipif(
    importlib.util.find_spec("nuscenes") is None,
    reason='needs the nuScenes devkit: pip install -e ".[nuscenes]"',
)


def convert(*argv: object) -> int:
    """``prune2drive nuscenes2bag ARGV`` without the progress bar."""
    parser = argparse.ArgumentParser()
    nuscenes2bag.add_arguments(parser)
    return nuscenes2bag.run(parser.parse_args([*map(str, argv), "--no-progress"]))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> NuScenesFixture:
    """Two scenes of three samples (18 camera frames of 64 x 36 each); read-only."""
    return write_nuscenes(tmp_path_factory.mktemp("nuscenes") / "nuscenes")


@pytest.fixture(scope="module")
def converted(dataset: NuScenesFixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every scene of :func:`dataset` converted with the defaults (mcap, all frames)."""
    out = tmp_path_factory.mktemp("converted") / "bags"
    assert convert(dataset.root, out) == 0
    return out


@pytest.fixture
def damaged(dataset: NuScenesFixture, tmp_path: Path) -> Path:
    """A copy of the dataset that a test may break."""
    return Path(shutil.copytree(dataset.root, tmp_path / "nuscenes"))


def _messages(bag: Path, topic: str) -> list[tuple[int, Any]]:
    """(log time, message) of ``topic``, in recording order."""
    store = typestore()
    with Reader(bag) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [
            (t, store.deserialize_cdr(raw, c.msgtype))
            for c, t, raw in reader.messages(connections=connections)
        ]


def _stamp(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _assert_transform(transform: Any, pose: Pose) -> None:
    """``transform`` (ROS x y z w) is the nuScenes ``pose`` (w x y z)."""
    t, q = transform.transform.translation, transform.transform.rotation
    np.testing.assert_allclose([t.x, t.y, t.z], pose.translation)
    np.testing.assert_allclose([q.w, q.x, q.y, q.z], pose.rotation)


@needs_devkit
def test_the_devkit_loads_the_fixture(dataset: NuScenesFixture) -> None:
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version=dataset.version, dataroot=str(dataset.root), verbose=False)
    assert [s["name"] for s in nusc.scene] == list(SCENE_NAMES)
    sample = nusc.get("sample", dataset.scenes[0].samples[0][0])
    assert set(VIEWS) < set(sample["data"])
    front = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    assert sample["timestamp"] - front["timestamp"] == 35_491  # CAM_FRONT fires ~35 ms earlier
    assert Path(nusc.get_sample_data_path(front["token"])).is_file()


@needs_devkit
def test_every_frame_is_copied_byte_for_byte(dataset: NuScenesFixture, converted: Path) -> None:
    assert sorted(p.name for p in converted.iterdir()) == sorted(
        [*SCENE_NAMES, *(f"{name}.keyframes.json" for name in SCENE_NAMES)]
    )
    for scene in dataset.scenes:
        frames = [scene.images[i : i + 6] for i in range(0, len(scene.images), 6)]
        with open_camera_bag(converted / scene.name) as bag:
            for message in bag.messages():
                assert message.log_time_ns == message.stamp_ns
                assert message.msg.header.frame_id == message.view
            sets = list(bag.frame_sets())
        assert len(sets) == len(frames) == 18  # 2 sweeps, 3 key frames 6 apart, 3 sweeps
        for frame_set, images in zip(sets, frames, strict=True):
            for image in images:
                msg = frame_set.messages[image.channel]
                assert frame_set.stamps[image.channel] == image.timestamp_us * 1000
                assert bytes(msg.data) == (dataset.root / image.filename).read_bytes()


@needs_devkit
def test_the_key_frame_index_lists_every_sample(dataset: NuScenesFixture, converted: Path) -> None:
    for scene in dataset.scenes:
        index = json.loads(keyframe_index_path(converted / scene.name).read_text())
        assert (index["scene"], index["scene_token"], index["bag"]) == (
            scene.name,
            scene.token,
            scene.name,
        )
        assert Path(index["dataroot"]) == dataset.root
        assert list(index["samples"]) == [token for token, _ in scene.samples]
        key_frames = [image for image in scene.images if image.key_frame]
        with open_camera_bag(converted / scene.name) as bag:
            set_stamps = {s.stamp_ns for s in bag.frame_sets()}
        for k, (token, timestamp_us) in enumerate(scene.samples):
            entry = index["samples"][token]
            images = {im.channel: im for im in key_frames[6 * k : 6 * k + 6]}
            assert entry["scene"] == scene.name
            assert entry["timestamp_ns"] == timestamp_us * 1000
            assert entry["stamps_ns"] == {v: images[v].timestamp_us * 1000 for v in VIEWS}
            assert entry["files"] == {v: images[v].filename for v in VIEWS}
            assert entry["frame_stamp_ns"] == max(entry["stamps_ns"].values())
            assert entry["frame_stamp_ns"] in set_stamps  # replay finds exactly this set


@needs_devkit
def test_camera_info_and_tf_carry_the_calibration_and_ego_pose(
    dataset: NuScenesFixture, converted: Path
) -> None:
    scene: FixtureScene = dataset.scenes[1]
    bag = converted / scene.name
    for view in VIEWS:
        images = [im for im in scene.images if im.channel == view]
        infos = _messages(bag, camera_info_topic(view))
        assert [_stamp(m) for _, m in infos] == [im.timestamp_us * 1000 for im in images]
        info = infos[0][1]
        k = np.array(scene.intrinsics[view])
        np.testing.assert_allclose(info.k, k.reshape(-1))
        np.testing.assert_allclose(info.p, np.hstack([k, np.zeros((3, 1))]).reshape(-1))
        assert (info.width, info.height, info.distortion_model) == (64, 36, "plumb_bob")
        assert info.header.frame_id == view and not info.d.any()

    ((log_time, static),) = _messages(bag, "/tf_static")
    assert log_time == scene.images[0].timestamp_us * 1000
    assert [(t.header.frame_id, t.child_frame_id) for t in static.transforms] == [
        ("base_link", view) for view in VIEWS
    ]
    for transform in static.transforms:
        _assert_transform(transform, scene.cameras[transform.child_frame_id])
    with Reader(bag) as reader:
        (connection,) = reader.topics["/tf_static"].connections
    (qos,) = connection.ext.offered_qos_profiles
    assert qos.durability == QosDurability.TRANSIENT_LOCAL

    poses = _messages(bag, "/tf")
    assert len(poses) == len(scene.images)
    for (log_time, tf), image in zip(poses, scene.images, strict=True):
        (transform,) = tf.transforms
        assert log_time == _stamp(transform) == image.timestamp_us * 1000
        assert (transform.header.frame_id, transform.child_frame_id) == ("map", "base_link")
        _assert_transform(transform, image.ego_pose)


@needs_devkit
def test_one_scene_key_frames_only_sqlite3(
    dataset: NuScenesFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scene = dataset.scene("scene-0103")
    out = tmp_path / "out"
    convert(dataset.root, out, "--scene", scene.name, "--key-frames-only", "--storage", "sqlite3")
    assert sorted(p.name for p in out.iterdir()) == [scene.name, f"{scene.name}.keyframes.json"]
    assert (out / scene.name / f"{scene.name}.db3").is_file()
    key_frames = [im.timestamp_us * 1000 for im in scene.images if im.key_frame]
    with open_camera_bag(out / scene.name) as bag:
        stamps = sorted(m.stamp_ns for m in bag.messages())
    assert stamps == key_frames
    index = json.loads(keyframe_index_path(out / scene.name).read_text())
    assert index["key_frames_only"] and len(index["samples"]) == 3
    printed = capsys.readouterr().out
    assert "18 frames, 3 key frames" in printed
    assert "frames/s" in printed and "MB/s" in printed


@needs_devkit
def test_an_unknown_scene_lists_the_available_ones(
    dataset: NuScenesFixture, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"no scene scene-9999 .* has 2: scene-0061, scene-0103"):
        convert(dataset.root, tmp_path / "out", "--scene", "scene-9999")
    assert not (tmp_path / "out").exists()


@needs_devkit
def test_an_existing_out_needs_force_which_replaces_only_the_scenes_converted(
    dataset: NuScenesFixture, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(BagError, match="exists already; pass --force"):
        convert(dataset.root, out, "--scene", "scene-0061")
    convert(dataset.root, out, "--scene", "scene-0061", "--force", "--key-frames-only")
    convert(dataset.root, out, "--scene", "scene-0061", "--force")  # replaces the bag
    assert (out / "notes.txt").read_text() == "keep me"
    with open_camera_bag(out / "scene-0061") as bag:
        assert sum(bag.message_counts.values()) == 3 * 108 + 1
    (out / "scene-0103").mkdir()  # not a bag: never replaced
    with pytest.raises(BagError, match="scene-0103 exists and is not a rosbag2 folder"):
        convert(dataset.root, out, "--force")
    assert not list(out.glob(".scene-*"))  # no staging folder left behind


@needs_devkit
def test_a_missing_table_is_named_with_its_remedy(damaged: Path, tmp_path: Path) -> None:
    (damaged / "v1.0-mini" / "visibility.json").unlink()
    with pytest.raises(BagError, match=r"lacks the table\(s\) visibility.json.*extract v1.0-mini"):
        convert(damaged, tmp_path / "out")
    with pytest.raises(BagError, match=r"no table folder v1.0-trainval/.*--version v1.0-mini"):
        convert(damaged, tmp_path / "out", "--version", "v1.0-trainval")
    assert not (tmp_path / "out").exists()


@needs_devkit
def test_a_missing_image_is_named_before_anything_is_written(
    dataset: NuScenesFixture, damaged: Path, tmp_path: Path
) -> None:
    sweep = next(im for im in dataset.scene("scene-0103").images if not im.key_frame)
    (damaged / sweep.filename).unlink()
    with pytest.raises(BagError) as error:
        convert(damaged, tmp_path / "out")
    message = str(error.value)
    assert f"scene-0103 (1 of 108, e.g. {sweep.filename})" in message
    assert "--key-frames-only" in message and "complete scenes (scene-0061)" in message
    assert not (tmp_path / "out").exists()
    convert(damaged, tmp_path / "out", "--key-frames-only")  # the key frames are all there


def test_a_missing_devkit_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("nuscenes", "nuscenes.nuscenes"):  # importing them raises ImportError
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[nuscenes\]"'):
        convert(tmp_path, tmp_path / "out")


@needs_devkit
def test_a_corrupt_image_leaves_no_half_bag(
    dataset: NuScenesFixture, damaged: Path, tmp_path: Path
) -> None:
    image = dataset.scene("scene-0103").images[40]
    (damaged / image.filename).write_bytes(b"<html>403 Forbidden</html>")
    out = tmp_path / "out"
    with pytest.raises(BagError, match=re.escape(f"{image.filename} is not a JPEG file")):
        convert(damaged, out)
    assert sorted(p.name for p in out.iterdir()) == ["scene-0061", "scene-0061.keyframes.json"]
