"""Time decoding six camera JPEGs to the encoder input: reduced-scale decode vs full decode.

The six 1600 x 900 JPEGs (quality 90, like nuScenes) are one frame of the synthetic road scene.
``reduced`` is :func:`~prune2drive_ros.sensors.imaging.decode_views`: each view decoded by
libjpeg at 1/2, 1/4 or 1/8 scale and resized to exactly the target, the views spread over the
cores in threads. ``full`` decodes every pixel first and then area-resizes, in the same number of
threads, the obvious alternative; ``reduced_serial`` is ``reduced`` one view after another.
All run in this process on the same bytes, taking turns run by run; medians after a warm-up
are reported, with how far reduced and full differ (mean absolute difference, 8-bit levels).

The last output line is one JSON object (also the only one with ``--json``).
"""

from __future__ import annotations

import argparse
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

from ...sensors.imaging import decode_image, decode_views, encode_jpeg
from ...sensors.scene import RoadScene
from ...views import VIEWS, image_topic
from ..argtypes import at_least
from . import add_timing_arguments, device_name, emit_json, median, time_interleaved

logger = logging.getLogger(__name__)


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
    parser.add_argument("--width", type=at_least(16), default=1600, help="(1600)")
    parser.add_argument("--height", type=at_least(16), default=900, help="(900)")
    parser.add_argument("--quality", type=at_least(1), default=90, help="JPEG (90)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (0)")
    add_timing_arguments(parser, repeats=21, warmup=3, torch_device=False)


def run(args: argparse.Namespace) -> int:
    """Render, encode, time both decoders, print the result."""
    size: tuple[int, int] = args.size
    images = RoadScene(args.seed, args.width, args.height).render(0)
    messages = {
        view: SimpleNamespace(
            format="rgb8; jpeg compressed bgr8",
            data=np.frombuffer(encode_jpeg(images[view], args.quality), np.uint8),
        )
        for view in VIEWS
    }

    topics = {view: image_topic(view) for view in VIEWS}
    workers = min(len(VIEWS), os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=workers)

    def reduced() -> list[np.ndarray]:
        return list(decode_views(messages, topics, size).values())

    def reduced_serial() -> list[np.ndarray]:
        return [decode_image(m, topic=topics[v], size=size) for v, m in messages.items()]

    def full_one(view: str) -> np.ndarray:
        rgb = decode_image(messages[view], topic=topics[view])
        return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

    def full() -> list[np.ndarray]:
        return list(pool.map(full_one, messages))

    difference = np.mean(
        [np.abs(a.astype(np.int16) - b).mean() for a, b in zip(reduced(), full(), strict=True)]
    )
    from ...devices import resolve_device  # torch: only when the benchmark runs

    device = resolve_device("cpu")
    logger.info("timing %d views, %d repeats, %d threads", len(messages), args.repeats, workers)
    with pool:
        times = time_interleaved(
            {"reduced": reduced, "full": full, "reduced_serial": reduced_serial},
            warmup=args.warmup,
            repeats=args.repeats,
            device=device,
        )
    reduced_ms, full_ms = median(times["reduced"]), median(times["full"])
    record: dict[str, Any] = {
        "benchmark": "decode",
        "views": len(messages),
        "width": args.width,
        "height": args.height,
        "size": list(size),
        "quality": args.quality,
        "jpeg_kb": round(float(np.mean([m.data.size for m in messages.values()])) / 1024, 1),
        "device": device.type,
        "device_name": device_name(device),
        "threads": cv2.getNumThreads(),
        "workers": workers,
        "opencv": cv2.__version__,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "reduced_ms": round(reduced_ms, 3),
        "full_ms": round(full_ms, 3),
        "speedup": round(full_ms / reduced_ms, 2),
        "reduced_serial_ms": round(median(times["reduced_serial"]), 3),
        "mean_abs_diff": round(float(difference), 3),
    }
    if not args.json:
        print(
            f"{len(messages)} x {args.width}x{args.height} JPEG q{args.quality} -> "
            f"{size[0]}x{size[1]}: reduced {reduced_ms:.2f} ms, full {full_ms:.2f} ms "
            f"({record['speedup']}x), mean |diff| {difference:.2f} levels"
        )
    emit_json(record)
    return 0
