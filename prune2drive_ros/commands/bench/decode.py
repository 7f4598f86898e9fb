"""Time decoding six camera JPEGs to the encoder input: the ``exact`` and the ``fast`` resize.

The six 1600 x 900 JPEGs (quality 90, like nuScenes) are one frame of the synthetic road scene.
``exact`` and ``fast`` are :func:`~prune2drive_ros.sensors.imaging.decode_views` in each
:data:`~prune2drive_ros.sensors.resizing.RESIZE_MODES` (the views spread over the cores in
threads): a full decode and PIL's bicubic resize, or a reduced-scale decode and OpenCV's
bilinear/area resize. ``--fit pad`` letterboxes each view to the square first (DriveMM).

The limit ``exact`` is measured against is the reference processors' own work, timed in the
same run: PIL decoding each JPEG and resizing it bicubically (``Image.open(...).convert("RGB")``,
the padding pasted, ``resize``), one view after another on one thread (``pil_serial``); divided
by the worker threads it is what ``exact`` would take if the views split perfectly over the
cores (``exact_vs_pil_floor`` = exact / that, 1.0 = no overhead). ``exact_serial`` is ``exact``
one view after another. All run in this process on the same bytes, taking turns run by run;
medians after a warm-up are reported, with how far ``fast`` is from ``exact`` (mean and largest
absolute difference, 8-bit levels) and ``exact`` from the PIL reference (largest, levels).

The last output line is one JSON object (also the only one with ``--json``).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ...sensors.imaging import Colour, decode_image, decode_views, encode_jpeg
from ...sensors.resizing import ResizeMode
from ...sensors.scene import RoadScene
from ...views import VIEWS, image_topic
from ..argtypes import at_least
from . import add_timing_arguments, device_name, emit_json, median, time_interleaved

logger = logging.getLogger(__name__)

#: What ``--fit pad`` letterboxes with: SigLIP's mean (0.5) as 8-bit grey, as DriveMM pads.
PAD_GREY: Colour = (127, 127, 127)


def _size(text: str) -> tuple[int, int]:
    """``384`` (square) or ``WxH``."""
    parts = text.lower().split("x")
    try:
        width, height = (int(parts[0]), int(parts[0])) if len(parts) == 1 else map(int, parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or WxH, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prune2drive bench decode``."""
    parser.add_argument(
        "--size", type=_size, default=(384, 384), help="encoder input, N or WxH (384)"
    )
    parser.add_argument(
        "--fit",
        choices=("resize", "pad"),
        default="resize",
        help="resize each view whole, or pad it to the target's aspect with grey first, as "
        "DriveMM's checkpoints want (resize)",
    )
    parser.add_argument("--width", type=at_least(16), default=1600, help="(1600)")
    parser.add_argument("--height", type=at_least(16), default=900, help="(900)")
    parser.add_argument("--quality", type=at_least(1), default=90, help="JPEG (90)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (0)")
    add_timing_arguments(parser, repeats=21, warmup=3, torch_device=False)


def pil_reference(jpeg: bytes, size: tuple[int, int], pad: Colour | None) -> np.ndarray:
    """What the reference processors do with one JPEG: PIL decodes it, ``expand2square``-style
    padding with ``pad`` (when given; to ``size``'s aspect), PIL's bicubic resize."""
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    if pad is not None:
        width, height = image.size
        target = max(width, round(height * size[0] / size[1]))
        target_h = max(height, round(width * size[1] / size[0]))
        canvas = Image.new("RGB", (target, target_h), pad)
        canvas.paste(image, ((target - width) // 2, (target_h - height) // 2))
        image = canvas
    return np.asarray(image.resize(size, Image.Resampling.BICUBIC))


def run(args: argparse.Namespace) -> int:
    """Render, encode, time both modes and the PIL floor, print the result."""
    size: tuple[int, int] = args.size
    pad = PAD_GREY if args.fit == "pad" else None
    images = RoadScene(args.seed, args.width, args.height).render(0)
    jpegs = {view: encode_jpeg(images[view], args.quality) for view in VIEWS}
    messages = {
        view: SimpleNamespace(
            format="rgb8; jpeg compressed bgr8", data=np.frombuffer(data, np.uint8)
        )
        for view, data in jpegs.items()
    }
    topics = {view: image_topic(view) for view in VIEWS}
    workers = min(len(VIEWS), os.cpu_count() or 1)

    def views(mode: ResizeMode) -> list[np.ndarray]:
        return list(decode_views(messages, topics, size, pad, mode).values())

    def exact_serial() -> list[np.ndarray]:
        return [decode_image(m, topic=topics[v], size=size, pad=pad) for v, m in messages.items()]

    def pil_serial() -> list[np.ndarray]:
        return [pil_reference(data, size, pad) for data in jpegs.values()]

    exact, fast, reference = views("exact"), views("fast"), pil_serial()
    fast_diff = [np.abs(a.astype(np.int16) - b) for a, b in zip(exact, fast, strict=True)]
    exact_diff = [np.abs(a.astype(np.int16) - b) for a, b in zip(exact, reference, strict=True)]
    from ...devices import resolve_device  # torch: only when the benchmark runs

    device = resolve_device("cpu")
    logger.info("timing %d views, %d repeats, %d threads", len(messages), args.repeats, workers)
    times = time_interleaved(
        {
            "exact": lambda: views("exact"),
            "fast": lambda: views("fast"),
            "exact_serial": exact_serial,
            "pil_serial": pil_serial,
        },
        warmup=args.warmup,
        repeats=args.repeats,
        device=device,
    )
    exact_ms, fast_ms = median(times["exact"]), median(times["fast"])
    pil_ms = median(times["pil_serial"])
    record: dict[str, Any] = {
        "benchmark": "decode",
        "views": len(messages),
        "width": args.width,
        "height": args.height,
        "size": list(size),
        "fit": args.fit,
        "quality": args.quality,
        "jpeg_kb": round(float(np.mean([len(data) for data in jpegs.values()])) / 1024, 1),
        "device": device.type,
        "device_name": device_name(device),
        "cpus": os.cpu_count(),
        "workers": workers,
        "opencv": cv2.__version__,
        "pillow": Image.__version__,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "exact_ms": round(exact_ms, 3),
        "fast_ms": round(fast_ms, 3),
        "exact_over_fast": round(exact_ms / fast_ms, 2),
        "exact_serial_ms": round(median(times["exact_serial"]), 3),
        "pil_serial_ms": round(pil_ms, 3),
        "exact_vs_pil_floor": round(exact_ms / (pil_ms / workers), 2),
        "fast_mean_abs_diff": round(float(np.mean([d.mean() for d in fast_diff])), 3),
        "fast_max_abs_diff": int(max(d.max() for d in fast_diff)),
        "exact_max_abs_diff_to_pil": int(max(d.max() for d in exact_diff)),
    }
    if not args.json:
        print(
            f"{len(messages)} x {args.width}x{args.height} JPEG q{args.quality} -> "
            f"{size[0]}x{size[1]} ({args.fit}): exact {exact_ms:.2f} ms, fast {fast_ms:.2f} ms "
            f"({record['exact_over_fast']}x), PIL one thread {pil_ms:.2f} ms; fast is "
            f"{record['fast_mean_abs_diff']} levels (max {record['fast_max_abs_diff']}) from exact"
        )
    emit_json(record)
    return 0
