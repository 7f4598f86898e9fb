"""Weight-only quantisation of the language model (torchao): what is quantised, what is not,
every pruner and placement on a quantised model, and each refusal with its remedy."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from prune2drive_ros.config import DriveVLMConfig
from prune2drive_ros.engine import Engine
from prune2drive_ros.errors import ConfigError, ModelLoadError
from prune2drive_ros.placement import ATTENTION_PRUNERS
from prune2drive_ros.pruning.registry import PRUNERS
from prune2drive_ros.quantization import QUANTIZATIONS
from prune2drive_ros.views import VIEWS
from prune2drive_ros.vlm import DrivingVLM, load_vlm
from prune2drive_ros.vlm.quantization import (
    INT4_GROUP,
    check_quantization,
    int4_group,
    weight_bytes,
)
from prune2drive_ros.vlm.tiny import cached_tiny

FAMILY_NAMES = ("llava_onevision", "internvl", "qwen2_5_vl")
QUESTION = "Is the road clear?"


def _images(vlm: DrivingVLM) -> list[np.ndarray]:
    width, height = vlm.image_size
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in VIEWS]


def _first_logits(vlm: DrivingVLM) -> torch.Tensor:
    visual = vlm.encode_views(vlm.preprocess(_images(vlm)))
    output, _ = vlm.prefill_question(visual, None, QUESTION)
    return output.logits.float()


@pytest.fixture(scope="module")
def llava() -> Path:
    return cached_tiny("llava_onevision")


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_only_the_language_models_linear_layers_are_quantised(family: str, scheme: str) -> None:
    vlm = load_vlm(cached_tiny(family), quantization=scheme)
    decoder = vlm.language_model(vlm.model)
    inside = {id(p) for p in decoder.parameters()}
    linears = {
        id(m.weight) for m in decoder.modules() if isinstance(m, nn.Linear) and m.weight is not None
    }
    for name, parameter in vlm.model.named_parameters():
        plain = type(parameter.data) is torch.Tensor
        if id(parameter) in linears:
            assert not plain, f"{name} should be quantised"
        else:  # vision tower, projector, embeddings, norms, LM head
            assert plain, f"{name} should stay in the model dtype"
            assert parameter.dtype == torch.float32, name
    assert linears and linears <= inside
    assert vlm.quantization.scheme == scheme
    assert vlm.quantization.library.startswith("torchao ")
    # the first parameter (the vision tower's) gives the adapter its dtype, as unquantised
    assert vlm.dtype == torch.float32


def test_quantised_weights_take_less_memory(llava: Path) -> None:
    plain = load_vlm(llava)
    int8 = load_vlm(llava, quantization="int8")
    linear_bytes = sum(
        m.weight.numel() * 4
        for m in plain.language_model(plain.model).modules()
        if isinstance(m, nn.Linear)
    )
    saved = plain.quantization.language_model_bytes - int8.quantization.language_model_bytes
    # float32 -> one byte a weight (plus a scale per output channel): about 3/4 saved
    assert 0.7 * linear_bytes < saved < 0.75 * linear_bytes
    assert plain.quantization.language_model_bytes == weight_bytes(
        plain.language_model(plain.model)
    )
    assert int8.quantization.describe() == {
        "quantization": int8.quantization.text(),
        "language_model_weights_mb": f"{int8.quantization.language_model_bytes / 1e6:.1f}",
    }


def test_answers_stay_close_to_the_unquantised_model(llava: Path) -> None:
    reference = _first_logits(load_vlm(llava))
    errors = {}
    for scheme in ("int8", "int4"):
        logits = _first_logits(load_vlm(llava, quantization=scheme))
        errors[scheme] = float((logits - reference).norm() / reference.norm())
    # random weights are the worst case for 4 bits (no outliers to spare, every value used)
    assert errors["int8"] < 0.01
    assert errors["int8"] < errors["int4"] < 0.3


@pytest.mark.parametrize("placement", ["projector", "layer:1"])
def test_every_pruner_runs_on_a_quantised_model(llava: Path, placement: str) -> None:
    vlm = load_vlm(llava, quantization="int4", placement=placement)
    visual = vlm.encode_views(vlm.preprocess(_images(vlm)))
    budgets = vlm.budgets(0.25)
    pruners = [p for p in PRUNERS if p not in ATTENTION_PRUNERS or vlm.prune_layer]
    assert "tfps" in pruners and ("fastv" in pruners) == (placement != "projector")
    for pruner in pruners:
        engine = Engine(vlm, 0.25, pruner=pruner, max_new_tokens=3)
        (answer,), _ = engine.answer_encoded(visual, [QUESTION])
        assert answer.new_tokens >= 1, pruner
        assert sum(answer.kept_per_view) == sum(budgets), pruner  # tfps_shared moves them


def test_a_placed_copy_keeps_the_quantisation(llava: Path) -> None:
    vlm = load_vlm(llava, quantization="int8")
    assert vlm.placed("layer:1").quantization == vlm.quantization


def test_the_group_is_the_largest_that_divides_every_width() -> None:
    assert int4_group(nn.Sequential(nn.Linear(4096, 8), nn.Linear(14336, 8))) == INT4_GROUP
    assert int4_group(nn.Sequential(nn.Linear(64, 8), nn.Linear(96, 8))) == 32
    assert int4_group(nn.Linear(7, 8)) == 1


def test_an_unknown_scheme_is_refused_before_loading() -> None:
    with pytest.raises(ModelLoadError, match=r"'int3' is not supported; use one of none, int8"):
        check_quantization("int3", torch.device("cpu"), torch.float32)
    with pytest.raises(ConfigError, match="quantization"):
        DriveVLMConfig.from_mapping({"quantization": "int3"})
    assert DriveVLMConfig().quantization == "none"
    assert DriveVLMConfig.spec("quantization").choices == QUANTIZATIONS


def test_without_torchao_it_says_how_to_install_it(
    llava: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao -> ImportError
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(ModelLoadError, match=r"needs torchao.*prune2drive_ros\[quantization\]"):
        load_vlm(llava, quantization="int8")
    load_vlm(llava)  # none needs no torchao


def test_int4_on_cuda_needs_bfloat16_and_a_recent_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda")
    with pytest.raises(ModelLoadError, match=r"bfloat16 only.*not float16.*int8"):
        check_quantization("int4", cuda, torch.float16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Tesla T4")
    with pytest.raises(ModelLoadError, match=r"8\.0 or newer.*Tesla T4 has 7\.5.*int8"):
        check_quantization("int4", cuda, torch.bfloat16)
    check_quantization("int8", cuda, torch.float16)  # int8 runs in any dtype


@pytest.mark.parametrize("scheme", QUANTIZATIONS)
def test_the_gpu_benchmarks_quantisation_part_runs_at_a_tiny_shape(scheme: str) -> None:
    from prune2drive_ros.commands.bench.gpu import DECODE_TOKENS, QUANTIZED_RATES, quantized

    record = quantized(torch.device("cpu"), ("llava_onevision", "tiny"), scheme, repeats=1)
    assert record["quantization"].startswith(scheme)
    assert [run["rate"] for run in record["runs"]] == list(QUANTIZED_RATES)
    unpruned, pruned = record["runs"]
    assert pruned["visual_tokens"] < unpruned["visual_tokens"]
    for run in record["runs"]:
        assert run["ttft_ms"] >= run["prefill_ms"] > 0 and run["decode_tokens_per_s"] > 0
    assert 0 < record["language_model_bytes"] < record["model_bytes"]
    assert "peak_answer_bytes" not in record  # GPU memory figures on CUDA only
    assert DECODE_TOKENS > 1
