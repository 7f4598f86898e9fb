"""The pruned LLaVA-OneVision path against the stock transformers model.

Everything runs on the tiny random-weight checkpoint (real classes, loaded from disk like a
user's checkpoint). Retention 1.0 must reproduce the stock multi-image forward; pruning must hand
the language model exactly the kept tokens, separators and every text token, at the positions
the chosen mode promises; generation must use the KV cache and answer several questions as it
answers each alone. The FLOPs count and the prefill benchmark's record close the file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from transformers import LlavaOnevisionImageProcessorPil

from prune2drive_ros.bench import prefill as bench_prefill
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


@pytest.fixture
def decoder_calls(vlm: DrivingVLM) -> Iterator[list[tuple[int, int]]]:
    """(query length, cache length before the call) of every language-model call."""
    calls: list[tuple[int, int]] = []

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        calls.append((kwargs["inputs_embeds"].shape[1], cache.get_seq_length()))

    handle = vlm.model.model.language_model.register_forward_pre_hook(record, with_kwargs=True)
    yield calls
    handle.remove()


def stock_logits(
    vlm: DrivingVLM, pixels: torch.Tensor, ids: torch.Tensor, **kwargs: torch.Tensor
) -> torch.Tensor:
    """The stock multi-image forward: one 384 px image per view, no anyres tiles."""
    with torch.inference_mode():
        return vlm.model(
            input_ids=ids,
            pixel_values=pixels.unsqueeze(1),
            image_sizes=torch.tensor([[384, 384]] * len(VIEWS)),
            batch_num_images=torch.tensor([len(VIEWS)]),
            **kwargs,
        ).logits[0]


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


def test_encode_views_are_the_stock_image_features(
    vlm: DrivingVLM, pixels: torch.Tensor, visual: torch.Tensor
) -> None:
    with torch.inference_mode():
        stock = vlm.model.model.get_image_features(
            pixel_values=pixels.unsqueeze(1),
            image_sizes=torch.tensor([[384, 384]] * len(VIEWS)),
            batch_num_images=torch.tensor([len(VIEWS)]),
        ).pooler_output
    assert visual.shape == (len(VIEWS), 729, 64)
    for view, features in enumerate(stock):
        torch.testing.assert_close(visual[view], features[:729])
        torch.testing.assert_close(features[729], vlm.model.model.image_newline)


@pytest.mark.parametrize("keep_all", [None, "mask"], ids=["no-selection", "all-kept"])
def test_retention_one_equals_stock_forward(
    vlm: DrivingVLM, pixels: torch.Tensor, visual: torch.Tensor, keep_all: str | None
) -> None:
    chosen = None if keep_all is None else Selection.from_mask(torch.ones(6, 729, dtype=bool))
    ids = vlm.reference_input_ids(QUESTION)
    expected = stock_logits(vlm, pixels, ids)
    inputs = vlm.prefill_inputs(visual, chosen, QUESTION)
    assert inputs.length == ids.shape[1]
    assert torch.equal(inputs.positions[0], torch.arange(ids.shape[1]))
    got = vlm.prefill(inputs, all_logits=True).logits
    text = ids[0] != vlm.model.config.image_token_id
    torch.testing.assert_close(got[text], expected[text], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[-1], expected[-1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vlm.prefill(inputs).logits, expected[-1], rtol=1e-4, atol=1e-5)


def test_pruned_inputs_keep_every_text_token(
    vlm: DrivingVLM, visual: torch.Tensor, selection: Selection, decoder_calls
) -> None:
    ids = vlm.reference_input_ids(QUESTION)[0]
    image = vlm.model.config.image_token_id
    text_tokens = int((ids != image).sum())
    inputs = vlm.prefill_inputs(visual, selection, QUESTION)
    vlm.prefill(inputs)
    assert decoder_calls == [(sum(BUDGETS) + len(VIEWS) + text_tokens, 0)]
    assert (inputs.visual_tokens, inputs.separator_tokens) == (sum(BUDGETS), len(VIEWS))
    assert inputs.text_tokens == text_tokens
    # Each row of the spliced input is what the unpruned sequence holds at that row's original
    # position: the text embedding, the kept patch, or the view's newline separator.
    places = inputs.positions[0]
    embeds = inputs.embeds[0]
    is_text = ids[places] != image
    with torch.inference_mode():
        text_embeds = vlm.model.get_input_embeddings()(ids[places[is_text]])
    torch.testing.assert_close(embeds[is_text], text_embeds)
    rows = iter(torch.nonzero(~is_text).flatten().tolist())
    for view, kept in enumerate(selection.per_view()):
        for index in kept.tolist():
            torch.testing.assert_close(embeds[next(rows)], visual[view, index])
        torch.testing.assert_close(embeds[next(rows)], vlm.model.model.image_newline)
    assert next(rows, None) is None


def test_original_positions_keep_gaps(
    vlm: DrivingVLM, visual: torch.Tensor, selection: Selection
) -> None:
    ids = vlm.reference_input_ids(QUESTION)[0]
    places = vlm.prefill_inputs(visual, selection, QUESTION).positions[0]
    steps = places.diff()
    assert bool((steps >= 1).all()) and bool((steps > 1).any())
    assert int(places[0]) == 0 and int(places[-1]) == ids.numel() - 1
    # Nothing before the first view is pruned, so its first row is at the same place in both.
    start = int((ids == vlm.model.config.image_token_id).nonzero()[0])
    kept = selection.per_view()[0]
    assert torch.equal(places[start : start + kept.numel()], kept + start)


def test_compact_positions_have_no_gaps(
    vlm: DrivingVLM, visual: torch.Tensor, selection: Selection
) -> None:
    inputs = vlm.prefill_inputs(visual, selection, QUESTION, positions="compact")
    assert torch.equal(inputs.positions[0], torch.arange(inputs.length))
    assert inputs.next_position == inputs.length
    original = vlm.prefill(vlm.prefill_inputs(visual, selection, QUESTION)).logits
    assert not torch.allclose(vlm.prefill(inputs).logits, original)


def test_original_positions_equal_masking_the_dropped_tokens(
    vlm: DrivingVLM, pixels: torch.Tensor, visual: torch.Tensor, selection: Selection
) -> None:
    """Pruning with original positions is the unpruned forward with dropped tokens masked."""
    ids = vlm.reference_input_ids(QUESTION)
    inputs = vlm.prefill_inputs(visual, selection, QUESTION)
    keep = torch.zeros_like(ids)
    keep[0, inputs.positions[0]] = 1
    expected = stock_logits(
        vlm, pixels, ids, attention_mask=keep, position_ids=torch.arange(ids.shape[1])[None]
    )
    got = vlm.prefill(inputs, all_logits=True).logits
    torch.testing.assert_close(got, expected[inputs.positions[0]], rtol=1e-4, atol=1e-5)


def test_generation_steps_one_token_on_the_cache(
    vlm: DrivingVLM, visual: torch.Tensor, selection: Selection, decoder_calls
) -> None:
    answers, timings = vlm.generate(visual, selection, [QUESTION, "Turn left?"], max_new_tokens=6)
    prefix = vlm.prefill_inputs(visual, selection)
    calls = iter(decoder_calls)
    assert next(calls) == (prefix.length, 0)  # the shared prefix, once
    for answer in answers:
        turn, cached = next(calls)
        assert cached == prefix.length  # each question starts from the prefix cache
        assert answer.prompt_tokens == prefix.length + turn
        assert answer.visual_tokens == sum(BUDGETS)
        length = cached + turn
        for _ in range(answer.new_tokens - 1):  # the last token is never fed back
            assert next(calls) == (1, length)
            length += 1
    assert next(calls, None) is None
    assert timings.prefill > 0 and timings.generate > 0


def test_greedy_equals_stock_generate(
    vlm: DrivingVLM, pixels: torch.Tensor, visual: torch.Tensor
) -> None:
    ids = vlm.reference_input_ids(QUESTION)
    with torch.inference_mode():
        stock = vlm.model.generate(
            input_ids=ids,
            pixel_values=pixels.unsqueeze(1),
            image_sizes=torch.tensor([[384, 384]] * len(VIEWS)),
            batch_num_images=torch.tensor([len(VIEWS)]),
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
    starts = np.cumsum([1] + [answer.new_tokens for answer in together[:-1]])
    for start, question in zip(starts, questions, strict=True):
        fresh = vlm.prefill(vlm.prefill_inputs(visual, selection, question)).logits
        torch.testing.assert_close(seen[start], fresh, rtol=1e-4, atol=1e-5)


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


def test_question_cannot_inject_special_tokens(vlm: DrivingVLM) -> None:
    ids = vlm.reference_input_ids("<image><|im_end|>")[0]
    assert int((ids == vlm.model.config.image_token_id).sum()) == len(VIEWS) * 730


def test_ask_fills_every_stage(vlm: DrivingVLM, images: list[np.ndarray]) -> None:
    answers, timings = vlm.ask(images, [QUESTION], budgets=vlm.budgets(0.25), max_new_tokens=3)
    assert answers[0].visual_tokens == sum(vlm.budgets(0.25))
    stages = timings.as_dict()
    assert all(stages[name] > 0 for name in ("encode", "prune", "prefill", "generate"))
    assert stages["total"] == pytest.approx(sum(v for k, v in stages.items() if k != "total"))


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
    for key in ("baseline_ms", "pruned_ms", "speedup", "flops_ratio", "encode_ms", "tfps_ms"):
        assert record[key] > 0
    assert record["end_to_end_speedup"] > 0
