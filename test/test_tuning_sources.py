"""Validation sets for tuning: bag + questions and DriveLM, grouping, skips and bad input."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from prune2drive_ros.commands.options import open_validation_set
from prune2drive_ros.config import DriveVLMConfig
from prune2drive_ros.errors import ConfigError, QuestionError
from prune2drive_ros.sensors.imaging import encode_jpeg
from prune2drive_ros.sensors.questions import QAItem, read_questions, write_questions
from prune2drive_ros.tuning.drivelm import resolve_image
from prune2drive_ros.tuning.sources import (
    bag_validation_set,
    decode_frame,
    drivelm_validation_set,
)
from prune2drive_ros.views import VIEWS

FIXTURE = Path(__file__).parent / "fixtures" / "drivelm_small.json"


def test_bag_questions_are_grouped_by_frame(small_bag):
    items = read_questions(small_bag.questions_path)
    with bag_validation_set(small_bag.path, small_bag.questions_path, samples=500) as data:
        assert len(data.samples) == len(items)
        assert data.has_references
        assert [s.question for s in data.samples] == [i.question for i in items]
        groups = data.by_frame()
        assert len(groups) == len(data.frames) == small_bag.frames
        assert sum(len(group) for _, group in groups) == len(items)
        images = decode_frame(data.frames[0].read(), (64, 48))
    assert len(images) == len(VIEWS)
    assert all(image.shape == (48, 64, 3) and image.dtype == np.uint8 for image in images)


def test_bag_draw_is_seeded_and_kept_in_file_order(small_bag):
    def ids(seed: int) -> list[str]:
        with bag_validation_set(
            small_bag.path, small_bag.questions_path, samples=5, seed=seed
        ) as data:
            return [s.id for s in data.samples]

    first = ids(1)
    assert len(first) == 5
    assert first == ids(1)
    assert first != ids(2)
    assert first == sorted(first, key=lambda i: int(i.rsplit(":", 1)[1]))


def test_questions_outside_the_bag_are_skipped_and_named(small_bag, tmp_path, caplog):
    inside = read_questions(small_bag.questions_path)[:2]
    outside = [QAItem(1_000, "Too early?", "no"), QAItem(2**62, "Too late?", "no")]
    questions = tmp_path / "q.jsonl"
    write_questions(questions, [*inside, *outside])
    with caplog.at_level(logging.WARNING), bag_validation_set(small_bag.path, questions) as data:
        assert len(data.samples) == 2
        assert sorted(i for i, _ in data.skipped) == ["q.jsonl:3", "q.jsonl:4"]
        assert "2 drawn questions skipped" in data.summary()
    assert "skipped 2 question(s)" in caplog.text and "q.jsonl:3" in caplog.text


def test_no_question_inside_the_bag_is_an_error(small_bag, tmp_path):
    questions = tmp_path / "q.jsonl"
    write_questions(questions, [QAItem(1_000, "Too early?", "no")])
    with pytest.raises(QuestionError, match="none of the 1 questions lies inside"):
        bag_validation_set(small_bag.path, questions)


def test_empty_validation_set_is_an_error(small_bag, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(QuestionError, match="holds no questions"):
        bag_validation_set(small_bag.path, empty)
    with pytest.raises(ConfigError, match="--samples"):
        bag_validation_set(small_bag.path, small_bag.questions_path, samples=0)


def test_frame_keys_change_when_the_bag_changes(small_bag, tmp_path):
    copy = tmp_path / "bag"
    copy.mkdir()
    for item in small_bag.path.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    with bag_validation_set(copy, small_bag.questions_path) as data:
        before = [frame.key for frame in data.frames]
    storage = next(p for p in copy.iterdir() if p.suffix == ".mcap")
    stat = storage.stat()
    os.utime(storage, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with bag_validation_set(copy, small_bag.questions_path) as data:
        after = [frame.key for frame in data.frames]
    assert len(set(before)) == len(before)
    assert not set(before) & set(after)


def _touch(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_the_data_identity_is_the_content_not_the_files(small_bag, tmp_path):
    # A copy of the bag and questions under other names, touched: the study's data identity
    # stays (workers on other machines share the study), while the cache's frame keys change.
    copy = tmp_path / "elsewhere" / "renamed_bag"
    shutil.copytree(small_bag.path, copy)
    questions = tmp_path / "renamed.jsonl"
    shutil.copy(small_bag.questions_path, questions)
    for path in [questions, *copy.iterdir()]:
        _touch(path)
    with bag_validation_set(small_bag.path, small_bag.questions_path, samples=4) as original:
        with bag_validation_set(copy, questions, samples=4) as copied:
            assert copied.identity == original.identity
            assert not {f.key for f in copied.frames} & {f.key for f in original.frames}
        with bag_validation_set(small_bag.path, small_bag.questions_path, samples=3) as fewer:
            assert fewer.identity != original.identity
    edited = [*read_questions(questions)]
    edited[0] = QAItem(edited[0].stamp_ns, edited[0].question + " Really?", edited[0].answer)
    write_questions(questions, edited)
    with bag_validation_set(copy, questions, samples=4) as changed:
        assert changed.identity != original.identity


@pytest.fixture
def nuscenes(tmp_path: Path) -> Path:
    """A nuScenes root with a small real image (JPEG, one PNG) for every fixture image."""
    root = tmp_path / "nuscenes"
    data = json.loads(FIXTURE.read_text())
    rng = np.random.default_rng(0)
    for scene in data.values():
        for frame in scene["key_frames"].values():
            for view, raw in frame["image_paths"].items():
                image = resolve_image(raw, root)
                image.parent.mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 255, (36, 64, 3), dtype=np.uint8)
                if view == "CAM_BACK":  # a PNG under a .jpg name: the decoder reads magic bytes
                    image.write_bytes(cv2.imencode(".png", pixels)[1].tobytes())
                else:
                    image.write_bytes(encode_jpeg(pixels))
    return root


def test_drivelm_items_share_their_key_frame(nuscenes):
    with drivelm_validation_set(FIXTURE, nuscenes) as data:
        assert len(data.samples) == 14
        assert len(data.frames) == 3
        assert [len(group) for _, group in data.by_frame()] == [6, 3, 5]
        assert data.samples[0].tags == (2,)
        images = decode_frame(data.frames[0].read(), (32, 32))
    assert [image.shape for image in images] == [(32, 32, 3)] * len(VIEWS)
    with drivelm_validation_set(FIXTURE, nuscenes, samples=4, seed=3) as few:
        assert len(few.samples) == 4


def test_drivelm_identity_is_the_file_content_and_the_draw(nuscenes, tmp_path):
    moved_root = tmp_path / "moved" / "nuscenes"
    shutil.copytree(nuscenes, moved_root)
    moved_json = tmp_path / "moved" / "questions.json"
    shutil.copy(FIXTURE, moved_json)
    _touch(moved_json)
    with drivelm_validation_set(FIXTURE, nuscenes, samples=5) as original:
        with drivelm_validation_set(moved_json, moved_root, samples=5) as moved:
            assert moved.identity == original.identity
        with drivelm_validation_set(FIXTURE, nuscenes, samples=5, seed=1) as other:
            assert other.identity != original.identity


def _args(**given: object) -> argparse.Namespace:
    defaults = dict(
        bag=None,
        questions=None,
        drivelm=None,
        nuscenes_root=None,
        samples=3,
        seed=0,
        max_gap_ms=100.0,
    )
    return argparse.Namespace(**{**defaults, **given})


@pytest.mark.parametrize(
    "given",
    [{}, {"bag": "b", "drivelm": "d"}, {"bag": "b"}, {"drivelm": "d"}, {"questions": "q"}],
)
def test_command_line_needs_exactly_one_whole_source(given):
    with pytest.raises(ConfigError, match="--"):
        open_validation_set(_args(**given), DriveVLMConfig())


def test_command_line_opens_a_bag(small_bag):
    args = _args(bag=str(small_bag.path), questions=str(small_bag.questions_path))
    with open_validation_set(args, DriveVLMConfig()) as data:
        assert len(data.samples) == 3
