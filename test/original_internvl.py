"""Tiny random checkpoints in OpenGVLab's ORIGINAL ``internvl_chat`` layout (InternViT + InternLM2).

Written as the original code reads them: ``config.json`` with ``model_type "internvl_chat"``,
an InternViT ``vision_config`` and an InternLM2 ``llm_config``; tensors under InternVL's own
names (``vision_model.*``, ``mlp1.*``, ``language_model.model.tok_embeddings`` ...), optionally
PEFT-wrapped with unmerged LoRA factors as ``wrap_llm_lora`` / ``wrap_backbone_lora`` save them;
safetensors in two shards with an index; a SentencePiece BPE ``tokenizer.model`` trained here
offline, and ``tokenizer_config.json`` with InternLM2's and InternVL's added tokens. Everything
is deterministic from the seed. The 448 px / 14 px / 0.5 geometry is InternVL 2.5's (what the
package's InternVL adapter requires); the widths are tiny.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from checkpoint_files import added_token, write_json, write_sharded

#: InternLM2's chat tokens (inside the SentencePiece vocabulary) and InternVL's (after it).
CHAT_TOKENS = ("<|im_end|>", "<|im_start|>")
INTERNVL_TOKENS = (
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
)
CORPUS = (
    "Is there a pedestrian in front of the ego vehicle?",
    "What should the ego vehicle do next? Keep going straight at the same speed.",
    "The traffic light ahead is red, so the ego vehicle should stop before the crosswalk.",
    "There is a cyclist on the right side of the road and a parked bus behind.",
    "CAM_FRONT view, CAM_BACK_LEFT view: brake gently, then turn right.",
    "你是书生·万象，英文名是InternVL。",
)
#: Modules InternVL's LoRA wraps (``wrap_llm_lora`` for InternLM2, ``wrap_backbone_lora``).
LLM_LORA_TARGETS = (
    "attention.wqkv",
    "attention.wo",
    "feed_forward.w1",
    "feed_forward.w2",
    "feed_forward.w3",
)
VISION_LORA_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def train_tokenizer() -> bytes:
    """A BPE SentencePiece model with byte fallback and InternLM2's chat tokens, as bytes."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        model_type="bpe",
        vocab_size=380,
        hard_vocab_limit=False,
        byte_fallback=True,
        character_coverage=1.0,
        user_defined_symbols=list(CHAT_TOKENS),
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def original_config(vocab_size: int, *, lora_rank: int = 0, **vision: Any) -> dict[str, Any]:
    """An InternVL2.5-like ``internvl_chat`` config with tiny widths (``vision`` overrides)."""
    return {
        "architectures": ["InternVLChatModel"],
        "model_type": "internvl_chat",
        "template": "internvl2_5",
        "downsample_ratio": 0.5,
        "force_image_size": 448,
        "ps_version": "v2",
        "select_layer": -1,
        "dynamic_image_size": True,
        "use_thumbnail": True,
        "min_dynamic_patch": 1,
        "max_dynamic_patch": 12,
        "use_backbone_lora": lora_rank,
        "use_llm_lora": lora_rank,
        "torch_dtype": "float32",
        "vision_config": {
            "architectures": ["InternVisionModel"],
            "model_type": "intern_vit_6b",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            "image_size": 448,
            "patch_size": 14,
            "qkv_bias": True,
            "qk_normalization": False,
            "norm_type": "layer_norm",
            "layer_norm_eps": 1e-6,
            "hidden_act": "gelu",
            "drop_path_rate": 0.1,
            **vision,
        },
        "llm_config": {
            "architectures": ["InternLM2ForCausalLM"],
            "model_type": "internlm2",
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_hidden_layers": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_theta": 1000000,
            "rope_scaling": {"type": "dynamic", "factor": 2.0},
            "bias": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 2,
        },
    }


def original_tensors(config: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the plain original names ``config`` calls for."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.2, offset: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale + offset

    vision, llm = config["vision_config"], config["llm_config"]
    width, inner = vision["hidden_size"], vision["intermediate_size"]
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    tensors = {
        "vision_model.embeddings.class_embedding": rand(1, 1, width),
        "vision_model.embeddings.patch_embedding.weight": rand(width, 3, 14, 14, scale=0.05),
        "vision_model.embeddings.patch_embedding.bias": rand(width),
        "vision_model.embeddings.position_embedding": rand(1, patches + 1, width),
    }
    for layer in range(vision["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{layer}"
        tensors |= {
            f"{p}.attn.qkv.weight": rand(3 * width, width),
            f"{p}.attn.qkv.bias": rand(3 * width),
            f"{p}.attn.proj.weight": rand(width, width),
            f"{p}.attn.proj.bias": rand(width),
            f"{p}.mlp.fc1.weight": rand(inner, width),
            f"{p}.mlp.fc1.bias": rand(inner),
            f"{p}.mlp.fc2.weight": rand(width, inner),
            f"{p}.mlp.fc2.bias": rand(width),
            f"{p}.norm1.weight": rand(width, offset=1.0),
            f"{p}.norm2.weight": rand(width, offset=1.0),
            f"{p}.ls1": rand(width, scale=0.1, offset=0.5),
            f"{p}.ls2": rand(width, scale=0.1, offset=0.5),
        }
        if vision["norm_type"] == "layer_norm":
            tensors[f"{p}.norm1.bias"] = rand(width)
            tensors[f"{p}.norm2.bias"] = rand(width)
        if vision.get("qk_normalization"):
            tensors[f"{p}.attn.q_norm.weight"] = rand(width, offset=1.0)
            tensors[f"{p}.attn.k_norm.weight"] = rand(width, offset=1.0)
    hidden, ffn = llm["hidden_size"], llm["intermediate_size"]
    shuffled = width * 4
    tensors |= {
        "mlp1.0.weight": rand(shuffled, offset=1.0),
        "mlp1.0.bias": rand(shuffled),
        "mlp1.1.weight": rand(hidden, shuffled),
        "mlp1.1.bias": rand(hidden),
        "mlp1.3.weight": rand(hidden, hidden),
        "mlp1.3.bias": rand(hidden),
        "language_model.model.tok_embeddings.weight": rand(llm["vocab_size"], hidden, scale=1.0),
        "language_model.model.norm.weight": rand(hidden, offset=1.0),
        "language_model.output.weight": rand(llm["vocab_size"], hidden),
    }
    head_dim = hidden // llm["num_attention_heads"]
    qkv_rows = (llm["num_attention_heads"] + 2 * llm["num_key_value_heads"]) * head_dim
    for layer in range(llm["num_hidden_layers"]):
        p = f"language_model.model.layers.{layer}"
        tensors |= {
            f"{p}.attention.wqkv.weight": rand(qkv_rows, hidden),
            f"{p}.attention.wo.weight": rand(hidden, hidden),
            f"{p}.feed_forward.w1.weight": rand(ffn, hidden),
            f"{p}.feed_forward.w3.weight": rand(ffn, hidden),
            f"{p}.feed_forward.w2.weight": rand(hidden, ffn),
            f"{p}.attention_norm.weight": rand(hidden, offset=1.0),
            f"{p}.ffn_norm.weight": rand(hidden, offset=1.0),
        }
    return tensors


def lora_wrapped(
    tensors: dict[str, torch.Tensor], rank: int, seed: int = 1
) -> dict[str, torch.Tensor]:
    """``tensors`` as a PEFT-wrapped InternVL saves them, with random unmerged LoRA factors.

    The language model's names gain ``language_model.base_model.model.``, InternViT's
    ``vision_model.base_model.model.``; each LoRA target's ``weight``/``bias`` become
    ``base_layer.*`` beside ``lora_A.default.weight`` ``[r, in]`` and ``lora_B.default.weight``
    ``[out, r]``.
    """
    generator = torch.Generator().manual_seed(seed)
    wrapped = {}
    for name, tensor in tensors.items():
        for tower, targets in (
            ("language_model.", LLM_LORA_TARGETS),
            ("vision_model.", VISION_LORA_TARGETS),
        ):
            if not name.startswith(tower):
                continue
            name = f"{tower}base_model.model.{name[len(tower) :]}"
            module, _, part = name.rpartition(".")
            if module.endswith(targets):
                name = f"{module}.base_layer.{part}"
                if part == "weight":
                    out, inp = tensor.shape
                    wrapped[f"{module}.lora_A.default.weight"] = (
                        torch.randn(rank, inp, generator=generator) * 0.1
                    )
                    wrapped[f"{module}.lora_B.default.weight"] = (
                        torch.randn(out, rank, generator=generator) * 0.1
                    )
        wrapped[name] = tensor
    return wrapped


def tokenizer_config(model: bytes) -> dict[str, Any]:
    """The remote-code InternLM2 tokenizer's config, with every added token and its id."""
    processor = spm.SentencePieceProcessor(model_proto=model)
    size = processor.get_piece_size()
    added = {0: "<unk>", 1: "<s>", 2: "</s>"}
    added |= {processor.piece_to_id(token): token for token in CHAT_TOKENS}
    added |= {size + i: token for i, token in enumerate(INTERNVL_TOKENS)}
    return {
        "tokenizer_class": "InternLM2Tokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "</s>",
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): added_token(token) for i, token in sorted(added.items())},
    }


def write_original(
    folder: Path,
    *,
    seed: int = 0,
    lora_rank: int = 0,
    drop: tuple[str, ...] = (),
    **vision: Any,
) -> Path:
    """Write a tiny original ``internvl_chat`` checkpoint to ``folder``; return ``folder``.

    ``lora_rank`` > 0 writes PEFT-wrapped names with unmerged LoRA factors of that rank (and
    says so in ``use_llm_lora`` / ``use_backbone_lora``); ``drop`` leaves tensors out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model = train_tokenizer()
    (folder / "tokenizer.model").write_bytes(model)
    tok_config = tokenizer_config(model)
    write_json(folder / "tokenizer_config.json", tok_config)
    config = original_config(
        max(map(int, tok_config["added_tokens_decoder"])) + 1, lora_rank=lora_rank, **vision
    )
    write_json(folder / "config.json", config)
    tensors = original_tensors(config, seed)
    if lora_rank:
        tensors = lora_wrapped(tensors, lora_rank, seed + 1)
    tensors = {name: t for name, t in tensors.items() if name not in drop}
    names = sorted(tensors)
    write_sharded(folder, [{n: tensors[n] for n in names[i::2]} for i in (0, 1)])
    return folder
