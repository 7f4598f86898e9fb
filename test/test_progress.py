"""One progress policy: the library reports through a callback and is quiet by default, only
the commands draw bars (tqdm's, and only on a terminal), every command that shows progress has
``--no-progress``; and libjpeg's warnings go to logging, not raw onto stderr."""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from prune2drive_ros.progress import NO_PROGRESS
from prune2drive_ros.sensors.imaging import decode_image, decode_views, encode_jpeg
from prune2drive_ros.sensors.synthetic import write_synthetic_bag
from prune2drive_ros.training.data import draw_pool
from prune2drive_ros.training.spec import SceneModelSpec

TINY = SceneModelSpec(name="progress", train_scenes=2, eval_scenes=3)

#: Every command that shows progress (module under prune2drive_ros.commands).
COMMANDS_WITH_PROGRESS = (
    "make_bag",
    "replay",
    "demo",
    "train",
    "tune",
    "evaluate",
    "convert",
    "bag_convert",
    "nuscenes2bag",
    "bench.objects",
)


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal, so that a bar would be drawn on it."""

    def isatty(self) -> bool:
        return True


@dataclass
class _Recorder:
    """A reporter that remembers what it was told."""

    bars: list[dict] = field(default_factory=list)

    def __call__(
        self, *, total: int | None, desc: str, unit: str, initial: int = 0, leave: bool = True
    ) -> _Recorder:
        self.bars.append({"total": total, "desc": desc, "unit": unit, "done": initial})
        return self

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars[-1]["closed"] = True

    def update(self, n: int = 1) -> None:
        self.bars[-1]["done"] += n

    def set_postfix_str(self, s: str = "") -> None:
        self.bars[-1]["postfix"] = s


def test_the_library_draws_nothing_by_default(tmp_path, monkeypatch, capfd):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    write_synthetic_bag(tmp_path / "bag", frames=2, width=64, height=36)
    draw_pool(TINY, held_out=True)
    assert terminal.getvalue() == ""
    assert capfd.readouterr().err == ""


def test_a_reporter_passed_in_gets_the_totals_and_the_updates(tmp_path):
    recorder = _Recorder()
    write_synthetic_bag(tmp_path / "bag", frames=3, width=64, height=36, progress=recorder)
    draw_pool(TINY, held_out=True, progress=recorder)
    assert recorder.bars == [
        {"total": 3, "desc": "writing bag", "unit": "frame", "done": 3, "closed": True},
        {"total": 3, "desc": "drawing held-out scenes", "unit": "scene", "done": 3, "closed": True},
    ]


def test_the_commands_draw_bars_only_on_a_terminal(monkeypatch):
    from prune2drive_ros.commands.progress import progress_from, terminal_bars

    for stderr, drawn in ((io.StringIO(), False), (_Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stderr)
        with terminal_bars(total=4, desc="frames", unit="frame") as bar:
            bar.update()
            bar.set_postfix_str("scene-0061")
        assert ("frames" in stderr.getvalue()) is drawn, stderr.getvalue()
        assert ("\r" in stderr.getvalue()) is drawn  # no redraws in a log file
    parser = argparse.ArgumentParser()
    from prune2drive_ros.commands.progress import add_progress_argument

    add_progress_argument(parser)
    assert progress_from(parser.parse_args(["--no-progress"])) is NO_PROGRESS
    assert progress_from(parser.parse_args([])) is terminal_bars


@pytest.mark.parametrize("command", COMMANDS_WITH_PROGRESS)
def test_every_command_that_shows_progress_has_no_progress(command):
    module = importlib.import_module(f"prune2drive_ros.commands.{command}")
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    assert "--no-progress" in parser._option_string_actions
    source = Path(module.__file__).read_text()
    assert "progress_from(args)" in source, "and passes the commands' reporter on"


def _raw_libjpeg_lines(err: str) -> list[str]:
    """libjpeg's own lines in ``err`` (a logging handler that another test installed may print
    the log records, which quote them after the topic)."""
    return [line for line in err.splitlines() if line.startswith("Corrupt JPEG data")]


def _corrupt_jpeg() -> bytes:
    """A JPEG padded with zeros before its end marker, as some cameras write them: it decodes,
    and libjpeg warns "Corrupt JPEG data: N extraneous bytes before marker 0xd9"."""
    rgb = np.random.default_rng(0).integers(0, 255, (36, 64, 3), dtype=np.uint8)
    data = encode_jpeg(rgb)
    return data[:-2] + bytes(64) + data[-2:]


def test_a_corrupt_jpeg_is_logged_not_printed(capfd, caplog):
    header = SimpleNamespace(stamp=SimpleNamespace(sec=12, nanosec=5))
    msg = SimpleNamespace(format="jpeg", data=_corrupt_jpeg(), header=header)
    with caplog.at_level(logging.DEBUG, logger="prune2drive_ros.sensors.imaging"):
        rgb = decode_image(msg, topic="/CAM_FRONT/image_rect_compressed")
    assert rgb.shape == (36, 64, 3)
    assert _raw_libjpeg_lines(capfd.readouterr().err) == []
    [record] = [r for r in caplog.records if "Corrupt JPEG data" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("/CAM_FRONT/image_rect_compressed at stamp 12.000000005")


def test_corrupt_jpegs_decoded_in_threads_are_all_logged(capfd, caplog):
    views = [f"CAM_{n}" for n in range(6)]
    messages = {view: SimpleNamespace(format="jpeg", data=_corrupt_jpeg()) for view in views}
    topics = {view: f"/{view}/image" for view in views}
    print("before", file=sys.stderr, flush=True)
    with caplog.at_level(logging.DEBUG, logger="prune2drive_ros.sensors.imaging"):
        for _ in range(5):
            decoded = decode_views(messages, topics, size=(32, 32))
            assert len(decoded) == len(views)
    print("after", file=sys.stderr, flush=True)
    err = capfd.readouterr().err
    assert _raw_libjpeg_lines(err) == []
    lines = [line for line in err.splitlines() if "libjpeg: Corrupt JPEG data" not in line]
    assert lines == ["before", "after"], "the real stderr is back after decoding"
    logged = [r for r in caplog.records if "Corrupt JPEG data" in r.getMessage()]
    assert len(logged) == 5 * len(views)


def test_other_output_during_a_decode_passes_through(capfd, caplog):
    """What another thread writes on stderr while a JPEG decodes reaches the real stderr."""
    from prune2drive_ros.sensors.imaging import _LIBJPEG_STDERR

    written = threading.Event()

    def other_thread() -> None:
        os.write(2, b"another thread's line\n")
        written.set()

    with _LIBJPEG_STDERR.capture("/CAM_BACK/image"):
        threading.Thread(target=other_thread).start()
        assert written.wait(10)
        assert capfd.readouterr().err == "", "held while the decode runs"
    assert capfd.readouterr().err == "another thread's line\n"
    assert not caplog.records
