"""A tiny random DriveMM checkpoint in its ORIGINAL format (LLaVA-NeXT's ``llava`` package).

What DriveMM/DriveMM ships, at toy widths: config.json with LLaVA's ``mm_*`` keys on a Llama-3.1
config (``llava_llama``, rope scaling ``llama3``), the original tensor names (the decoder's as
``LlamaForCausalLM`` names them, ``model.mm_projector.{0,2}``, ``model.image_newline``,
``model.vision_tower.vision_tower.vision_model.*`` with the tower's last layer deleted) in two
safetensors shards with an index, and a Llama-3-style tokenizer (``tokenizer.json`` and
``tokenizer_config.json`` with the special tokens and a Llama-3.1 chat template, as Meta's are).

``mm_vision_tower`` names a local SigLIP folder written beside the checkpoint (one layer more than
the checkpoint stores, other random weights), where DriveMM names the hub id
``google/siglip-so400m-patch14-384``: the converter reads the tower's head count from that
folder, as it reads so400m's from its table. (LLaVA's own ``build_vision_tower`` would take an
existing local path for a CLIP tower; to run LLaVA's code on this checkpoint, name the hub id and
put this folder in an offline hub cache under it.) ``tower=`` names it otherwise (a hub id, or
a folder the converter must be told with ``vision_tower``).

``image_aspect_ratio`` is ``pad`` for ``llava_llama`` (DriveMM's views padded to squares, as the
converter records them) and ``square`` for ``llava_qwen``; ``image_aspect_ratio=`` writes
another (``anyres_max_9``, as LLaVA-OneVision's lmms-lab releases have, is refused by the
converter unless told how to feed views). Deterministic from the seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from checkpoint_files import added_token, write_json, write_sharded
from safetensors.torch import save_file
from tokenizers import processors
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from prune2drive_ros.vlm.tiny import train_bpe

#: Meta's Llama-3 special tokens (the reserved ones left out).
BOS, EOT = "<|begin_of_text|>", "<|eot_id|>"
SPECIAL_TOKENS = (BOS, "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", EOT)
#: Llama-3.1-Instruct's chat template without its tool-calling branches: a system block with
#: the "Cutting Knowledge Date" lines always comes first.
LLAMA31_CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    '{%- if not date_string is defined %}{%- set date_string = "26 Jul 2024" %}{%- endif %}\n'
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    '{%- else %}{%- set system_message = "" %}{%- endif %}\n'
    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n'
    '{{- "Cutting Knowledge Date: December 2023\\n" }}\n'
    '{{- "Today Date: " + date_string + "\\n\\n" }}\n'
    "{{- system_message }}\n"
    '{{- "<|eot_id|>" }}\n'
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
}
#: The SigLIP folder mm_vision_tower names: so400m's layout at toy width, 384 px / 14 px.
TOWER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 3,
    "image_size": 384,
    "patch_size": 14,
    "vision_use_head": False,
}
#: Where LLaVA keeps the tower's weights; then the names SigLIP had in transformers 4 (and on
#: the hub), which transformers 5's flattened SiglipVisionModel writes without "vision_model.".
VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."
TOWER_PREFIX = "vision_model."


def tokenizer_files(folder: Path) -> None:
    """Write tokenizer.json and tokenizer_config.json as Meta's Llama-3.1 ones."""
    tokenizer = train_bpe(SPECIAL_TOKENS)
    bos = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)]
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    added = {str(tokenizer.token_to_id(token)): added_token(token) for token in SPECIAL_TOKENS}
    config = {
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "chat_template": LLAMA31_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "eos_token": EOT,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    write_json(folder / "tokenizer_config.json", config)


def vocab_size() -> int:
    """The tiny tokenizer's size (= the original embedding's rows, as in DriveMM)."""
    return int(train_bpe(SPECIAL_TOKENS).get_vocab_size(with_added_tokens=True))


#: LLaVA's model_type -> the image_aspect_ratio its tiny checkpoint is written with by default.
IMAGE_ASPECT_RATIOS = {"llava_llama": "pad", "llava_qwen": "square"}
#: LLaVA's model_type -> its language model (what LlavaLlamaForCausalLM / LlavaQwenForCausalLM
#: derive from), and the keys its config.json adds to TEXT.
LANGUAGE_MODELS: dict[str, tuple[type[PreTrainedModel], dict[str, object]]] = {
    "llava_llama": (LlamaForCausalLM, {"pretraining_tp": 1, "tie_word_embeddings": False}),
    # As LLaVA-OneVision-0.5B: tied embeddings, a vocabulary padded past the tokenizer's size.
    "llava_qwen": (
        Qwen2ForCausalLM,
        {"tie_word_embeddings": True, "use_sliding_window": False, "max_window_layers": 24},
    ),
}


def text_config(model_type: str = "llava_llama") -> PreTrainedConfig:
    """The language model's config (the original config.json without LLaVA's keys)."""
    ids = train_bpe(SPECIAL_TOKENS).token_to_id
    model, extra = LANGUAGE_MODELS[model_type]
    config_class: type[PreTrainedConfig] = LlamaConfig if model is LlamaForCausalLM else Qwen2Config
    rows = vocab_size() if model is LlamaForCausalLM else vocab_size() + 64
    return config_class(
        vocab_size=rows, bos_token_id=ids(BOS), eos_token_id=ids(EOT), **TEXT, **extra
    )


def vision_config() -> SiglipVisionConfig:
    """The tower as the checkpoint stores it: the last of the tower folder's layers deleted."""
    return SiglipVisionConfig(**{**TOWER, "num_hidden_layers": TOWER["num_hidden_layers"] - 1})


def original_tensors(seed: int = 0, model_type: str = "llava_llama") -> dict[str, torch.Tensor]:
    """The tiny checkpoint's tensors under their ORIGINAL names (float32), from ``seed``.

    Norm weights are drawn around 1, every other tensor around 0 with std 0.1. A tied
    language model stores no ``lm_head.weight``.
    """
    model, _ = LANGUAGE_MODELS[model_type]
    config = text_config(model_type)
    with torch.device("meta"):
        text_names = model(config).state_dict()
        vision_names = SiglipVisionModel(vision_config()).state_dict()
    if config.tie_word_embeddings:
        text_names.pop("lm_head.weight", None)
    shapes = {name: tensor.shape for name, tensor in text_names.items()}
    shapes |= {VISION_PREFIX + name: tensor.shape for name, tensor in vision_names.items()}
    hidden, vision_hidden = TEXT["hidden_size"], TOWER["hidden_size"]
    shapes |= {
        "model.mm_projector.0.weight": torch.Size([hidden, vision_hidden]),
        "model.mm_projector.0.bias": torch.Size([hidden]),
        "model.mm_projector.2.weight": torch.Size([hidden, hidden]),
        "model.mm_projector.2.bias": torch.Size([hidden]),
        "model.image_newline": torch.Size([hidden]),
    }
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in sorted(shapes):
        noise = torch.randn(shapes[name], generator=generator)
        norm = "norm" in name and name.endswith(".weight")
        tensors[name] = 1 + 0.1 * noise if norm else 0.1 * noise
    return tensors


def write_original_drivemm(
    root: Path,
    seed: int = 0,
    model_type: str = "llava_llama",
    *,
    image_aspect_ratio: str | None = None,
    tower: str | None = None,
) -> Path:
    """Write the tiny original checkpoint (and its tower folder, ``root/siglip-tower``) under
    ``root``; return it.

    ``model_type="llava_qwen"`` writes a LLaVA-OneVision-style one instead (Qwen2, tied).
    ``image_aspect_ratio`` overrides :data:`IMAGE_ASPECT_RATIOS`; ``tower`` is written as
    ``mm_vision_tower`` instead of the tower folder's absolute path.
    """
    root.mkdir(parents=True, exist_ok=True)
    tower_name = tower
    tower_folder = root / "siglip-tower"
    tower_folder.mkdir()
    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        tower_model = SiglipVisionModel(SiglipVisionConfig(**TOWER))
    tower_model.config.save_pretrained(tower_folder)
    tower_tensors = {TOWER_PREFIX + n: t.contiguous() for n, t in tower_model.state_dict().items()}
    save_file(tower_tensors, tower_folder / "model.safetensors", metadata={"format": "pt"})
    folder = root / "DriveMM"
    folder.mkdir()
    tokenizer_files(folder)
    text = text_config(model_type)
    _, extra = LANGUAGE_MODELS[model_type]
    architecture = (
        "LlavaLlamaForCausalLM" if model_type == "llava_llama" else "LlavaQwenForCausalLM"
    )
    config = {
        "architectures": [architecture],
        "attention_dropout": 0.0,
        "bos_token_id": text.bos_token_id,
        "eos_token_id": text.eos_token_id,
        "hidden_act": "silu",
        "image_aspect_ratio": image_aspect_ratio or IMAGE_ASPECT_RATIOS[model_type],
        "image_crop_resolution": None,
        "image_grid_pinpoints": [[384, 384], [384, 768], [768, 384], [768, 768]],
        "image_split_resolution": None,
        "initializer_range": 0.02,
        "mm_hidden_size": TOWER["hidden_size"],
        "mm_newline_position": "grid",
        "mm_patch_merge_type": "spatial_unpad",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_resampler_type": None,
        "mm_spatial_pool_mode": "bilinear",
        "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": tower_name or str(tower_folder),
        "mm_vision_tower_lr": 2e-06,
        "model_type": model_type,
        "tokenizer_model_max_length": 32768,
        "tokenizer_padding_side": "right",
        "torch_dtype": "float32",
        "transformers_version": "4.43.1",
        "use_cache": True,
        "use_mm_proj": True,
        "use_pos_skipping": False,
        "vision_tower_pretrained": None,
        "vocab_size": text.vocab_size,
        **TEXT,
        **extra,
    }
    write_json(folder / "config.json", dict(sorted(config.items())))
    write_json(
        folder / "generation_config.json",
        {
            "bos_token_id": text.bos_token_id,
            "eos_token_id": [text.eos_token_id],
            "do_sample": False,
        },
    )
    tensors = original_tensors(seed, model_type)
    first = {n: t for n, t in tensors.items() if n.startswith(("model.embed", "model.layers.0."))}
    write_sharded(folder, (first, {n: t for n, t in tensors.items() if n not in first}))
    return folder
