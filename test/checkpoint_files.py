"""What the original-format test checkpoints (``original_*.py``) and the conversion tests share:
weights written as ``save_pretrained`` shards them, added-token entries as tokenizer configs
hold them, and reading a converted folder's tensors whatever its shard layout."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

INDEX = "model.safetensors.index.json"


def write_json(path: Path, value: object) -> None:
    """``value`` as indented UTF-8 JSON (non-ASCII kept, as the originals' files have it)."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def added_token(content: str) -> dict[str, object]:
    """An ``added_tokens_decoder`` entry of a special token, as tokenizer_config.json has it."""
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def write_sharded(folder: Path, parts: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """Write ``parts`` as ``model-0000i-of-0000n.safetensors`` shards with their index."""
    weight_map = {}
    total = 0
    for number, part in enumerate(parts, start=1):
        file = f"model-{number:05d}-of-{len(parts):05d}.safetensors"
        save_file({n: t.contiguous() for n, t in part.items()}, folder / file, {"format": "pt"})
        weight_map |= dict.fromkeys(part, file)
        total += sum(t.numel() * t.element_size() for t in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    write_json(folder / INDEX, index)


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors checkpoint folder, one shard or several."""
    if (folder / INDEX).is_file():
        files = sorted(set(json.loads((folder / INDEX).read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for file in files:
        with safe_open(str(folder / file), "pt") as opened:
            tensors |= {name: opened.get_tensor(name) for name in opened.keys()}  # noqa: SIM118 (safe_open is no dict)
    return tensors
