"""Random-weight checkpoints: real classes, deterministic, cached safely, flagged as random."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

from prune2drive_ros.errors import ModelLoadError
from prune2drive_ros.vlm import RANDOM_WEIGHTS_NOTE, load_vlm
from prune2drive_ros.vlm import tiny as tiny_module
from prune2drive_ros.vlm.tiny import TINY_VERSION, build_tiny, cached_tiny, random_vlm

FAMILY = "llava_onevision"


def test_checkpoint_has_what_a_real_one_has(tmp_path: Path) -> None:
    out = build_tiny(FAMILY, tmp_path / "ckpt")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= names
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == FAMILY and config["prune2drive_random_weights"] is True
    vision = config["vision_config"]
    assert (vision["image_size"], vision["patch_size"]) == (384, 14)
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "LlavaOnevisionImageProcessor"
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000  # fast on a CPU


def test_tokenizer_keeps_special_tokens_whole(tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(build_tiny(FAMILY, tmp_path / "ckpt"))
    ids = tokenizer("front view: <image>\n<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<image>") in ids
    assert ids[-1] == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = "Is the cyclist on the right, 12 m ahead? Ünïcode too."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_deterministic_from_the_seed(tmp_path: Path) -> None:
    first = load_file(build_tiny(FAMILY, tmp_path / "a", seed=1) / "model.safetensors")
    again = load_file(build_tiny(FAMILY, tmp_path / "b", seed=1) / "model.safetensors")
    other = load_file(build_tiny(FAMILY, tmp_path / "c", seed=2) / "model.safetensors")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (
        tmp_path / "c" / "tokenizer.json"
    ).read_bytes()


def test_building_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny(FAMILY, tmp_path / "ckpt", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_cached_builds_once_into_the_xdg_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = cached_tiny(FAMILY, seed=4)
    assert path == tmp_path / "prune2drive_ros" / f"tiny-{FAMILY}-4-{TINY_VERSION}"

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt a cached checkpoint")

    monkeypatch.setattr(tiny_module, "build_tiny", fail)
    assert cached_tiny(FAMILY, seed=4) == path
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging left behind


def test_cached_tolerates_a_concurrent_builder(tmp_path: Path, monkeypatch) -> None:
    """Another process renames its copy into place while this one builds: use theirs."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    final = tmp_path / "prune2drive_ros" / f"tiny-{FAMILY}-0-{TINY_VERSION}"
    real_build = tiny_module.build_tiny

    def racing(family: str, out_dir: Path, *, seed: int = 0) -> Path:
        real_build(family, final, seed=seed)  # the other process wins the race
        return real_build(family, out_dir, seed=seed)

    monkeypatch.setattr(tiny_module, "build_tiny", racing)
    assert cached_tiny(FAMILY) == final
    assert [p.name for p in final.parent.iterdir()] == [final.name]


@pytest.mark.parametrize(
    ("umask", "folder_mode", "file_mode"),
    [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)],
    indirect=["umask"],
)
def test_cached_checkpoint_is_readable_by_the_users_the_umask_allows(
    tmp_path: Path, monkeypatch, umask: int, folder_mode: int, file_mode: int
) -> None:
    """A ROS node running as another user must read the weights (not mkdtemp's 0700 folder,
    nor safetensors' 0600 file)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = cached_tiny(FAMILY, seed=3)
    assert oct(path.stat().st_mode & 0o777) == oct(folder_mode)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in path.iterdir()}
    assert modes["model.safetensors"] == oct(file_mode)
    assert set(modes.values()) == {oct(file_mode)}, modes


def test_loaded_model_is_flagged_random(caplog) -> None:
    with caplog.at_level("WARNING"):
        vlm = load_vlm(cached_tiny(FAMILY))
    assert vlm.random_weights
    assert RANDOM_WEIGHTS_NOTE in caplog.text


def test_a_model_is_warned_about_once_not_once_per_placement(caplog) -> None:
    with caplog.at_level("WARNING"):
        vlm = random_vlm(FAMILY, "tiny")
        vlm.placed("layer:1")
        vlm.placed("projector")
    assert caplog.text.count(RANDOM_WEIGHTS_NOTE) == 1


def test_in_memory_shape_is_flagged_random() -> None:
    vlm = random_vlm(FAMILY, "tiny")
    assert vlm.random_weights and vlm.tokens_per_view == 729
    assert vlm.name == f"random-{FAMILY}-tiny-0"


def test_7b_needs_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the message where there is no GPU")
    with pytest.raises(ModelLoadError, match="7b shape needs a CUDA GPU"):
        random_vlm(FAMILY, "7b", device="cpu")


def test_unknown_shape_and_family() -> None:
    with pytest.raises(ModelLoadError, match="unknown shape"):
        random_vlm(FAMILY, "huge")
    with pytest.raises(
        ModelLoadError, match=r"unknown model family 'blip'; expected one of .*llava_onevision"
    ):
        random_vlm("blip", "tiny")
