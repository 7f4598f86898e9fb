"""Shared fixtures (small synthetic bags, written once per test session) and test helpers."""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy
from optuna.storages._rdb.models import TrialHeartbeatModel

from prune2drive_ros.sensors.synthetic import SyntheticBag, write_synthetic_bag
from prune2drive_ros.views import VIEWS

if TYPE_CHECKING:
    import torch

    from prune2drive_ros.vlm import DrivingVLM

#: The suite's own cache folder (trained scene models, demo bags, visual tokens, hub files),
#: never the user's: set before any test runs, inherited by the commands and nodes tests start.
#: ``PRUNE2DRIVE_TEST_CACHE`` moves it; by default it is ``.test-cache`` in the checkout, kept
#: between runs so that a model trained once is reused (a fresh clone trains it again).
TEST_CACHE = Path(
    os.environ.get("PRUNE2DRIVE_TEST_CACHE") or Path(__file__).resolve().parents[1] / ".test-cache"
)
os.environ["XDG_CACHE_HOME"] = str(TEST_CACHE)

#: Frames in the shared bags: enough for sync, drops and question look-ups, cheap to write.
SMALL_BAG_FRAMES = 8


@pytest.fixture(scope="session")
def synthetic_bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SyntheticBag]:
    """One small bag per storage (``"mcap"``, ``"sqlite3"``): 8 frames of 320 x 180, seed 3.

    Read-only: tests that damage a bag copy it first.
    """
    root = tmp_path_factory.mktemp("bags")
    return {
        storage: write_synthetic_bag(
            root / f"scene_{storage}",
            frames=SMALL_BAG_FRAMES,
            storage=storage,
            seed=3,
            width=320,
            height=180,
        )
        for storage in ("mcap", "sqlite3")
    }


@pytest.fixture(scope="session")
def small_bag(synthetic_bags: dict[str, SyntheticBag]) -> SyntheticBag:
    """The mcap one of :func:`synthetic_bags` (read-only)."""
    return synthetic_bags["mcap"]


@pytest.fixture(autouse=True)
def _package_logs_reach_caplog() -> Iterator[None]:
    """Let the package's log records reach ``caplog`` when ROS is sourced.

    With ROS sourced, the launch_testing and launch_ros pytest plugins import ``launch``, which
    makes every logger created afterwards a ``LaunchLogger`` with ``propagate = False``: the
    package's records would then never reach the root handler that ``caplog`` reads, and the
    tests that check a warning was logged would fail under ``colcon test`` only.
    """
    loggers = [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("prune2drive_ros") and isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.propagate = True
    yield
    for logger, propagate in saved:
        logger.propagate = propagate


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under the umask it is parametrised with, then restore the old one."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.fixture
def age_heartbeats() -> Callable[[str], int]:
    """A function that dates every trial heartbeat in the optuna storage at ``url`` back to
    2000 and returns how many it changed: the next staleness check then finds those trials
    stale at once, where a test would otherwise sleep past the grace period."""

    def age(url: str) -> int:
        from prune2drive_ros.tuning.study import with_postgres_driver  # the storage's own driver

        engine = sqlalchemy.create_engine(with_postgres_driver(url))
        try:
            with engine.begin() as connection:
                changed = connection.execute(
                    sqlalchemy.update(TrialHeartbeatModel).values(
                        heartbeat=datetime.datetime(2000, 1, 1)
                    )
                )
            return changed.rowcount
        finally:
            engine.dispose()

    return age


def reference_input_ids(vlm: DrivingVLM, question: str) -> torch.Tensor:
    """``[1, L]`` unpruned prompt ids the stock model's own forward expects.

    Each image placeholder is repeated to its view's token count (patches plus separator),
    which is what the family's transformers processor does for one image per view; the tests
    compare the stock forward on these ids with ``vlm.prefill`` at retention 1.0.
    """
    import torch  # the bag tests need no torch

    per_view = vlm.tokens_per_view + vlm._view_separator().shape[0]
    prompt = vlm._prompt
    pieces: list[torch.Tensor] = []
    for v, segment in enumerate(prompt.segments):
        pieces.append(segment)
        if v < len(VIEWS):
            pieces.append(torch.full((per_view,), prompt.image_token, device=vlm.device))
    return torch.cat([*pieces, prompt.question_ids(question)]).unsqueeze(0)


def quick_eval_flags(tmp_path: Path) -> list[str]:
    """``eval`` flags for a quick DriveLM run: the tiny model on the CPU, two tokens, a private
    feature cache, one timing frame once, the regex tokenizer (no Java), the JSON line last."""
    return [
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--max-new-tokens",
        "2",
        "--no-progress",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--timing-frames",
        "1",
        "--repeats",
        "1",
        "--tokenizer",
        "regex",
        "--json",
    ]


def heavy_modules_after(code: str, heavy: Sequence[str]) -> list[str]:
    """The modules of ``heavy`` still loaded after ``code`` ran in a fresh interpreter (this
    one has torch loaded already): how the tests check that light imports stay light."""
    loaded = f"sorted(set({list(heavy)!r}) & set(sys.modules))"
    probe = f"{code}\nimport json, sys\nprint(json.dumps({loaded}))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return list(json.loads(done.stdout.strip().splitlines()[-1]))
