"""Diagnostics as plain data: percentiles, sync rate, levels and the key/value list."""

from __future__ import annotations

from typing import Any

import pytest

from prune2drive_ros.sensors.sync import SyncStats
from prune2drive_ros.serving.stats import STAGES, DiagnosticReport, NodeStats, percentile
from prune2drive_ros.serving.worker import WorkerCounters
from prune2drive_ros.timings import Timings

SECOND = 1_000_000_000
TOPICS = ("/CAM_FRONT/image_rect_compressed", "/CAM_BACK/image_rect_compressed")
NO_FRAMES = (
    f"no synchronized frames received yet on {', '.join(TOPICS)}: nothing received on any of "
    "them: is the bag/camera running?"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stats(clock: FakeClock) -> NodeStats:
    return NodeStats(window=10, rate_window_s=5.0, failure_window_s=60.0, clock=clock)


def report(stats: NodeStats, **overrides: Any) -> DiagnosticReport:
    kwargs: dict[str, Any] = {
        "now_ns": 50 * SECOND,
        "max_frame_age_s": 1.0,
        "state": "active",
        "worker": WorkerCounters(),
        # each camera's newest message is the one of the newest set unless a test says otherwise
        "newest": dict.fromkeys(TOPICS, stats.latest_stamp_ns),
    }
    kwargs.update(overrides)
    return stats.report(**kwargs)


def test_percentile_interpolates() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([3.0], 95) == 3.0
    assert percentile([4.0, 1.0], 0) == 1.0 and percentile([4.0, 1.0], 100) == 4.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0], 101)


def test_latency_is_a_rolling_window(stats: NodeStats) -> None:
    assert stats.latency_ms("prefill") is None
    for ms in range(100):
        stats.record_answer(Timings(prefill=float(ms), generate=1.0), {"CAM_FRONT": 7})
    assert stats.latency_ms("prefill") == (pytest.approx(94.5), pytest.approx(98.55)), (
        "only the last 10 count"
    )
    assert stats.latency_ms("generate") == (1.0, 1.0), "each stage has its own window"


def test_sync_rate_over_window_and_decay(stats: NodeStats, clock: FakeClock) -> None:
    assert stats.sync_rate_hz() == 0.0
    for i in range(25):
        clock.now = 1000.0 + i / 12.0
        stats.record_frameset(i * SECOND // 12)
    assert stats.sync_rate_hz() == pytest.approx(12.0)
    assert stats.latest_stamp_ns == 24 * SECOND // 12
    clock.now += 3.0
    assert 0.0 < stats.sync_rate_hz() < 12.0, "the rate decays when sets stop"
    clock.now += 10.0
    assert stats.sync_rate_hz() == 0.0


@pytest.mark.parametrize(
    ("state", "failure", "level", "message"),
    [
        ("configuring", None, "WARN", "configuring: the model is loading"),
        ("unconfigured", None, "WARN", "unconfigured: no model loaded"),
        (
            "unconfigured",
            "no such model",
            "ERROR",
            "unconfigured: the last configure failed: no such model",
        ),
        ("inactive", None, "OK", "inactive: not taking frames or questions"),
    ],
)
def test_lifecycle_states_are_reported_without_frame_warnings(
    stats: NodeStats, state: str, failure: str | None, level: str, message: str
) -> None:
    status = report(stats, state=state, failure=failure)
    assert (status.level, status.message) == (level, message), "frames matter only when active"
    assert status.values[0] == ("lifecycle state", state)


def test_no_frames_is_warn(stats: NodeStats) -> None:
    status = report(stats)
    assert (status.level, status.message) == ("WARN", NO_FRAMES)
    assert ("frame age s", "no frames") in status.values


def test_fresh_frames_are_ok_and_stale_warn(stats: NodeStats) -> None:
    stats.record_frameset(50 * SECOND - SECOND // 4)
    fresh = report(stats)
    assert (fresh.level, fresh.message) == ("OK", "ready")
    assert ("frame age s", "0.250") in fresh.values
    stale = report(stats, now_ns=52 * SECOND + SECOND // 4)
    assert (stale.level, stale.message) == (
        "WARN",
        "frames are 2.5 s old (max_frame_age_s=1): is the bag/camera running? with "
        "use_sim_time check /clock (ros2 bag play --clock)",
    )
    assert report(stats, now_ns=53 * SECOND, max_frame_age_s=0.0).level == "OK"


def test_stale_frames_name_the_camera_that_stopped(stats: NodeStats) -> None:
    stats.record_frameset(40 * SECOND)
    newest = {TOPICS[0]: 50 * SECOND - SECOND // 10, TOPICS[1]: 40 * SECOND}
    status = report(stats, newest=newest)
    assert status.message == (
        f"frames are 10.0 s old (max_frame_age_s=1): nothing new on {TOPICS[1]} (10.0 s): "
        "is that camera running?"
    )


def test_sim_time_before_clock_says_check_clock(stats: NodeStats) -> None:
    """Under use_sim_time the node clock is 0 until /clock arrives: the bag's frames are then
    "ahead" of it, not a negative number of seconds old."""
    stats.record_frameset(1_533_151_603 * SECOND + SECOND // 2)
    status = report(stats, now_ns=0)
    assert status.level == "WARN"
    assert status.message.startswith(
        "frames are stamped 1533151603.5 s ahead of the node clock (max_frame_age_s=1): with "
        "use_sim_time check /clock (ros2 bag play --clock)"
    )


def test_a_frozen_sim_clock_still_warns_when_nothing_new_arrives(
    stats: NodeStats, clock: FakeClock
) -> None:
    """The bag ended: under use_sim_time the node clock stops with it, so the last set never
    ages on it; the steady clock since the last arrival still tells."""
    stats.record_frameset(50 * SECOND)
    assert report(stats).level == "OK"
    clock.now += 0.9
    assert report(stats).level == "OK", "within max_frame_age_s of steady time"
    clock.now += 0.2
    frozen = report(stats)
    assert frozen.level == "WARN"
    assert frozen.message.startswith("no new synchronized camera set for 1.1 s of steady time")
    assert "the bag ended or paused" in frozen.message
    assert report(stats, max_frame_age_s=0.0).level == "OK", "0 disables it too"


def test_a_clock_jump_back_forgets_the_old_timelines_stamp(stats: NodeStats) -> None:
    """A looped bag: the stamp of the set before the jump is 'ahead' of the new clock; after
    forget_frames diagnostics wait for the next set instead of blaming /clock."""
    stats.record_frameset(55 * SECOND)
    assert "ahead of the node clock" in report(stats).message
    stats.forget_frames()
    assert report(stats).message == NO_FRAMES
    stats.record_frameset(50 * SECOND)
    assert report(stats).level == "OK"


def test_recent_failure_warns_then_clears(stats: NodeStats, clock: FakeClock) -> None:
    stats.record_frameset(50 * SECOND)
    failed = WorkerCounters(
        served=3, failed={"cuda_oom": 1}, last_failure_s=clock.now, last_failure="CUDA oom"
    )
    clock.now += 5.0
    status = report(stats, worker=failed)
    assert status.level == "WARN" and "failed 5 s ago" in status.message
    assert ("last failure", "5 s ago: CUDA oom") in status.values
    clock.now += 100.0
    stats.record_frameset(50 * SECOND)  # frames still arrive
    assert report(stats, worker=failed).level == "OK", "old failures no longer warn"


def test_values_list(stats: NodeStats) -> None:
    stats.record_frameset(50 * SECOND)
    stats.record_answer(Timings(**dict.fromkeys(STAGES, 12.0)), {"CAM_FRONT": 9, "CAM_BACK": 3})
    stats.record_answer(Timings(**dict.fromkeys(STAGES, 12.0)), {"CAM_FRONT": 5, "CAM_BACK": 4})
    counters = WorkerCounters(
        served=7,
        rejected={"queue_full": 2, "no_frames": 1},
        failed={"DecodeError": 1},
        waiting=1,
        busy=True,
    )
    sync = SyncStats(emitted=9, dropped=4, incomplete=1, rewinds=2, queue_depths={"CAM_FRONT": 2})
    status = report(
        stats,
        worker=counters,
        sync=sync,
        gpu_memory_bytes=lambda: 3 * 2**30,
        info={"model": "tiny", "pruner": "tfps"},
    )
    values = dict(status.values)
    assert status.values[:3] == [
        ("lifecycle state", "active"),
        ("model", "tiny"),
        ("pruner", "tfps"),
    ], "the state, then the facts"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in status.values)
    assert values["questions served"] == "7"
    assert values["kept tokens"] == "CAM_FRONT=5 CAM_BACK=4", "the last answer's"
    assert values["kept tokens range"] == "CAM_FRONT=5-9 CAM_BACK=3-4", "over the window"
    assert values["questions rejected"] == "3"
    assert values["rejected queue_full"] == "2" and values["rejected no_frames"] == "1"
    assert values["questions failed"] == "1" and values["failed DecodeError"] == "1"
    assert (values["queue depth"], values["busy"]) == ("1", "true")
    assert values["sync messages dropped"] == "4" and values["sync incomplete frames"] == "1"
    assert values["sync queue depths"] == "CAM_FRONT=2"
    assert values["sync restarts (stamps went back)"] == "2"
    assert values["GPU memory MiB"] == "3072"
    for stage in STAGES:
        assert (values[f"{stage} ms p50"], values[f"{stage} ms p95"]) == ("12.0", "12.0")
    assert "GPU memory MiB" not in dict(report(stats).values)
    assert "GPU memory MiB" not in dict(report(stats, gpu_memory_bytes=lambda: None).values)


def test_rejects_bad_windows() -> None:
    with pytest.raises(ValueError, match="positive"):
        NodeStats(window=0)
