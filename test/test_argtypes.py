"""Flag value types: a bad number stops a command before any work, naming the flag and limit."""

from __future__ import annotations

import argparse

import pytest

from prune2drive_ros.commands.argtypes import at_least, positive_float, retention_rate, topic_remap
from prune2drive_ros.commands.cli import main


def test_at_least_accepts_the_minimum_and_refuses_below() -> None:
    assert at_least(0)("0") == 0
    assert at_least(1)("7") == 7
    with pytest.raises(argparse.ArgumentTypeError, match="must be at least 1, got 0"):
        at_least(1)("0")


def test_retention_rate_is_a_fraction_of_the_tokens() -> None:
    assert retention_rate("1") == 1.0
    assert retention_rate("0.05") == 0.05
    for bad in ("0", "-0.1", "1.01"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"must lie in \(0, 1\]"):
            retention_rate(bad)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "decode", "--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
        (["bench", "tfps", "--warmup", "x"], "argument --warmup: invalid integer value: 'x'"),
        (["bench", "prefill", "--retention", "2"], "argument --retention: must lie in (0, 1]"),
        (["make-bag", "out", "--frames", "0"], "argument --frames: must be at least 1, got 0"),
        (["tune", "--trials", "-1"], "argument --trials: must be at least 0, got -1"),
        (["demo", "--questions", "0"], "argument --questions: must be at least 1, got 0"),
        (["demo", "--frames", "0"], "argument --frames: must be at least 1, got 0"),
        (["replay", "bag", "--questions", "q", "--limit", "-1"], "must be at least 1, got -1"),
        (["replay", "b", "--questions", "q", "--max-gap-ms", "nan"], "finite number above 0"),
        (["viz", "bag", "--topic", "CAM_TOP:=/x"], "unknown camera view 'CAM_TOP'"),
        (["eval", "--topic", "CAM_FRONT=/x"], "write VIEW:=TOPIC"),
        (["bench", "prefill", "--pruner", "v2drop"], "argument --pruner: invalid choice"),
        (["make-bag", "out", "--width", "8"], "argument --width: must be at least 16, got 8"),
    ],
)
def test_commands_refuse_bad_numbers_with_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_positive_float_and_topic_remap() -> None:
    assert positive_float("2.5") == 2.5
    for bad in ("0", "-1", "inf", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="finite number above 0"):
            positive_float(bad)
    assert topic_remap("CAM_BACK:= /rear/compressed ") == ("CAM_BACK", "/rear/compressed")
    for bad in ("CAM_BACK:=", "CAM_BACK", "/rear"):
        with pytest.raises(argparse.ArgumentTypeError, match="VIEW:=TOPIC"):
            topic_remap(bad)
