"""The original ``internvl_chat`` format (DriveLMM-o1) converts to a checkpoint load_vlm loads.

Every reference here is built from the ORIGINAL tensors, independently of the converter: the
vision path is InternViT written out in plain torch, then InternVL's ``ps_version`` v2 pixel
shuffle and ``mlp1``; the language model is a stock LlamaForCausalLM whose q/k/v rows are cut
out of InternLM2's grouped ``wqkv`` by hand; the tokenizer reference is the SentencePiece model
itself with the added tokens split off first, as InternLM2's remote-code tokenizer does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
import torch.nn.functional as F
from checkpoint_files import INDEX, read_tensors, write_sharded
from original_internvl import CORPUS, original_tensors, write_original
from transformers import LlamaConfig, LlamaForCausalLM

from prune2drive_ros.commands.cli import main
from prune2drive_ros.errors import ConversionError
from prune2drive_ros.prompts import PROMPT_KEY
from prune2drive_ros.vlm import load_vlm
from prune2drive_ros.vlm.conversion import convert_checkpoint, detect_format, internvl_chat

FORMAT = "internvl_chat"


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_original(tmp_path_factory.mktemp("original") / "DriveLMMo1")


@pytest.fixture(scope="module")
def converted(original: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_checkpoint(original, tmp_path_factory.mktemp("converted") / "hf")


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _intern_vit(t: dict[str, torch.Tensor], config: dict, pixels: torch.Tensor) -> torch.Tensor:
    """InternVisionModel's last hidden state, from the original tensors (eval: no drop path)."""
    vision = config["vision_config"]
    width, heads = vision["hidden_size"], vision["num_attention_heads"]
    e = "vision_model.embeddings"
    x = F.conv2d(
        pixels, t[f"{e}.patch_embedding.weight"], t[f"{e}.patch_embedding.bias"], stride=14
    )
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([t[f"{e}.class_embedding"].expand(x.shape[0], 1, -1), x], dim=1)
    x = x + t[f"{e}.position_embedding"]
    for layer in range(vision["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{layer}"
        h = F.layer_norm(x, (width,), t[f"{p}.norm1.weight"], t[f"{p}.norm1.bias"], eps=1e-6)
        b, n, _ = h.shape
        qkv = F.linear(h, t[f"{p}.attn.qkv.weight"], t[f"{p}.attn.qkv.bias"])
        q, k, v = qkv.reshape(b, n, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        attn = ((q * (width // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        h = (attn @ v).transpose(1, 2).reshape(b, n, width)
        x = x + F.linear(h, t[f"{p}.attn.proj.weight"], t[f"{p}.attn.proj.bias"]) * t[f"{p}.ls1"]
        h = F.layer_norm(x, (width,), t[f"{p}.norm2.weight"], t[f"{p}.norm2.bias"], eps=1e-6)
        h = F.linear(
            F.gelu(F.linear(h, t[f"{p}.mlp.fc1.weight"], t[f"{p}.mlp.fc1.bias"])),
            t[f"{p}.mlp.fc2.weight"],
            t[f"{p}.mlp.fc2.bias"],
        )
        x = x + h * t[f"{p}.ls2"]
    return x


def _pixel_shuffle_v2(x: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """InternVLChatModel.pixel_shuffle with ps_version 'v2'."""
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale), int(c / scale)).permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    return x.permute(0, 2, 1, 3).contiguous()


def _original_features(
    t: dict[str, torch.Tensor], config: dict, pixels: torch.Tensor
) -> torch.Tensor:
    """InternVLChatModel.extract_feature: InternViT, CLS dropped, pixel shuffle, mlp1."""
    x = _intern_vit(t, config, pixels)[:, 1:, :]
    side = int(x.shape[1] ** 0.5)
    x = _pixel_shuffle_v2(x.reshape(x.shape[0], side, side, -1))
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    x = F.layer_norm(x, (x.shape[-1],), t["mlp1.0.weight"], t["mlp1.0.bias"], eps=1e-5)
    x = F.gelu(F.linear(x, t["mlp1.1.weight"], t["mlp1.1.bias"]))
    return F.linear(x, t["mlp1.3.weight"], t["mlp1.3.bias"])


def _llama_from_internlm2(t: dict[str, torch.Tensor], config: dict) -> LlamaForCausalLM:
    """A stock Llama with InternLM2's weights, wqkv cut per KV head by hand."""
    llm = config["llm_config"]
    heads, kv, hidden = llm["num_attention_heads"], llm["num_key_value_heads"], llm["hidden_size"]
    d, per_kv = hidden // heads, heads // kv
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=llm["vocab_size"],
            hidden_size=hidden,
            intermediate_size=llm["intermediate_size"],
            num_hidden_layers=llm["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=kv,
            rms_norm_eps=llm["rms_norm_eps"],
            max_position_embeddings=llm["max_position_embeddings"],
            rope_parameters={
                "rope_type": "dynamic",
                "factor": 2.0,
                "rope_theta": float(llm["rope_theta"]),
            },
            tie_word_embeddings=False,
        )
    ).eval()
    state = {
        "model.embed_tokens.weight": t["language_model.model.tok_embeddings.weight"],
        "model.norm.weight": t["language_model.model.norm.weight"],
        "lm_head.weight": t["language_model.output.weight"],
    }
    for layer in range(llm["num_hidden_layers"]):
        s, o = f"language_model.model.layers.{layer}", f"model.layers.{layer}"
        wqkv = t[f"{s}.attention.wqkv.weight"]

        def block(g: int, j: int, wqkv: torch.Tensor = wqkv) -> torch.Tensor:
            # Row block j of KV head g: j < per_kv its query heads, then its key, its value.
            start = (g * (per_kv + 2) + j) * d
            return wqkv[start : start + d]

        state |= {
            f"{o}.self_attn.q_proj.weight": torch.cat(
                [block(g, j) for g in range(kv) for j in range(per_kv)]
            ),
            f"{o}.self_attn.k_proj.weight": torch.cat([block(g, per_kv) for g in range(kv)]),
            f"{o}.self_attn.v_proj.weight": torch.cat([block(g, per_kv + 1) for g in range(kv)]),
            f"{o}.self_attn.o_proj.weight": t[f"{s}.attention.wo.weight"],
            f"{o}.mlp.gate_proj.weight": t[f"{s}.feed_forward.w1.weight"],
            f"{o}.mlp.up_proj.weight": t[f"{s}.feed_forward.w3.weight"],
            f"{o}.mlp.down_proj.weight": t[f"{s}.feed_forward.w2.weight"],
            f"{o}.input_layernorm.weight": t[f"{s}.attention_norm.weight"],
            f"{o}.post_attention_layernorm.weight": t[f"{s}.ffn_norm.weight"],
        }
    model.load_state_dict(state, strict=True)
    return model


def _pixels(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 448, 448, generator=generator)


def test_vision_features_equal_the_original_forward(original: Path, converted: Path) -> None:
    config = _config(original)
    tensors = original_tensors(config)
    vlm = load_vlm(converted, prompt="chat_template")  # a tile per view
    pixels = _pixels()
    torch.testing.assert_close(
        vlm.encode_views(pixels), _original_features(tensors, config, pixels), rtol=1e-4, atol=1e-4
    )


def test_logits_equal_a_llama_built_from_internlm2_tensors(original: Path, converted: Path) -> None:
    config = _config(original)
    tensors = original_tensors(config)
    vlm = load_vlm(converted, prompt="chat_template")  # a tile per view
    torch.testing.assert_close(
        vlm.model.get_input_embeddings().weight,
        tensors["language_model.model.tok_embeddings.weight"],
    )
    inputs = vlm.prefill_inputs(vlm.encode_views(_pixels(1)), None, "Is the road clear?")
    got = vlm.prefill(inputs, all_logits=True).logits
    with torch.inference_mode():
        want = _llama_from_internlm2(tensors, config)(
            inputs_embeds=inputs.embeds, position_ids=inputs.positions
        ).logits[0]
    assert got.shape == (inputs.length, config["llm_config"]["vocab_size"])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_converted_config_carries_the_settings_and_the_prompt_key(converted: Path) -> None:
    config = _config(converted)
    assert config["model_type"] == "internvl"
    assert config[PROMPT_KEY] == "drivelmm_o1"
    assert config["text_config"]["model_type"] == "llama"
    assert config["text_config"]["rope_parameters"] == {
        "rope_type": "dynamic",
        "factor": 2.0,
        "rope_theta": 1e6,
    }
    assert (config["image_seq_length"], config["vision_feature_layer"]) == (256, -1)
    vlm = load_vlm(converted)
    assert vlm.prompt_name == "drivelmm_o1" and vlm.view_tokens == (48, 40, 40, 48, 40, 40)
    assert config["image_token_id"] == vlm.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert vlm.tokenizer.convert_tokens_to_ids("<|im_end|>") in vlm._stop_ids
    prompt = vlm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == (
        f"<s><|im_start|>system\n{internvl_chat.SYSTEM_MESSAGES['internvl2_5']}<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_the_format_is_detected(original: Path) -> None:
    assert detect_format(original) is internvl_chat


def test_prompt_none_writes_no_key(original: Path, tmp_path: Path) -> None:
    out = convert_checkpoint(original, tmp_path / "hf", prompt=None)
    assert PROMPT_KEY not in _config(out)


def test_command_writes_the_prompt_it_is_given(
    original: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "hf"
    assert (
        main(["convert", str(original), str(target), "--prompt", "generic", "--no-progress"]) == 0
    )
    assert _config(target)[PROMPT_KEY] == "generic"
    assert main(["convert", str(original), str(target), "--prompt", "none", "--force"]) == 0
    assert PROMPT_KEY not in _config(target)
    assert f"wrote {target}" in capsys.readouterr().out


def test_lora_wrapped_original_equals_the_merged_one(tmp_path: Path) -> None:
    wrapped = write_original(tmp_path / "wrapped", lora_rank=4)
    raw = read_tensors(wrapped)
    merged = {}
    for name, tensor in raw.items():
        if ".lora_" in name:
            continue
        plain = name.replace("base_model.model.", "").replace(".base_layer.", ".")
        module = name.rsplit(".base_layer.", 1)[0]
        if name.endswith(".base_layer.weight"):
            tensor = (
                tensor
                + 2.0
                * raw[f"{module}.lora_B.default.weight"]
                @ raw[f"{module}.lora_A.default.weight"]
            )
        merged[plain] = tensor
    assert len(merged) < len(raw) and any(
        n.startswith("vision_model.base_model.model.encoder") and "lora_A" in n for n in raw
    )
    plain = write_original(tmp_path / "plain")
    weight_map = json.loads((plain / INDEX).read_text())["weight_map"]
    shards = sorted(set(weight_map.values()))
    write_sharded(plain, [{n: merged[n] for n in weight_map if weight_map[n] == s} for s in shards])
    from_wrapped = read_tensors(convert_checkpoint(wrapped, tmp_path / "a"))
    from_plain = read_tensors(convert_checkpoint(plain, tmp_path / "b"))
    assert from_wrapped.keys() == from_plain.keys()
    for name in from_plain:
        torch.testing.assert_close(from_wrapped[name], from_plain[name], rtol=1e-6, atol=1e-6)


def test_lora_rank_contradicting_the_config_is_refused(tmp_path: Path) -> None:
    folder = write_original(tmp_path / "wrapped", lora_rank=4)
    config = _config(folder) | {"use_llm_lora": 8}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=re.escape("rank 4 but config.json says LoRA rank 8")):
        convert_checkpoint(folder, tmp_path / "out")


def test_fast_tokenizer_ids_equal_sentencepiece_with_added_tokens(
    original: Path, converted: Path
) -> None:
    processor = spm.SentencePieceProcessor(model_file=str(original / "tokenizer.model"))
    added = {
        entry["content"]: int(i)
        for i, entry in json.loads((original / "tokenizer_config.json").read_text())[
            "added_tokens_decoder"
        ].items()
    }
    pattern = (
        "(" + "|".join(re.escape(token) for token in sorted(added, key=len, reverse=True)) + ")"
    )
    tokenizer = load_vlm(converted).tokenizer
    texts = [
        *CORPUS,
        "<|im_start|>user\nCAM_FRONT view: <img><IMG_CONTEXT><IMG_CONTEXT></img>\n"
        "Is it   safe?<|im_end|>\n",
        "<ref>the bus</ref><box>[[1, 2]]</box> <quad>x</quad> émoji ✓ tab\there",
    ]
    for text in texts:
        want = []
        for chunk in re.split(pattern, text):
            want += [added[chunk]] if chunk in added else processor.encode(chunk) if chunk else []
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == want, text
        assert tokenizer(text)["input_ids"] == [processor.bos_id(), *want]


def test_converting_twice_gives_identical_files(
    original: Path, converted: Path, tmp_path: Path
) -> None:
    again = convert_checkpoint(original, tmp_path / "again")
    names = sorted(p.name for p in converted.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (converted / name).read_bytes() == (again / name).read_bytes(), name


def test_small_shards_are_indexed_and_load_the_same(
    original: Path, converted: Path, tmp_path: Path
) -> None:
    sharded = convert_checkpoint(original, tmp_path / "sharded", shard_bytes=200_000)
    assert len(list(sharded.glob("model-*-of-*.safetensors"))) > 1
    assert [p.name for p in converted.glob("model*.safetensors*")] == ["model.safetensors"]
    assert read_tensors(sharded).keys() == read_tensors(converted).keys()
    pixels = _pixels(2)
    np.testing.assert_array_equal(
        load_vlm(sharded, prompt="chat_template").encode_views(pixels).numpy(),
        load_vlm(converted, prompt="chat_template").encode_views(pixels).numpy(),
    )


def test_llava_next_flags_do_not_apply(
    original: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConversionError, match=r"--vision-tower \(vision_tower\) does not apply"):
        convert_checkpoint(original, tmp_path / "out", vision_tower="google/siglip-x")
    args = ["convert", str(original), str(tmp_path / "out"), "--image-fit", "pad"]
    assert main(args) == 2
    assert "--image-fit (image_fit) does not apply to a internvl_chat checkpoint" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()
    # Options left None are not given.
    assert convert_checkpoint(original, tmp_path / "out", vision_tower=None).is_dir()


def test_a_folder_that_is_no_checkpoint_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert internvl_chat.missing(tmp_path / "empty") == ["no config.json"]
    with pytest.raises(ConversionError, match=r"not a internvl_chat checkpoint.*no config\.json"):
        convert_checkpoint(tmp_path / "empty", tmp_path / "out", format=FORMAT)


def test_a_wrong_model_type_is_refused(original: Path, tmp_path: Path) -> None:
    folder = write_original(tmp_path / "llava")
    (folder / "config.json").write_text(json.dumps(_config(folder) | {"model_type": "llava"}))
    assert internvl_chat.missing(folder) == [
        "config.json's model_type is 'llava', not 'internvl_chat'"
    ]
    with pytest.raises(ConversionError, match="model_type is 'llava'"):
        convert_checkpoint(folder, tmp_path / "out")


def test_a_missing_tensor_is_named(tmp_path: Path) -> None:
    name = "language_model.model.layers.1.attention.wqkv.weight"
    folder = write_original(tmp_path / "truncated", drop=(name,))
    with pytest.raises(ConversionError, match=re.escape(f"no tensor {name}")):
        convert_checkpoint(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ps_version": "v1"}, "ps_version is 'v1'"),
        ({"template": "vicuna_v1.1"}, "conversation template is 'vicuna_v1.1'"),
        ({"llm_config": {"architectures": ["Qwen2ForCausalLM"]}}, "Qwen2ForCausalLM"),
    ],
)
def test_settings_transformers_cannot_express_are_refused(
    tmp_path: Path, change: dict, message: str
) -> None:
    folder = write_original(tmp_path / "src")
    (folder / "config.json").write_text(json.dumps(_config(folder) | change))
    with pytest.raises(ConversionError, match=re.escape(message)):
        convert_checkpoint(folder, tmp_path / "out")


def test_rms_norm_towers_with_qk_norm_convert(tmp_path: Path) -> None:
    folder = write_original(tmp_path / "src", norm_type="rms_norm", qk_normalization=True)
    vision = _config(convert_checkpoint(folder, tmp_path / "out"))["vision_config"]
    assert (vision["norm_type"], vision["use_qk_norm"]) == ("rms_norm", True)
