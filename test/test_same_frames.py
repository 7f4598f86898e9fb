"""The same key frames everywhere: for every nuScenes key frame, the six JPEGs the engine gets
from the dataset folder, the bag nuscenes2bag writes, a Foxglove MCAP and a ROS 1 bag (written
as foxglove's nuscenes2mcap and nuscenes2bag write them: key frames logged at the lidar's time)
are byte-identical, with the same stamps."""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nuscenes", reason="needs nuscenes-devkit: make install")

from bag_fixtures import Image, write_foxglove_mcap, write_ros1_bag
from nuscenes_fixture import FixtureScene, NuScenesFixture, write_nuscenes

from prune2drive_ros.sensors.bag import open_camera_bag
from prune2drive_ros.sensors.nuscenes import convert_nuscenes, keyframe_index_path
from prune2drive_ros.views import VIEWS


def as_recorded(dataset: NuScenesFixture, scene: FixtureScene) -> list[Image]:
    """The scene's camera images as the Foxglove converters log them: key-frame images at
    their sample's (the lidar's) time, ~35 ms after their own stamps; sweeps at their own."""
    samples = sorted(timestamp * 1000 for _, timestamp in scene.samples)
    images = []
    for k, row in enumerate(scene.images):
        stamp = row.timestamp_us * 1000
        log_time = samples[bisect.bisect_left(samples, stamp)] if row.key_frame else stamp
        jpeg = (dataset.root / row.filename).read_bytes()
        images.append(Image(row.channel, k, stamp, log_time, jpeg, np.zeros((1, 1, 3), np.uint8)))
    return sorted(images, key=lambda image: (image.log_time_ns, image.view))


def test_every_key_frame_is_the_same_six_jpegs_in_every_format(tmp_path: Path) -> None:
    dataset = write_nuscenes(tmp_path / "nuscenes")
    scene = dataset.scenes[0]
    convert_nuscenes(dataset.root, tmp_path / "bags", scenes=[scene.name])
    converted = tmp_path / "bags" / scene.name
    recorded = as_recorded(dataset, scene)
    recordings = {
        "nuscenes2bag": converted,
        "foxglove mcap": write_foxglove_mcap(tmp_path / "scene.mcap", recorded, lower_case=True),
        "ros 1 bag": write_ros1_bag(tmp_path / "scene.bag", recorded),
    }
    index = json.loads(keyframe_index_path(converted).read_text())
    assert len(index["samples"]) == len(scene.samples)
    for name, path in recordings.items():
        with open_camera_bag(path) as bag:
            for sample, key_frame in index["samples"].items():
                frames = bag.nearest_frame_set(key_frame["frame_stamp_ns"], max_gap_ns=0)
                assert dict(frames.stamps) == key_frame["stamps_ns"], (name, sample)
                for view in VIEWS:
                    jpeg = (dataset.root / key_frame["files"][view]).read_bytes()
                    assert bytes(frames.messages[view].data) == jpeg, (name, sample, view)
