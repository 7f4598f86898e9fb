"""Foxglove protobuf MCAP and ROS 1 bags read like rosbag2; bag-convert writes rosbag2.

The fixtures (:mod:`bag_fixtures`) write the same nuScenes-like frames in each original format;
every format must give the same frame sets, stamped with the images' own times, with the JPEG
bytes as recorded.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from bag_fixtures import (
    DELAY_NS,
    KEY_FRAME_DELAY_NS,
    KEY_FRAME_EVERY,
    Image,
    intrinsics,
    nuscenes_frames,
    write_foxglove_mcap,
    write_ros1_bag,
    write_rosbag2,
)
from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo
from foxglove_schemas_protobuf.Log_pb2 import Log

from prune2drive_ros.errors import BagError, DecodeError
from prune2drive_ros.sensors.bag import CameraBag, open_camera_bag
from prune2drive_ros.sensors.imaging import decode_image
from prune2drive_ros.views import VIEWS, camera_info_topic, image_topic

FORMATS = ("foxglove", "foxglove_lower", "ros1", "rosbag2")


@pytest.fixture(scope="module")
def images() -> list[Image]:
    return nuscenes_frames()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory, images: list[Image]) -> dict[str, Path]:
    """The same frames in each format (read-only). The file names say nothing of the format:
    the readers must tell them apart by content."""
    root = tmp_path_factory.mktemp("formats")
    return {
        "foxglove": write_foxglove_mcap(root / "scene_a.mcap", images),
        "foxglove_lower": write_foxglove_mcap(root / "scene_b.mcap", images, lower_case=True),
        "ros1": write_ros1_bag(root / "scene_c.bag", images),
        "rosbag2": write_rosbag2(root / "scene_d", images),
    }


def frame_set_contents(bag: CameraBag) -> list[dict[str, tuple[int, str, bytes]]]:
    """Per frame set and view: stamp, frame_id and the image bytes."""
    return [
        {
            view: (stamp, msg.header.frame_id, bytes(msg.data))
            for (view, msg), stamp in zip(s.messages.items(), s.stamps.values(), strict=True)
        }
        for s in bag.frame_sets()
    ]


def expected_contents(images: list[Image]) -> list[dict[str, tuple[int, str, bytes]]]:
    frames = sorted({i.frame for i in images})
    return [{i.view: (i.stamp_ns, i.view, i.jpeg) for i in images if i.frame == k} for k in frames]


def test_every_format_gives_the_same_frame_sets(recordings, images):
    expected = expected_contents(images)
    for name in FORMATS:
        with open_camera_bag(recordings[name]) as bag:
            contents = frame_set_contents(bag)
            assert contents == expected, name
            assert (bag.start_ns, bag.end_ns) == (images[0].log_time_ns, images[-1].log_time_ns)
            messages = list(bag.messages())
            assert [m.log_time_ns for m in messages] == [i.log_time_ns for i in images], name
            first = messages[0]
            assert decode_image(first.msg, topic=first.topic).shape == (8, 16, 3)


def test_formats_are_told_apart_by_content_not_name(recordings, tmp_path):
    """A Foxglove MCAP named .bag, a ROS 1 bag named .mcap: both read as what they are."""
    disguised = {
        "foxglove": tmp_path / "looks_like.bag",
        "ros1": tmp_path / "looks_like.mcap",
    }
    for name, path in disguised.items():
        os.link(recordings[name], path)
        with open_camera_bag(path) as bag:
            assert {"foxglove": "Foxglove MCAP", "ros1": "ROS 1 bag"}[name] == bag.source.FORMAT
    with open_camera_bag(next(recordings["rosbag2"].glob("*.mcap"))) as bag:
        assert bag.source.FORMAT == "rosbag2"  # a rosbag2 storage file: MCAP profile ros2


def test_pairing_uses_the_image_stamp_not_the_log_time(recordings, images):
    key = [i for i in images if i.frame == KEY_FRAME_EVERY]
    assert {i.log_time_ns - i.stamp_ns for i in key} == {KEY_FRAME_DELAY_NS}
    stamps = {i.view: i.stamp_ns for i in key}
    for name in ("foxglove", "ros1"):
        with open_camera_bag(recordings[name]) as bag:
            by_stamp = {m.stamp_ns: m for m in bag.messages()}
            assert all(by_stamp[s].log_time_ns == s + KEY_FRAME_DELAY_NS for s in stamps.values())
            found = bag.nearest_frame_set(max(stamps.values()), max_gap_ns=1_000_000)
            assert found.stamps == stamps
            other = bag.nearest_frame_set(max(stamps.values()) + 83_333_333, 5_000_000)
            assert all(by_stamp[s].log_time_ns == s + DELAY_NS for s in other.stamps.values())


def test_lower_case_topics_are_found_and_an_explicit_remap_wins(recordings, caplog):
    with caplog.at_level(logging.INFO), open_camera_bag(recordings["foxglove_lower"]) as bag:
        assert bag.topics == {v: image_topic(v).lower() for v in VIEWS}
        assert bag.calibration_topics() == {v: camera_info_topic(v).lower() for v in VIEWS}
    assert "names its camera topics in lower case" in caplog.text
    assert "/cam_front/image_rect_compressed" in caplog.text
    back = "/cam_back/image_rect_compressed"
    with open_camera_bag(recordings["foxglove_lower"], {"CAM_FRONT": back}) as bag:
        assert bag.topics["CAM_FRONT"] == back
        assert bag.topics["CAM_BACK"] == back
    with pytest.raises(BagError, match="has no topic /front/camera for CAM_FRONT"):
        open_camera_bag(recordings["foxglove_lower"], {"CAM_FRONT": "/front/camera"})


def test_calibrations_are_read_as_camera_info(recordings):
    infos = {}
    for name in FORMATS:
        with open_camera_bag(recordings[name]) as bag:
            topics = bag.calibration_topics()
            assert set(topics) == set(VIEWS)
            assert bag.msgtypes[topics["CAM_BACK"]] == "sensor_msgs/msg/CameraInfo"
            _, _, info = next(iter(bag.read([topics["CAM_BACK"]])))
            infos[name] = (
                info.header.frame_id,
                info.width,
                info.height,
                info.distortion_model,
                *(getattr(info, k.lower()).tolist() for k in "DKRP"),
            )
    calib = intrinsics("CAM_BACK")
    expected = ("CAM_BACK", 16, 8, "plumb_bob", *(calib[k] for k in "DKRP"))
    assert infos == dict.fromkeys(FORMATS, expected)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_foxglove_raw_images_are_sensor_msgs_images(tmp_path, images, encoding):
    path = write_foxglove_mcap(tmp_path / "raw.mcap", images[:6], raw_encoding=encoding)
    with open_camera_bag(path, compressed=False) as bag:
        (frame_set,) = list(bag.frame_sets())
    msg = frame_set.messages["CAM_FRONT"]
    assert msg.encoding == encoding
    rgb = decode_image(msg, topic="raw")
    source = next(i.rgb for i in images[:6] if i.view == "CAM_FRONT")
    expected = np.repeat(source[..., :1], 3, axis=2) if encoding == "mono8" else source
    np.testing.assert_array_equal(rgb, expected)


def test_unsupported_raw_encoding_is_named(tmp_path, images):
    path = write_foxglove_mcap(tmp_path / "yuv.mcap", images[:6], raw_encoding="yuv422")
    with open_camera_bag(path, compressed=False) as bag:
        (frame_set,) = list(bag.frame_sets())
    with pytest.raises(DecodeError, match="unknown image encoding 'yuv422'"):
        decode_image(frame_set.messages["CAM_FRONT"], topic="/CAM_FRONT/image_rect")


def test_unsupported_schema_is_named(tmp_path, images):
    path = write_foxglove_mcap(tmp_path / "video.mcap", images[:6], camera_schema=CompressedVideo)
    with pytest.raises(
        BagError,
        match=r"topic /CAM_FRONT/image_rect_compressed for CAM_FRONT carries "
        r"foxglove\.CompressedVideo, not foxglove\.CompressedImage or foxglove\.RawImage",
    ):
        open_camera_bag(path)


def test_no_camera_topics_lists_the_topics(tmp_path, images):
    path = write_foxglove_mcap(
        tmp_path / "none.mcap", images[:6], camera_schema=CompressedVideo, extra={"/log": Log()}
    )
    with pytest.raises(BagError) as caught:
        open_camera_bag(path, compressed=False)
    message = str(caught.value)
    assert "Foxglove MCAP" in message and "no image topics at all" in message
    assert "/log (foxglove.Log)" in message
    assert "/CAM_BACK/camera_info (foxglove.CameraCalibration)" in message
    assert "/CAM_BACK/image_rect_compressed (foxglove.CompressedVideo)" in message
    ros1 = write_ros1_bag(tmp_path / "none.bag", images, cameras=False)
    with pytest.raises(BagError, match=r"its topics: /diagnostics_text \(ROS 1 std_msgs/String\)"):
        open_camera_bag(ros1)


@pytest.mark.parametrize("name", ["foxglove", "ros1"])
def test_truncated_file_is_a_bag_error(recordings, tmp_path, name):
    copy = tmp_path / recordings[name].name
    copy.write_bytes(recordings[name].read_bytes()[: recordings[name].stat().st_size // 2])
    with pytest.raises(BagError, match=rf"bag {copy} cannot be read, it is truncated or corrupt"):
        open_camera_bag(copy)


def test_corrupt_chunk_of_a_foxglove_mcap_is_a_bag_error(recordings, tmp_path):
    data = bytearray(recordings["foxglove"].read_bytes())
    middle = len(data) // 3
    data[middle : middle + 64] = bytes(64)
    copy = tmp_path / "corrupt.mcap"
    copy.write_bytes(data)
    with open_camera_bag(copy) as bag, pytest.raises(BagError, match="truncated or corrupt after"):
        list(bag.messages())


# --- bag-convert --------------------------------------------------------------------------------


def bag_convert(*argv: str | Path) -> int:
    """Run ``prune2drive bag-convert`` through its own parser."""
    from prune2drive_ros.commands import bag_convert as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args([str(a) for a in argv]))


@pytest.mark.parametrize("name", ["foxglove_lower", "ros1"])
def test_bag_convert_writes_a_rosbag2_that_reads_back_the_same(
    recordings, images, tmp_path, capsys, name
):
    from rosbags.rosbag2 import Reader

    out = tmp_path / "converted"
    assert bag_convert(recordings[name], out, "--no-progress", "--storage", "sqlite3") == 0
    printed = capsys.readouterr().out
    assert f"wrote rosbag2 {out} (sqlite3, {2 * len(images)} messages)" in printed
    with Reader(out) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {
            **{image_topic(v): "sensor_msgs/msg/CompressedImage" for v in VIEWS},
            **{camera_info_topic(v): "sensor_msgs/msg/CameraInfo" for v in VIEWS},
        }
    with open_camera_bag(out) as converted, open_camera_bag(recordings[name]) as original:
        assert converted.source.FORMAT == "rosbag2"
        assert frame_set_contents(converted) == expected_contents(images)
        assert [(m.view, m.stamp_ns, m.log_time_ns) for m in converted.messages()] == [
            (m.view, m.stamp_ns, m.log_time_ns) for m in original.messages()
        ]
        topic = camera_info_topic("CAM_BACK_LEFT")
        _, log_time, info = next(iter(converted.read([topic])))
        first = next(i for i in images if i.view == "CAM_BACK_LEFT")
        assert (log_time, info.header.frame_id) == (first.log_time_ns, "CAM_BACK_LEFT")
        assert info.k.tolist() == intrinsics("CAM_BACK_LEFT")["K"]


def test_bag_convert_refuses_an_existing_out_without_force(recordings, tmp_path):
    out = tmp_path / "converted"
    assert bag_convert(recordings["foxglove"], out, "--no-progress") == 0
    with pytest.raises(BagError, match="exists already; pass --force"):
        bag_convert(recordings["ros1"], out, "--no-progress")
    assert bag_convert(recordings["ros1"], out, "--no-progress", "--force") == 0
    with open_camera_bag(out) as bag:
        assert bag.source.FORMAT == "rosbag2"
    mcap = next(out.glob("*.mcap"))
    with pytest.raises(BagError, match="lies in OUT"):
        bag_convert(mcap, out, "--no-progress", "--force")
    assert mcap.exists()


def test_bag_convert_of_raw_images_and_remapped_topics(tmp_path, images, capsys):
    front = "/front/raw"
    path = write_foxglove_mcap(
        tmp_path / "raw.mcap", images[:12], raw_encoding="rgb8", topics={"CAM_FRONT": front}
    )
    out = tmp_path / "converted"
    with pytest.raises(BagError, match="has no topic /CAM_FRONT/image_rect for CAM_FRONT"):
        bag_convert(path, out, "--no-progress", "--raw")
    assert bag_convert(path, out, "--no-progress", "--raw", "--topic", f"CAM_FRONT:={front}") == 0
    printed = capsys.readouterr().out
    assert "/CAM_FRONT/image_rect <- /front/raw" in printed
    assert "/CAM_FRONT/camera_info <- /front/camera_info" in printed  # beside the image topic
    with open_camera_bag(out, compressed=False) as bag:
        assert bag.calibration_topics() == {v: camera_info_topic(v) for v in VIEWS}
        sets = list(bag.frame_sets())
    assert len(sets) == 2
    for view in ("CAM_FRONT", "CAM_BACK"):
        expected = next(i.rgb for i in images[:6] if i.view == view)
        np.testing.assert_array_equal(decode_image(sets[0].messages[view], topic=view), expected)
