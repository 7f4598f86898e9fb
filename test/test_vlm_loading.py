"""Loading checkpoints: every way it can go wrong gives a ModelLoadError that says what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from prune2drive_ros.devices import resolve_device
from prune2drive_ros.errors import ConfigError, ModelLoadError
from prune2drive_ros.vlm import FAMILIES, load_vlm
from prune2drive_ros.vlm.llava_onevision import LlavaOnevisionVLM
from prune2drive_ros.vlm.loading import load_pretrained, resolve_dtype
from prune2drive_ros.vlm.tiny import cached_tiny


@pytest.fixture(scope="module")
def tiny() -> Path:
    return cached_tiny("llava_onevision")


def edited_copy(tiny: Path, out: Path, **vision: object) -> Path:
    """A copy of the tiny checkpoint with vision-config fields (or top-level ones) replaced."""
    shutil.copytree(tiny, out)
    config = json.loads((out / "config.json").read_text())
    for key, value in vision.items():
        if key in config["vision_config"]:
            config["vision_config"][key] = value
        else:
            config[key] = value
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_loads_through_the_family_from_config(tiny: Path) -> None:
    vlm = load_vlm(tiny)
    assert isinstance(vlm, LlavaOnevisionVLM)
    assert vlm.name == str(tiny)
    assert (vlm.device, vlm.dtype) == (torch.device("cpu"), torch.float32)
    assert "llava_onevision" in FAMILIES


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_vlm(tmp_path / "nowhere")


def test_folder_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_vlm(tmp_path)


def test_uncached_hub_id_offline() -> None:
    with pytest.raises(ModelLoadError, match="hub cache"):
        load_vlm("prune2drive-test/not-a-model", local_files_only=True)


def test_unsupported_family_lists_the_supported(tmp_path: Path) -> None:
    config = Qwen2Config(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=64,
    )
    Qwen2ForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(
        ModelLoadError,
        match=r"unknown model family 'qwen2'.*llava_onevision.*only these are supported",
    ):
        load_vlm(tmp_path)
    with pytest.raises(ModelLoadError, match="not 'llava_onevision'"):
        load_pretrained(LlavaOnevisionVLM, tmp_path)


def test_vision_image_size_mismatch(tiny: Path, tmp_path: Path) -> None:
    checkpoint = edited_copy(tiny, tmp_path / "ckpt", image_size=10)
    with pytest.raises(ModelLoadError, match=r"10 px images with 14 px patches, not even one"):
        load_vlm(checkpoint)


def test_feature_strategy_that_cuts_the_grid(tiny: Path, tmp_path: Path) -> None:
    checkpoint = edited_copy(tiny, tmp_path / "ckpt", vision_feature_select_strategy="default")
    with pytest.raises(ModelLoadError, match="'full'"):
        load_vlm(checkpoint)


def test_missing_weights(tiny: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny, checkpoint)
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_vlm(checkpoint)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "pytorch_model.bin.index.json"])
def test_pickle_only_weights_are_refused_before_loading(
    tiny: Path, tmp_path: Path, monkeypatch, name: str
) -> None:
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny, checkpoint)
    (checkpoint / "model.safetensors").unlink()
    (checkpoint / name).write_bytes(b"a pickle that must never be opened")

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the checkpoint was loaded before its weights were checked")

    monkeypatch.setattr("prune2drive_ros.vlm.loading.AutoTokenizer.from_pretrained", no_loading)
    monkeypatch.setattr(LlavaOnevisionVLM.model_class, "from_pretrained", no_loading)
    with pytest.raises(ModelLoadError) as raised:
        load_vlm(checkpoint)
    message = str(raised.value)
    assert "\n" not in message
    assert f"only pickle weights ({name})" in message and "can run code" in message
    assert "save_pretrained" in message and "safe_serialization=True" in message
    assert "LlavaOnevisionForConditionalGeneration" in message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dtype": "float16"}, "float16 is not supported on the CPU"),
        ({"dtype": "int8"}, "dtype 'int8' is not supported"),
        ({"attn_implementation": "flash_attention_2"}, "CUDA only"),
        ({"attn_implementation": "eager"}, "sdpa, flash_attention_2"),
    ],
)
def test_unusable_options(tiny: Path, options: dict[str, str], message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_vlm(tiny, **options)


@pytest.mark.parametrize("device", ["tpu", "meta", "cuda:x"])
def test_unusable_device_is_a_config_error(tiny: Path, device: str) -> None:
    with pytest.raises(ConfigError, match=f"device '{device}'"):
        load_vlm(tiny, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where there is no GPU")
def test_cuda_without_a_gpu(tiny: Path) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        load_vlm(tiny, device="cuda")


def test_auto_device_is_the_cpu_without_a_gpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_auto_dtype_on_cpu_is_float32() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16


def test_tokenizer_without_the_image_token(tiny: Path) -> None:
    vlm = load_vlm(tiny)
    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()))
    with pytest.raises(ModelLoadError, match="has no '<image>' token"):
        type(vlm)(vlm.model, bare, name="bare", normalization=vlm.normalization)


def test_loading_draws_no_progress_bar_of_transformers(
    tiny: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from transformers.utils import logging as transformers_logging

    assert transformers_logging.is_progress_bar_enabled()
    load_vlm(tiny, device="cpu")
    assert "Loading weights" not in capfd.readouterr().err, "commands draw bars, not the library"
    assert transformers_logging.is_progress_bar_enabled(), "the caller's setting is restored"
