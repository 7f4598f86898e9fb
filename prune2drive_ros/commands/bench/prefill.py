"""Time the language-model prefill on all visual tokens against the pruned ones.

One random-weight model of the family's real architecture (shape ``small`` on a CPU, ``7b``
on a GPU; see :mod:`prune2drive_ros.vlm.tiny`) encodes six synthetic views once; the benchmark
then times, taking turns run by run after a warm-up, the vision encoder with projector, the
pruner (T-FPS unless ``--pruner``) at ``--retention``, and the language-model prefill of the
same prompt (preamble, six views, question) unpruned and pruned at each ``--placement``
(``projector``, or ``layer:K``: the first K decoder layers on every token; several in one run,
e.g. ``--placement projector layer:1 layer:2 layer:3``). Medians are reported with:

* ``speedup``: unpruned over pruned prefill;
* ``flops_ratio``: pruned over unpruned prefill FLOPs from the model config
  (:mod:`prune2drive_ros.vlm.flops`; at ``layer:K`` the first K layers at full price), whose
  inverse bounds the speedup;
* ``end_to_end_speedup``: (encode + unpruned prefill) / (encode + prune + pruned prefill),
  what pruning buys up to the first token once its own cost is paid.

The top-level figures are those of the first placement; ``placements`` lists every one.
Random weights do not change the cost of a forward pass, so the times hold for trained weights
of the same shape. With ``--json`` the last line is one JSON object; otherwise a summary.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError
from ...pruning.registry import PRUNERS
from ...views import VIEWS
from ..argtypes import retention_rate
from . import (
    add_timing_arguments,
    device_name,
    emit_json,
    median,
    random_views,
    setup_torch,
    time_interleaved,
)

if TYPE_CHECKING:
    import torch

    from ...pruning import Selection
    from ...vlm import DrivingVLM

logger = logging.getLogger(__name__)

#: A DriveLM-style question, so the text part of the prompt has a realistic length.
QUESTION = (
    "What are the important objects in the current scene? Those objects will be considered "
    "for the future reasoning and driving decision."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive bench prefill``."""
    parser.add_argument(
        "--family", default="llava_onevision", help="model family (llava_onevision)"
    )
    parser.add_argument(
        "--shape",
        choices=("tiny", "small", "7b"),
        default="small",
        help="random-weight shape: small for CPUs, 7b (the real architecture) for GPUs (small)",
    )
    parser.add_argument(
        "--retention",
        type=retention_rate,
        default=0.1,
        help="fraction of tokens kept per view (0.1)",
    )
    parser.add_argument("--pruner", choices=PRUNERS.names(), default="tfps", help="pruner (tfps)")
    parser.add_argument(
        "--positions",
        choices=("original", "compact"),
        default="original",
        help="RoPE positions of the pruned sequence (original)",
    )
    parser.add_argument(
        "--placement",
        nargs="+",
        type=placement_name,
        default=["projector"],
        help="where to prune, one or more of projector, layer:K (projector)",
    )
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument(
        "--attn",
        choices=("sdpa", "flash_attention_2"),
        default="sdpa",
        help="attention kernel (sdpa)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and frames (0)")
    add_timing_arguments(parser, repeats=5, warmup=1)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Build the model, time the four stages and return the result record."""
    import torch

    from ...vlm.flops import DecoderShape, flops_ratio, prefill_flops
    from ...vlm.tiny import random_vlm  # transformers loads only when a benchmark runs

    device = setup_torch(args)
    vlm = random_vlm(
        args.family,
        args.shape,
        device=device,
        dtype=args.dtype,
        attn_implementation=args.attn,
        seed=args.seed,
    )
    pixels = vlm.preprocess(random_views(vlm.image_size, args.seed))
    visual = vlm.encode_views(pixels)
    budgets = vlm.budgets(args.retention)
    full = vlm.prefill_inputs(visual, None, QUESTION, positions=args.positions)
    placed = {name: vlm.placed(name) for name in args.placement}
    kept = {name: _selection(model, visual, budgets, args) for name, model in placed.items()}
    lengths = {
        name: model.prefill_question(visual, kept[name], QUESTION, positions=args.positions)[1]
        for name, model in placed.items()
    }
    first = args.placement[0]
    selection, pruned_length = kept[first], lengths[first]
    logger.info(
        "prefill of %d tokens vs %s (budgets %s) on %s", full.length, lengths, budgets, device
    )
    # FastV's scores come from inside the model; for timing the pruner alone any will do.
    scores = torch.rand(visual.shape[:2], device=visual.device)
    timed: dict[str, Callable[[], object]] = {
        "encode": lambda: vlm.encode_views(pixels),
        "prune": lambda: vlm.prune(visual, budgets, args.pruner, seed=args.seed, scores=scores),
        "baseline": partial(vlm.prefill_question, visual, None, QUESTION, positions=args.positions),
    }
    for name, model in placed.items():
        timed[name] = partial(
            model.prefill_question, visual, kept[name], QUESTION, positions=args.positions
        )
    times = time_interleaved(timed, warmup=args.warmup, repeats=args.repeats, device=device)
    encode_ms, prune_ms, baseline_ms = (median(times[k]) for k in ("encode", "prune", "baseline"))
    pruned_ms = median(times[first])
    shape = DecoderShape.from_config(vlm.model.config)
    ratios = {
        name: flops_ratio(shape, lengths[name], full.length, at=model.prune_layer)
        for name, model in placed.items()
    }
    ratio = ratios[first]
    return {
        "benchmark": "prefill",
        "family": args.family,
        "shape": args.shape,
        "random_weights": vlm.random_weights,
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": str(vlm.dtype).removeprefix("torch."),
        "attn": args.attn,
        "views": len(VIEWS),
        "retention": args.retention,
        "pruner": args.pruner,
        "positions": args.positions,
        "budgets": list(budgets),
        "visual_tokens_full": full.visual_tokens,
        "visual_tokens_kept": selection.total,
        "separator_tokens": full.separator_tokens,
        "text_tokens": full.text_tokens,
        "prefill_tokens_full": full.length,
        "prefill_tokens_pruned": pruned_length,
        "placement": first,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "baseline_ms": round(baseline_ms, 2),
        "pruned_ms": round(pruned_ms, 2),
        "speedup": round(baseline_ms / pruned_ms, 2),
        "prefill_gflop_full": round(prefill_flops(shape, full.length) / 1e9, 2),
        "prefill_gflop_pruned": round(
            prefill_flops(shape, full.length, kept=pruned_length, at=placed[first].prune_layer)
            / 1e9,
            2,
        ),
        "flops_ratio": round(ratio, 4),
        "flops_speedup_bound": round(1 / ratio, 2),
        "encode_ms": round(encode_ms, 2),
        "prune_ms": round(prune_ms, 2),
        "end_to_end_speedup": round(
            (encode_ms + baseline_ms) / (encode_ms + prune_ms + pruned_ms), 2
        ),
        "placements": [
            {
                "placement": name,
                "prune_layer": model.prune_layer,
                "prefill_tokens_pruned": lengths[name],
                "pruned_ms": round(median(times[name]), 2),
                "speedup": round(baseline_ms / median(times[name]), 2),
                "flops_ratio": round(ratios[name], 4),
                "flops_speedup_bound": round(1 / ratios[name], 2),
            }
            for name, model in placed.items()
        ],
    }


def placement_name(text: str) -> str:
    """``--placement`` value: ``projector`` or ``layer:K``."""
    from ...placement import prune_layer

    try:
        prune_layer(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _selection(
    vlm: DrivingVLM, visual: torch.Tensor, budgets: tuple[int, ...], args: argparse.Namespace
) -> Selection:
    """The tokens ``args.pruner`` keeps where ``vlm`` prunes (chosen once, not timed)."""
    return vlm.prefill_prefix(
        visual,
        lambda tokens, scores: vlm.prune(
            tokens, budgets, args.pruner, seed=args.seed, scores=scores
        ),
        positions=args.positions,
    ).selection


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print its record."""
    record = measure(args)
    if args.json:
        emit_json(record)
        return 0
    print(
        f"{record['family']} {record['shape']} (random weights) on {record['device']} "
        f"({record['device_name']}, {record['threads']} threads), {record['dtype']}, "
        f"{record['attn']}"
    )
    print(
        f"prefill {record['prefill_tokens_full']} tokens: {record['baseline_ms']:.1f} ms; "
        f"pruned to {record['prefill_tokens_pruned']} ({record['visual_tokens_kept']} of "
        f"{record['visual_tokens_full']} visual, retention {record['retention']}): "
        f"{record['pruned_ms']:.1f} ms"
    )
    print(
        f"speedup {record['speedup']:.2f}x (FLOPs bound {record['flops_speedup_bound']:.2f}x, "
        f"ratio {record['flops_ratio']:.3f}); encode {record['encode_ms']:.1f} ms, "
        f"{record['pruner']} {record['prune_ms']:.1f} ms, end to end "
        f"{record['end_to_end_speedup']:.2f}x"
    )
    for row in record["placements"][1:]:
        print(
            f"  {row['placement']}: {row['pruned_ms']:.1f} ms, speedup {row['speedup']:.2f}x "
            f"(FLOPs bound {row['flops_speedup_bound']:.2f}x)"
        )
    return 0
