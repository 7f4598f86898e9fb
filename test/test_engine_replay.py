"""The engine, replay, viz and demo on the tiny model and a small synthetic bag."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from prune2drive_ros import cli
from prune2drive_ros.bag import CameraBag, SyntheticBag, open_camera_bag
from prune2drive_ros.cache import build_once
from prune2drive_ros.config import DriveVLMConfig
from prune2drive_ros.engine import Engine
from prune2drive_ros.errors import BagError, DecodeError, QuestionError
from prune2drive_ros.questions import QAItem, read_questions
from prune2drive_ros.replay import replay
from prune2drive_ros.stats import STAGES
from prune2drive_ros.sync import FrameSet
from prune2drive_ros.views import VIEWS
from prune2drive_ros.viz import DIM, TILE_SIZE, kept_tokens_picture, overlay_kept


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.from_config(DriveVLMConfig().with_changes(device="cpu", max_new_tokens=3))


@pytest.fixture(scope="module")
def frames(small_bag: SyntheticBag) -> FrameSet:
    with open_camera_bag(small_bag.path) as bag:
        return next(iter(bag.frame_sets()))


def test_answer_reports_kept_tokens_timings_and_random_weights(
    engine: Engine, frames: FrameSet
) -> None:
    answer = engine.answer(frames, "  Is the left lane free?  ")
    assert answer.question == "Is the left lane free?"
    assert answer.kept_tokens == dict.fromkeys(VIEWS, 73)  # 10 % of 729, rounded half up
    assert list(answer.timings_ms) == list(STAGES)
    assert answer.timings_ms["total"] >= answer.timings_ms["prefill"] > 0
    assert answer.frames_stamp_ns == frames.stamp_ns
    record = answer.as_dict()
    assert record["random_weights"] is True
    assert "meaningless" in str(record["note"])


def test_unpruned_engine_keeps_every_token(engine: Engine, frames: FrameSet) -> None:
    unpruned = Engine(engine.vlm, None, topics=engine.topics)
    assert unpruned.kept_tokens() == dict.fromkeys(VIEWS, 729)
    assert unpruned.describe()["pruner"] == "none"
    assert unpruned.answer(frames, "Any bus?").timings_ms["prune"] == 0.0


def test_several_questions_share_one_encoding(engine: Engine, frames: FrameSet) -> None:
    answers = engine.answer_many(frames, ["Any bus?", "Which lane?"])
    single = engine.answer(frames, "Which lane?")
    assert [a.question for a in answers] == ["Any bus?", "Which lane?"]
    assert answers[1].text == single.text


@pytest.mark.parametrize("question", ["", "   ", "x" * 1001])
def test_bad_questions_are_rejected(engine: Engine, frames: FrameSet, question: str) -> None:
    with pytest.raises(QuestionError, match=r"empty|max_question_chars"):
        engine.answer(frames, question)


def test_missing_view_names_its_topic(engine: Engine, frames: FrameSet) -> None:
    partial = FrameSet(
        stamps={v: s for v, s in frames.stamps.items() if v != "CAM_BACK"},
        messages={v: m for v, m in frames.messages.items() if v != "CAM_BACK"},
    )
    with pytest.raises(DecodeError, match=r"CAM_BACK \(/CAM_BACK/image_rect_compressed\)"):
        engine.answer(partial, "Any bus?")


def test_corrupt_jpeg_names_its_topic(engine: Engine, frames: FrameSet) -> None:
    broken = SimpleNamespace(format="jpeg", data=np.frombuffer(b"\xff\xd8garbage", np.uint8))
    corrupt = replace(frames, messages={**frames.messages, "CAM_FRONT_LEFT": broken})
    with pytest.raises(DecodeError, match="/CAM_FRONT_LEFT/image_rect_compressed"):
        engine.answer(corrupt, "Any bus?")


def test_replay_writes_a_line_per_answer_and_skips_questions_outside(
    engine: Engine, small_bag: SyntheticBag
) -> None:
    items = read_questions(small_bag.questions_path)[:2]
    outside = QAItem(stamp_ns=small_bag.end_ns + 10**10, question="Any bus?")
    out = io.StringIO()
    report = replay(small_bag.path, [items[0], outside, items[1]], engine, out, progress=False)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["question"] for line in lines] == [items[0].question, items[1].question]
    assert lines[0]["reference"] == items[0].answer
    assert len(report.skipped) == 1 and "outside" in report.skipped[0][1]


def test_replay_baseline_reports_both_runs(engine: Engine, small_bag: SyntheticBag) -> None:
    items = read_questions(small_bag.questions_path)[:1]
    baseline = Engine(engine.vlm, None, topics=engine.topics)
    out = io.StringIO()
    report = replay(small_bag.path, items, engine, out, baseline=baseline, progress=False)
    assert json.loads(out.getvalue())["unpruned"]["timings_ms"]["prefill"] > 0
    table = report.latency_table()
    assert "pruned" in table and "unpruned" in table and "speedup" in table


def test_replay_keeps_answers_written_before_the_bag_breaks(
    engine: Engine, small_bag: SyntheticBag, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = read_questions(small_bag.questions_path)[:2]
    real = CameraBag.nearest_frame_set
    calls = iter([real, None])

    def breaking(self: CameraBag, stamp_ns: int, max_gap_ns: int) -> FrameSet:
        method = next(calls)
        if method is None:
            raise BagError("storage file truncated")
        return method(self, stamp_ns, max_gap_ns)

    monkeypatch.setattr(CameraBag, "nearest_frame_set", breaking)
    out = io.StringIO()
    with pytest.raises(BagError, match="truncated"):
        replay(small_bag.path, items, engine, out, progress=False)
    assert len(out.getvalue().splitlines()) == 1


def test_replay_of_a_missing_bag_is_a_clear_error(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r"does not exist|not found|no such"):
        replay(tmp_path / "nope", [QAItem(0, "Any bus?")], engine, progress=False)


def test_replay_command_end_to_end(small_bag: SyntheticBag, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    argv = ["replay", str(small_bag.path), "--questions", str(small_bag.questions_path)]
    argv += ["--limit", "1", "--device", "cpu", "--max-new-tokens", "2", "--out", str(out)]
    assert cli.main(argv) == 0
    assert len(out.read_text().splitlines()) == 1


def test_replay_command_rejects_bad_rates(small_bag: SyntheticBag, tmp_path: Path) -> None:
    rates = tmp_path / "rates.yaml"
    rates.write_text("rates: {CAM_FRONT: 0.5}\n")
    argv = ["replay", str(small_bag.path), "--questions", str(small_bag.questions_path)]
    assert cli.main([*argv, "--device", "cpu", "--rates", str(rates)]) == 2


def test_overlay_dims_exactly_the_dropped_patches() -> None:
    image = np.full((54, 81, 3), 200, np.uint8)
    keep = np.zeros(9, bool)
    keep[4] = True  # the centre patch of a 3 x 3 grid: rows 18..35, cols 27..53
    out = overlay_kept(image, keep, (3, 3))
    assert (out[:18] == int(200 * DIM)).all()
    assert (out[20:34, 29:52] == 200).all()  # inside the outline


def test_kept_tokens_picture(engine: Engine, frames: FrameSet, tmp_path: Path) -> None:
    selection = kept_tokens_picture(engine, frames, tmp_path / "grid.png")
    picture = cv2.imread(str(tmp_path / "grid.png"))
    assert picture.shape == (2 * TILE_SIZE[1], 3 * TILE_SIZE[0], 3)
    assert selection.budgets == (73,) * 6


def test_build_once_builds_once_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    calls = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "x").write_text("1")

    target = tmp_path / "artefact"
    assert (build_once(target, build) / "x").read_text() == "1"
    build_once(target, build)
    assert len(calls) == 1

    def failing(folder: Path) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        build_once(tmp_path / "other", failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artefact"]


def test_demo_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    argv = ["demo", "--frames", "3", "--questions", "2", "--device", "cpu"]
    assert cli.main([*argv, "--max-new-tokens", "2", "--out", str(tmp_path / "out")]) == 0
    assert len((tmp_path / "out" / "answers.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "out" / "kept_tokens.png").is_file()
