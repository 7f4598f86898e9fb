"""The converted tiny DriveMM computes what DriveMM's own LLaVA-NeXT code computed on it.

Golden file ``golden/llava_next_tiny.json``: prompt ids, pixel values, vision features,
last-position logits and greedy tokens that DriveMM's ``llava`` package (the LLaVA-NeXT model
code; ``load_pretrained_model``, ``process_images``, ``preprocess_llama3``, ``generate``)
produced on the tiny original-format checkpoint of ``original_llava_next.py`` (seed 0) for
six seeded 384 px images (recipe in the file and ``golden/README.md``). Here the same
checkpoint goes through ``prune2drive convert`` and ``load_vlm``.

Tolerances, all float32 rounding of the same arithmetic in another order: pixel values 1e-6
each (their per-view sums over 442,368 values at 0.05); features 1e-5 each, their sums
relatively 1e-6; logits 1e-4 (two decoder layers over 4,772 positions). Prompt ids, top-10 ids,
greedy tokens and the letterboxed image are exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import reference_input_ids
from golden_files import (
    files_sha256,
    load_golden,
    raw_image,
    require_same_input,
    sha256_of,
)
from original_llava_next import write_original_drivemm

from prune2drive_ros.sensors.imaging import decode_image
from prune2drive_ros.views import VIEWS
from prune2drive_ros.vlm import DrivingVLM, load_vlm
from prune2drive_ros.vlm.conversion import convert_checkpoint

GOLDEN = load_golden("llava_next_tiny")
#: LLaVA's IMAGE_TOKEN_INDEX: each view's place in the original prompt ids.
IMAGE = -200


def _seeded_images(seed: int, shape: list[int], sha256: str) -> np.ndarray:
    images = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    require_same_input(
        "llava_next_tiny", f"the images of seed {seed}", sha256_of([images.tobytes()]), sha256
    )
    return images


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> DrivingVLM:
    root = tmp_path_factory.mktemp("golden_llava_next")
    source = write_original_drivemm(root, seed=0)
    actual = files_sha256(root, GOLDEN["checkpoint_files"])
    require_same_input(
        "llava_next_tiny",
        "the tiny checkpoint of original_llava_next.py",
        actual,
        GOLDEN["checkpoint_sha256"],
    )
    return load_vlm(convert_checkpoint(source, root / "converted"))


@pytest.fixture(scope="module")
def pixels(vlm: DrivingVLM) -> torch.Tensor:
    recorded = GOLDEN["images"]
    images = _seeded_images(recorded["seed"], recorded["shape"], recorded["sha256"])
    return vlm.preprocess(list(images))


@pytest.fixture(scope="module")
def visual(vlm: DrivingVLM, pixels: torch.Tensor) -> torch.Tensor:
    return vlm.encode_views(pixels)


def _close(actual: torch.Tensor, expected: list[float], atol: float, rtol: float = 0.0) -> None:
    torch.testing.assert_close(
        actual.double(), torch.tensor(expected, dtype=torch.float64), atol=atol, rtol=rtol
    )


def test_prompt_ids_are_preprocess_llama3s(vlm: DrivingVLM) -> None:
    """The drivemm prompt's ids, each view's token run in the place of LLaVA's -200."""
    run = vlm.tokens_per_view + vlm._view_separator().shape[0]
    expected: list[int] = []
    for token in GOLDEN["prompt_ids"]:
        expected += [vlm.model.config.image_token_index] * run if token == IMAGE else [token]
    assert GOLDEN["prompt_ids"].count(IMAGE) == len(VIEWS)
    assert reference_input_ids(vlm, GOLDEN["question"])[0].tolist() == expected


def test_pixel_values_are_process_images(pixels: torch.Tensor) -> None:
    recorded = GOLDEN["pixel_values"]
    assert list(pixels.shape) == recorded["shape"]
    _close(pixels[0, :, 0, :4].flatten(), recorded["first"], atol=1e-6)
    _close(pixels[5, :, -1, -4:].flatten(), recorded["last"], atol=1e-6)
    _close(pixels.double().sum(dim=(1, 2, 3)), recorded["sum_per_view"], atol=0.05)


def test_vision_features_are_encode_images(visual: torch.Tensor) -> None:
    recorded = GOLDEN["features"]
    assert list(visual.shape) == recorded["shape"]
    _close(visual[0, 0, :8], recorded["view0_token0"], atol=1e-5)
    _close(visual[5, 728, :8], recorded["view5_token728"], atol=1e-5)
    _close(visual.double().sum(dim=(1, 2)), recorded["sum_per_view"], atol=0, rtol=1e-6)
    _close(visual.double().abs().sum(dim=(1, 2)), recorded["abs_sum_per_view"], atol=0, rtol=1e-6)


def test_first_step_logits_are_the_originals(vlm: DrivingVLM, visual: torch.Tensor) -> None:
    recorded = GOLDEN["logits_last"]
    inputs = vlm.prefill_inputs(visual, None, GOLDEN["question"])
    assert inputs.embeds.shape[1] == recorded["sequence_length"]
    # The converted head has one row more, for <image>: compare the original vocabulary.
    logits = vlm.prefill(inputs).logits[: recorded["vocab"]]
    top = logits.topk(10)
    assert top.indices.tolist() == recorded["top10_ids"]
    _close(top.values, recorded["top10_values"], atol=1e-4)
    _close(logits[:8], recorded["first8"], atol=1e-4)
    _close(logits.double().sum().reshape(1), [recorded["sum"]], atol=1e-3)


def test_greedy_answer_is_generates(vlm: DrivingVLM, visual: torch.Tensor) -> None:
    recorded = GOLDEN["greedy"]
    answers, _ = vlm.generate(
        visual, None, [GOLDEN["question"]], max_new_tokens=recorded["max_new_tokens"]
    )
    assert answers[0].new_tokens == len(recorded["ids"])
    assert answers[0].text == recorded["text"]


def _wide_view() -> np.ndarray:
    recorded = GOLDEN["letterbox"]
    return _seeded_images(recorded["seed"], recorded["shape"], recorded["sha256"])


def test_views_are_letterboxed_as_expand2square(vlm: DrivingVLM) -> None:
    recorded = GOLDEN["letterbox"]
    assert list(vlm.pad_color or ()) == recorded["colour"]
    side = recorded["square_shape"][0]
    view = raw_image(_wide_view())
    square = decode_image(view, topic="golden", size=(side, side), pad=vlm.pad_color)
    assert list(square.shape) == recorded["square_shape"]
    assert sha256_of([square.tobytes()]) == recorded["square_sha256"]


def test_a_resized_view_has_process_images_pixels(vlm: DrivingVLM) -> None:
    # image_resize exact (the default): before it, OpenCV's bilinear/area resize was 6 levels
    # (mean) from LLaVA's PIL bicubic on this 160 x 160 -> 384 noise view
    recorded = GOLDEN["letterbox"]
    message = raw_image(_wide_view())
    view = decode_image(message, topic="golden", size=vlm.image_size, pad=vlm.pad_color)
    pixels = vlm.preprocess([view] * len(VIEWS))[0].double()
    _close(pixels.sum().reshape(1), [recorded["pixel_values_sum"]], atol=0.05)
    _close(pixels.abs().sum().reshape(1), [recorded["pixel_values_abs_sum"]], atol=0.05)
