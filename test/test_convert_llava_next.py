"""``prune2drive convert`` of DriveMM's original LLaVA-NeXT format: the converted folder loads
through load_vlm and computes what the ORIGINAL tensors compute, composed by hand as LLaVA's
code does (SigLIP without its last layer and without post_layernorm, Linear-GELU-Linear, the
Llama decoder); reconversion is byte-identical, also under other hub settings; a folder in
another format is refused with what it lacks; the command never leaves a half-written or
silently replaced target; the vision tower's config is named with --vision-tower (a folder or a
hub id, never a hub id read as a relative path); a checkpoint that tiles its images is refused
unless --image-fit says how to feed views, and the converted config says the fit it uses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_files import read_tensors
from original_llava_next import (
    EOT,
    LANGUAGE_MODELS,
    LLAMA31_CHAT_TEMPLATE,
    TOWER,
    VISION_PREFIX,
    original_tensors,
    text_config,
    vision_config,
    vocab_size,
    write_original_drivemm,
)
from transformers import (
    AutoTokenizer,
    LlavaOnevisionForConditionalGeneration,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from prune2drive_ros.commands.cli import main
from prune2drive_ros.errors import ConversionError
from prune2drive_ros.prompts import PROMPT_KEY
from prune2drive_ros.views import VIEWS
from prune2drive_ros.vlm import DrivingVLM, load_vlm
from prune2drive_ros.vlm.checkpoint import IMAGE_FIT_KEY
from prune2drive_ros.vlm.conversion import convert_checkpoint, detect_format, llava_next

QUESTION = "Is there a pedestrian in front of the ego vehicle?"
#: Small enough that the tiny checkpoint converts into several shards with an index.
SHARD_BYTES = 200_000


@pytest.fixture(scope="module", params=sorted(LANGUAGE_MODELS))
def model_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, model_type: str) -> Path:
    return write_original_drivemm(tmp_path_factory.mktemp(model_type), model_type=model_type)


@pytest.fixture(scope="module")
def converted(source: Path) -> Path:
    return convert_checkpoint(source, source.parent / "converted", shard_bytes=SHARD_BYTES)


@pytest.fixture(scope="module")
def vlm(converted: Path) -> DrivingVLM:
    return load_vlm(converted)


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(len(VIEWS), 3, 384, 384, generator=torch.Generator().manual_seed(5))


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}


def _original_visual(pixels: torch.Tensor, model_type: str) -> torch.Tensor:
    """SigLIP with the stored layers, last layer's output WITHOUT post_layernorm, then the
    mm_projector (Linear, exact GELU, Linear) — from the original tensors."""
    tensors = original_tensors(model_type=model_type)
    tower = SiglipVisionModel(vision_config()).eval()
    tower.load_state_dict(_strip(tensors, VISION_PREFIX), strict=True)
    with torch.inference_mode():
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
        hidden = torch.nn.functional.linear(
            hidden, tensors["model.mm_projector.0.weight"], tensors["model.mm_projector.0.bias"]
        )
        return torch.nn.functional.linear(
            torch.nn.functional.gelu(hidden),
            tensors["model.mm_projector.2.weight"],
            tensors["model.mm_projector.2.bias"],
        )


def test_vision_features_equal_the_original_tower_and_projector(
    vlm: DrivingVLM, pixels: torch.Tensor, model_type: str
) -> None:
    visual = vlm.encode_views(pixels)
    torch.testing.assert_close(visual, _original_visual(pixels, model_type), rtol=1e-5, atol=1e-5)
    newline = vlm.model.model.image_newline
    torch.testing.assert_close(
        newline, original_tensors(model_type=model_type)["model.image_newline"]
    )


def test_logits_equal_the_original_language_model(
    vlm: DrivingVLM, pixels: torch.Tensor, model_type: str
) -> None:
    inputs = vlm.prefill_inputs(vlm.encode_views(pixels), None, QUESTION)
    logits = vlm.prefill(inputs, all_logits=True).logits
    model_class, _ = LANGUAGE_MODELS[model_type]
    config = text_config(model_type)
    reference = model_class(config).eval()
    tensors = original_tensors(model_type=model_type)
    text = {
        n: t
        for n, t in tensors.items()
        if n.startswith(("model.layers", "model.embed", "model.norm", "lm_head"))
    }
    reference.load_state_dict(text, strict=not config.tie_word_embeddings)
    reference.tie_weights()
    with torch.inference_mode():
        expected = reference(inputs_embeds=inputs.embeds, position_ids=inputs.positions).logits[0]
    rows = config.vocab_size
    torch.testing.assert_close(logits[:, :rows], expected, rtol=1e-4, atol=1e-4)
    # The text embeddings the adapter spliced around the features are the original's rows.
    embeddings = vlm.model.get_input_embeddings().weight
    torch.testing.assert_close(embeddings[:rows], tensors["model.embed_tokens.weight"])
    # A row added for <image> scores the mean logit: never the greedy choice.
    if logits.shape[1] > rows:
        torch.testing.assert_close(
            logits[:, rows], logits[:, :rows].mean(dim=1), rtol=1e-4, atol=1e-4
        )
        assert bool((logits[:, rows] < logits[:, :rows].max(dim=1).values).all())


def test_the_format_is_detected(source: Path) -> None:
    assert detect_format(source) is llava_next


def test_converted_folder_is_what_transformers_saves(
    converted: Path, tmp_path: Path, model_type: str
) -> None:
    model, info = LlavaOnevisionForConditionalGeneration.from_pretrained(
        converted, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    model.save_pretrained(tmp_path)
    assert read_tensors(converted).keys() == read_tensors(tmp_path).keys()
    config = json.loads((converted / "config.json").read_text())
    # The fit of each image_aspect_ratio (pad for DriveMM, square for the Qwen2 one), and no
    # transformers default claiming the anyres tiling that no view gets.
    expected = {"llava_llama": ("drivemm", "pad"), "llava_qwen": (None, "resize")}[model_type]
    assert (config.get(PROMPT_KEY), config.get(IMAGE_FIT_KEY)) == expected
    assert "vision_aspect_ratio" not in config
    assert llava_next.ORIGINAL_ASPECT_KEY not in config
    assert config["text_config"]["rope_parameters"]["rope_type"] == "llama3"
    assert config["vision_config"]["num_hidden_layers"] == vision_config().num_hidden_layers


def test_tokenizer_keeps_the_chat_template_and_adds_one_image_token(
    converted: Path, vlm: DrivingVLM
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert tokenizer.chat_template == LLAMA31_CHAT_TEMPLATE
    assert tokenizer.eos_token == EOT
    image = tokenizer.convert_tokens_to_ids(llava_next.IMAGE_TOKEN)
    assert image == vocab_size() == vlm.model.config.image_token_index
    assert tokenizer("a <image> b", add_special_tokens=False)["input_ids"].count(image) == 1


def test_prompt_none_writes_no_prompt_but_keeps_the_image_fit(
    source: Path, tmp_path: Path, model_type: str
) -> None:
    config = json.loads(
        (convert_checkpoint(source, tmp_path / "out", prompt=None) / "config.json").read_text()
    )
    assert PROMPT_KEY not in config
    assert config.get(IMAGE_FIT_KEY) == {"llava_llama": "pad", "llava_qwen": "resize"}[model_type]


def test_reconversion_is_byte_identical(source: Path, converted: Path, tmp_path: Path) -> None:
    again = convert_checkpoint(source, tmp_path / "again", shard_bytes=SHARD_BYTES)
    files = sorted(p.name for p in converted.iterdir())
    assert files == sorted(p.name for p in again.iterdir())
    for name in files:
        assert (converted / name).read_bytes() == (again / name).read_bytes(), name


def test_bin_weights_convert_to_the_same_tensors(
    source: Path, converted: Path, tmp_path: Path, model_type: str
) -> None:
    folder = tmp_path / "bin"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors*"))
    torch.save(original_tensors(model_type=model_type), folder / "pytorch_model.bin")
    out = convert_checkpoint(folder, tmp_path / "out")
    assert [p.name for p in out.glob("model*.safetensors*")] == ["model.safetensors"]
    assert len(list(converted.glob("model-*-of-*.safetensors"))) > 1
    single, sharded = read_tensors(out), read_tensors(converted)
    assert single.keys() == sharded.keys()
    for name, tensor in single.items():
        assert torch.equal(tensor, sharded[name]), name


def _convert_in_a_process(source: Path, target: Path) -> subprocess.Popen[bytes]:
    """Convert in a new Python process, which reads the hub settings of ``os.environ`` as it
    starts (huggingface_hub reads HF_HUB_OFFLINE once, on import)."""
    code = (
        "import sys; from prune2drive_ros.vlm.conversion import convert_checkpoint; "
        f"convert_checkpoint(sys.argv[1], sys.argv[2], shard_bytes={SHARD_BYTES})"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(source), str(target)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_conversion_bytes_do_not_depend_on_the_hub_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers writes into tokenizer_config.json whether HF_HUB_OFFLINE or
    TRANSFORMERS_OFFLINE forced local_files_only while the tokenizer was read."""
    source = write_original_drivemm(tmp_path / "original")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home-online"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    online = _convert_in_a_process(source, tmp_path / "online")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home-offline"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    offline = _convert_in_a_process(source, tmp_path / "offline")
    for process in (online, offline):
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output.decode()
    files = sorted(p.name for p in (tmp_path / "online").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "offline").iterdir())
    assert "tokenizer_config.json" in files
    for name in files:
        assert (tmp_path / "online" / name).read_bytes() == (
            tmp_path / "offline" / name
        ).read_bytes(), name
    tokenizer_config = json.loads((tmp_path / "online" / "tokenizer_config.json").read_text())
    assert not {"local_files_only", "is_local", "cache_dir"} & tokenizer_config.keys()


# -------------------------------------------------------------------------------- the tower


#: A hub id that is not in llava_next.KNOWN_TOWERS.
HUB_TOWER = "someone/siglip-tiny"


def _tower_config(folder: Path, **changes: object) -> Path:
    """A SigLIP config folder like the tiny checkpoint's tower (``changes`` applied)."""
    SiglipVisionConfig(**{**TOWER, **changes}).save_pretrained(folder)
    return folder


def test_a_hub_id_is_never_read_as_a_folder_of_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_original_drivemm(tmp_path / "original", tower=HUB_TOWER)
    # A folder named like the hub id in the current folder: a bare from_pretrained(HUB_TOWER)
    # would read it.
    _tower_config(tmp_path / "cwd" / HUB_TOWER)
    monkeypatch.chdir(tmp_path / "cwd")
    asked: list[tuple[str, str]] = []

    def offline(repo_id: str, filename: str) -> str:
        asked.append((repo_id, filename))
        raise OSError("offline: not in the hub cache")

    monkeypatch.setattr(llava_next, "hf_hub_download", offline, raising=False)
    with pytest.raises(ConversionError) as caught:
        convert_checkpoint(source, tmp_path / "out")
    assert asked == [(HUB_TOWER, "config.json")]
    message = str(caught.value)
    assert f"{HUB_TOWER!r} (config.json mm_vision_tower) is read as a hub id" in message
    assert "pass --vision-tower FOLDER_OR_HUB_ID" in message
    assert not (tmp_path / "out").exists()
    # The command says the same, and converts with the flag naming a folder ("./" makes a
    # name a folder's, relative to the current one).
    args = ["convert", str(source), str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 2
    assert "--vision-tower" in capsys.readouterr().err
    assert main([*args, "--vision-tower", f"./{HUB_TOWER}"]) == 0
    vision = json.loads((tmp_path / "out" / "config.json").read_text())["vision_config"]
    assert (vision["hidden_size"], vision["num_hidden_layers"]) == (32, 2)


def test_a_hub_id_is_read_from_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_original_drivemm(tmp_path / "original", tower=HUB_TOWER)
    snapshot = _tower_config(tmp_path / "hub" / "snapshots" / "0123")

    def cached(repo_id: str, filename: str) -> str:
        assert (repo_id, filename) == (HUB_TOWER, "config.json")
        return str(snapshot / filename)

    monkeypatch.setattr(llava_next, "hf_hub_download", cached)
    out = convert_checkpoint(source, tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["vision_config"]["hidden_size"] == 32
    # A hub id given to vision_tower (--vision-tower) is read the same way.
    other = write_original_drivemm(tmp_path / "other", tower="/nowhere/siglip")
    assert convert_checkpoint(other, tmp_path / "out2", vision_tower=HUB_TOWER).is_dir()


def test_tower_errors_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_original_drivemm(tmp_path / "original", tower="/authors/machine/siglip")
    with pytest.raises(ConversionError) as caught:
        convert_checkpoint(source, tmp_path / "out")
    assert "/authors/machine/siglip/config.json does not exist" in str(caught.value)
    assert "pass --vision-tower FOLDER_OR_HUB_ID" in str(caught.value)
    wide = _tower_config(tmp_path / "wide", hidden_size=48)
    args = ["convert", str(source), str(tmp_path / "out"), "--vision-tower", str(wide)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "does not match the config of" in err and "(--vision-tower:" in err
    assert "pass --vision-tower FOLDER_OR_HUB_ID" in err
    assert not (tmp_path / "out").exists()
    assert llava_next.is_folder_name("~/siglip") and llava_next.is_folder_name("../siglip")
    assert not llava_next.is_folder_name("google/siglip-so400m-patch14-384")


# -------------------------------------------------------------------------------- image fit


@pytest.mark.parametrize("aspect", ["anyres_max_9", "anyres", "highres"])
def test_a_checkpoint_that_tiles_its_images_is_refused_unless_a_fit_is_named(
    tmp_path: Path, aspect: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_original_drivemm(tmp_path / "original", image_aspect_ratio=aspect)
    with pytest.raises(ConversionError) as caught:
        convert_checkpoint(source, tmp_path / "out")
    message = str(caught.value)
    assert f"image_aspect_ratio is {aspect!r}" in message
    assert "feeds each camera view as one image" in message and "--image-fit pad" in message
    assert not (tmp_path / "out").exists()
    # Named, the fit is used and recorded, with the checkpoint's own aspect ratio.
    args = ["convert", str(source), str(tmp_path / "out"), "--no-progress"]
    assert main([*args, "--image-fit", "resize"]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config[IMAGE_FIT_KEY] == "resize"
    assert config[llava_next.ORIGINAL_ASPECT_KEY] == aspect
    assert "vision_aspect_ratio" not in config
    assert load_vlm(tmp_path / "out").image_fit == "resize"
    padded = convert_checkpoint(source, tmp_path / "padded", image_fit="pad")
    assert load_vlm(padded).image_fit == "pad"
    capsys.readouterr()


def test_an_image_fit_that_contradicts_the_checkpoint_is_refused(
    source: Path, tmp_path: Path, model_type: str
) -> None:
    fit = {"llava_llama": "pad", "llava_qwen": "resize"}[model_type]
    other = {"pad": "resize", "resize": "pad"}[fit]
    with pytest.raises(ConversionError, match=f"--image-fit {other} contradicts"):
        convert_checkpoint(source, tmp_path / "out", image_fit=other)
    with pytest.raises(ConversionError, match="unknown image fit 'crop'"):
        convert_checkpoint(source, tmp_path / "out", image_fit="crop")
    config = json.loads(
        (convert_checkpoint(source, tmp_path / "out", image_fit=fit) / "config.json").read_text()
    )
    assert config[IMAGE_FIT_KEY] == fit and llava_next.ORIGINAL_ASPECT_KEY not in config


# -------------------------------------------------------------------------------- errors


def _copy(source: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(source, folder)
    return folder


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    assert llava_next.missing(tmp_path) == ["no config.json"]
    with pytest.raises(ConversionError, match=r"no config\.json"):
        convert_checkpoint(tmp_path, tmp_path / "out")


def test_wrong_model_type_is_refused(source: Path, tmp_path: Path) -> None:
    folder = _copy(source, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "x"}))
    with pytest.raises(ConversionError, match="model_type is 'x', not llava_llama / llava_qwen"):
        convert_checkpoint(folder, tmp_path / "out", format="llava_next")


def test_a_folder_in_neither_format_is_told_what_each_misses(source: Path, tmp_path: Path) -> None:
    folder = _copy(source, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "x"}))
    with pytest.raises(ConversionError) as caught:
        convert_checkpoint(folder, tmp_path / "out")
    reasons = str(caught.value).splitlines()[1:]
    assert [line.split(" (")[0].strip() for line in reasons] == ["llava_next", "internvl_chat"]
    assert reasons[0].endswith("config.json model_type is 'x', not llava_llama / llava_qwen")
    assert reasons[1].endswith(
        "config.json's model_type is 'x', not 'internvl_chat'; no tokenizer.model"
    )
    assert not (tmp_path / "out").exists()


def test_missing_tensor_is_named(source: Path, tmp_path: Path) -> None:
    folder = _copy(source, tmp_path)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.mm_projector.0.weight"]
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert llava_next.missing(folder) == ["no model.mm_projector.0.weight tensor"]
    with pytest.raises(ConversionError, match=r"no model\.mm_projector\.0\.weight tensor"):
        convert_checkpoint(folder, tmp_path / "out")


def test_unknown_tensor_is_not_dropped_silently() -> None:
    assert llava_next.target_name("model.layers.0.self_attn.rotary_emb.inv_freq") is None
    with pytest.raises(ConversionError, match=r"model\.faster_token"):
        llava_next.target_name("model.faster_token")


# -------------------------------------------------------------------------------- command


def test_command_converts_refuses_a_full_target_and_replaces_it_with_force(
    source: Path, converted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "drivemm-hf"
    args = ["convert", str(source), str(target), "--format", "llava_next", "--no-progress"]
    assert main(args) == 0
    assert (target / "config.json").read_bytes() == (converted / "config.json").read_bytes()
    (target / "config.json").write_text("{}")
    assert main(args) == 2
    assert "not empty; pass --force" in capsys.readouterr().err
    assert (target / "config.json").read_text() == "{}"
    assert main([*args, "--force"]) == 0
    assert (target / "config.json").read_bytes() == (converted / "config.json").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drivemm-hf"]


def test_failed_command_leaves_no_target(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _copy(source, tmp_path)
    (broken / "model-00002-of-00002.safetensors").write_bytes(b"not safetensors")
    target = tmp_path / "out"
    assert main(["convert", str(broken), str(target), "--format", "llava_next"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_converted_model_answers(vlm: DrivingVLM) -> None:
    images = [np.zeros((384, 384, 3), dtype=np.uint8)] * len(VIEWS)
    visual = vlm.encode_views(vlm.preprocess(images))
    answers, _ = vlm.generate(visual, None, [QUESTION], max_new_tokens=3)
    assert 1 <= answers[0].new_tokens <= 3
