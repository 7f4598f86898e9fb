"""What is particular to Qwen2.5-VL: a fixed 896 x 504 px budget per view, flattened patches,
and 3-D rotary positions (M-RoPE) that pruning must leave as the stock model computes them.

The behaviour shared with the other families (retention 1.0 equals the stock forward, the kept
tokens' positions equal the full ``get_rope_index`` result, caching, loading errors) is tested
in ``test_vlm_families.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reference_input_ids
from transformers import Qwen2VLImageProcessorPil

from prune2drive_ros.pruning import Selection, grid_select, random_select
from prune2drive_ros.views import VIEWS
from prune2drive_ros.vlm import load_vlm
from prune2drive_ros.vlm.qwen2_5_vl import Qwen2_5_VLVLM
from prune2drive_ros.vlm.tiny import cached_tiny

BUDGETS = (57, 28, 86, 11, 57, 1)
QUESTION = "Is it safe?"


@pytest.fixture(scope="module")
def tiny() -> Path:
    return cached_tiny("qwen2_5_vl")


@pytest.fixture(scope="module")
def vlm(tiny: Path) -> Qwen2_5_VLVLM:
    loaded = load_vlm(tiny)
    assert isinstance(loaded, Qwen2_5_VLVLM)
    return loaded


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(13)
    return [rng.integers(0, 256, (504, 896, 3), dtype=np.uint8) for _ in VIEWS]


@pytest.fixture(scope="module")
def visual(vlm: Qwen2_5_VLVLM, images: list[np.ndarray]) -> torch.Tensor:
    return vlm.encode_views(vlm.preprocess(images))


@pytest.fixture(scope="module")
def selection(visual: torch.Tensor) -> Selection:
    return random_select(visual, BUDGETS, seed=5)


def test_geometry_and_flag(vlm: Qwen2_5_VLVLM) -> None:
    assert (vlm.tokens_per_view, vlm.patch_grid, vlm.image_size) == (576, (18, 32), (896, 504))
    assert vlm.random_weights


def test_patches_equal_the_image_processor(vlm: Qwen2_5_VLVLM, images: list[np.ndarray]) -> None:
    """preprocess + patches is the processor's pixel_values and grid for images at the size."""
    processor = Qwen2VLImageProcessorPil.from_pretrained(vlm.name)
    expected = processor(images, return_tensors="pt")
    flat, grid = vlm.patches(vlm.preprocess(images))
    assert torch.equal(grid, expected["image_grid_thw"])
    assert flat.shape == (len(VIEWS) * 36 * 64, 3 * 2 * 14 * 14)
    torch.testing.assert_close(flat, expected["pixel_values"], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("height", "width"), [(900, 1600), (1080, 1920)])
def test_tiny_processor_gives_a_camera_frame_the_budget(
    vlm: Qwen2_5_VLVLM, height: int, width: int
) -> None:
    """The saved processor config resizes a 16:9 frame to the adapter's 896 x 504 px."""
    processor = Qwen2VLImageProcessorPil.from_pretrained(vlm.name)
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    grid = processor(frame, return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 504 // 14, 896 // 14]]


def test_each_view_is_wrapped_in_vision_markers(vlm: Qwen2_5_VLVLM) -> None:
    """Per view: <|vision_start|>, 576 <|image_pad|>, <|vision_end|>, as the chat template."""
    text = vlm.tokenizer.decode(reference_input_ids(vlm, QUESTION)[0])
    image = "<|vision_start|>" + "<|image_pad|>" * 576 + "<|vision_end|>"
    assert text.count(image) == len(VIEWS)
    assert text.count("<|vision_start|>") == len(VIEWS)


def test_kept_tokens_keep_their_grid_cell(
    vlm: Qwen2_5_VLVLM, visual: torch.Tensor, selection: Selection
) -> None:
    """A kept token at grid cell (r, c) of the view starting at s sits at (s, s + r, s + c)."""
    ids = reference_input_ids(vlm, QUESTION)[0]
    image = ids == vlm.model.config.image_token_id
    inputs = vlm.prefill_inputs(visual, selection, QUESTION)
    places = inputs.positions
    assert places.shape == (3, inputs.length)
    # Nothing before the first view is pruned, so its tokens begin at the same row in both.
    first = int(image.nonzero()[0])
    kept = selection.per_view()[0]
    cells = torch.stack([torch.zeros_like(kept), kept // 32, kept % 32]) + first
    assert torch.equal(places[:, first : first + kept.numel()], cells)
    # <|vision_end|> after the view continues at s + max(rows, cols), on all three axes.
    end = places[:, first + kept.numel()]
    assert end.tolist() == [first + 32] * 3


def test_grid_baseline_follows_the_18_by_32_patch_grid(
    vlm: Qwen2_5_VLVLM, visual: torch.Tensor
) -> None:
    """The grid pruner gets the family's raster, so its lattice spans the wide view evenly."""
    chosen = vlm.prune(visual, vlm.budgets(0.1), "grid")
    expected = grid_select(visual, vlm.budgets(0.1), grid=(18, 32))
    assert torch.equal(chosen.mask, expected.mask)
    kept = chosen.per_view()[0]
    assert len(set((kept % 32).tolist())) > len(set((kept // 32).tolist()))


def test_text_positions_are_equal_on_all_axes(vlm: Qwen2_5_VLVLM, visual: torch.Tensor) -> None:
    ids = reference_input_ids(vlm, QUESTION)[0]
    text = ids != vlm.model.config.image_token_id
    rows = vlm.prefill_inputs(visual, None, QUESTION).positions[:, text]
    assert torch.equal(rows[0], rows[1]) and torch.equal(rows[0], rows[2])
    assert bool((rows[0].diff() >= 1).all())


def test_compact_positions_are_one_dimensional(
    vlm: Qwen2_5_VLVLM, visual: torch.Tensor, selection: Selection
) -> None:
    """Compact renumbering drops the 2-D layout: every axis counts 0..L-1."""
    inputs = vlm.prefill_inputs(visual, selection, QUESTION, positions="compact")
    assert torch.equal(inputs.positions, torch.arange(inputs.length).expand(3, -1))


def test_decoder_gets_three_position_rows(vlm: Qwen2_5_VLVLM) -> None:
    """[3, L] -> [3, 1, L]: M-RoPE ids without the 4th (packed-text) row the stock model adds."""
    positions = torch.arange(12).view(3, 4)
    assert vlm._decoder_position_ids(positions).shape == (3, 1, 4)
