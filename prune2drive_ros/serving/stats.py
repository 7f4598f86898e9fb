"""Diagnostics as plain data: rolling latencies, sync rate, frame age, counters, one level.

The node turns :class:`DiagnosticReport` into a ``diagnostic_msgs/DiagnosticStatus``; keeping
the numbers and the thresholds here lets them be tested without ROS and without torch (GPU
memory comes in as a callable). Levels are the strings ``"OK"``, ``"WARN"``, ``"ERROR"``: the
node maps them to the ``DiagnosticStatus`` class constants, because ``level`` is a byte on
Jazzy and an int there is rejected.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..sensors.sync import SyncStats
from ..timings import Timings
from .lifecycle import ACTIVE, CONFIGURING, INACTIVE, UNCONFIGURED
from .worker import WorkerCounters, check_frames

#: Stages of ``Answer.timings_ms``, in pipeline order.
STAGES: tuple[str, ...] = Timings.stages()

#: Diagnostic levels, mildest first.
LEVELS: tuple[str, ...] = ("OK", "WARN", "ERROR")

#: Seconds of answers the latency budget's hit rate is reported over.
BUDGET_WINDOW_S = 60.0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics.

    Raises:
        ValueError: no values, or ``q`` outside [0, 100].
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must lie in [0, 100], got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class DiagnosticReport:
    """One diagnostics status: a level of :data:`LEVELS`, a summary and key/value pairs."""

    level: str
    message: str
    values: list[tuple[str, str]]


class NodeStats:
    """Thread-safe rolling statistics: the sync callback and the worker write, diagnostics read.

    Args:
        window: answers kept for the latency percentiles.
        rate_window_s: seconds of camera-set arrivals the sync rate is measured over.
        failure_window_s: a failure this recent makes the status WARN.
        clock: monotonic seconds (arrival times; must be the worker's clock too).
    """

    def __init__(
        self,
        window: int = 100,
        rate_window_s: float = 5.0,
        failure_window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window < 1 or rate_window_s <= 0 or failure_window_s <= 0:
            raise ValueError("window, rate_window_s and failure_window_s must be positive")
        self.rate_window_s = rate_window_s
        self.failure_window_s = failure_window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._latency: dict[str, deque[float]] = {s: deque(maxlen=window) for s in STAGES}
        self._kept: deque[Mapping[str, int]] = deque(maxlen=window)
        self._arrivals: deque[float] = deque()
        #: (when, met) of the answers given under a latency budget in the last minute.
        self._budget: deque[tuple[float, bool]] = deque()
        self._latest_stamp_ns: int | None = None
        self._last_arrival: float | None = None

    def record_frameset(self, stamp_ns: int) -> None:
        """A synchronized camera set with header stamp ``stamp_ns`` arrived now."""
        now = self._clock()
        with self._lock:
            self._arrivals.append(now)
            self._forget_arrivals(now)
            self._latest_stamp_ns = stamp_ns
            self._last_arrival = now

    def forget_frames(self) -> None:
        """The node clock went back (a bag looped or was played again): the newest stamp
        belongs to the old timeline, so diagnostics stop judging by it until the next set."""
        with self._lock:
            self._latest_stamp_ns = None

    def arrival_age_s(self) -> float | None:
        """Seconds (on this object's monotonic clock) since the newest set arrived; None
        before the first."""
        with self._lock:
            last = self._last_arrival
        return None if last is None else self._clock() - last

    def record_answer(
        self,
        timings_ms: Timings,
        kept_tokens: Mapping[str, int],
        budget_met: bool | None = None,
    ) -> None:
        """Add one answer's per-stage timings, the visual tokens it kept per view and, under a
        latency budget, whether it met it."""
        now = self._clock()
        with self._lock:
            for stage, ms in timings_ms.as_dict().items():
                self._latency[stage].append(ms)
            self._kept.append(dict(kept_tokens))
            if budget_met is not None:
                self._budget.append((now, budget_met))
            self._forget_budget(now)

    def budget_hits(self) -> tuple[int, int]:
        """(met, answered) of the answers given under a latency budget in the last
        :data:`BUDGET_WINDOW_S` seconds."""
        with self._lock:
            self._forget_budget(self._clock())
            return sum(met for _, met in self._budget), len(self._budget)

    def _forget_budget(self, now: float) -> None:
        while self._budget and self._budget[0][0] < now - BUDGET_WINDOW_S:
            self._budget.popleft()

    def kept_tokens(self) -> list[tuple[str, str]]:
        """Diagnostic lines of the tokens kept per view: the last answer's, and the range over
        the window (it moves when the views share their budget by content); none before the
        first answer."""
        with self._lock:
            kept = list(self._kept)
        if not kept:
            return []
        views = list(kept[-1])
        spans = {v: (min(k[v] for k in kept), max(k[v] for k in kept)) for v in views}
        return [
            ("kept tokens", " ".join(f"{v}={n}" for v, n in kept[-1].items())),
            ("kept tokens range", " ".join(f"{v}={lo}-{hi}" for v, (lo, hi) in spans.items())),
        ]

    @property
    def latest_stamp_ns(self) -> int | None:
        """Header stamp of the newest camera set, None before the first."""
        with self._lock:
            return self._latest_stamp_ns

    def latency_ms(self, stage: str) -> tuple[float, float] | None:
        """(p50, p95) of ``stage`` over the window, None before the first answer."""
        with self._lock:
            samples = list(self._latency[stage])
        if not samples:
            return None
        return percentile(samples, 50.0), percentile(samples, 95.0)

    def sync_rate_hz(self) -> float:
        """Camera sets per second over the last ``rate_window_s`` (decays when sets stop)."""
        now = self._clock()
        with self._lock:
            self._forget_arrivals(now)
            if len(self._arrivals) < 2 or now <= self._arrivals[0]:
                return 0.0
            return (len(self._arrivals) - 1) / (now - self._arrivals[0])

    def _forget_arrivals(self, now: float) -> None:
        while self._arrivals and self._arrivals[0] < now - self.rate_window_s:
            self._arrivals.popleft()

    def report(
        self,
        *,
        now_ns: int,
        max_frame_age_s: float,
        state: str,
        worker: WorkerCounters,
        failure: str | None = None,
        newest: Mapping[str, int | None],
        sync: SyncStats | None = None,
        gpu_memory_bytes: Callable[[], int | None] | None = None,
        info: Mapping[str, str] | None = None,
    ) -> DiagnosticReport:
        """The node's diagnostics status.

        Levels by lifecycle ``state``: unconfigured after a failed configure -> ERROR;
        unconfigured, configuring (the model loads) -> WARN; inactive -> OK (on purpose, and
        said so). Active: no camera set yet, the newest set older than ``max_frame_age_s`` (0
        disables), or a failure within ``failure_window_s`` -> WARN; the frame problems are
        worded as a question about them is refused (``check_frames``).

        Args:
            now_ns: the node clock, same epoch as the header stamps (sim time aware).
            state: the node's lifecycle state label (``serving.lifecycle``).
            worker: the worker's counters.
            failure: why the last configure failed, when it did.
            newest: camera topic -> header stamp of its newest message, None before its first.
            sync: the synchronizer's counters, when the caller has them.
            gpu_memory_bytes: e.g. ``Engine.gpu_memory_bytes`` (None: no GPU, no line).
            info: fixed facts first in the list (model, device, pruner, ...).
        """
        problems: list[tuple[str, str]] = []
        values: list[tuple[str, str]] = [("lifecycle state", state), *(info or {}).items()]
        if state == UNCONFIGURED and failure:
            problems.append(("ERROR", f"unconfigured: the last configure failed: {failure}"))
        elif state == UNCONFIGURED:
            problems.append(("WARN", "unconfigured: no model loaded"))
        elif state == CONFIGURING:
            problems.append(("WARN", "configuring: the model is loading"))
        elif state != ACTIVE and state != INACTIVE:
            problems.append(("WARN", state))

        stamp_ns = self.latest_stamp_ns
        values.append(("synchronized sets/s", f"{self.sync_rate_hz():.2f}"))
        age = "no frames" if stamp_ns is None else f"{(now_ns - stamp_ns) / 1e9:.3f}"
        values.append(("frame age s", age))
        frames = check_frames(stamp_ns, now_ns, max_frame_age_s, newest, self.arrival_age_s())
        if frames is not None and state == ACTIVE:
            problems.append(("WARN", frames.message))
        if sync is not None:
            values += [
                ("sync messages dropped", str(sync.dropped)),
                ("sync incomplete frames", str(sync.incomplete)),
                ("sync restarts (stamps went back)", str(sync.rewinds)),
                ("sync queue depths", " ".join(f"{v}={n}" for v, n in sync.queue_depths.items())),
            ]

        values += [
            ("questions served", str(worker.served)),
            ("questions failed", str(sum(worker.failed.values()))),
            ("questions rejected", str(sum(worker.rejected.values()))),
            *((f"rejected {reason}", str(n)) for reason, n in sorted(worker.rejected.items())),
            *((f"failed {reason}", str(n)) for reason, n in sorted(worker.failed.items())),
            ("queue depth", str(worker.waiting)),
            ("busy", str(worker.busy).lower()),
        ]
        if worker.last_failure_s is not None:
            ago_s = self._clock() - worker.last_failure_s
            values.append(("last failure", f"{ago_s:.0f} s ago: {worker.last_failure}"))
            if ago_s <= self.failure_window_s:
                problems.append(("WARN", f"a question failed {ago_s:.0f} s ago"))

        values += self.kept_tokens()
        met, answered = self.budget_hits()
        if answered:
            values.append(
                (f"latency budget met, last {BUDGET_WINDOW_S:g} s", f"{met} of {answered}")
            )
        for stage in STAGES:
            latency = self.latency_ms(stage)
            p50, p95 = ("-", "-") if latency is None else (f"{latency[0]:.1f}", f"{latency[1]:.1f}")
            values += [(f"{stage} ms p50", p50), (f"{stage} ms p95", p95)]

        memory = None if gpu_memory_bytes is None else gpu_memory_bytes()
        if memory is not None:
            values.append(("GPU memory MiB", f"{memory / 2**20:.0f}"))

        if not problems:
            summary = "ready" if state == ACTIVE else "inactive: not taking frames or questions"
            return DiagnosticReport("OK", summary, values)
        level = max((lvl for lvl, _ in problems), key=LEVELS.index)
        return DiagnosticReport(level, "; ".join(msg for _, msg in problems), values)
