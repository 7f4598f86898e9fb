"""Golden files: numbers recorded once from the ORIGINAL code (the paper's reference, DriveLM's
evaluation, LLaVA-NeXT, InternVL) and kept in ``test/golden/`` with the recipe that made them.

None of the originals' code is in this repository; the tests compare the package with the
numbers. Each golden file records a checksum of its inputs (seeded tokens, a tiny checkpoint's
weights): :func:`require_same_input` checks it before any number is compared, so that a changed
fixture reads as a fixture to re-record, not as a numeric mismatch of the package.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "golden"


def load_golden(name: str) -> dict[str, Any]:
    """The golden file ``test/golden/<name>.json``."""
    data: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    return data


def sha256_of(chunks: Iterable[bytes]) -> str:
    """sha256 hex digest of ``chunks`` concatenated."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def require_same_input(name: str, what: str, actual: str, recorded: str) -> None:
    """Fail with the remedy unless the input ``what`` of golden file ``name`` is the one it was
    recorded from (``actual`` and ``recorded`` checksums)."""
    if actual != recorded:
        pytest.fail(
            f"the fixture changed: {what} hashes to {actual}, golden/{name}.json was recorded "
            f"from {recorded}; re-record the golden file following its recipe "
            "(test/golden/README.md), do not edit its numbers by hand",
            pytrace=False,
        )


def seeded_normal(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """``numpy.random.default_rng(seed).standard_normal(shape)`` as float32: the inputs the
    golden files name by seed."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def files_sha256(root: Path, names: Iterable[str]) -> str:
    """sha256 of the files ``names`` under ``root``, read in the order given: the checksum a
    golden file records of the tiny checkpoint it was recorded from."""
    return sha256_of((root / name).read_bytes() for name in names)


def raw_image(rgb: np.ndarray) -> SimpleNamespace:
    """``rgb`` as the fields of a sensor_msgs/Image (rgb8), for the package's own decode path."""
    height, width, _ = rgb.shape
    return SimpleNamespace(
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=width * 3,
        data=rgb.tobytes(),
    )
