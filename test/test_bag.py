"""rosbag2 round trips in both storages, validation messages, question look-up, synthetic scenes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from prune2drive_ros.errors import BagError, QuestionError
from prune2drive_ros.sensors.bag import open_camera_bag
from prune2drive_ros.sensors.imaging import decode_image
from prune2drive_ros.sensors.questions import read_questions
from prune2drive_ros.sensors.scene import RoadScene, scene_questions
from prune2drive_ros.sensors.synthetic import (
    FIRING_ORDER,
    SyntheticBag,
    default_questions_path,
    frame_stamps,
    write_synthetic_bag,
)
from prune2drive_ros.views import VIEWS, camera_info_topic, image_topic

STORAGES = ("mcap", "sqlite3")
STORAGE_SUFFIX = {"mcap": ".mcap", "sqlite3": ".db3"}


@pytest.mark.parametrize("storage", STORAGES)
def test_round_trip_counts_topics_and_stamps(synthetic_bags, storage):
    info: SyntheticBag = synthetic_bags[storage]
    frames = info.frames
    assert info.messages == 2 * len(VIEWS) * frames
    expected = frame_stamps(frames, seed=3)
    with open_camera_bag(info.path) as bag:
        assert bag.message_counts == {
            **{image_topic(v): frames for v in VIEWS},
            **{camera_info_topic(v): frames for v in VIEWS},
        }
        assert bag.msgtypes[image_topic("CAM_BACK")] == "sensor_msgs/msg/CompressedImage"
        assert (bag.start_ns, bag.end_ns) == (info.start_ns, info.end_ns)
        messages = list(bag.messages())
        assert len(messages) == len(VIEWS) * frames
        log_times = [m.log_time_ns for m in messages]
        assert log_times == sorted(log_times)
        recorded = {(m.view, m.stamp_ns) for m in messages}
        assert recorded == {(v, f[v]) for f in expected for v in VIEWS}
        first = messages[0]
        assert first.msg.header.frame_id == first.view
        assert first.log_time_ns > first.stamp_ns  # recorded after it was stamped
        assert decode_image(first.msg, topic=first.topic).shape == (180, 320, 3)
        sets = list(bag.frame_sets())
    assert [s.stamps for s in sets] == expected


def test_storages_hold_the_same_messages(synthetic_bags):
    payloads = {}
    for storage in STORAGES:
        with open_camera_bag(synthetic_bags[storage].path) as bag:
            payloads[storage] = [
                (m.topic, m.stamp_ns, m.msg.data.tobytes()) for m in bag.messages()
            ]
    assert payloads["mcap"] == payloads["sqlite3"]


def test_frame_sets_of_some_views(small_bag):
    from prune2drive_ros.sensors.sync import ApproximateSync

    with open_camera_bag(small_bag.path) as bag:
        sets = list(bag.frame_sets(ApproximateSync(("CAM_FRONT", "CAM_BACK"))))
    assert len(sets) == small_bag.frames
    assert all(s.views == ("CAM_FRONT", "CAM_BACK") for s in sets)


def test_single_storage_file_opens_too(small_bag):
    with open_camera_bag(small_bag.path / f"{small_bag.path.name}.mcap") as bag:
        assert sum(1 for _ in bag.frame_sets()) == small_bag.frames


def test_camera_info_is_nuscenes_like(small_bag):
    from rosbags.rosbag2 import Reader

    from prune2drive_ros.sensors.bag import typestore

    with Reader(small_bag.path) as reader:
        conn = next(c for c in reader.connections if c.topic == camera_info_topic("CAM_BACK"))
        _, _, raw = next(reader.messages([conn]))
    info = typestore().deserialize_cdr(raw, conn.msgtype)
    assert (info.width, info.height, info.header.frame_id) == (320, 180, "CAM_BACK")
    fx = info.k[0]
    assert fx == pytest.approx(809.2 * 320 / 1600)  # the wide back camera
    assert info.p[:3].tolist() == [fx, 0.0, info.k[2]]


def test_synthetic_bag_is_deterministic(tmp_path, small_bag):
    again = write_synthetic_bag(tmp_path / "again", frames=2, seed=3, width=320, height=180)
    with open_camera_bag(again.path) as a, open_camera_bag(small_bag.path) as b:
        first = [m.msg.data.tobytes() for m in a.messages()]
        second = [m.msg.data.tobytes() for m, _ in zip(b.messages(), first, strict=False)]
    assert first == second


def test_questions_file_matches_frames_and_scene(small_bag):
    assert small_bag.questions_path == default_questions_path(small_bag.path)
    assert small_bag.questions_path.parent == small_bag.path.parent
    items = read_questions(small_bag.questions_path)
    assert len(items) == small_bag.questions == 3 * small_bag.frames
    scene = RoadScene(3, 320, 180)
    with open_camera_bag(small_bag.path) as bag:
        sets = list(bag.frame_sets())
        for k, frame_set in enumerate(sets):
            frame_items = [i for i in items if i.stamp_ns == frame_set.stamp_ns]
            expected = scene_questions(scene.facts(k), k, seed=3)
            assert [(i.question, i.answer, i.kind) for i in frame_items] == [
                (t.question, t.answer, t.kind) for t in expected
            ]
            assert bag.nearest_frame_set(frame_items[0].stamp_ns, 10_000_000).stamps == (
                frame_set.stamps
            )


def test_nearest_frame_set_and_question_outside_recording(small_bag):
    with open_camera_bag(small_bag.path) as bag:
        sets = list(bag.frame_sets())
        between = (sets[2].stamp_ns + sets[3].stamp_ns) // 2 - 5_000_000
        assert bag.nearest_frame_set(between, 100_000_000).stamps == sets[2].stamps
        with pytest.raises(QuestionError, match=r"no complete six-view frame set within 10 ms"):
            bag.nearest_frame_set(between, 10_000_000)
        with pytest.raises(QuestionError, match=r"outside bag .* \(recorded \d+ \.\. \d+ ns"):
            bag.nearest_frame_set(bag.end_ns + 2_000_000_000, 500_000_000)
        with pytest.raises(QuestionError, match="outside bag"):
            bag.nearest_frame_set(0, 500_000_000)


def test_scenes_are_deterministic_move_and_vary():
    scene = RoadScene(5, 320, 180)
    first, second = scene.render(0), scene.render(1)
    assert all(img.shape == (180, 320, 3) and img.dtype == np.uint8 for img in first.values())
    assert not np.array_equal(first["CAM_FRONT"], second["CAM_FRONT"])  # the road moves
    again = RoadScene(5, 320, 180)
    assert all(np.array_equal(first[v], again.render(0)[v]) for v in VIEWS)
    assert scene.facts(0) == again.facts(0)
    segments = [scene.facts(k * scene.segment_frames) for k in range(8)]
    assert len({f.ego_lane for f in segments}) > 1
    assert len({tuple(f.views.values()) for f in segments}) > 1
    assert set(FIRING_ORDER) == set(VIEWS)


# --- validation --------------------------------------------------------------------------------


def test_missing_bag(tmp_path):
    with pytest.raises(BagError, match=r"does not exist; .*prune2drive make-bag"):
        open_camera_bag(tmp_path / "nope")


def test_not_a_bag(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match=r"not a rosbag2 bag .*pass a bag folder or a \.mcap/\.db3"):
        open_camera_bag(tmp_path / "notes.txt")
    with pytest.raises(BagError, match=r"not a rosbag2 folder: metadata\.yaml is missing"):
        open_camera_bag(tmp_path)


def damaged_copy(info: SyntheticBag, tmp_path: Path) -> tuple[Path, Path]:
    copy = tmp_path / info.path.name
    shutil.copytree(info.path, copy)
    return copy, copy / f"{info.path.name}{STORAGE_SUFFIX[info.storage]}"


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("damage", ["truncate", "overwrite", "delete"])
def test_damaged_storage_is_a_bag_error(synthetic_bags, tmp_path, storage, damage):
    bag_dir, storage_file = damaged_copy(synthetic_bags[storage], tmp_path)
    if damage == "truncate":
        os.truncate(storage_file, storage_file.stat().st_size // 2)
    elif damage == "overwrite":
        with storage_file.open("r+b") as out:
            out.write(b"\0" * 4096)
    else:
        storage_file.unlink()
    with pytest.raises(
        BagError, match=rf"bag {bag_dir} cannot be read, it is truncated or corrupt"
    ):
        open_camera_bag(bag_dir)


def test_garbage_record_length_inside_an_mcap_chunk_is_a_bag_error(small_bag, tmp_path):
    """A message record whose length field is garbage (seen as an OverflowError in rosbags)."""
    import struct

    bag_dir, storage_file = damaged_copy(small_bag, tmp_path)
    data = bytearray(storage_file.read_bytes())
    chunk = 8 + 9 + struct.unpack_from("<Q", data, 9)[0]  # magic, then the header record
    assert data[chunk] == 6  # mcap's Chunk record: times, size, crc, compression, records
    struct.pack_into("<I", data, chunk + 9 + 24, 0)  # crc 0: "not checked"
    compression = struct.unpack_from("<I", data, chunk + 9 + 28)[0]
    assert compression == 0  # rosbags writes uncompressed chunks: records are plain here
    records = chunk + 9 + 32 + 8
    end = records + struct.unpack_from("<Q", data, records - 8)[0]
    offsets, at = [], records
    while at < end:
        if data[at] == 5:  # a Message record
            offsets.append(at)
        at += 9 + struct.unpack_from("<Q", data, at + 1)[0]
    middle = offsets[len(offsets) // 2]
    data[middle + 1 : middle + 9] = b"\xff" * 8
    storage_file.write_bytes(data)
    with open_camera_bag(bag_dir) as bag, pytest.raises(BagError, match="truncated or corrupt"):
        list(bag.messages())


def test_missing_metadata_is_a_bag_error(small_bag, tmp_path):
    bag_dir, _ = damaged_copy(small_bag, tmp_path)
    (bag_dir / "metadata.yaml").unlink()
    with pytest.raises(BagError, match=r"metadata\.yaml is missing.*ros2 bag reindex"):
        open_camera_bag(bag_dir)


def test_missing_topic_lists_image_topics_and_how_to_remap(small_bag):
    with pytest.raises(BagError) as caught:
        open_camera_bag(small_bag.path, topics={"CAM_FRONT": "/cam/front/compressed"})
    message = str(caught.value)
    assert "has no topic /cam/front/compressed for CAM_FRONT" in message
    assert "/CAM_BACK/image_rect_compressed (sensor_msgs/msg/CompressedImage)" in message
    assert "/CAM_BACK/camera_info" not in message
    assert "--topic CAM_FRONT:=/your/topic" in message
    with pytest.raises(BagError, match=r"has no topic /CAM_FRONT/image_rect for CAM_FRONT"):
        open_camera_bag(small_bag.path, compressed=False)


def _copy_without(source: Path, target: Path, view: str, from_ns: int) -> None:
    """A copy of bag ``source`` in which camera ``view`` fell silent at log time ``from_ns``."""
    from rosbags.rosbag2 import Reader, Writer

    from prune2drive_ros.sensors.bag import typestore

    with Reader(source) as reader, Writer(target, version=Writer.VERSION_LATEST) as writer:
        connections = {
            c.id: writer.add_connection(c.topic, c.msgtype, typestore=typestore())
            for c in reader.connections
        }
        for connection, log_time, raw in reader.messages():
            if connection.topic != image_topic(view) or log_time < from_ns:
                writer.write(connections[connection.id], log_time, raw)


def test_no_frame_set_names_the_silent_camera(small_bag, tmp_path):
    with open_camera_bag(small_bag.path) as bag:
        sets = list(bag.frame_sets())
    _copy_without(small_bag.path, tmp_path / "partial", "CAM_BACK", sets[4].stamp_ns - 50_000_000)
    with open_camera_bag(tmp_path / "partial") as bag:
        assert bag.nearest_frame_set(sets[2].stamp_ns, 10_000_000).stamps == sets[2].stamps
        with pytest.raises(
            QuestionError, match=r"no message from CAM_BACK \(/CAM_BACK/image_rect_compressed\)"
        ):
            bag.nearest_frame_set(sets[5].stamp_ns, 10_000_000)


def test_no_frame_set_because_of_a_tight_slop_says_so(tmp_path):
    info = write_synthetic_bag(tmp_path / "wide", frames=3, width=64, height=36, jitter_ms=70.0)
    stamp = read_questions(info.questions_path)[3].stamp_ns
    with (
        open_camera_bag(info.path) as bag,
        pytest.raises(
            QuestionError, match=r"spread more than the sync slop of 60 ms: raise the slop"
        ),
    ):
        bag.nearest_frame_set(stamp, 10_000_000)
    with open_camera_bag(info.path, slop_s=0.08) as bag:
        assert bag.nearest_frame_set(stamp, 10_000_000).spread_ns > 60_000_000


def test_non_image_topic_is_refused(small_bag):
    with pytest.raises(BagError, match=r"carries sensor_msgs/msg/CameraInfo, not"):
        open_camera_bag(small_bag.path, topics={"CAM_FRONT": camera_info_topic("CAM_FRONT")})


def test_writer_refuses_to_overwrite_and_cleans_up_on_failure(tmp_path, small_bag):
    with pytest.raises(BagError, match="exists already"):
        write_synthetic_bag(small_bag.path, frames=1)
    with pytest.raises(ValueError, match="jitter_ms"):
        write_synthetic_bag(tmp_path / "bad", frames=1, jitter_ms=200.0)
    assert not (tmp_path / "bad").exists()


def test_raw_image_topics_are_read_too(tmp_path):
    """A bag of raw sensor_msgs/Image on the default raw topics replays through the same path."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from prune2drive_ros.sensors.bag import typestore

    store = typestore()
    types = store.types
    path = tmp_path / "raw"
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        for i, view in enumerate(VIEWS):
            conn = writer.add_connection(
                image_topic(view, False), "sensor_msgs/msg/Image", typestore=store
            )
            stamp = 10**9 + i * 5_000_000
            header = types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=i * 5_000_000),
                frame_id=view,
            )
            msg = types["sensor_msgs/msg/Image"](
                header=header,
                height=4,
                width=6,
                encoding="rgb8",
                is_bigendian=0,
                step=18,
                data=rgb.reshape(-1),
            )
            writer.write(conn, stamp, store.serialize_cdr(msg, conn.msgtype))
    with open_camera_bag(path, compressed=False) as bag:
        (frame_set,) = list(bag.frame_sets())
    msg = frame_set.messages["CAM_BACK"]
    np.testing.assert_array_equal(decode_image(msg, topic=image_topic("CAM_BACK", False)), rgb)


# --- make-bag command --------------------------------------------------------------------------


def make_bag(*argv: str) -> int:
    """Run ``prune2drive make-bag`` (through its own parser: other commands may be mid-work)."""
    import argparse

    from prune2drive_ros.commands import make_bag as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


def test_make_bag_command(tmp_path, capsys):
    out = tmp_path / "drive"
    small = ["--frames", "2", "--width", "64", "--height", "32"]
    assert make_bag(str(out), *small, "--storage", "sqlite3") == 0
    printed = capsys.readouterr().out
    assert f"wrote bag {out} (sqlite3, 2 frames of 64x32, 24 messages" in printed
    assert f"wrote 6 questions to {tmp_path / 'drive.questions.jsonl'}" in printed
    with pytest.raises(BagError, match="exists already; pass --force"):
        make_bag(str(out), *small)
    assert make_bag(str(out), *small, "--force", "--questions", str(tmp_path / "q")) == 0
    with open_camera_bag(out) as bag:
        assert sum(1 for _ in bag.frame_sets()) == 2
    assert len(read_questions(tmp_path / "q")) == 6
    assert make_bag(str(tmp_path / "d2"), *small, "--questions", str(tmp_path / "new/q")) == 0
    assert len(read_questions(tmp_path / "new" / "q")) == 6  # its folder was made
    with pytest.raises(BagError, match="is a folder"):
        make_bag(str(tmp_path / "d3"), *small, "--questions", str(tmp_path / "new"))
    assert not (tmp_path / "d3").exists()
    with pytest.raises(SystemExit):
        make_bag(str(tmp_path / "d4"), "--width", "15")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "precious.txt").write_text("do not delete")
    with pytest.raises(BagError, match="not a rosbag2 folder"):
        make_bag(str(tmp_path / "keep"), *small, "--force")
    assert (tmp_path / "keep" / "precious.txt").exists()


def test_make_bag_is_registered():
    from prune2drive_ros.commands.cli import COMMANDS, module_docstring

    assert COMMANDS["make-bag"] == "prune2drive_ros.commands.make_bag"
    assert module_docstring(COMMANDS["make-bag"]).startswith("Write a synthetic nuScenes-like")
