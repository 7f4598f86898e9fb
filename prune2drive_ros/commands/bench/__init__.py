"""Benchmarks behind ``prune2drive bench``, and the few helpers they share.

Every benchmark times its work the same way (warm-up, then the median of repeats, contenders
taking turns, with CUDA synchronised around each run so the GPU's queue is not mistaken for its
speed) and ends its
output with one JSON line, so scripts can read the last line and people the rest.
Torch is imported by the helpers that run it, so that ``bench <job> --help`` needs none.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ...views import VIEWS
from ..argtypes import at_least

if TYPE_CHECKING:
    import numpy as np
    import torch

#: ``--device`` choices (any ``cuda:n`` also works from Python; see ``resolve_device``).
DEVICES: tuple[str, ...] = ("cpu", "cuda", "auto")


def add_timing_arguments(
    parser: argparse.ArgumentParser, *, repeats: int, warmup: int, torch_device: bool = True
) -> None:
    """The flags every benchmark shares: repeats, warm-up and ``--json``; for the benchmarks
    that run torch also ``--device`` and ``--threads`` (read back by :func:`setup_torch`)."""
    parser.add_argument(
        "--repeats", type=at_least(1), default=repeats, help="timed runs, median (%(default)s)"
    )
    parser.add_argument(
        "--warmup", type=at_least(0), default=warmup, help="untimed runs first (%(default)s)"
    )
    if torch_device:
        add_torch_arguments(parser)
    else:
        parser.add_argument("--json", action="store_true", help="print only the JSON output")


def add_torch_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json``, ``--device`` and ``--threads`` (read back by :func:`setup_torch`): what a
    benchmark that runs torch takes, timed or not."""
    parser.add_argument("--json", action="store_true", help="print only the JSON output")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="device (auto)")
    parser.add_argument(
        "--threads",
        type=at_least(1),
        default=None,
        help="CPU threads for torch (default: torch's choice, one per core); on a shared "
        "machine 1 avoids stalls of threads waiting for a descheduled sibling",
    )


def setup_torch(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and return the ``--device`` of :func:`add_timing_arguments`.

    Raises:
        ConfigError: as :func:`resolve_device`.
    """
    import torch

    from ...devices import resolve_device

    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return device


def device_name(device: torch.device) -> str:
    """What the device is, for a benchmark record: the GPU's or the CPU's model name."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def time_ms(
    fn: Callable[[], object], *, warmup: int, repeats: int, device: torch.device | str
) -> list[float]:
    """Wall time of each of ``repeats`` calls of ``fn`` in ms, after ``warmup`` untimed calls."""
    import torch

    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
        begin = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - begin) * 1e3)
    return times


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    warmup: int,
    repeats: int,
    device: torch.device | str,
) -> dict[str, list[float]]:
    """:func:`time_ms` for several functions, taking turns run by run.

    On a shared machine a burst of load from elsewhere then slows every contender alike
    instead of whichever happened to be running, which keeps their ratio honest.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        time_ms(fn, warmup=warmup, repeats=0, device=device)
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name] += time_ms(fn, warmup=0, repeats=1, device=device)
    return times


def median(values: Sequence[float]) -> float:
    """Median of ``values`` (robust to the odd run that a busy machine slows down)."""
    return float(statistics.median(values))


def emit_json(obj: object) -> None:
    """Print ``obj`` as one JSON line; benchmarks call it last so it is the output's last line."""
    print(json.dumps(obj), flush=True)


def random_views(size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Six seeded random RGB views at ``size`` (width, height), the encoder's input: the camera
    images of the random-weight benchmarks, whose pixels do not matter."""
    import numpy as np

    width, height = size
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in VIEWS]
