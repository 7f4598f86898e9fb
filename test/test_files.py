"""The one way a folder the package builds appears: whole, replacing or keeping what is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from prune2drive_ros.files import move_into_place, new_folder


def _built(target: Path, text: str) -> Path:
    staging = new_folder(target, "new")
    (staging / "file.txt").write_text(text)
    return staging


def test_a_new_folder_appears_whole(tmp_path: Path) -> None:
    target = tmp_path / "model"
    assert move_into_place(_built(target, "new"), target, replace=False)
    assert (target / "file.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_without_replace_the_folder_there_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "file.txt").write_text("first")
    staging = _built(target, "second")
    assert not move_into_place(staging, target, replace=False)
    assert (target / "file.txt").read_text() == "first" and staging.is_dir()


def test_with_replace_the_old_folder_goes_once_the_new_is_in_place(tmp_path: Path) -> None:
    target = tmp_path / "bag"
    target.mkdir()
    (target / "old.txt").write_text("old")
    assert move_into_place(_built(target, "new"), target, replace=True)
    assert sorted(p.name for p in target.iterdir()) == ["file.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bag"], "no staging or old folder left"


def test_a_failed_replace_puts_the_old_folder_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "bag"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staging = _built(target, "new")
    real_rename = Path.rename

    def failing(self: Path, to: Path) -> Path:
        if self == staging:
            raise OSError(28, "No space left on device")
        return real_rename(self, to)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="No space"):
        move_into_place(staging, target, replace=True)
    assert (target / "old.txt").read_text() == "old"
