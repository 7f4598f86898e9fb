"""What is particular to LLaVA-OneVision: one 384 px image per view (27 x 27 tokens), the
image processor's pixels, position gaps where tokens were pruned; then the FLOPs count and the
prefill benchmark's record, which run on this family.

The behaviour shared with the other families (retention 1.0 equals the stock forward, pruning
keeps every text token and separator at its stock position, caching, greedy decoding equals
``generate``, the stages of ``ask``) is tested in ``test_vlm_families.py``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from conftest import reference_input_ids
from transformers import LlavaOnevisionImageProcessorPil

from prune2drive_ros.commands.bench import prefill as bench_prefill
from prune2drive_ros.errors import BudgetError, DecodeError
from prune2drive_ros.pruning import Selection, random_select
from prune2drive_ros.views import VIEWS
from prune2drive_ros.vlm import DrivingVLM, load_vlm
from prune2drive_ros.vlm.flops import DecoderShape, flops_ratio, prefill_flops
from prune2drive_ros.vlm.tiny import cached_tiny

QUESTION = "Is there a pedestrian in front of the ego vehicle?"
BUDGETS = (73, 40, 100, 12, 73, 1)


@pytest.fixture(scope="module")
def vlm() -> DrivingVLM:
    return load_vlm(cached_tiny("llava_onevision"))


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (384, 384, 3), dtype=np.uint8) for _ in VIEWS]


@pytest.fixture(scope="module")
def pixels(vlm: DrivingVLM, images: list[np.ndarray]) -> torch.Tensor:
    return vlm.preprocess(images)


@pytest.fixture(scope="module")
def visual(vlm: DrivingVLM, pixels: torch.Tensor) -> torch.Tensor:
    return vlm.encode_views(pixels)


@pytest.fixture(scope="module")
def selection(visual: torch.Tensor) -> Selection:
    return random_select(visual, BUDGETS, seed=3)


def test_geometry_and_flag(vlm: DrivingVLM) -> None:
    assert (vlm.tokens_per_view, vlm.patch_grid, vlm.image_size) == (729, (27, 27), (384, 384))
    assert vlm.random_weights
    assert vlm.family == "llava_onevision"


def test_preprocess_equals_image_processor(vlm: DrivingVLM, images: list[np.ndarray]) -> None:
    processor = LlavaOnevisionImageProcessorPil.from_pretrained(vlm.name)
    expected = processor([images], return_tensors="pt")["pixel_values"][:, 0]
    torch.testing.assert_close(vlm.preprocess(images), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        lambda ims: ims[:5],
        lambda ims: [ims[0][:200], *ims[1:]],
        lambda ims: [ims[0].astype(np.float32), *ims[1:]],
    ],
    ids=["five-views", "wrong-size", "float"],
)
def test_preprocess_rejects_bad_images(vlm: DrivingVLM, images: list[np.ndarray], bad) -> None:
    with pytest.raises(DecodeError):
        vlm.preprocess(bad(images))


def test_original_positions_keep_gaps(
    vlm: DrivingVLM, visual: torch.Tensor, selection: Selection
) -> None:
    ids = reference_input_ids(vlm, QUESTION)[0]
    places = vlm.prefill_inputs(visual, selection, QUESTION).positions[0]
    steps = places.diff()
    assert bool((steps >= 1).all()) and bool((steps > 1).any())
    assert int(places[0]) == 0 and int(places[-1]) == ids.numel() - 1
    # Nothing before the first view is pruned, so its first row is at the same place in both.
    start = int((ids == vlm.model.config.image_token_id).nonzero()[0])
    kept = selection.per_view()[0]
    assert torch.equal(places[start : start + kept.numel()], kept + start)


def test_prune_by_name_and_budgets(vlm: DrivingVLM, visual: torch.Tensor) -> None:
    budgets = vlm.budgets(0.1)
    assert budgets == (73,) * len(VIEWS)
    chosen = vlm.prune(visual, budgets, "tfps")
    assert chosen.budgets == budgets
    with pytest.raises(BudgetError):
        vlm.prune(visual, (800,) * len(VIEWS))


def test_generate_rejects_no_new_tokens(vlm: DrivingVLM, visual: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        vlm.generate(visual, None, [QUESTION], max_new_tokens=0)


def test_flops_formula_by_hand(vlm: DrivingVLM) -> None:
    shape = DecoderShape.from_config(vlm.model.config)
    assert (shape.hidden, shape.heads, shape.kv_heads, shape.head_dim) == (64, 4, 2, 16)
    # per layer: projections 2*L*64*(2*64 + 2*32), causal attention 2*64*L*(L+1),
    # SwiGLU 2*L*3*64*128; LM head 2*64*vocab once.
    length = 10
    layer = 2 * length * 64 * 192 + 2 * 64 * length * (length + 1) + 2 * length * 3 * 64 * 128
    assert prefill_flops(shape, length) == 2 * layer + 2 * 64 * shape.vocab
    assert 0 < flops_ratio(shape, 500, 4500) < 500 / 4500 * 1.01


def test_bench_prefill_ends_with_a_json_record(capsys) -> None:
    parser = argparse.ArgumentParser()
    bench_prefill.add_arguments(parser)
    args = parser.parse_args(
        ["--shape", "tiny", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--json"]
    )
    assert bench_prefill.run(args) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["random_weights"] is True
    assert record["visual_tokens_full"] == 6 * 729 and record["visual_tokens_kept"] == 6 * 73
    assert record["prefill_tokens_pruned"] == 6 * 73 + 6 + record["text_tokens"]
    for key in ("baseline_ms", "pruned_ms", "speedup", "flops_ratio", "encode_ms", "prune_ms"):
        assert record[key] > 0
    assert record["end_to_end_speedup"] > 0
