"""What is particular to InternVL: one 448 px tile per view, <img> ... </img> around each view.

The behaviour shared with the other families (retention 1.0 equals the stock forward, pruning,
positions, caching, loading errors) is tested in ``test_vlm_families.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reference_input_ids
from transformers import GotOcr2ImageProcessorPil

from prune2drive_ros.pruning import random_select
from prune2drive_ros.views import VIEWS
from prune2drive_ros.vlm import DrivingVLM, load_vlm
from prune2drive_ros.vlm.internvl import InternVLVLM
from prune2drive_ros.vlm.tiny import cached_tiny

BUDGETS = (25, 12, 38, 5, 25, 1)


@pytest.fixture(scope="module")
def tiny() -> Path:
    return cached_tiny("internvl")


@pytest.fixture(scope="module")
def vlm(tiny: Path) -> DrivingVLM:
    return load_vlm(tiny)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.integers(0, 256, (448, 448, 3), dtype=np.uint8) for _ in VIEWS]


def test_geometry_and_flag(vlm: DrivingVLM) -> None:
    assert isinstance(vlm, InternVLVLM)
    assert (vlm.tokens_per_view, vlm.patch_grid, vlm.image_size) == (256, (16, 16), (448, 448))
    assert vlm.random_weights


def test_preprocess_equals_image_processor(vlm: DrivingVLM, images: list[np.ndarray]) -> None:
    processor = GotOcr2ImageProcessorPil.from_pretrained(vlm.name)
    assert list(processor.image_mean) == [0.485, 0.456, 0.406]  # ImageNet, as InternVL ships it
    assert list(processor.image_std) == [0.229, 0.224, 0.225]
    expected = processor(images, return_tensors="pt")["pixel_values"]
    assert expected.shape == (len(VIEWS), 3, 448, 448)  # one tile per view, no crops
    torch.testing.assert_close(vlm.preprocess(images), expected, rtol=0, atol=1e-6)


def test_each_view_is_wrapped_as_the_processor_writes_it(vlm: DrivingVLM) -> None:
    """Per view: <img>, 256 <IMG_CONTEXT> (what InternVLProcessor expands one image to), </img>."""
    tokenizer = vlm.tokenizer
    ids = reference_input_ids(vlm, "Is it safe?")[0].tolist()
    image = (
        tokenizer.start_image_token
        + tokenizer.context_image_token * vlm.tokens_per_view
        + tokenizer.end_image_token
    )
    text = tokenizer.decode(ids)
    assert text.count(image) == len(VIEWS)
    assert text.count(tokenizer.start_image_token) == len(VIEWS)
    assert tokenizer.context_image_token_id == vlm.model.config.image_token_id


def test_pruned_views_keep_their_wrappers(vlm: DrivingVLM, images: list[np.ndarray]) -> None:
    """<img> and </img> are text: never pruned, they enclose exactly the view's kept tokens."""
    visual = vlm.encode_views(vlm.preprocess(images))
    selection = random_select(visual, BUDGETS, seed=5)
    inputs = vlm.prefill_inputs(visual, selection, "Is it safe?")
    # 1-D RoPE with original positions: the pruned prompt's ids are the unpruned ones there.
    ids = reference_input_ids(vlm, "Is it safe?")[0][inputs.positions[0]]
    tokenizer = vlm.tokenizer
    starts = (ids == tokenizer.start_image_token_id).nonzero().flatten()
    ends = (ids == tokenizer.end_image_token_id).nonzero().flatten()
    image = ids == vlm.model.config.image_token_id
    assert int(image.sum()) == sum(BUDGETS)
    for start, end, budget in zip(starts.tolist(), ends.tolist(), BUDGETS, strict=True):
        assert bool(image[start + 1 : end].all()) and end - start - 1 == budget


def test_tiling_in_the_processor_config_is_not_used(
    vlm: DrivingVLM, tiny: Path, tmp_path: Path, images: list[np.ndarray]
) -> None:
    """Tiling is a processor option: a checkpoint that tiles still gets one tile per view."""
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny, checkpoint)
    path = checkpoint / "preprocessor_config.json"
    processor = json.loads(path.read_text())
    path.write_text(json.dumps({**processor, "crop_to_patches": True, "max_patches": 12}))
    tiled = load_vlm(checkpoint)
    assert tiled.tokens_per_view == 256
    torch.testing.assert_close(tiled.preprocess(images), vlm.preprocess(images))


def test_tokenizer_names_its_image_tokens(tiny: Path) -> None:
    """The named tokens InternVLProcessor reads are saved with the tiny tokenizer."""
    config = json.loads((tiny / "tokenizer_config.json").read_text())
    assert config["start_image_token"] == "<img>"
    assert config["end_image_token"] == "</img>"
    assert config["context_image_token"] == "<IMG_CONTEXT>"
