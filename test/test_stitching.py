"""Six views stitched into one image (DriveLMM-o1): InternVL's tiling, tokens traced to views,
and the stitched prompt equal to the stock InternVL forward on the same tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prune2drive_ros.engine import Engine
from prune2drive_ros.errors import ModelLoadError
from prune2drive_ros.picture import DIM, render_grid
from prune2drive_ros.pruning import Selection, random_select
from prune2drive_ros.views import VIEWS
from prune2drive_ros.vlm import DrivingVLM
from prune2drive_ros.vlm.internvl import InternVLVLM
from prune2drive_ros.vlm.llava_onevision import LlavaOnevisionVLM
from prune2drive_ros.vlm.stitching import StitchedLayout, closest_tile_grid
from prune2drive_ros.vlm.tiny import random_vlm

#: A ChatML chat template, as InternVL2.5's (InternLM2-chat) writes one: a default system turn.
CHATML_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a driving model."
    "<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QUESTION = "How many cars are behind us?"


def internvl_closest(aspect: float, width: int, height: int, max_num: int) -> tuple[int, int]:
    """InternVL's dynamic_preprocess grid choice, as its code writes it (the reference)."""
    ratios = sorted(
        {
            (i, j)
            for n in range(1, max_num + 1)
            for i in range(1, n + 1)
            for j in range(1, n + 1)
            if 1 <= i * j <= max_num
        },
        key=lambda x: x[0] * x[1],
    )
    best_diff, best = float("inf"), (1, 1)
    for ratio in ratios:
        diff = abs(aspect - ratio[0] / ratio[1])
        if diff < best_diff:
            best_diff, best = diff, ratio
        elif diff == best_diff and width * height > 0.5 * 448 * 448 * ratio[0] * ratio[1]:
            best = ratio
    return best


@pytest.mark.parametrize("size", [(4800, 1800), (1600, 900), (448, 448), (900, 1600), (300, 100)])
@pytest.mark.parametrize("max_tiles", [1, 6, 12])
def test_tile_grid_is_internvls(size: tuple[int, int], max_tiles: int) -> None:
    width, height = size
    expected = internvl_closest(width / height, width, height, max_tiles)
    assert closest_tile_grid(width, height, tile=448, max_tiles=max_tiles) == expected


def test_one_tile_gives_each_view_the_patches_centred_in_it() -> None:
    layout = StitchedLayout.plan(tile=448, grid=16, max_tiles=1, use_thumbnail=True)
    assert (layout.tiles, layout.thumbnail, layout.tokens) == ((1, 1), False, 256)
    # 16 token columns over 3 views: centres put 5, 6, 5 columns in them; 8 rows each.
    counts = dict(zip(VIEWS, layout.counts, strict=True))
    assert counts == {
        "CAM_FRONT": 48,
        "CAM_FRONT_LEFT": 40,
        "CAM_FRONT_RIGHT": 40,
        "CAM_BACK": 48,
        "CAM_BACK_LEFT": 40,
        "CAM_BACK_RIGHT": 40,
    }
    front_left = layout.view_indices[VIEWS.index("CAM_FRONT_LEFT")]
    assert front_left.tolist() == [r * 16 + c for r in range(8) for c in range(5)]


def test_dynamic_tiling_adds_a_thumbnail_and_every_token_has_one_view() -> None:
    layout = StitchedLayout.plan(tile=448, grid=16, max_tiles=12, use_thumbnail=True)
    assert layout.tiles == (5, 2) and layout.thumbnail  # 8:3 is nearest 5:2 within 12 tiles
    assert layout.tokens == 11 * 256
    indices = np.sort(np.concatenate(layout.view_indices))
    assert np.array_equal(indices, np.arange(layout.tokens))
    assert sum(layout.counts) == layout.tokens
    width, height = layout.cell
    assert width * 9 == height * 16 and 3 * width >= 5 * 448 and 2 * height >= 2 * 448


@pytest.mark.parametrize("max_tiles", [1, 12])
def test_token_boxes_lie_on_their_camera(max_tiles: int) -> None:
    layout = StitchedLayout.plan(tile=448, grid=16, max_tiles=max_tiles, use_thumbnail=True)
    for v in range(len(VIEWS)):
        boxes = layout.view_boxes(v)
        assert boxes.shape == (layout.counts[v], 4)
        assert (boxes >= 0).all() and (boxes <= 1).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # clipped, but the centre stays inside
        assert (centres > 0).all() and (centres < 1).all()


def test_tiles_cut_the_stitched_image() -> None:
    layout = StitchedLayout.plan(tile=448, grid=16, max_tiles=6, use_thumbnail=True)
    width, height = layout.cell
    images = [np.full((height, width, 3), 40 * v, np.uint8) for v in range(len(VIEWS))]
    tiles = layout.tile_images(images)
    assert tiles.shape == (layout.images, 448, 448, 3)
    # The first tile's top-left corner is the front-left view; the thumbnail's too.
    front_left = 40 * VIEWS.index("CAM_FRONT_LEFT")
    assert tiles[0, 0, 0, 0] == front_left and tiles[-1, 0, 0, 0] == front_left


@pytest.fixture(scope="module")
def stitched() -> DrivingVLM:
    tiny = random_vlm("internvl", seed=3)
    tokenizer = tiny.tokenizer
    tokenizer.chat_template = CHATML_TEMPLATE
    return InternVLVLM(
        tiny.model,
        tokenizer,
        name="stitched",
        normalization=tiny.normalization,
        prompt="drivelmm_o1",
    )


@pytest.fixture(scope="module")
def cameras(stitched: DrivingVLM) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    width, height = stitched.image_size
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in VIEWS]


def stock_ids(vlm: DrivingVLM) -> torch.Tensor:
    """The unpruned prompt as InternVL's chat writes it: <img>, every tile token, </img>."""
    assert vlm.layout is not None
    before, after = vlm._prompt.segments
    image = torch.full((vlm.layout.tokens,), vlm._prompt.image_token)
    return torch.cat([before, image, after, vlm._prompt.question_ids(QUESTION)]).unsqueeze(0)


def test_stitched_prompt_is_drivelmm_o1s(stitched: DrivingVLM) -> None:
    text = stitched.tokenizer.decode(stock_ids(stitched)[0])
    assert stitched.prompt_name == "drivelmm_o1"
    assert "Final Answer: (final answer) \n Question: \n<img><IMG_CONTEXT>" in text
    assert text.endswith(f"</img>\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    assert text.count("<IMG_CONTEXT>") == 256


def test_unpruned_stitched_prefill_equals_the_stock_forward(
    stitched: DrivingVLM, cameras: list[np.ndarray]
) -> None:
    pixels = stitched.preprocess(cameras)
    assert pixels.shape == (1, 3, 448, 448)  # one tile, no thumbnail
    visual = stitched.encode_views(pixels)
    assert visual.shape[:2] == (len(VIEWS), 48)
    ids = stock_ids(stitched)
    with torch.inference_mode():
        expected = stitched.model(input_ids=ids, pixel_values=pixels).logits[0]
    inputs = Engine(stitched, None).prefill_inputs(visual, QUESTION)
    assert inputs.length == ids.shape[1]
    assert torch.equal(inputs.positions[0], torch.arange(ids.shape[1]))
    got = stitched.prefill(inputs, all_logits=True).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_pruned_stitched_tokens_keep_their_places(
    stitched: DrivingVLM, cameras: list[np.ndarray]
) -> None:
    visual = stitched.encode_views(stitched.preprocess(cameras))
    budgets = stitched.budgets(0.25)
    assert budgets == (12, 10, 10, 12, 10, 10)
    selection = stitched.prune(visual, budgets, "tfps")
    assert not selection.mask[:, 40:][torch.tensor([c == 40 for c in stitched.view_tokens])].any()
    inputs = stitched.prefill_inputs(visual, selection, QUESTION)
    ids = stock_ids(stitched)[0][inputs.positions[0]]
    image = ids == stitched._prompt.image_token
    assert int(image.sum()) == sum(budgets)
    # The kept tokens sit where they were in the stitched image, after <img>: at the stitched
    # indices of every view's kept tokens, ascending.
    assert stitched.layout is not None
    offset = stitched._prompt.segments[0].numel()
    expected = sorted(
        offset + int(stitched.layout.view_indices[v][i])
        for v, kept in enumerate(selection.per_view())
        for i in kept.tolist()
    )
    assert inputs.positions[0][image].tolist() == expected
    answers, _ = stitched.generate(visual, selection, [QUESTION], max_new_tokens=3)
    assert answers[0].visual_tokens == sum(budgets)


def test_kept_token_picture_lights_stitched_tokens_on_their_cameras(
    stitched: DrivingVLM, cameras: list[np.ndarray]
) -> None:
    engine = Engine(stitched, 0.25)
    visual = stitched.encode_views(stitched.preprocess(cameras))
    selection = stitched.prune(visual, engine.budgets, "tfps")
    tiles = [np.full((90, 160, 3), 200, np.uint8) for _ in VIEWS]
    picture = render_grid(tiles, selection, stitched.token_boxes())
    assert picture.shape == (180, 480, 3)
    assert engine.describe()["prompt"] == "drivelmm_o1"
    # Each camera shows its kept share lit, the rest dimmed.
    for row in range(2):
        for col in range(3):
            cell = picture[row * 90 : (row + 1) * 90, col * 160 : (col + 1) * 160]
            lit = (cell != int(200 * DIM)).any(axis=-1)[30:].mean()  # below the label
            assert 0.1 < lit < 0.6


def test_a_family_that_cannot_stitch_says_so() -> None:
    tiny = random_vlm("llava_onevision")
    tokenizer = tiny.tokenizer
    tokenizer.chat_template = CHATML_TEMPLATE
    with pytest.raises(ModelLoadError, match="stitched into one image"):
        LlavaOnevisionVLM(
            tiny.model,
            tokenizer,
            name="x",
            normalization=tiny.normalization,
            prompt="drivelmm_o1",
        )


def test_all_kept_selection_of_stitched_views_is_the_unpruned_one(stitched: DrivingVLM) -> None:
    keep = Selection.keep_all(len(VIEWS), stitched.tokens_per_view, counts=stitched.view_tokens)
    assert keep.budgets == stitched.view_tokens
    visual = torch.zeros(len(VIEWS), stitched.tokens_per_view, 4)
    random = random_select(visual, stitched.view_tokens, counts=stitched.view_tokens)
    assert torch.equal(random.mask, keep.mask)
