"""Every GPU check in one process, written to one JSON file (CUDA only: exits 2 without it).

Sized to run in a few minutes on one H100/H200, so that a session lent a device for a short
while records everything at once:

* T-FPS at the 7B width (six views of 729 tokens, dim 3584, bfloat16) against the reference
  loop, at 10 % and 25 % (the goals: at most 1 ms and at least 20x);
* prefill at the 7B shape (random weights of Qwen2-7B's layout behind LLaVA-OneVision's tower)
  at 10 % for ``projector`` and ``layer:1``, with SDPA and, where flash-attn is installed,
  FlashAttention-2 (:mod:`.prefill`);
* greedy decoding speed on the pruned prompt (new tokens per second over a 64-token answer);
* pruning and quantisation together at DriveMM's shape (random weights of SigLIP-so400m and
  Llama-3.1-8B, six 729-token views) in bfloat16, int8 and int4 weights
  (:mod:`~prune2drive_ros.vlm.quantization`), unpruned and at 10 % with T-FPS: time to first
  token (encode, prune, prefill), decoding tokens per second, the weights' memory and the peak
  GPU memory while loading and while answering;
* peak GPU memory of the whole run.

Each part is the same measurement as its own benchmark command (or ``eval --quantizations``);
the file holds their records under ``tfps``, ``prefill``, ``decode``, ``quantized`` and
``peak_gpu_memory_bytes``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...files import write_text_atomically
from ..options import check_output
from . import device_name, random_views
from . import prefill as prefill_bench
from . import tfps as tfps_bench

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: The T-FPS case of the paper's 7B models: six views of 729 tokens, Qwen2-7B's width.
TFPS_SHAPE = (6, 729, 3584)
#: Tokens the decoding speed is measured over.
DECODE_TOKENS = 64
#: DriveMM's architecture, as the converter gives it (LLaVA-OneVision classes).
QUANTIZED_SHAPE = ("llava_onevision", "8b")
#: Weight schemes of the quantisation part (bfloat16 is ``none``).
QUANTIZED_SCHEMES = ("none", "int8", "int4")
#: Retention rates of the quantisation part: unpruned and the paper's 10 %.
QUANTIZED_RATES = (1.0, 0.1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive bench gpu``."""
    parser.add_argument("--out", default="bench_gpu.json", help="JSON file to write")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per figure (10)")


def run(args: argparse.Namespace) -> int:
    """Run every GPU check and write the JSON file; 2 without CUDA."""
    check_output(args, args.out)
    import torch

    if not torch.cuda.is_available():
        print(
            "prune2drive bench gpu needs CUDA (an NVIDIA GPU and a CUDA build of torch); "
            "on this machine run the CPU benchmarks instead (bench tfps, bench prefill)",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats(device)
    begin = time.perf_counter()
    record: dict[str, Any] = {
        "benchmark": "gpu",
        "device_name": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tfps": _tfps(device, args.repeats),
        "prefill": _prefill(args.repeats),
        "decode": _decode(device),
        "quantized": [
            quantized(device, QUANTIZED_SHAPE, scheme, args.repeats) for scheme in QUANTIZED_SCHEMES
        ],
    }
    record["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
    record["wall_s"] = round(time.perf_counter() - begin, 1)
    write_text_atomically(Path(args.out), json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    return 0


def _tfps(device: torch.device, repeats: int) -> list[dict[str, Any]]:
    options = argparse.Namespace(metric="cosine", dtype="bfloat16", seed=0, warmup=3)
    options.repeats = repeats
    import torch

    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(*TFPS_SHAPE, generator=generator).to(device, torch.bfloat16)
    return [tfps_bench._measure(tokens, rate, options, device) for rate in (0.1, 0.25)]


def _prefill(repeats: int) -> list[dict[str, Any]]:
    from transformers.utils import is_flash_attn_2_available

    kernels = ["sdpa", *(["flash_attention_2"] if is_flash_attn_2_available() else [])]
    return [
        prefill_bench.measure(
            argparse.Namespace(
                family="llava_onevision",
                shape="7b",
                retention=0.1,
                pruner="tfps",
                positions="original",
                placement=["projector", "layer:1"],
                dtype="bfloat16",
                attn=kernel,
                seed=0,
                repeats=repeats,
                warmup=1,
                device="cuda",
                threads=None,
            )
        )
        for kernel in kernels
    ]


def _decode(device: torch.device) -> dict[str, Any]:
    """New tokens per second of greedy decoding on the 7B shape at 10 %, from the prefix on."""
    from ...engine import Engine
    from ...vlm.tiny import random_vlm

    vlm = random_vlm("llava_onevision", "7b", device=device, dtype="bfloat16")
    engine = Engine(vlm, 0.1)
    visual = vlm.encode_views(vlm.preprocess(random_views(vlm.image_size)))
    engine.answer_encoded(visual, ["warm up"], max_new_tokens=4)
    # random weights may stop at once: time the full answer
    (answer,), timings = engine.answer_encoded(
        visual, [prefill_bench.QUESTION], max_new_tokens=DECODE_TOKENS, fixed_length=True
    )
    return {
        "new_tokens": answer.new_tokens,
        "generate_ms": round(timings.generate, 1),
        "tokens_per_s": round(1e3 * (answer.new_tokens - 1) / timings.generate, 1),
        "prefill_ms": round(timings.prefill, 1),
        "prune_ms": round(timings.prune, 2),
    }


def quantized(
    device: torch.device, shape: tuple[str, str], scheme: str, repeats: int
) -> dict[str, Any]:
    """Time to first token and decoding speed of the ``shape`` model with its language model in
    ``scheme``, unpruned and at 10 % (medians of ``repeats`` answers of :data:`DECODE_TOKENS`
    tokens after a warm-up), its weights' memory and the peak memory of loading and answering
    (CUDA; on the CPU the memory figures are the weights' only)."""
    import torch

    from ...devices import release_memory
    from ...engine import Engine
    from ...vlm.quantization import weight_bytes
    from ...vlm.tiny import random_vlm
    from . import median

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    begin = time.perf_counter()
    family, size = shape
    vlm = random_vlm(family, size, device=device, dtype="bfloat16", quantization=scheme)
    record: dict[str, Any] = {
        "shape": f"{family} {size}",
        "quantization": vlm.quantization.text(),
        "load_s": round(time.perf_counter() - begin, 1),
        "language_model_bytes": vlm.quantization.language_model_bytes,
        "model_bytes": weight_bytes(vlm.model),
    }
    if cuda:
        record["allocated_after_load_bytes"] = int(torch.cuda.memory_allocated(device))
        record["peak_load_bytes"] = int(torch.cuda.max_memory_allocated(device))
        torch.cuda.reset_peak_memory_stats(device)
    engine = Engine(vlm, None)
    images = random_views(vlm.image_size)
    runs = []
    for rate in QUANTIZED_RATES:
        budgets = vlm.budgets(rate)
        engine.answer_images(images, ["warm up"], 4, budgets=budgets, fixed_length=True)
        ttft, encode, prefill, decode = [], [], [], []
        for _ in range(repeats):
            _, timings = engine.answer_images(
                images, [prefill_bench.QUESTION], DECODE_TOKENS, budgets=budgets, fixed_length=True
            )
            ttft.append(timings.model_ttft)
            encode.append(timings.encode)
            prefill.append(timings.prefill)
            decode.append(timings.generate)
        runs.append(
            {
                "rate": rate,
                "visual_tokens": sum(budgets),
                "ttft_ms": round(median(ttft), 2),
                "encode_ms": round(median(encode), 2),
                "prefill_ms": round(median(prefill), 2),
                "decode_tokens_per_s": round(1e3 * (DECODE_TOKENS - 1) / median(decode), 1),
            }
        )
    record["runs"] = runs
    if cuda:
        record["peak_answer_bytes"] = int(torch.cuda.max_memory_allocated(device))
    del engine, vlm
    release_memory()
    return record
