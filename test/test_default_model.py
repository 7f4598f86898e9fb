"""Which model an empty ``model`` parameter, and ``tiny``, answer with (issue 22, point 4).

Each test points the cache (``XDG_CACHE_HOME``) at a private folder, so the user's own cache
neither changes the outcome nor gets written. The tiny checkpoints are linked in from the real
cache (built there once), and a "trained" scene model is faked by copying the tiny checkpoint
into its folder with the training report: nothing trains here.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from prune2drive_ros.cache import cache_dir
from prune2drive_ros.commands import cli
from prune2drive_ros.config import TINY_MODEL, DriveVLMConfig
from prune2drive_ros.engine import DEFAULT_SCENE_MODEL, Engine, resolve_model
from prune2drive_ros.training import (
    REPORT_FILE,
    Accuracy,
    TrainReport,
    cached_scene_model,
    scene_model_path,
    trainer,
    variant,
)
from prune2drive_ros.training.cached import is_finished, trained_scene_model
from prune2drive_ros.vlm import load_vlm
from prune2drive_ros.vlm.llava_onevision import LlavaOnevisionVLM
from prune2drive_ros.vlm.tiny import cached_tiny

FAMILIES = ("llava_onevision", "internvl")


@pytest.fixture(scope="module")
def real_tiny() -> dict[str, Path]:
    """The tiny checkpoints in the real cache (built there on first use, as other tests do)."""
    return {family: cached_tiny(family) for family in FAMILIES}


@pytest.fixture
def cache(real_tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty cache but for links to the tiny checkpoints; returns its folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = cache_dir()
    root.mkdir(parents=True)
    for source in real_tiny.values():
        (root / source.name).symlink_to(source, target_is_directory=True)
    return root


def _tiny(family: str = "llava_onevision") -> str:
    """The tiny checkpoint's path in the private cache (the link)."""
    path = cache_dir() / f"tiny-{family}-0-1"
    assert path.is_symlink(), "the fixture links it"
    return str(path)


def _fake_scene_model(*, report: bool = True) -> Path:
    """The default scene model's cache folder holding the tiny checkpoint, plus the training
    report (written last by the trainer) unless ``report`` is False: an unfinished folder."""
    path = scene_model_path(DEFAULT_SCENE_MODEL)
    shutil.copytree(Path(_tiny()).resolve(), path)
    if report:
        (path / REPORT_FILE).write_text(json.dumps({"steps": 0}) + "\n")
    return path


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _infos(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]


def test_no_scene_model_means_the_tiny_model_with_a_warning_naming_train(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="prune2drive_ros")
    assert resolve_model("") == (_tiny(), "llava_onevision")
    assert resolve_model("", "llava_onevision") == (_tiny(), "llava_onevision")
    (warning, *_) = _warnings(caplog)
    assert "noise" in warning and "`prune2drive train`" in warning and "`make demo`" in warning
    assert str(scene_model_path(DEFAULT_SCENE_MODEL)) in warning, "says where it looked"
    assert any("tiny random-weight llava_onevision test model" in m for m in _infos(caplog))
    assert not list(cache.glob("scene-*")), "never trains, never creates the folder"


def test_a_finished_scene_model_in_the_cache_is_the_default(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _fake_scene_model()
    assert path.parent == cache and trained_scene_model() == path
    caplog.set_level(logging.INFO, logger="prune2drive_ros")
    assert resolve_model("") == (str(path), None)
    assert resolve_model("", "llava_onevision") == (str(path), "llava_onevision")
    assert not _warnings(caplog)
    assert any(f"trained 'default' scene model {path}" in m for m in _infos(caplog))
    # As the node and every command load it: the scene model's folder, not the tiny one.
    engine = Engine.from_config(DriveVLMConfig(device="cpu"))
    assert engine.vlm.name == str(path)
    assert cached_scene_model() == path, "and the demo's lookup takes it without training"


@pytest.mark.parametrize(
    ("leftover", "hint"),
    [
        ("no report", "it lacks config.json or scene_model.json: remove it first"),
        ("partial", "`prune2drive train` resumes it"),
    ],
)
def test_an_unfinished_training_folder_is_not_taken_for_a_model(
    cache: Path, caplog: pytest.LogCaptureFixture, leftover: str, hint: str
) -> None:
    """The trainer saves into ``<folder>.partial/model`` and renames it into place once the
    report, written last, is in it: an interrupted run leaves the ``.partial`` folder only, and
    a folder without the report (copied half-way) is no finished model either."""
    path = scene_model_path(DEFAULT_SCENE_MODEL)
    if leftover == "no report":
        _fake_scene_model(report=False)
        assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    else:
        partial = path.with_name(path.name + ".partial")
        partial.mkdir()
        (partial / "state.pt").write_bytes(b"")
    assert not is_finished(path) and trained_scene_model() is None
    caplog.set_level(logging.INFO, logger="prune2drive_ros")
    assert resolve_model("") == (_tiny(), "llava_onevision")
    (warning,) = _warnings(caplog)
    assert hint in warning and "`prune2drive train`" in warning
    if leftover == "no report":
        with pytest.raises(FileExistsError, match="no finished scene model"):
            cached_scene_model()  # the demo's lookup refuses it rather than train over it


def test_the_trainer_writes_what_makes_a_folder_finished_last(
    real_tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check follows the trainer: a save killed before the report is no finished model."""
    vlm = load_vlm(str(real_tiny["llava_onevision"]), device="cpu")
    assert isinstance(vlm, LlavaOnevisionVLM)
    nothing = Accuracy(0.0, {}, 0)
    report = TrainReport(variant("quick"), 0, 0.0, 0.0, nothing, nothing)
    trainer._save_model(vlm, variant("quick"), tmp_path / "saved", report)
    assert is_finished(tmp_path / "saved")

    def killed(*args: object, **kwargs: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.json, "dumps", killed)  # the report, the last thing written
    with pytest.raises(KeyboardInterrupt):
        trainer._save_model(vlm, variant("quick"), tmp_path / "killed", report)
    assert (tmp_path / "killed" / "config.json").is_file()
    assert not is_finished(tmp_path / "killed")


def test_tiny_is_the_tiny_model_even_with_a_scene_model(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_scene_model()
    caplog.set_level(logging.INFO, logger="prune2drive_ros")
    assert resolve_model(TINY_MODEL) == (_tiny(), "llava_onevision")
    assert resolve_model(TINY_MODEL, "internvl") == (_tiny("internvl"), "internvl")
    assert not _warnings(caplog)
    assert any("model is 'tiny'" in m for m in _infos(caplog))
    engine = Engine.from_config(DriveVLMConfig(model=TINY_MODEL, device="cpu"))
    assert engine.vlm.name == _tiny() and engine.vlm.random_weights


def test_another_family_keeps_its_tiny_model_as_the_default(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_scene_model()
    caplog.set_level(logging.INFO, logger="prune2drive_ros")
    assert resolve_model("", "internvl") == (_tiny("internvl"), "internvl")
    assert not _warnings(caplog), "no scene model of that family to miss"
    engine = Engine.from_config(DriveVLMConfig(family="internvl", device="cpu"))
    assert engine.vlm.name == _tiny("internvl") and engine.vlm.family == "internvl"


def test_a_named_model_is_taken_as_given(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    _fake_scene_model()
    caplog.set_level(logging.INFO, logger="prune2drive_ros")
    assert resolve_model("org/some-model", "qwen2_5_vl") == ("org/some-model", "qwen2_5_vl")
    assert resolve_model("./tiny") == ("./tiny", None), "a local folder named tiny"
    assert any("org/some-model (the model parameter)" in m for m in _infos(caplog))


def test_the_parameter_and_the_flag_say_what_empty_and_tiny_mean(
    capsys: pytest.CaptureFixture[str],
) -> None:
    description = DriveVLMConfig.spec("model").description
    assert "`prune2drive train`" in description and f"{TINY_MODEL} = always" in description
    with pytest.raises(SystemExit):
        cli.main(["replay", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert " ".join(description.split()) in help_text, "the flag's help is the parameter's"


def test_the_suite_caches_in_its_own_folder_not_the_users() -> None:
    from conftest import TEST_CACHE

    from prune2drive_ros.cache import cache_dir

    assert cache_dir() == TEST_CACHE / "prune2drive_ros"
    assert Path.home() / ".cache" not in cache_dir().parents
