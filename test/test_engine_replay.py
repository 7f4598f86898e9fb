"""The engine, replay, viz and demo on the tiny model and a small synthetic bag."""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from prune2drive_ros.cache import build_once
from prune2drive_ros.commands import cli
from prune2drive_ros.commands.options import add_engine_arguments, engine_config
from prune2drive_ros.commands.replay import replay
from prune2drive_ros.commands.viz import kept_tokens_picture
from prune2drive_ros.config import DriveVLMConfig
from prune2drive_ros.devices import allocated_bytes
from prune2drive_ros.engine import Engine
from prune2drive_ros.errors import (
    BagError,
    BudgetError,
    ConfigError,
    DecodeError,
    ModelLoadError,
    QuestionError,
)
from prune2drive_ros.files import LineWriter
from prune2drive_ros.picture import DIM, TILE_SIZE, overlay_kept
from prune2drive_ros.sensors.bag import CameraBag, open_camera_bag
from prune2drive_ros.sensors.imaging import decode_views
from prune2drive_ros.sensors.questions import QAItem, read_questions
from prune2drive_ros.sensors.sync import FrameSet
from prune2drive_ros.sensors.synthetic import SyntheticBag
from prune2drive_ros.serving.stats import STAGES
from prune2drive_ros.stopping import StopSignal
from prune2drive_ros.views import VIEWS


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.from_config(DriveVLMConfig(model="tiny", device="cpu", max_new_tokens=3))


@pytest.fixture(scope="module")
def frames(small_bag: SyntheticBag) -> FrameSet:
    with open_camera_bag(small_bag.path) as bag:
        return next(iter(bag.frame_sets()))


def test_set_pruning_applies_to_the_next_answer_and_refuses_bad_rates(frames: FrameSet) -> None:
    engine = Engine.from_config(DriveVLMConfig(model="tiny", device="cpu", max_new_tokens=2))
    engine.set_pruning(dict.fromkeys(VIEWS, 0.2), "random")
    assert (engine.pruner, engine.budgets) == ("random", (146,) * len(VIEWS))
    assert engine.answer(frames, "Is the left lane free?").kept_tokens == dict.fromkeys(VIEWS, 146)
    with pytest.raises(BudgetError, match="CAM_BACK"):
        engine.set_pruning({**dict.fromkeys(VIEWS, 0.2), "CAM_BACK": 1.5}, "tfps")
    assert (engine.pruner, engine.budgets) == ("random", (146,) * len(VIEWS)), "nothing changed"


def test_image_resize_follows_the_config_and_a_change_applies_to_the_next_frame(
    frames: FrameSet,
) -> None:
    engine = Engine.from_config(DriveVLMConfig(model="tiny", device="cpu", image_resize="fast"))
    assert engine.describe()["image_resize"] == "fast"
    baseline = Engine(engine.vlm, None, topics=engine.topics)  # the model's setting: shared
    size, topics = engine.vlm.image_size, engine.topics
    fast = decode_views(frames.messages, topics, size, resize_mode="fast")
    exact = decode_views(frames.messages, topics, size)
    assert all(
        np.array_equal(a, fast[v]) for v, a in zip(VIEWS, baseline.decode(frames), strict=True)
    )
    engine.vlm.image_resize = "exact"  # what the node's parameter callback does
    assert all(
        np.array_equal(a, exact[v]) for v, a in zip(VIEWS, baseline.decode(frames), strict=True)
    )
    assert not all(np.array_equal(exact[v], fast[v]) for v in VIEWS)


def test_answer_reports_kept_tokens_timings_and_random_weights(
    engine: Engine, frames: FrameSet
) -> None:
    answer = engine.answer(frames, "  Is the left lane free?  ")
    assert answer.question == "Is the left lane free?"
    assert answer.kept_tokens == dict.fromkeys(VIEWS, 73)  # 10 % of 729, rounded half up
    assert list(answer.timings_ms.as_dict()) == list(STAGES)
    assert answer.timings_ms.total >= answer.timings_ms.prefill > 0
    assert answer.frames_stamp_ns == frames.stamp_ns
    record = answer.as_dict()
    assert record["timings_ms"] == answer.timings_ms.as_dict(), "the JSON keeps timings_ms"
    assert all(round(ms, 3) == ms for ms in record["timings_ms"].values())
    assert record["random_weights"] is True
    assert "meaningless" in str(record["note"])


def test_answers_report_the_tokens_shared_budgets_kept(engine: Engine, frames: FrameSet) -> None:
    shared = Engine(engine.vlm, 0.1, pruner="tfps_shared", topics=engine.topics, max_new_tokens=2)
    answer = shared.answer(frames, "How many cars are in the front camera?")
    assert sum(answer.kept_tokens.values()) == 6 * 73, "the views share the total"
    assert answer.kept_tokens == dict(zip(VIEWS, shared.select(frames).budgets, strict=True))
    assert all(37 <= k <= 109 for k in answer.kept_tokens.values())


def test_unpruned_engine_keeps_every_token(engine: Engine, frames: FrameSet) -> None:
    unpruned = Engine(engine.vlm, None, topics=engine.topics)
    assert unpruned.kept_tokens() == dict.fromkeys(VIEWS, 729)
    assert unpruned.describe()["pruner"] == "none"
    assert unpruned.answer(frames, "Any bus?").timings_ms.prune == 0.0


def test_no_gpu_memory_reading_on_the_cpu(engine: Engine) -> None:
    assert allocated_bytes(engine.vlm.device) is None


def test_several_questions_share_one_encoding(
    engine: Engine, frames: FrameSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[int] = []
    encode_views = engine.vlm.encode_views

    def counting(pixel_values):
        encoded.append(pixel_values.shape[0])
        return encode_views(pixel_values)

    monkeypatch.setattr(engine.vlm, "encode_views", counting)
    answers = engine.answer_many(frames, ["Any bus?", "Which lane?"])
    assert encoded == [len(VIEWS)], "the six views are encoded once for both questions"
    assert [a.question for a in answers] == ["Any bus?", "Which lane?"]


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
    out = io.BytesIO()
    with open_camera_bag(small_bag.path) as bag:
        report = replay(bag, [items[0], outside, items[1]], engine, LineWriter(out))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["question"] for line in lines] == [items[0].question, items[1].question]
    assert lines[0]["reference"] == items[0].answer
    assert lines[0]["question_stamp_ns"] == items[0].stamp_ns
    assert len(report.skipped) == 1 and "outside" in report.skipped[0][1]


def test_replay_baseline_reports_both_runs(engine: Engine, small_bag: SyntheticBag) -> None:
    items = read_questions(small_bag.questions_path)[:1]
    baseline = Engine(engine.vlm, None, topics=engine.topics)
    out = io.BytesIO()
    with open_camera_bag(small_bag.path) as bag:
        report = replay(bag, items, engine, LineWriter(out), baseline=baseline)
    assert json.loads(out.getvalue())["unpruned"]["timings_ms"]["prefill"] > 0
    table = report.latency_table()
    assert "pruned" in table and "unpruned" in table and "speedup" in table


def _break_the_bag_after(monkeypatch: pytest.MonkeyPatch, good_reads: int) -> None:
    """The bag's storage breaks off after ``good_reads`` frame-set look-ups."""
    real = CameraBag.nearest_frame_set
    reads = iter(range(good_reads + 1))

    def breaking(self: CameraBag, stamp_ns: int, max_gap_ns: int) -> FrameSet:
        if next(reads, good_reads) == good_reads:
            raise BagError("storage file truncated")
        return real(self, stamp_ns, max_gap_ns)

    monkeypatch.setattr(CameraBag, "nearest_frame_set", breaking)


def test_replay_keeps_answers_written_before_the_bag_breaks(
    engine: Engine, small_bag: SyntheticBag, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = read_questions(small_bag.questions_path)[:3]
    _break_the_bag_after(monkeypatch, 1)
    out = io.BytesIO()
    with open_camera_bag(small_bag.path) as bag:
        report = replay(bag, items, engine, LineWriter(out))
    assert isinstance(report.stopped, BagError) and "truncated" in str(report.stopped)
    assert len(report.answers) == len(out.getvalue().splitlines()) == 1


def test_replay_command_summarises_then_fails_when_the_bag_breaks(
    small_bag: SyntheticBag,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _break_the_bag_after(monkeypatch, 1)
    out = tmp_path / "answers.jsonl"
    argv = ["replay", str(small_bag.path), "--questions", str(small_bag.questions_path)]
    argv += ["--model", "tiny", "--device", "cpu", "--max-new-tokens", "2", "--out", str(out)]
    assert cli.main(argv) == 2
    printed = capsys.readouterr()
    assert "1 answered" in printed.out and "latency (ms)" in printed.out
    assert f"truncated; the 1 answers before it are in {out}" in printed.err
    assert len(out.read_text().splitlines()) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bag": "nope"}, "does not exist"),
        ({"--rates": "rates.yaml"}, "missing view"),
        ({"--out": "no-such-folder/answers.jsonl"}, "does not exist; create it"),
        ({"--out": "."}, "is a folder"),
        ({"--topic": "CAM_BACK:=/rear"}, "no topic /rear for CAM_BACK"),
        ({"--sync-slop": "2"}, "sync_slop_s is 2.0"),
    ],
)
def test_replay_checks_everything_before_loading_the_model(
    small_bag: SyntheticBag,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str],
    message: str,
) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr("prune2drive_ros.engine.load_vlm", no_model)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rates.yaml").write_text("rates: {CAM_FRONT: 0.5}\n")
    previous = tmp_path / "previous.jsonl"
    previous.write_text('{"kept": true}\n')
    flags = {"--questions": str(small_bag.questions_path), "--out": str(previous)}
    flags.update(change)
    argv = ["replay", change.get("bag", str(small_bag.path)), "--force"]
    argv += [part for flag, value in flags.items() if flag != "bag" for part in (flag, value)]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert previous.read_text() == '{"kept": true}\n'  # a failed start overwrites nothing


def _no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: what is checked must be checked before."""

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr("prune2drive_ros.engine.load_vlm", no_model)


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """``folder`` reads as not writable, as a read-only one does to a user who is not root
    (the tests may run as root, whom a mode does not stop)."""
    access = os.access

    def denied(path: str, mode: int, **kwargs: bool) -> bool:
        if mode & os.W_OK and Path(path) == folder:
            return False
        return access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", denied)


@pytest.mark.parametrize("command", ["replay", "viz"])
@pytest.mark.parametrize(
    ("out", "force", "message"),
    [
        ("previous", False, "exists already; pass --force to replace it"),
        ("questions", True, "is also an input"),
        ("read-only/new", False, "is not writable; write elsewhere or fix its permissions"),
    ],
)
def test_outputs_are_checked_before_the_model_loads(
    small_bag: SyntheticBag,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    out: str,
    force: bool,
    message: str,
) -> None:
    """An output that exists (without --force), that is an input (even with --force: replay
    --out equal to --questions destroyed the questions), or in a folder that cannot be written
    is one line before the model loads, and the files are left as they were."""
    _no_model(monkeypatch)
    questions = tmp_path / "questions.png"  # viz reads no questions: it is its --rates here
    questions.write_bytes(small_bag.questions_path.read_bytes())
    previous = tmp_path / "previous.png"
    previous.write_text("kept\n")
    (tmp_path / "read-only").mkdir()
    _read_only(monkeypatch, tmp_path / "read-only")
    target = {"previous": previous, "questions": questions}.get(out, tmp_path / f"{out}.png")
    inputs = ["--questions" if command == "replay" else "--rates", str(questions)]
    argv = [command, str(small_bag.path), *inputs, "--out", str(target), *["--force"] * force]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1
    assert questions.read_bytes() == small_bag.questions_path.read_bytes()
    assert previous.read_text() == "kept\n"


def test_a_too_long_question_is_refused_before_the_model_loads_and_not_echoed(
    small_bag: SyntheticBag,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _no_model(monkeypatch)
    stamp = read_questions(small_bag.questions_path)[0].stamp_ns
    question = "Is the lane free? " + "x" * 1_000_000
    questions = tmp_path / "long.jsonl"
    lines = [{"stamp": stamp, "question": "Any bus?"}, {"stamp": stamp, "question": question}]
    questions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    argv = ["replay", str(small_bag.path), "--questions", str(questions)]
    assert cli.main(argv) == 2
    printed = capsys.readouterr()
    assert f"{questions}, question 2: the question 'Is the lane free? xxx" in printed.err
    assert f"has {len(question.strip())} characters, more than max_question_chars=1000" in (
        printed.err
    )
    assert len(printed.err) + len(printed.out) < 400


class _DiskFullAfter(io.FileIO):
    """A file on a disk that fills after ``lines`` writes: the next takes half of what it is
    given, and so on down to one byte, which fails with ENOSPC (as a partial write does)."""

    def __init__(self, path: Path, lines: int) -> None:
        super().__init__(path, "w")
        self.lines = lines

    def write(self, data: object) -> int:
        chunk = memoryview(data)  # type: ignore[arg-type]
        if self.lines:
            self.lines -= 1
            return super().write(chunk)
        if len(chunk) > 1:
            return super().write(chunk[: len(chunk) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_keeps_every_whole_answer_line_and_the_summary(
    small_bag: SyntheticBag,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The disk fills half-way through the second answer's line: the file keeps the first line
    and no half one, the summary is printed and the error is one line saying where they are."""
    monkeypatch.setattr(
        LineWriter, "create", classmethod(lambda cls, path: cls(_DiskFullAfter(path, 1)))
    )
    out = tmp_path / "answers.jsonl"
    argv = ["replay", str(small_bag.path), "--questions", str(small_bag.questions_path)]
    argv += ["--limit", "3", "--model", "tiny", "--device", "cpu", "--max-new-tokens", "2"]
    assert cli.main([*argv, "--out", str(out)]) == 2
    printed = capsys.readouterr()
    assert "1 answered" in printed.out and "latency (ms)" in printed.out
    assert printed.err.splitlines()[-1] == (
        "prune2drive: error: cannot write answer 2: No space left on device; the 1 answers "
        f"before it are in {out}"
    )
    text = out.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 1
    json.loads(text)


def test_replay_command_end_to_end(small_bag: SyntheticBag, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    argv = ["replay", str(small_bag.path), "--questions", str(small_bag.questions_path)]
    argv += ["--limit", "1", "--model", "tiny", "--device", "cpu", "--max-new-tokens", "2"]
    argv += ["--out", str(out)]
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
    r, c = np.divmod(np.arange(9), 3)
    boxes = np.stack([c / 3, r / 3, (c + 1) / 3, (r + 1) / 3], axis=1)
    out = overlay_kept(image, keep, boxes)
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


def test_demo_runs_end_to_end_on_the_scene_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the quick scene model and the demo bag live in the user cache, shared with the other tests
    argv = ["demo", "--variant", "quick", "--frames", "3", "--questions", "6", "--device", "cpu"]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "NOTE" not in printed  # a trained model: no random-weight warning
    assert printed.count("reference") == 6 and "exact match pruned:" in printed
    assert "exact match unpruned:" in printed and "the busiest" in printed
    records = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").open()]
    assert len(records) == 6 and all(r["reference"] is not None for r in records)
    assert (tmp_path / "out" / "kept_tokens.png").is_file()


def test_demo_with_the_tiny_model_says_it_answers_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    argv = ["demo", "--model", "tiny", "--frames", "2", "--questions", "2", "--device", "cpu"]
    assert cli.main([*argv, "--max-new-tokens", "2", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "NOTE" in printed
    # two questions: whether the pruned and unpruned accuracies differ beyond their noise
    spread = next(line for line in printed.splitlines() if " vs unpruned " in line)
    assert spread.startswith("exact match pruned ") and " of 2 (" in spread
    assert "noise (2 combined standard errors: " in spread
    assert not list((tmp_path / "cache" / "prune2drive_ros").glob("scene-*"))


def _engine_args(*argv: str) -> DriveVLMConfig:
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    return engine_config(parser.parse_args(argv))


def test_engine_flags_start_from_the_params_file(tmp_path: Path) -> None:
    params = tmp_path / "vehicle.yaml"
    params.write_text(
        "prune2drive:\n  ros__parameters:\n    device: cpu\n    sync_slop_s: 0.08\n"
        "    use_compressed: false\n    image_topics: [/f, /fl, /fr, /b, /bl, /br]\n"
        "    pruner: random\n    max_new_tokens: 7\n"
    )
    assert (_engine_args("--params", str(params)).pruner, _engine_args().pruner) == (
        "random",
        "tfps",
    )
    assert _engine_args("--params", str(params), "--pruner", "grid").pruner == "grid"
    assert _engine_args("--params", str(params)).max_new_tokens == 7
    config = _engine_args(
        "--params", str(params), "--topic", "CAM_BACK:=/rear", "--sync-queue", "9"
    )
    assert (config.device, config.sync_slop_s, config.sync_queue_size) == ("cpu", 0.08, 9)
    assert config.use_compressed is False
    assert config.image_topics == ("/f", "/fl", "/fr", "/rear", "/bl", "/br")
    raw = _engine_args("--raw", "--topic", "CAM_FRONT:=/front")
    assert raw.resolved_image_topics()["CAM_FRONT"] == "/front"
    assert raw.resolved_image_topics()["CAM_BACK"] == "/CAM_BACK/image_rect"
    with pytest.raises(ConfigError, match="unknown parameter"):
        params.write_text("prune2drive:\n  ros__parameters:\n    max_queu: 4\n")
        _engine_args("--params", str(params))


def test_family_without_model_is_the_tiny_model_of_that_family(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = Engine.from_config(DriveVLMConfig().with_changes(family="internvl", device="cpu"))
    assert engine.vlm.family == "internvl" and engine.vlm.random_weights

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unknown family must fail before any model is built")

    monkeypatch.setattr("prune2drive_ros.vlm.tiny.build_tiny", no_model)
    with pytest.raises(ModelLoadError, match=r"unknown model family 'llava'.*internvl"):
        Engine.from_config(DriveVLMConfig().with_changes(family="llava", device="cpu"))


def test_viz_refuses_a_picture_format_it_cannot_write_before_loading(
    small_bag: SyntheticBag, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "grid.jpgx"
    assert cli.main(["viz", str(small_bag.path), "--out", str(out)]) == 2
    assert "must end in .png" in capsys.readouterr().err


def test_viz_command_shows_the_set_nearest_the_stamp(
    small_bag: SyntheticBag, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stamp = read_questions(small_bag.questions_path)[6].stamp_ns
    out = tmp_path / "grid.png"
    argv = ["viz", str(small_bag.path), "--stamp", str(stamp + 20_000_000), "--out", str(out)]
    assert cli.main([*argv, "--model", "tiny", "--device", "cpu"]) == 0
    assert f"frames at {stamp} ns" in capsys.readouterr().out
    assert cv2.imread(str(out)).shape == (2 * TILE_SIZE[1], 3 * TILE_SIZE[0], 3)


def test_demo_fails_when_the_bag_breaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _break_the_bag_after(monkeypatch, 1)
    argv = ["demo", "--model", "tiny", "--frames", "3", "--questions", "2", "--device", "cpu"]
    assert cli.main([*argv, "--max-new-tokens", "2", "--out", str(tmp_path / "out")]) == 2
    assert "truncated; the 1 answers before it are in" in capsys.readouterr().err


def test_a_stop_signal_ends_the_answer_within_one_token(engine: Engine, frames: FrameSet) -> None:
    full = engine.answer(frames, "Describe the scene.", max_new_tokens=12)
    assert full.finish in ("stop", "length")
    streamed: list[tuple[str, int]] = []
    stop = StopSignal()

    def on_text(text: str, tokens: int) -> None:
        streamed.append((text, tokens))
        if tokens == 3:
            stop.set("cancelled")

    cut = engine.answer(frames, "Describe the scene.", 12, stop=stop, on_text=on_text)
    assert cut.finish == "cancelled" and [n for _, n in streamed] == [1, 2, 3]
    assert full.text.startswith(cut.text) and cut.text == streamed[-1][0], "the text so far"
    stop_first = StopSignal()
    stop_first.set("shutdown")
    assert engine.answer(frames, "Describe the scene.", 12, stop=stop_first).finish == "shutdown"


def test_an_answer_brings_the_kept_token_picture_when_asked(
    engine: Engine, frames: FrameSet
) -> None:
    plain = engine.answer(frames, "Is the road clear?", 2)
    assert plain.picture is None, "drawn only when asked (nobody subscribes: no cost)"
    drawn = engine.answer(frames, "Is the road clear?", 2, picture=True)
    assert drawn.picture is not None and "picture" not in drawn.as_dict()
    image = cv2.imdecode(np.frombuffer(drawn.picture, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (2 * TILE_SIZE[1], 3 * TILE_SIZE[0], 3)
