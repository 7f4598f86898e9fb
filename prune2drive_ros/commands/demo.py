"""Run the main job end to end on embedded defaults: scene model, synthetic bag, replay, picture.

What ``make demo`` runs, with no network and no ROS: get the scene model (a small
LLaVA-OneVision of the real transformers class, trained here on the package's synthetic scenes;
the first run trains it, about ten minutes on two CPU cores, later runs reuse the cache) and a
nuScenes-like rosbag2 recording of six 1600 x 900 JPEG cameras at 12 Hz whose questions have
known answers; answer them with per-view T-FPS pruning at ``--rate`` and again unpruned on the
same frames; print each answer against its reference, the exact-match accuracy of both (with
their binomial standard errors and whether the gap between them is within the noise,
:mod:`~prune2drive_ros.tuning.spread`), the latency table, and write the kept-token picture.
The demo's scenes come from a seed the model was never trained on. ``--model`` answers with
another checkpoint instead (``--model tiny``: the random-weight test model, whose answers are
noise and say so).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..cache import build_once, cache_dir
from ..config import TINY_MODEL, DriveVLMConfig
from ..files import LineWriter
from ..progress import NO_PROGRESS, Progress
from ..pruning.budget import validate_rates
from ..sensors.bag import open_camera_bag
from ..sensors.questions import read_questions
from ..sensors.scene import RoadScene
from ..sensors.synthetic import default_questions_path, write_synthetic_bag
from ..training import VARIANTS, cached_scene_model
from ..tuning.spread import Accuracy, compare_text
from .argtypes import at_least
from .progress import add_progress_argument, progress_from
from .replay import replay, report_answers
from .viz import kept_tokens_picture

logger = logging.getLogger(__name__)

BAG_NAME = "bag"
#: The demo bag's seed: none of the scene model's training or held-out seeds.
DEMO_SEED = 2026


def demo_bag(frames: int, seed: int, progress: Progress = NO_PROGRESS) -> Path:
    """The cached synthetic bag folder (with its questions file beside it), built once: a new
    scene every frame, two questions a frame; ``progress`` reports the frames written."""

    def build(folder: Path) -> None:
        write_synthetic_bag(
            folder / BAG_NAME,
            frames=frames,
            storage="mcap",
            seed=seed,
            scene_frames=1,
            questions_per_frame=2,
            progress=progress,
        )

    return build_once(cache_dir() / f"demo-bag-{frames}f-seed{seed}-v2", build) / BAG_NAME


def _busiest_frame(seed: int, frames: int) -> int:
    """The demo bag's frame with the most vehicles in view: what the picture shows."""
    scene = RoadScene(seed, 64, 36, segment_frames=1)  # facts do not depend on the image size

    def vehicles(frame: int) -> int:
        return sum(view.cars + view.buses for view in scene.facts(frame).views.values())

    return max(range(frames), key=vehicles)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``prune2drive demo``."""
    parser.add_argument(
        "--frames", type=at_least(1), default=12, help="frames in the synthetic bag (12)"
    )
    parser.add_argument(
        "--questions", type=at_least(1), default=24, help="questions to answer (24)"
    )
    parser.add_argument(
        "--seed", type=int, default=DEMO_SEED, help=f"seed of the synthetic scenes ({DEMO_SEED})"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="checkpoint to answer with (default: the scene model, trained on first use; "
        f"'{TINY_MODEL}': the random-weight test model)",
    )
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="default",
        help="which scene model (default; quick trains in about a minute)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.25,
        help="T-FPS retention rate of every view (0.25: 16 of the scene model's 64 tokens)",
    )
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="answer length limit")
    parser.add_argument(
        "--out", default="demo-out", help="folder for answers.jsonl and kept_tokens.png"
    )
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    """``prune2drive demo``."""
    rate = validate_rates(args.rate)
    # The demo trains the scene model when it is missing; the engine's default would not.
    progress = progress_from(args)
    model = (
        str(cached_scene_model(args.variant, progress=progress))
        if args.model is None
        else args.model
    )
    bag = demo_bag(args.frames, args.seed, progress)
    items = read_questions(default_questions_path(bag))[: args.questions]
    print(f"bag: {bag} ({args.frames} frames x 6 cameras, 1600x900 JPEG, 12 Hz)")
    config = DriveVLMConfig().with_changes(
        model=model, device=args.device, max_new_tokens=args.max_new_tokens
    )
    from ..engine import Engine  # torch: only once the flags are checked

    loaded = Engine.from_config(config)
    engine = Engine(
        loaded.vlm,
        rate,
        pruner=loaded.pruner,
        topics=loaded.topics,
        max_new_tokens=loaded.max_new_tokens,
    )
    baseline = Engine(engine.vlm, None, topics=engine.topics)
    engine.warmup()
    print("engine: " + ", ".join(f"{k}={v}" for k, v in engine.describe().items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    answers_path = out / "answers.jsonl"
    with open_camera_bag(bag) as recording:
        with LineWriter.create(answers_path) as answers:
            report = replay(recording, items, engine, answers, baseline=baseline, progress=progress)
        status = report_answers(report, engine.vlm.random_weights, answers_path)
        if report.answers and report.baseline:  # a few dozen questions: is the gap noise?
            pruned, unpruned = (
                Accuracy(*report.exact_match(a)) for a in (report.answers, report.baseline)
            )
            if pruned.n and unpruned.n:
                print(f"exact match {compare_text('pruned', pruned, 'unpruned', unpruned)}")
        busiest = _busiest_frame(args.seed, args.frames)
        frames = list(recording.frame_sets())[busiest]
    kept_tokens_picture(engine, frames, out / "kept_tokens.png")
    print(f"wrote {out / 'kept_tokens.png'} (kept patches lit, frame {busiest}: the busiest)")
    return status
