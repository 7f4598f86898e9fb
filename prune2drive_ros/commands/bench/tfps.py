"""Time batched T-FPS against the reference loop on random tokens (same inputs, same process).

For each retention rate both implementations run on the same ``[views, tokens, dim]`` tokens
after a warm-up, taking turns run by run; the medians are reported with the speedup, whether
both kept the same tokens, and the analytic cost of the distance matrix: the FLOPs of the full
product (``distance_gflop``, ``2 * V * N * N * D``) and of the symmetric product T-FPS computes
(``gram_gflop``, about 3/4 of it), the bytes the selection moves at least, and ``floor_ms``, the
time of that product alone. Every cosine or l2 selection that needs all pairwise distances (the
"isolated" start does) pays at least this product, so ``ours_over_floor`` says how close to that
limit T-FPS runs on this device (l1 has no matmul form; its floor is only indicative).
``shared_ms`` and ``cover_ms`` time the two options on the same tokens and budgets: the views
sharing their total (``tfps_shared``: its walk goes to 1.5 times the budget) and the coverage
term (``tfps_cover``: one more ``N x N`` add), with their ratios to plain T-FPS.

With ``--json`` every retention prints one JSON object on its own line, in the order given; the
last line is therefore always a JSON object (the last retention's). Without ``--json`` a short
table is printed.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from ...pruning.registry import METRICS
from ..argtypes import at_least, retention_rate
from . import add_timing_arguments, device_name, emit_json, median, setup_torch, time_interleaved

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: ``--dtype`` choices: torch dtype names.
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive bench tfps``."""
    parser.add_argument("--views", type=at_least(1), default=6, help="camera views (default 6)")
    parser.add_argument("--tokens", type=at_least(1), default=729, help="tokens per view (729)")
    parser.add_argument("--dim", type=at_least(1), default=1152, help="feature size (1152)")
    parser.add_argument(
        "--retention",
        type=retention_rate,
        nargs="+",
        default=[0.1],
        help="fraction of tokens kept per view; several values give one result each (0.1)",
    )
    parser.add_argument("--metric", choices=METRICS, default="cosine", help="distance (cosine)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="token dtype")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random tokens (0)")
    add_timing_arguments(parser, repeats=7, warmup=1)


def _gram_products(count: int) -> int:
    """Dot products :func:`~prune2drive_ros.pruning.fps.gram` computes for ``count`` tokens."""
    from ...pruning.fps import SYMMETRIC_FROM

    if count < SYMMETRIC_FROM:
        return count * count
    half = count // 2
    return half * count + (count - half) ** 2


def _measure(
    tokens: torch.Tensor, retention: float, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """One result record: both implementations and the matmul floor at one retention."""
    import torch

    from ...pruning import budgets_from_rates, reference_tfps, tfps, tfps_cover, tfps_shared
    from ...pruning.fps import gram

    views, count, dim = tokens.shape
    budgets = budgets_from_rates(retention, count, views=[f"view{v}" for v in range(views)])

    def ours() -> Any:
        return tfps(tokens, budgets, metric=args.metric)

    def reference() -> Any:
        return reference_tfps(tokens, budgets, metric=args.metric)

    def shared() -> Any:
        return tfps_shared(tokens, budgets, metric=args.metric)

    def cover() -> Any:
        return tfps_cover(tokens, budgets, metric=args.metric)

    upcast = tokens.float()

    def floor() -> Any:
        return gram(upcast)

    same = torch.equal(ours().indices, reference().indices)
    logger.info("timing retention %s (budgets %s)", retention, budgets)
    times = time_interleaved(
        {"ours": ours, "reference": reference, "floor": floor, "shared": shared, "cover": cover},
        warmup=args.warmup,
        repeats=args.repeats,
        device=device,
    )
    ours_ms, reference_ms, floor_ms, shared_ms, cover_ms = (
        median(times[k]) for k in ("ours", "reference", "floor", "shared", "cover")
    )
    # Tokens read once; distance matrix written once and read once (start); one row per step.
    bytes_moved = tokens.numel() * tokens.element_size() + 4 * views * count * (
        2 * count + max(budgets)
    )
    return {
        "benchmark": "tfps",
        "views": views,
        "tokens": count,
        "dim": dim,
        "retention": retention,
        "budgets": list(budgets),
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": args.dtype,
        "metric": args.metric,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "seed": args.seed,
        "ours_ms": round(ours_ms, 3),
        "reference_ms": round(reference_ms, 3),
        "speedup": round(reference_ms / ours_ms, 2),
        "floor_ms": round(floor_ms, 3),
        "ours_over_floor": round(ours_ms / floor_ms, 2),
        "shared_ms": round(shared_ms, 3),
        "shared_over_ours": round(shared_ms / ours_ms, 2),
        "cover_ms": round(cover_ms, 3),
        "cover_over_ours": round(cover_ms / ours_ms, 2),
        "distance_gflop": round(2 * views * count * count * dim / 1e9, 3),
        "gram_gflop": round(2 * views * _gram_products(count) * dim / 1e9, 3),
        "bytes_moved": bytes_moved,
        "same_selection": same,
    }


def _print_table(results: list[dict[str, Any]]) -> None:
    first = results[0]
    print(
        f"T-FPS, {first['views']} views x {first['tokens']} tokens, dim {first['dim']}, "
        f"{first['dtype']}, {first['metric']}, on {first['device']} ({first['device_name']}, "
        f"{first['threads']} threads); distance matrix {first['distance_gflop']} GFLOP"
    )
    print(
        f"{'retention':>9} {'ours ms':>9} {'reference ms':>12} {'speedup':>7} "
        f"{'floor ms':>9} {'same':>5} {'shared ms':>9} {'cover ms':>9}"
    )
    for r in results:
        print(
            f"{r['retention']:>9.2f} {r['ours_ms']:>9.2f} {r['reference_ms']:>12.2f} "
            f"{r['speedup']:>6.2f}x {r['floor_ms']:>9.2f} {r['same_selection']!s:>5} "
            f"{r['shared_ms']:>9.2f} {r['cover_ms']:>9.2f}"
        )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; exit status 1 if the two implementations kept different tokens."""
    import torch

    device = setup_torch(args)
    generator = torch.Generator().manual_seed(args.seed)
    tokens = torch.randn(args.views, args.tokens, args.dim, generator=generator)
    tokens = tokens.to(device=device, dtype=getattr(torch, args.dtype))
    results = []
    for retention in args.retention:
        result = _measure(tokens, retention, args, device)
        results.append(result)
        if args.json:
            emit_json(result)
    if not args.json:
        _print_table(results)
    if not all(r["same_selection"] for r in results):
        logger.error("T-FPS and the reference kept different tokens")
        return 1
    return 0
