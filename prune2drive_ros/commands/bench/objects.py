"""What each pruner keeps of buses, cars and background on the scene model's held-out scenes.

Farthest point sampling is said to undersample a large uniform object (the paper's orange
bus): after one pick its other patches lie close to it. This counts it on a model trained here
rather than assuming it. The held-out scenes of a scene-model variant (the seeds its training
never saw) are drawn with their per-patch labels, encoded once, and pruned by each pruner at
each rate; a token counts as a bus (car) token when a bus (car) covers at least half its
patch, as background when no vehicle touches it. Reported per pruner and rate: the share of
each kind of token kept, that share over the rate (1.0: kept as often as any token; below 1:
undersampled), and in views where a bus spans at least :data:`LARGE_BUS_TOKENS` tokens, the
bus tokens kept per such view. No timing: the numbers are deterministic.

``--features pixels`` prunes the raw RGB patches instead of the model's tokens: there a bus
side is uniform by construction, which isolates what farthest point sampling does to such a
region from what a trained encoder (whose tokens also carry context) makes of it.

The last output line is one JSON object (also the only one with ``--json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ConfigError
from ...placement import ATTENTION_PRUNERS
from ...progress import NO_PROGRESS
from ...pruning.registry import PRUNERS
from ...training import REPORT_FILE, VARIANTS, SceneModelSpec, variant
from ...training.cached import require_trained
from ...training.spec import spec_of_report
from ..progress import add_progress_argument, progress_from
from . import add_torch_arguments, device_name, emit_json, setup_torch

if TYPE_CHECKING:
    import torch

    from ...vlm import DrivingVLM

#: A bus spanning at least this many tokens of a view is a large one.
LARGE_BUS_TOKENS = 4
#: A token belongs to a kind when that kind covers at least this share of its patch.
COVERED = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive bench objects``."""
    parser.add_argument(
        "--variant",
        choices=list(VARIANTS),
        default="default",
        help="the cached scene model to measure, trained first by `prune2drive train --variant` "
        "(default)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="a scene model folder `prune2drive train --out` wrote instead (its held-out scenes "
        f"are drawn from the spec in its {REPORT_FILE})",
    )
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[0.1, 0.25], help="retention (0.1 0.25)"
    )
    runnable = [p for p in PRUNERS if p not in ATTENTION_PRUNERS]
    parser.add_argument(
        "--pruners", nargs="+", choices=runnable, default=runnable, help="(all after the projector)"
    )
    parser.add_argument(
        "--features",
        choices=("model", "pixels"),
        default="model",
        help="prune the model's visual tokens (model) or the raw RGB patches (pixels)",
    )
    add_torch_arguments(parser)
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Draw, encode, prune, count, print."""
    folder, spec = _scene_model(args)
    import torch

    from ...training.data import draw_pool
    from ...vlm import load_vlm

    device = setup_torch(args)
    vlm = load_vlm(str(folder), device=str(device))
    progress = NO_PROGRESS if args.json else progress_from(args)
    pool = draw_pool(spec, held_out=True, progress=progress)
    bus = torch.from_numpy(pool.patch_targets[..., 1] >= COVERED)  # [scenes, views, tokens]
    car = torch.from_numpy(pool.patch_targets[..., 0] >= COVERED)
    empty = torch.from_numpy(pool.patch_targets[..., :2].sum(axis=-1) == 0)
    kept: dict[tuple[str, float], list[torch.Tensor]] = {}
    with progress(total=len(pool), desc="pruning", unit="scene") as bar:
        for k in range(len(pool)):
            pixels = vlm.preprocess(list(pool.images[k]))
            visual = vlm.encode_views(pixels) if args.features == "model" else _patches(pixels, vlm)
            for name in args.pruners:
                for rate in args.rates:
                    mask = vlm.prune(visual, vlm.budgets(rate), name).mask.cpu()
                    kept.setdefault((name, rate), []).append(mask)
            bar.update()
    large = bus.sum(dim=-1) >= LARGE_BUS_TOKENS  # [scenes, views]
    rows = []
    for (name, rate), masks in kept.items():
        mask = torch.stack(masks)
        share = float(mask.float().mean())
        row: dict[str, Any] = {"pruner": name, "rate": rate, "kept_share": round(share, 4)}
        for kind, where in (("bus", bus), ("car", car), ("background", empty)):
            kept_share = float(mask[where].float().mean()) if where.any() else float("nan")
            row[f"{kind}_kept"] = round(kept_share, 4)
            row[f"{kind}_vs_rate"] = round(kept_share / share, 2)
        on_large = (mask & bus).sum(dim=-1)[large]
        row["large_bus_views"] = int(large.sum())
        row["large_bus_tokens"] = round(float(bus.sum(dim=-1)[large].float().mean()), 2)
        row["large_bus_kept"] = round(float(on_large.float().mean()), 2)
        rows.append(row)
    result = {
        "benchmark": "objects",
        "variant": args.variant,
        "features": args.features,
        "scenes": len(pool),
        "tokens": {
            "bus": int(bus.sum()),
            "car": int(car.sum()),
            "background": int(empty.sum()),
            "all": int(np.prod(bus.shape)),
        },
        "device": device_name(device),
        "torch": torch.__version__,
        "rows": rows,
    }
    if not args.json:
        _print_table(result)
    emit_json(result)
    return 0


def _scene_model(args: argparse.Namespace) -> tuple[Path, SceneModelSpec]:
    """The scene model folder to measure and the spec it was trained from; never trains one
    (that takes minutes: the error says what to run).

    Raises:
        ConfigError: ``--model`` is no scene model folder, or ``--variant`` is not trained yet.
    """
    if args.model is None:
        return require_trained(args.variant, "give --model"), variant(args.variant)
    try:
        report = json.loads((args.model / REPORT_FILE).read_text(encoding="utf-8"))
        return args.model, spec_of_report(report)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--model {args.model} is no scene model folder `prune2drive train` wrote: {exc}"
        ) from None


def _patches(pixels: torch.Tensor, vlm: DrivingVLM) -> torch.Tensor:
    """``[V, 3, S, S]`` normalised pixels -> ``[V, rows * cols, 3 * p * p]`` raw patches, in
    the raster order of the model's tokens."""
    assert vlm.patch_grid is not None
    rows, cols = vlm.patch_grid
    views, channels, height, width = pixels.shape
    p, q = height // rows, width // cols
    grid = pixels.reshape(views, channels, rows, p, cols, q).permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(views, rows * cols, channels * p * q).float()


def _print_table(result: dict[str, Any]) -> None:
    tokens = result["tokens"]
    print(
        f"{result['scenes']} held-out scenes of scene model {result['variant']}, pruning "
        f"{'its visual tokens' if result['features'] == 'model' else 'raw RGB patches'}: "
        f"{tokens['bus']} bus, {tokens['car']} car, {tokens['background']} background tokens "
        f"of {tokens['all']}; kept share / rate (1.0: as often as any token)"
    )
    print(
        f"{'pruner':<12} {'rate':>5} {'bus':>6} {'car':>6} {'bg':>6} "
        f"{'large bus: tokens':>18} {'kept':>5}"
    )
    for r in result["rows"]:
        print(
            f"{r['pruner']:<12} {r['rate']:>5.2f} {r['bus_vs_rate']:>6.2f} {r['car_vs_rate']:>6.2f}"
            f" {r['background_vs_rate']:>6.2f} {r['large_bus_tokens']:>18.2f} "
            f"{r['large_bus_kept']:>5.2f}"
        )
