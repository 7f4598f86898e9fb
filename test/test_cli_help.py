"""Help that cannot drift from the code: the config flags come from the parameter schema,
docstrings are rendered for a terminal, paths shown are the ones used."""

from __future__ import annotations

import argparse

import pytest

from prune2drive_ros.commands.cli import build_parser, terminal_text
from prune2drive_ros.commands.options import CONFIG_FLAGS, add_engine_arguments
from prune2drive_ros.config import DriveVLMConfig
from prune2drive_ros.pruning.registry import PRUNERS


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


@pytest.mark.parametrize(("flag", "name"), CONFIG_FLAGS.items())
def test_each_config_flag_says_what_its_parameter_says(flag: str, name: str) -> None:
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    action = _actions(parser)[f"--{flag}"]
    spec = DriveVLMConfig.spec(name)
    assert action.help is not None and spec.description in action.help.replace("%%", "%")
    assert f"default {spec.default}" in action.help or spec.default == ""
    assert action.choices == spec.choices
    assert action.dest == name


def test_every_pruner_is_offered() -> None:
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    assert (
        tuple(_actions(parser)["--pruner"].choices or ()) == PRUNERS.names() and len(PRUNERS) == 7
    )


def test_a_flag_value_is_checked_by_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    from prune2drive_ros.commands.options import engine_config
    from prune2drive_ros.errors import ConfigError

    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    with pytest.raises(ConfigError, match="max_tiles"):
        engine_config(parser.parse_args(["--max-tiles", "13"]))


def test_image_resize_is_exact_unless_the_flag_says_fast() -> None:
    from prune2drive_ros.commands.options import engine_config

    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    assert engine_config(parser.parse_args([])).image_resize == "exact"
    assert engine_config(parser.parse_args(["--image-resize", "fast"])).image_resize == "fast"


def test_the_cache_folder_shown_follows_xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    parser = build_parser(["eval", "--help"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = _actions(sub.choices["eval"])["--cache-dir"].help or ""
    assert str(tmp_path / "prune2drive_ros" / "features") in help_text


def test_docstrings_are_rendered_for_the_terminal() -> None:
    text = terminal_text(
        """Score :data:`~prune2drive_ros.pruning.PRUNERS` with ``R - lambda * P``, see
        :func:`prune2drive_ros.tuning.spread.within_noise`.

        * one item that is long enough to be wrapped onto a second line when the terminal is
          narrow
        * another
        """
    )
    assert " ".join(text.split()).startswith(
        "Score PRUNERS with R - lambda * P, see prune2drive_ros.tuning.spread.within_noise."
    )
    assert "`" not in text and ":data:" not in text
    _, second = text.split("\n\n")
    assert second.startswith("* one item") and "\n  " in second and "\n* another" in second
