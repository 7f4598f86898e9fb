"""Run the main job end to end on embedded defaults: tiny model, synthetic bag, replay, picture.

What ``make demo`` runs, with no network and no ROS: build (once, cached) a random-weight
LLaVA-OneVision checkpoint of the real transformers class and a nuScenes-like rosbag2 recording
of six 1600 x 900 JPEG cameras at 12 Hz with a questions file; answer a handful of questions
with per-view T-FPS pruning at the package's retention rates, and again unpruned on the same
frames; print the answers (flagged: a random-weight model answers nonsense), the latency table
of both, and write the kept-token picture.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..cache import build_once, cache_dir
from ..config import DriveVLMConfig
from ..engine import Engine
from ..sensors.bag import DEFAULT_MAX_GAP_MS, open_camera_bag
from ..sensors.questions import read_questions
from ..sensors.synthetic import default_questions_path, write_synthetic_bag
from .argtypes import at_least
from .replay import replay, report_answers
from .viz import kept_tokens_picture

logger = logging.getLogger(__name__)

BAG_NAME = "bag"


def demo_bag(frames: int, seed: int) -> Path:
    """The cached synthetic bag folder (with its questions file beside it), built once."""

    def build(folder: Path) -> None:
        write_synthetic_bag(folder / BAG_NAME, frames=frames, storage="mcap", seed=seed)

    return build_once(cache_dir() / f"demo-bag-{frames}f-seed{seed}", build) / BAG_NAME


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``prune2drive demo``."""
    parser.add_argument(
        "--frames", type=at_least(1), default=12, help="frames in the synthetic bag"
    )
    parser.add_argument("--questions", type=at_least(1), default=6, help="questions to answer")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic scene")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="answer length limit")
    parser.add_argument(
        "--out", default="demo-out", help="folder for answers.jsonl and kept_tokens.png"
    )


def run(args: argparse.Namespace) -> int:
    """``prune2drive demo``."""
    bag = demo_bag(args.frames, args.seed)
    items = read_questions(default_questions_path(bag))[: args.questions]
    print(f"bag: {bag} ({args.frames} frames x 6 cameras, 1600x900 JPEG, 12 Hz)")
    engine = Engine.from_config(
        DriveVLMConfig().with_changes(device=args.device, max_new_tokens=args.max_new_tokens)
    )
    baseline = Engine(engine.vlm, None, topics=engine.topics)
    engine.warmup()
    print("engine: " + ", ".join(f"{k}={v}" for k, v in engine.describe().items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    answers_path = out / "answers.jsonl"
    with open_camera_bag(bag) as recording:
        with answers_path.open("w", encoding="utf-8") as answers:
            report = replay(recording, items, engine, answers, baseline=baseline)
        status = report_answers(report, engine.vlm.random_weights, answers_path)
        frames = recording.nearest_frame_set(items[0].stamp_ns, round(DEFAULT_MAX_GAP_MS * 1e6))
    kept_tokens_picture(engine, frames, out / "kept_tokens.png")
    print(f"wrote {out / 'kept_tokens.png'} (kept patches lit)")
    return status
