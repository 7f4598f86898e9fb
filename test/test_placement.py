"""Pruning inside the language model (placement layer:K, as the Prune2Drive reference code does)
and FastV, against the unpruned model and a straightforward eager computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prune2drive_ros.config import DriveVLMConfig
from prune2drive_ros.engine import Engine
from prune2drive_ros.errors import ConfigError, ModelLoadError, PruningInputError
from prune2drive_ros.placement import prune_layer
from prune2drive_ros.pruning import fastv_select
from prune2drive_ros.views import VIEWS
from prune2drive_ros.vlm import DrivingVLM
from prune2drive_ros.vlm.tiny import random_vlm

FAMILIES = ("llava_onevision", "internvl", "qwen2_5_vl")
QUESTION = "Is there a bus behind us?"


@pytest.fixture(scope="module", params=FAMILIES)
def vlm(request: pytest.FixtureRequest) -> DrivingVLM:
    return random_vlm(request.param, "tiny", seed=4)


@pytest.fixture(scope="module")
def visual(vlm: DrivingVLM) -> torch.Tensor:
    rng = np.random.default_rng(2)
    width, height = vlm.image_size
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in VIEWS]
    return vlm.encode_views(vlm.preprocess(images))


def test_placement_names() -> None:
    assert prune_layer("projector") == 0 and prune_layer("layer:0") == 0
    assert prune_layer("layer:3") == 3
    with pytest.raises(ConfigError, match=r"neither 'projector'.*nor 'layer:K'"):
        prune_layer("layer:-1")
    with pytest.raises(ConfigError, match="parameter placement"):
        DriveVLMConfig(placement="layer")
    with pytest.raises(ConfigError, match="set placement layer:K with K >= 1"):
        DriveVLMConfig(pruner="fastv")
    assert DriveVLMConfig(pruner="fastv", placement="layer:2").placement == "layer:2"


def test_a_layer_past_the_decoder_is_refused(vlm: DrivingVLM) -> None:
    with pytest.raises(ModelLoadError, match="choose a smaller K"):
        vlm.placed("layer:2")  # the tiny decoders have layers 0 and 1


def test_retention_one_at_layer_k_is_the_unpruned_model(
    vlm: DrivingVLM, visual: torch.Tensor
) -> None:
    unpruned, _ = vlm.prefill_question(visual, None, QUESTION)
    inside = vlm.placed("layer:1")
    everything, length = inside.prefill_question(visual, None, QUESTION)
    torch.testing.assert_close(everything.logits, unpruned.logits, rtol=1e-4, atol=1e-5)
    full = vlm.prefill_inputs(visual, None, QUESTION)
    assert length == full.length


def test_layer_zero_is_the_projector_placement(vlm: DrivingVLM, visual: torch.Tensor) -> None:
    engine = Engine(vlm, 0.25)
    zero = Engine(vlm.placed("layer:0"), 0.25)
    answers, _ = engine.answer_encoded(visual, [QUESTION], max_new_tokens=3)
    again, _ = zero.answer_encoded(visual, [QUESTION], max_new_tokens=3)
    assert answers == again


def test_later_layers_hold_only_the_kept_tokens(vlm: DrivingVLM, visual: torch.Tensor) -> None:
    inside = vlm.placed("layer:1")
    engine = Engine(inside, 0.25)
    prefix, cache, selection = inside.prefill_prefix(visual, engine._selector(None, None, 0))
    full = inside.prefill_inputs(visual, None)
    assert selection.budgets == engine.budgets
    assert cache.get_seq_length(0) == full.length  # layer 0 saw every token
    assert (
        cache.get_seq_length(1)
        == prefix.length
        == full.length - (sum(inside.view_tokens) - selection.total)
    )
    # The kept tokens keep their original positions: those of the unpruned prefix there.
    rows = inside._visual_rows
    keep = torch.ones(full.length, dtype=torch.bool)
    keep[rows.flatten()] = False
    keep[rows[selection.mask]] = True
    assert torch.equal(prefix.positions, full.positions[:, keep])
    # Questions asked together share the one prefix, whose layers keep their lengths.
    answers, timings = inside.generate(
        visual, selection, [QUESTION, "Which lane?"], max_new_tokens=2
    )
    assert [a.visual_tokens for a in answers] == [selection.total] * 2
    assert timings.prune == 0.0  # a fixed selection: nothing chosen inside


def test_pruning_at_a_layer_selects_on_its_hidden_states(
    vlm: DrivingVLM, visual: torch.Tensor
) -> None:
    inside = vlm.placed("layer:1")
    seen: list[torch.Tensor] = []

    def select(tokens: torch.Tensor, scores: torch.Tensor | None):
        seen.append(tokens)
        return Engine(inside, 0.25)._select(tokens, None, None, 0, scores)

    inside.prefill_prefix(visual, select)
    full = inside.prefill_inputs(visual, None)
    with torch.inference_mode():
        hidden = inside.model.model.language_model(
            inputs_embeds=full.embeds,
            position_ids=inside._decoder_position_ids(full.positions),
            output_hidden_states=True,
        ).hidden_states[1][0]  # entering layer 1
    torch.testing.assert_close(seen[0], hidden[inside._visual_rows], rtol=1e-4, atol=1e-5)


def test_fastv_scores_are_the_eager_attention_of_the_last_prefix_token(
    vlm: DrivingVLM, visual: torch.Tensor
) -> None:
    inside = vlm.placed("layer:1")
    scores: list[torch.Tensor] = []

    def select(tokens: torch.Tensor, attention: torch.Tensor | None):
        assert attention is not None
        scores.append(attention)
        return fastv_select(tokens, inside.budgets(0.25), scores=attention)

    inside.prefill_prefix(visual, select)
    full = inside.prefill_inputs(visual, None)
    eager = random_vlm(vlm.family, "tiny", seed=4)  # the same weights, with eager attention
    eager.model.set_attn_implementation("eager")
    with torch.inference_mode():
        attentions = eager.model.model.language_model(
            inputs_embeds=full.embeds,
            position_ids=eager._decoder_position_ids(full.positions),
            output_attentions=True,
        ).attentions
    expected = attentions[0][0, :, -1, :].mean(dim=0)  # layer 0, last token, mean over heads
    torch.testing.assert_close(scores[0], expected[inside._visual_rows], rtol=1e-4, atol=1e-6)


def test_fastv_answers_through_the_engine(vlm: DrivingVLM, visual: torch.Tensor) -> None:
    engine = Engine(vlm.placed("layer:1"), 0.1, pruner="fastv")
    (answer,), timings = engine.answer_encoded(visual, [QUESTION], max_new_tokens=2)
    assert answer.visual_tokens == sum(engine.budgets) and timings.prune > 0


def test_fastv_after_the_projector_says_where_it_runs(
    vlm: DrivingVLM, visual: torch.Tensor
) -> None:
    with pytest.raises(PruningInputError, match="use placement layer:K"):
        vlm.prune(visual, vlm.budgets(0.25), "fastv")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_bench_gpu_needs_cuda(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from prune2drive_ros.commands.cli import main

    assert main(["bench", "gpu", "--out", str(tmp_path / "gpu.json")]) == 2
    assert "needs CUDA" in capsys.readouterr().err
    assert not (tmp_path / "gpu.json").exists()
