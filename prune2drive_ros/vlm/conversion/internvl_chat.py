"""InternVL 2.5 in its original remote-code layout -> ``InternVLForConditionalGeneration``.

DriveLMM-o1 (InternVL2.5-8B fine-tuned) is published as OpenGVLab's original ``internvl_chat``
checkpoints are: ``config.json`` with ``model_type "internvl_chat"``, an InternViT
``vision_config`` and an InternLM2 ``llm_config``; tensors ``vision_model.*``, ``mlp1.{0,1,3}``
and ``language_model.*`` in InternLM2's names; a SentencePiece ``tokenizer.model`` read by a
remote-code tokenizer. This module writes the transformers folder the package loads without
remote code:

* Language model: InternLM2 is Llama with fused weights. ``wqkv`` holds, per KV head, that
  head's ``q_per_kv`` query heads, then its key head, then its value head (rows
  ``[kv_heads, q_per_kv + 2, head_dim]``); it is split into ``q/k/v_proj`` in the order Llama's
  grouped-query attention pairs them. ``w1/w3/w2`` are ``gate/up/down_proj``; ``bias`` covers
  ``wqkv`` and ``wo`` only, as Llama's ``attention_bias`` does. RoPE scaling ``dynamic`` /
  ``linear`` use InternLM2's own formulas, which transformers' Llama shares.
* Vision tower: InternViT's ``qkv`` is split into ``q/k/v_proj``, ``ls1/ls2`` are the layer
  scales ``lambda_1/2``; InternViT has no final norm, hence ``use_mean_pooling`` (an identity
  ``layernorm``). The projector is ``mlp1`` (LayerNorm, Linear, GELU, Linear).
* PEFT: InternVL's fine-tuning wraps the language model (and optionally InternViT) with
  ``get_peft_model``, so saved names may read ``language_model.base_model.model.…`` with
  ``….base_layer.weight`` and ``….lora_A/B.default.weight``. Wrapped names are unwrapped, and
  unmerged LoRA factors merged as ``W + (alpha / r) * B @ A``: ``wrap_llm_lora`` and
  ``wrap_backbone_lora`` are always called with ``lora_alpha = 2 * r`` (``r`` being
  ``use_llm_lora`` / ``use_backbone_lora``), so the scale is 2 whatever ``r`` is.
* Tokenizer: a fast tokenizer from ``tokenizer.model`` keeping every added token's id
  (:mod:`.spm_tokenizer`), with the ``internvl2_5`` conversation template as chat template.

Tensors are read one at a time and written shard by shard (:mod:`.shards`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    GenerationConfig,
    GotOcr2ImageProcessorPil,
    InternVLConfig,
    InternVLVisionConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

from ...errors import ConversionError
from ...progress import Progress
from ...prompts import PROMPT_KEY
from .. import internvl
from ..internvl import IMAGENET_MEAN, IMAGENET_STD
from . import read_config
from .shards import Producer, SourceTensors, missing_weights, write_shards
from .spm_tokenizer import fast_from_sentencepiece

logger = logging.getLogger(__name__)

NAME = "internvl_chat"
TITLE = "InternVL 2.5 with InternLM2 in OpenGVLab's original remote-code layout (DriveLMM-o1)"

#: :func:`default_prompt`: DriveLMM-o1 is the paper's checkpoint in this format.
DEFAULT_PROMPT = "drivelmm_o1"

#: Default system messages of InternVL's ChatML conversation templates (``conversation.py``);
#: the model uses ``config.system_message`` instead when the config has one.
SYSTEM_MESSAGES = {
    "internvl2_5": (
        "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的"
        "多模态大语言模型。"
    ),
    "internlm2-chat": (
        "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
        "是一个有用无害的人工智能助手。"
    ),
    "Hermes-2": (
        "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
        "是一个有用无害的人工智能助手。"
    ),
}
#: InternVL's image tokens and what the stock InternVLProcessor calls them on the tokenizer.
IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
}
#: The scale of merged LoRA factors: InternVL wraps with ``lora_alpha = 2 * r``.
LORA_SCALE = 2.0
#: Wrapped-name prefix -> plain prefix, and the config key that gives that wrap's LoRA rank.
_PEFT_PREFIXES = {
    "language_model.base_model.model.": ("language_model.", "use_llm_lora"),
    "vision_model.base_model.model.": ("vision_model.", "use_backbone_lora"),
}
_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<AB>[AB])\.(?P<adapter>[^.]+)\.weight$")
#: Buffers that older checkpoints saved and that transformers recomputes.
_IGNORED = re.compile(r"\.rotary_emb\.inv_freq$")

_TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json")


# -------------------------------------------------------------------------------- detection


def missing(folder: Path) -> list[str]:
    """What ``folder`` lacks to be an original InternVL-chat (InternLM2) checkpoint."""
    config, reasons = read_config(folder)
    if config is None:
        return reasons
    model_type = config.get("model_type")
    if model_type != "internvl_chat":
        reasons.append(f"config.json's model_type is {model_type!r}, not 'internvl_chat'")
    else:
        architectures = (config.get("llm_config") or {}).get("architectures") or [None]
        if architectures[0] != "InternLM2ForCausalLM":
            reasons.append(
                f"llm_config's architecture is {architectures[0]!r}; only InternLM2ForCausalLM "
                "(InternVL2.5-8B, DriveLMM-o1) is converted"
            )
        if not isinstance(config.get("vision_config"), dict):
            reasons.append("config.json has no vision_config")
    reasons += missing_weights(folder)
    reasons += [f"no {name}" for name in _TOKENIZER_FILES if not (folder / name).is_file()]
    return reasons


def default_prompt(folder: Path) -> str:
    """DriveLMM-o1's prompt (:data:`DEFAULT_PROMPT`), whatever checkpoint of the format."""
    return DEFAULT_PROMPT


# -------------------------------------------------------------------------------- configs


def text_config(llm: dict[str, Any]) -> LlamaConfig:
    """The Llama config of an InternLM2 ``llm_config`` (InternLM2Config's defaults apply)."""
    heads = int(llm.get("num_attention_heads", 32))
    return LlamaConfig(
        vocab_size=int(llm.get("vocab_size", 103168)),
        hidden_size=int(llm.get("hidden_size", 4096)),
        intermediate_size=int(llm.get("intermediate_size", 11008)),
        num_hidden_layers=int(llm.get("num_hidden_layers", 32)),
        num_attention_heads=heads,
        num_key_value_heads=int(llm.get("num_key_value_heads") or heads),
        hidden_act=llm.get("hidden_act", "silu"),
        max_position_embeddings=int(llm.get("max_position_embeddings", 2048)),
        rms_norm_eps=float(llm.get("rms_norm_eps", 1e-6)),
        attention_bias=bool(llm.get("bias", True)),
        mlp_bias=False,
        rope_parameters=_rope_parameters(llm),
        bos_token_id=llm.get("bos_token_id", 1),
        eos_token_id=llm.get("eos_token_id", 2),
        pad_token_id=llm.get("pad_token_id", 0),
        tie_word_embeddings=False,
    )


def _rope_parameters(llm: dict[str, Any]) -> dict[str, Any]:
    theta = float(llm.get("rope_theta", 10000))
    scaling = llm.get("rope_scaling")
    if not scaling:
        return {"rope_type": "default", "rope_theta": theta}
    kind = scaling.get("type") or scaling.get("rope_type")
    if kind not in ("dynamic", "linear"):
        raise ConversionError(
            f"llm_config's rope_scaling type is {kind!r}; InternLM2 knows only 'dynamic' and "
            "'linear', which are the ones converted"
        )
    return {"rope_type": kind, "factor": float(scaling["factor"]), "rope_theta": theta}


def vision_config(config: dict[str, Any]) -> InternVLVisionConfig:
    """The InternVLVision config of an InternViT ``vision_config`` (InternVisionConfig defaults).

    Raises:
        ConversionError: a setting transformers' InternVL vision tower cannot express.
    """
    vision = config["vision_config"]
    norm_type = vision.get("norm_type", "rms_norm")
    if norm_type not in ("layer_norm", "rms_norm"):
        raise ConversionError(f"vision_config's norm_type {norm_type!r} is not layer_norm/rms_norm")
    eps = float(vision.get("layer_norm_eps", 1e-6))
    qk_norm = bool(vision.get("qk_normalization", True))
    if qk_norm and eps != 1e-6:
        raise ConversionError(
            f"vision_config has qk_normalization with layer_norm_eps {eps}; transformers' InternVL "
            "vision tower fixes the q/k norm epsilon at 1e-6, so this tower cannot be converted"
        )
    return InternVLVisionConfig(
        hidden_size=int(vision.get("hidden_size", 3200)),
        num_hidden_layers=int(vision.get("num_hidden_layers", 48)),
        num_attention_heads=int(vision.get("num_attention_heads", 25)),
        intermediate_size=int(vision.get("intermediate_size", 12800)),
        attention_bias=bool(vision.get("qkv_bias", False)),
        use_qk_norm=qk_norm,
        norm_type=norm_type,
        layer_norm_eps=eps,
        hidden_act=vision.get("hidden_act", "gelu"),
        image_size=_tile(config)[0],
        patch_size=_tile(config)[1],
        num_channels=int(vision.get("num_channels", 3)),
        attention_dropout=float(vision.get("attention_dropout", 0.0)),
        projection_dropout=float(vision.get("dropout", 0.0)),
        use_mean_pooling=True,  # InternViT has no final norm: the identity "layernorm"
        use_absolute_position_embeddings=True,
    )


def _tile(config: dict[str, Any]) -> tuple[int, int]:
    """(tile size, patch size) in pixels: ``force_image_size`` overrides the tower's own."""
    vision = config["vision_config"]
    size = int(config.get("force_image_size") or vision.get("image_size", 224))
    return size, int(vision.get("patch_size", 14))


def internvl_config(config: dict[str, Any], image_token_id: int) -> InternVLConfig:
    """The transformers config of an original ``internvl_chat`` config."""
    if config.get("ps_version", "v1") != "v2":
        raise ConversionError(
            f"ps_version is {config.get('ps_version', 'v1')!r}; transformers' InternVL does the "
            "'v2' pixel shuffle (InternVL 2 and later); a 'v1' checkpoint sees transposed images"
        )
    vision = vision_config(config)
    ratio = float(config.get("downsample_ratio", 0.5))
    size, patch = _tile(config)
    grid = int(size // patch * ratio)
    converted = InternVLConfig(
        vision_config=vision,
        text_config=text_config(config["llm_config"]),
        image_token_id=image_token_id,
        image_seq_length=grid * grid,
        downsample_ratio=ratio,
        vision_feature_layer=int(config.get("select_layer", -1)),
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    converted.architectures = ["InternVLForConditionalGeneration"]
    dtype = config.get("torch_dtype") or config["llm_config"].get("torch_dtype")
    if dtype:
        converted.dtype = dtype
    return converted


# -------------------------------------------------------------------------------- tensors


class UnwrappedTensors:
    """A checkpoint's tensors under their plain (un-PEFT-wrapped) names, LoRA merged in.

    Raises:
        ConversionError: LoRA of an adapter other than PEFT's ``default``, a factor without
            its pair or base weight, or a rank that contradicts the config's.
    """

    def __init__(self, source: SourceTensors, config: dict[str, Any]) -> None:
        self._source = source
        self._plain: dict[str, str] = {}
        self._lora: dict[str, tuple[str, str]] = {}
        factors: dict[str, dict[str, str]] = {}
        ranks: dict[str, int] = {}
        for raw in source.names():
            name, rank_key = _unwrap(raw)
            match = _LORA.match(name)
            if match is None:
                self._plain[name.replace(".base_layer.", ".")] = raw
                continue
            if match["adapter"] != "default":
                raise ConversionError(
                    f"{raw} is LoRA adapter {match['adapter']!r}; InternVL trains PEFT's single "
                    "'default' adapter, other adapters are not merged"
                )
            factors.setdefault(match["module"] + ".weight", {})[match["AB"]] = raw
            if rank_key is not None:
                ranks[raw] = int(config.get(rank_key) or 0)
        for weight, pair in sorted(factors.items()):
            if set(pair) != {"A", "B"} or weight not in self._plain:
                raise ConversionError(
                    f"LoRA factors of {weight} are incomplete ({', '.join(sorted(pair.values()))} "
                    "without its base weight or other factor); the checkpoint is truncated"
                )
            stated = ranks.get(pair["A"], 0)
            rank = int(self._source.get(pair["A"]).shape[0])
            if stated and stated != rank:
                raise ConversionError(
                    f"{pair['A']} has rank {rank} but config.json says LoRA rank {stated}; "
                    "the folder mixes a config and weights of different fine-tunes"
                )
            self._lora[weight] = (pair["A"], pair["B"])
        if self._lora:
            logger.info("merging %d LoRA pairs with scale %s", len(self._lora), LORA_SCALE)

    def names(self) -> set[str]:
        """The plain names of every tensor (LoRA factors merged away)."""
        return set(self._plain)

    def get(self, name: str) -> torch.Tensor:
        """Tensor ``name`` with its LoRA update merged in (in float32, cast back)."""
        weight = self._source.get(self._plain[name])
        if name not in self._lora:
            return weight
        a, b = (self._source.get(raw).float() for raw in self._lora[name])
        return (weight.float() + LORA_SCALE * (b @ a)).to(weight.dtype)


def _unwrap(raw: str) -> tuple[str, str | None]:
    """A saved name -> its plain name, and the config key of its wrap's LoRA rank (or None)."""
    for wrapped, (plain, rank_key) in _PEFT_PREFIXES.items():
        if raw.startswith(wrapped):
            return plain + raw[len(wrapped) :], rank_key
    return raw, None


def tensor_plan(tensors: UnwrappedTensors, config: InternVLConfig) -> dict[str, Producer]:
    """Converted name -> a function reading and converting that tensor, for every tensor.

    Raises:
        ConversionError: a tensor the config calls for is missing, or one is left unconverted.
    """
    plan: dict[str, Producer] = {}
    used: set[str] = set()
    available = tensors.names()

    def source(name: str) -> str:
        if name not in available:
            raise ConversionError(
                f"the checkpoint has no tensor {name}, which its config.json calls for; the "
                "weights are incomplete or belong to another model"
            )
        used.add(name)
        return name

    def copy(target: str, name: str) -> None:
        original = source(name)
        plan[target] = partial(tensors.get, original)

    def split(
        targets: list[str], name: str, pick: Callable[[torch.Tensor], list[torch.Tensor]]
    ) -> None:
        original = source(name)
        for index, target in enumerate(targets):
            plan[target] = partial(_part, tensors, original, pick, index)

    vision = cast(InternVLVisionConfig, config.vision_config)
    text = cast(LlamaConfig, config.text_config)
    _vision_plan(vision, copy, split)
    for index in range(4):
        if index != 2:  # mlp1.2 is the GELU
            target = ["layer_norm", "linear_1", "", "linear_2"][index]
            for part in ("weight", "bias"):
                copy(f"multi_modal_projector.{target}.{part}", f"mlp1.{index}.{part}")
    _text_plan(text, copy, split)
    left = sorted(n for n in available - used if not _IGNORED.search(n))
    if left:
        raise ConversionError(
            f"{len(left)} tensors of the checkpoint have no place in the converted model (first: "
            f"{', '.join(left[:3])}); it is not a plain InternVL2.5 / InternLM2 checkpoint"
        )
    return plan


def _part(
    tensors: UnwrappedTensors,
    name: str,
    pick: Callable[[torch.Tensor], list[torch.Tensor]],
    index: int,
) -> torch.Tensor:
    """Part ``index`` of fused tensor ``name`` (read again per part: one part in memory)."""
    return pick(tensors.get(name))[index].contiguous()


def _vision_plan(
    vision: InternVLVisionConfig, copy: Callable[..., None], split: Callable[..., None]
) -> None:
    out, src = "vision_tower", "vision_model"
    copy(f"{out}.embeddings.cls_token", f"{src}.embeddings.class_embedding")
    copy(f"{out}.embeddings.position_embeddings", f"{src}.embeddings.position_embedding")
    for part in ("weight", "bias"):
        copy(
            f"{out}.embeddings.patch_embeddings.projection.{part}",
            f"{src}.embeddings.patch_embedding.{part}",
        )
    for layer in range(vision.num_hidden_layers):
        o, s = f"{out}.encoder.layer.{layer}", f"{src}.encoder.layers.{layer}"
        parts = ("weight", "bias") if vision.attention_bias else ("weight",)
        for part in parts:
            split(
                [f"{o}.attention.{p}_proj.{part}" for p in "qkv"],
                f"{s}.attn.qkv.{part}",
                lambda t: list(t.chunk(3, dim=0)),
            )
        if vision.use_qk_norm:
            copy(f"{o}.attention.q_norm.weight", f"{s}.attn.q_norm.weight")
            copy(f"{o}.attention.k_norm.weight", f"{s}.attn.k_norm.weight")
        norm_parts = ("weight", "bias") if vision.norm_type == "layer_norm" else ("weight",)
        for target, name, parts_ in (
            ("attention.projection_layer", "attn.proj", ("weight", "bias")),
            ("mlp.fc1", "mlp.fc1", ("weight", "bias")),
            ("mlp.fc2", "mlp.fc2", ("weight", "bias")),
            ("layernorm_before", "norm1", norm_parts),
            ("layernorm_after", "norm2", norm_parts),
        ):
            for part in parts_:
                copy(f"{o}.{target}.{part}", f"{s}.{name}.{part}")
        copy(f"{o}.lambda_1", f"{s}.ls1")
        copy(f"{o}.lambda_2", f"{s}.ls2")


def _text_plan(text: LlamaConfig, copy: Callable[..., None], split: Callable[..., None]) -> None:
    out, src = "language_model", "language_model"
    copy(f"{out}.model.embed_tokens.weight", f"{src}.model.tok_embeddings.weight")
    copy(f"{out}.model.norm.weight", f"{src}.model.norm.weight")
    copy(f"{out}.lm_head.weight", f"{src}.output.weight")
    kv_heads = int(text.num_key_value_heads or text.num_attention_heads)
    head_dim = int(text.hidden_size) // int(text.num_attention_heads)
    per_kv = int(text.num_attention_heads) // kv_heads

    def split_wqkv(tensor: torch.Tensor) -> list[torch.Tensor]:
        # Rows per KV head: its per_kv query heads, its key head, its value head.
        grouped = tensor.reshape(kv_heads, per_kv + 2, head_dim, *tensor.shape[1:])
        rest = tensor.shape[1:]
        return [
            grouped[:, :per_kv].reshape(kv_heads * per_kv * head_dim, *rest),
            grouped[:, per_kv].reshape(kv_heads * head_dim, *rest),
            grouped[:, per_kv + 1].reshape(kv_heads * head_dim, *rest),
        ]

    for layer in range(text.num_hidden_layers):
        o, s = f"{out}.model.layers.{layer}", f"{src}.model.layers.{layer}"
        parts = ("weight", "bias") if text.attention_bias else ("weight",)
        for part in parts:
            split(
                [f"{o}.self_attn.{p}_proj.{part}" for p in "qkv"],
                f"{s}.attention.wqkv.{part}",
                split_wqkv,
            )
            copy(f"{o}.self_attn.o_proj.{part}", f"{s}.attention.wo.{part}")
        for target, name in (
            ("mlp.gate_proj", "feed_forward.w1"),
            ("mlp.up_proj", "feed_forward.w3"),
            ("mlp.down_proj", "feed_forward.w2"),
            ("input_layernorm", "attention_norm"),
            ("post_attention_layernorm", "ffn_norm"),
        ):
            copy(f"{o}.{target}.weight", f"{s}.{name}.weight")


# -------------------------------------------------------------------------------- convert


def convert(
    source: Path, target: Path, *, prompt: str | None, shard_bytes: int, progress: Progress
) -> None:
    """Write the converted checkpoint ``source`` (in this format: ``missing`` is empty) into
    the existing empty folder ``target``; the options are :func:`~.convert_checkpoint`'s.

    Raises:
        ConversionError: a setting or tensor cannot be converted.
    """
    original = json.loads((source / "config.json").read_text(encoding="utf-8"))
    tokenizer_config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
    tokenizer = _tokenizer(source, tokenizer_config, original)
    config = internvl_config(original, token_id(tokenizer, IMAGE_TOKENS["context_image_token"]))
    if prompt is not None:
        setattr(config, PROMPT_KEY, prompt)
    with SourceTensors(source) as raw:
        plan = tensor_plan(UnwrappedTensors(raw, original), config)
        write_shards(target, plan, shard_bytes=shard_bytes, progress=progress)
    config.save_pretrained(target)
    _generation_config(tokenizer).save_pretrained(target)
    tokenizer.save_pretrained(target)
    _image_processor(original).save_pretrained(target)
    logger.info("converted %s (%s) to %s", source, NAME, target)


def _special(value: Any, default: str) -> str:
    """A tokenizer_config special token (a string or an AddedToken dict), or ``default``."""
    if isinstance(value, dict):
        return str(value["content"])
    return str(value) if value else default


def _tokenizer(
    source: Path, tokenizer_config: dict[str, Any], config: dict[str, Any]
) -> PreTrainedTokenizerFast:
    added = {
        int(i): entry for i, entry in (tokenizer_config.get("added_tokens_decoder") or {}).items()
    }
    if not added and (source / "added_tokens.json").is_file():
        listed = json.loads((source / "added_tokens.json").read_text(encoding="utf-8"))
        added = {int(i): {"content": token, "special": True} for token, i in listed.items()}
    bos = _special(tokenizer_config.get("bos_token"), "<s>")
    fast = fast_from_sentencepiece(
        source / "tokenizer.model",
        added,
        bos_token=bos,
        add_bos_token=bool(tokenizer_config.get("add_bos_token", True)),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=fast,
        bos_token=bos,
        eos_token=_special(tokenizer_config.get("eos_token"), "</s>"),
        unk_token=_special(tokenizer_config.get("unk_token"), "<unk>"),
        pad_token=_special(tokenizer_config.get("pad_token"), "</s>"),
        chat_template=chat_template(_system_message(config)),
        clean_up_tokenization_spaces=False,
        extra_special_tokens=dict(IMAGE_TOKENS),
    )


def _system_message(config: dict[str, Any]) -> str:
    if config.get("system_message"):
        return str(config["system_message"])
    template = config.get("template")
    if template not in SYSTEM_MESSAGES:
        raise ConversionError(
            f"config.json's conversation template is {template!r}; converted are "
            f"{', '.join(SYSTEM_MESSAGES)} (InternLM2's ChatML), whose system message is known"
        )
    return SYSTEM_MESSAGES[template]


def chat_template(system_message: str) -> str:
    """InternVL's ChatML conversation (``internvl2_5``) as a Jinja chat template.

    ``model.chat`` tokenises the prompt with the BOS token first; the default system turn is
    written when the messages bring none; images are ``<image>`` lines, as transformers' own
    InternVL template writes them for its processor to expand.
    """
    system = json.dumps(system_message, ensure_ascii=False)
    return (
        "{{ bos_token }}"
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set system = messages[0]['content'] %}{% set messages = messages[1:] %}"
        f"{{% else %}}{{% set system = {system} %}}{{% endif %}}"
        "{{ '<|im_start|>system\\n' + system + '<|im_end|>\\n' }}"
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for content in message['content'] %}"
        "{% if content['type'] == 'image' %}{{ '<image>\\n' }}"
        "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


def token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of ``token``, or a ConversionError: InternVL's tokenizers all have it."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int) or found == tokenizer.unk_token_id:
        raise ConversionError(
            f"the checkpoint's tokenizer has no {token} token; it is not an InternVL2.5 tokenizer"
        )
    return found


def _generation_config(tokenizer: PreTrainedTokenizerFast) -> GenerationConfig:
    """Stop at ``<|im_end|>`` (what ``model.chat`` stops at) and at the tokenizer's EOS."""
    stops = sorted({token_id(tokenizer, "<|im_end|>"), token_id(tokenizer, tokenizer.eos_token)})
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id,
    )


def _image_processor(config: dict[str, Any]) -> GotOcr2ImageProcessorPil:
    """InternVL's 448 px tiles with ImageNet normalisation and the checkpoint's tiling limits."""
    size = int(config.get("force_image_size") or internvl.IMAGE_SIZE)
    return GotOcr2ImageProcessorPil(
        size={"height": size, "width": size},
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        crop_to_patches=bool(config.get("dynamic_image_size", False)),
        min_patches=int(config.get("min_dynamic_patch", 1)),
        max_patches=int(config.get("max_dynamic_patch", 12)),
    )
