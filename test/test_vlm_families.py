"""Every family's pruned path against its stock transformers model, one set of tests for all.

Runs on the tiny random-weight checkpoints of every family (real classes, loaded from disk
like a user's checkpoint); what is particular to one family is in its own module. Retention
1.0 must reproduce the stock forward on the prompt the family's processor would write; pruning
must hand the language model exactly the kept tokens, the view separators (LLaVA's newline)
and every text token (the image wrapper tokens included), at the positions the stock model
gives them in the unpruned prompt (M-RoPE's three axes for Qwen2.5-VL); generation must use
the KV cache and answer several questions as it answers each alone. A checkpoint whose vision
tower does not give the family's per-view grid is refused with a ModelLoadError.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import reference_input_ids

from prune2drive_ros.engine import Engine
from prune2drive_ros.errors import ModelLoadError
from prune2drive_ros.pruning import Selection, random_select
from prune2drive_ros.views import VIEWS
from prune2drive_ros.vlm import DrivingVLM, load_vlm
from prune2drive_ros.vlm.llava_onevision import LlavaOnevisionVLM
from prune2drive_ros.vlm.qwen2_5_vl import Qwen2_5_VLVLM
from prune2drive_ros.vlm.tiny import RECIPES, cached_tiny

FAMILIES_UNDER_TEST = ("llava_onevision", "internvl", "qwen2_5_vl")
QUESTION = "Is there a pedestrian in front of the ego vehicle?"
#: Fractions of each view's tokens to keep (every view a different count, one view a single token).
FRACTIONS = (0.1, 0.05, 0.15, 0.02, 0.1, 0.0)


@pytest.fixture(scope="module", params=FAMILIES_UNDER_TEST)
def vlm(request: pytest.FixtureRequest) -> DrivingVLM:
    return load_vlm(cached_tiny(request.param))


@pytest.fixture(scope="module")
def images(vlm: DrivingVLM) -> list[np.ndarray]:
    width, height = vlm.image_size
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in VIEWS]


@pytest.fixture(scope="module")
def pixels(vlm: DrivingVLM, images: list[np.ndarray]) -> torch.Tensor:
    return vlm.preprocess(images)


@pytest.fixture(scope="module")
def visual(vlm: DrivingVLM, pixels: torch.Tensor) -> torch.Tensor:
    return vlm.encode_views(pixels)


@pytest.fixture(scope="module")
def budgets(vlm: DrivingVLM) -> tuple[int, ...]:
    return tuple(max(1, int(f * vlm.tokens_per_view)) for f in FRACTIONS)


@pytest.fixture(scope="module")
def selection(visual: torch.Tensor, budgets: tuple[int, ...]) -> Selection:
    return random_select(visual, budgets, seed=3)


@pytest.fixture
def decoder_calls(vlm: DrivingVLM) -> Iterator[list[tuple[int, int]]]:
    """(query length, cache length before the call) of every language-model call, as its
    first decoder layer sees them."""
    calls: list[tuple[int, int]] = []

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        calls.append((args[0].shape[1], cache.get_seq_length()))

    first = vlm.model.model.language_model.layers[0]
    handle = first.register_forward_pre_hook(record, with_kwargs=True)
    yield calls
    handle.remove()


# ---------------------------------------------------------------- the stock model's side


def image_id(vlm: DrivingVLM) -> int:
    return int(vlm.model.config.image_token_id)


def stock_image_inputs(vlm: DrivingVLM, pixels: torch.Tensor, ids: torch.Tensor) -> dict[str, Any]:
    """The image arguments of the stock forward, as the family's processor gives them."""
    if isinstance(vlm, Qwen2_5_VLVLM):
        flat, grid = vlm.patches(pixels)
        # get_rope_index finds the images by these token types (what the processor returns).
        types = (ids == image_id(vlm)).int()
        return {"pixel_values": flat, "image_grid_thw": grid, "mm_token_type_ids": types}
    if isinstance(vlm, LlavaOnevisionVLM):  # one 384 px image per view, no anyres tiles
        return {
            "pixel_values": pixels.unsqueeze(1),
            "image_sizes": torch.tensor([list(vlm.image_size)] * len(VIEWS)),
            "batch_num_images": torch.tensor([len(VIEWS)]),
        }
    return {"pixel_values": pixels}  # InternVL: one 448 px tile per view


def stock_positions(vlm: DrivingVLM, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``[P, L]`` positions the stock model gives the unpruned prompt ``ids``."""
    if isinstance(vlm, Qwen2_5_VLVLM):
        inputs = stock_image_inputs(vlm, pixels, ids)
        full, _ = vlm.model.model.get_rope_index(
            ids,
            mm_token_type_ids=inputs["mm_token_type_ids"],
            image_grid_thw=inputs["image_grid_thw"],
        )
        return full[:, 0]
    return torch.arange(ids.shape[1]).unsqueeze(0)


def stock_logits(
    vlm: DrivingVLM, pixels: torch.Tensor, ids: torch.Tensor, **kwargs: torch.Tensor
) -> torch.Tensor:
    with torch.inference_mode():
        inputs = stock_image_inputs(vlm, pixels, ids)
        return vlm.model(input_ids=ids, **inputs, **kwargs).logits[0]


def kept_rows(vlm: DrivingVLM, ids: torch.Tensor, selection: Selection | None) -> torch.Tensor:
    """Indices into the unpruned prompt ``ids`` [L] of what the pruned prompt keeps, in order."""
    slots = (ids == image_id(vlm)).nonzero().flatten().view(len(VIEWS), -1)
    keep = ids != image_id(vlm)
    for view, kept in enumerate(selection.per_view() if selection is not None else []):
        keep[slots[view, kept]] = True
        keep[slots[view, vlm.tokens_per_view :]] = True  # the view separators
    if selection is None:
        keep[:] = True
    return keep.nonzero().flatten()


# ---------------------------------------------------------------- tests


def test_encode_views_are_the_stock_image_features(
    vlm: DrivingVLM, pixels: torch.Tensor, visual: torch.Tensor
) -> None:
    ids = reference_input_ids(vlm, QUESTION)
    inputs = stock_image_inputs(vlm, pixels, ids)
    inputs.pop("mm_token_type_ids", None)
    with torch.inference_mode():
        stock = vlm.model.get_image_features(**inputs).pooler_output
    assert visual.shape == (len(VIEWS), vlm.tokens_per_view, vlm._hidden_size)
    # The stock features of a view are its tokens followed by its separators (LLaVA's newline).
    separators = vlm._view_separator()
    expected = torch.cat([torch.cat([tokens, separators]) for tokens in visual])
    torch.testing.assert_close(torch.cat([f.flatten(0, -2) for f in stock]), expected)


@pytest.fixture(scope="module")
def unpruned_stock_logits(vlm: DrivingVLM, pixels: torch.Tensor) -> torch.Tensor:
    """``[L, vocab]`` logits of the stock forward on the unpruned prompt with QUESTION."""
    return stock_logits(vlm, pixels, reference_input_ids(vlm, QUESTION))


@pytest.mark.parametrize(
    "keep_all", [None, "mask", "engine"], ids=["no-selection", "all-kept", "unpruned-engine"]
)
def test_retention_one_equals_stock_forward(
    vlm: DrivingVLM,
    pixels: torch.Tensor,
    visual: torch.Tensor,
    unpruned_stock_logits: torch.Tensor,
    keep_all: str | None,
) -> None:
    everything = torch.ones(len(VIEWS), vlm.tokens_per_view, dtype=torch.bool)
    chosen = None if keep_all is None else Selection.from_mask(everything)
    ids = reference_input_ids(vlm, QUESTION)
    expected = unpruned_stock_logits
    inputs = (
        Engine(vlm, None).prefill_inputs(visual, QUESTION)  # full budgets: the pruner never runs
        if keep_all == "engine"
        else vlm.prefill_inputs(visual, chosen, QUESTION)
    )
    assert inputs.length == ids.shape[1]
    assert torch.equal(inputs.positions, stock_positions(vlm, pixels, ids))
    got = vlm.prefill(inputs, all_logits=True).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vlm.prefill(inputs).logits, expected[-1], rtol=1e-4, atol=1e-5)


def test_pruned_inputs_keep_every_text_token(
    vlm: DrivingVLM,
    visual: torch.Tensor,
    selection: Selection,
    budgets: tuple[int, ...],
    decoder_calls: list[tuple[int, int]],
) -> None:
    ids = reference_input_ids(vlm, QUESTION)[0]
    separators = vlm._view_separator()
    text_tokens = int((ids != image_id(vlm)).sum())
    inputs = vlm.prefill_inputs(visual, selection, QUESTION)
    vlm.prefill(inputs)
    expected_length = sum(budgets) + len(VIEWS) * separators.shape[0] + text_tokens
    assert decoder_calls == [(expected_length, 0)]
    assert inputs.visual_tokens == sum(budgets)
    assert inputs.separator_tokens == len(VIEWS) * separators.shape[0]
    assert inputs.text_tokens == text_tokens
    # Row by row: the text embedding of the unpruned prompt's token, or the kept visual token,
    # or the view's separator, in the unpruned order.
    rows = kept_rows(vlm, ids, selection)
    embeds = inputs.embeds[0]
    is_text = ids[rows] != image_id(vlm)
    with torch.inference_mode():
        text_embeds = vlm.model.get_input_embeddings()(ids[rows[is_text]])
    torch.testing.assert_close(embeds[is_text], text_embeds)
    visual_rows = iter(torch.nonzero(~is_text).flatten().tolist())
    for view, kept in enumerate(selection.per_view()):
        for index in kept.tolist():
            torch.testing.assert_close(embeds[next(visual_rows)], visual[view, index])
        for separator in separators:
            torch.testing.assert_close(embeds[next(visual_rows)], separator)
    assert next(visual_rows, None) is None


def test_original_positions_are_the_unpruned_ones(
    vlm: DrivingVLM, pixels: torch.Tensor, visual: torch.Tensor, selection: Selection
) -> None:
    """Every kept token and every text token keeps the stock model's position for it."""
    ids = reference_input_ids(vlm, QUESTION)
    full = stock_positions(vlm, pixels, ids)
    inputs = vlm.prefill_inputs(visual, selection, QUESTION)
    assert torch.equal(inputs.positions, full[:, kept_rows(vlm, ids[0], selection)])
    assert inputs.next_position == int(full.max()) + 1
    steps = inputs.positions.diff()
    assert bool((steps.abs() > 1).any())  # the pruned tokens' gaps remain


def test_compact_positions_have_no_gaps(
    vlm: DrivingVLM, visual: torch.Tensor, selection: Selection
) -> None:
    inputs = vlm.prefill_inputs(visual, selection, QUESTION, positions="compact")
    line = torch.arange(inputs.length).expand_as(inputs.positions)
    assert torch.equal(inputs.positions, line)
    assert inputs.next_position == inputs.length
    original = vlm.prefill(vlm.prefill_inputs(visual, selection, QUESTION)).logits
    assert not torch.allclose(vlm.prefill(inputs).logits, original)


def test_original_positions_equal_masking_the_dropped_tokens(
    vlm: DrivingVLM, pixels: torch.Tensor, visual: torch.Tensor, selection: Selection
) -> None:
    """Pruning with original positions is the stock forward with the dropped tokens masked."""
    ids = reference_input_ids(vlm, QUESTION)
    rows = kept_rows(vlm, ids[0], selection)
    keep = torch.zeros_like(ids)
    keep[0, rows] = 1
    positions = vlm._decoder_position_ids(stock_positions(vlm, pixels, ids))
    expected = stock_logits(vlm, pixels, ids, attention_mask=keep, position_ids=positions)
    got = vlm.prefill(vlm.prefill_inputs(visual, selection, QUESTION), all_logits=True).logits
    torch.testing.assert_close(got, expected[rows], rtol=1e-4, atol=1e-5)


def test_generation_steps_one_token_on_the_cache(
    vlm: DrivingVLM,
    visual: torch.Tensor,
    selection: Selection,
    budgets: tuple[int, ...],
    decoder_calls: list[tuple[int, int]],
) -> None:
    answers, timings = vlm.generate(visual, selection, [QUESTION, "Turn left?"], max_new_tokens=6)
    prefix = vlm.prefill_inputs(visual, selection)
    calls = iter(decoder_calls)
    assert next(calls) == (prefix.length, 0)  # the shared prefix, once
    for answer in answers:
        turn, cached = next(calls)
        assert cached == prefix.length  # each question starts from the prefix cache
        assert answer.prompt_tokens == prefix.length + turn
        assert answer.visual_tokens == sum(budgets)
        length = cached + turn
        for _ in range(answer.new_tokens - 1):  # the last token is never fed back
            assert next(calls) == (1, length)
            length += 1
    assert next(calls, None) is None
    assert timings.prefill > 0 and timings.generate > 0


def test_decoding_continues_after_the_highest_position(
    vlm: DrivingVLM, visual: torch.Tensor, selection: Selection, monkeypatch
) -> None:
    """Each new token's position (on every axis) is one more than the previous maximum."""
    seen: list[torch.Tensor] = []
    prefill = vlm.prefill

    def recording(inputs, cache=None, **kwargs):
        seen.append(inputs.positions)
        return prefill(inputs, cache, **kwargs)

    monkeypatch.setattr(vlm, "prefill", recording)
    (answer,), _ = vlm.generate(visual, selection, [QUESTION], max_new_tokens=4)
    prompt = seen[0]  # the question turn (the prefix is prefilled layer by layer before it)
    steps = torch.cat(seen[1:], dim=1)
    assert steps.shape[1] == answer.new_tokens - 1
    first = int(prompt.max()) + 1
    expected = torch.arange(first, first + steps.shape[1]).expand_as(steps)
    assert torch.equal(steps, expected)


def test_greedy_equals_stock_generate(
    vlm: DrivingVLM, pixels: torch.Tensor, visual: torch.Tensor
) -> None:
    ids = reference_input_ids(vlm, QUESTION)
    with torch.inference_mode():
        stock = vlm.model.generate(
            input_ids=ids,
            **stock_image_inputs(vlm, pixels, ids),
            max_new_tokens=6,
            do_sample=False,
        )[0, ids.shape[1] :]
    (answer,), _ = vlm.generate(visual, None, [QUESTION], max_new_tokens=6)
    assert answer.text == vlm.tokenizer.decode(stock, skip_special_tokens=True).strip()
    assert answer.new_tokens == stock.numel()


def test_several_questions_equal_one_at_a_time(
    vlm: DrivingVLM, visual: torch.Tensor, selection: Selection, monkeypatch
) -> None:
    questions = [QUESTION, "What should the ego vehicle do next?", "Is it safe to turn right?"]
    seen: list[torch.Tensor] = []
    prefill = vlm.prefill

    def recording(inputs, cache=None, **kwargs):
        out = prefill(inputs, cache, **kwargs)
        seen.append(out.logits)
        return out

    monkeypatch.setattr(vlm, "prefill", recording)
    together, _ = vlm.generate(visual, selection, questions, max_new_tokens=4)
    monkeypatch.undo()
    alone = [vlm.generate(visual, selection, [q], max_new_tokens=4)[0][0] for q in questions]
    assert together == alone
    # The first logits of each question, reached through the reused prefix cache, equal a
    # fresh prefill of prefix and question together.
    starts = np.cumsum([0] + [answer.new_tokens for answer in together[:-1]])
    for start, question in zip(starts, questions, strict=True):
        fresh = vlm.prefill(vlm.prefill_inputs(visual, selection, question)).logits
        torch.testing.assert_close(seen[start], fresh, rtol=1e-4, atol=1e-5)


def test_question_cannot_inject_special_tokens(vlm: DrivingVLM) -> None:
    special_tokens = RECIPES[vlm.family].special_tokens
    markers = "".join(special_tokens)
    ids = reference_input_ids(vlm, markers)[0]
    clean = reference_input_ids(vlm, "")[0]
    for token in special_tokens:
        token_id = vlm.tokenizer.convert_tokens_to_ids(token)
        assert int((ids == token_id).sum()) == int((clean == token_id).sum()), token


def test_engine_fills_every_stage(vlm: DrivingVLM, images: list[np.ndarray]) -> None:
    engine = Engine(vlm, 0.25, max_new_tokens=3)
    answers, timings = engine.answer_images(images, [QUESTION])
    assert answers[0].visual_tokens == sum(vlm.budgets(0.25))
    stages = timings.as_dict()
    assert all(stages[name] > 0 for name in ("encode", "prune", "prefill", "generate"))


# ---------------------------------------------------------------- loading


REFUSED = [
    pytest.param(
        "internvl",
        {"vision_config": {"image_size": [224, 224]}},
        r"224x224 px tiles.*needs 448 px",
        id="internvl-224px",
    ),
    pytest.param(
        "internvl",
        {"vision_config": {"patch_size": [16, 16]}},
        r"16 px patches.*needs 448 px",
        id="internvl-16px-patches",
    ),
    pytest.param(
        "internvl",
        {"downsample_ratio": 0.25},
        r"downsample_ratio 0\.25.*256 tokens",
        id="internvl-downsample-0.25",
    ),
    pytest.param(
        "internvl",
        {"vision_feature_select_strategy": "full"},
        "uses 'default'.*CLS",
        id="internvl-keeps-cls",
    ),
    pytest.param(
        "internvl",
        {"image_seq_length": 64},
        "image_seq_length is 64.*256 tokens",
        id="internvl-64-tokens-per-tile",
    ),
    pytest.param(
        "qwen2_5_vl",
        {"vision_config": {"patch_size": 16}},
        r"16 px patches.*needs 14 px",
        id="qwen2_5_vl-16px-patches",
    ),
    pytest.param(
        "qwen2_5_vl",
        {"vision_config": {"spatial_merge_size": 4}},
        "spatial_merge_size 4",
        id="qwen2_5_vl-merge-4",
    ),
    pytest.param(
        "qwen2_5_vl",
        {"vision_config": {"temporal_patch_size": 1}},
        "temporal_patch_size 1",
        id="qwen2_5_vl-temporal-1",
    ),
]


@pytest.mark.parametrize(("family", "edits", "message"), REFUSED)
def test_checkpoint_without_the_per_view_layout_is_refused(
    tmp_path: Path, family: str, edits: dict[str, Any], message: str
) -> None:
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(cached_tiny(family), checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    for key, value in edits.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=message):
        load_vlm(checkpoint)
