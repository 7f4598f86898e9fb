"""The six-view synchronizer: right sets under nuScenes-like jitter, drops, reordering, threads."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prune2drive_ros.sensors.sync import DEFAULT_SLOP_S, ApproximateSync, FrameSet
from prune2drive_ros.sensors.synthetic import frame_stamps
from prune2drive_ros.views import VIEWS


def arrivals(stamps: list[dict[str, int]], drop: set[tuple[int, str]] = frozenset()):
    """(view, stamp, (frame, view)) in stamp order, leaving out the dropped (frame, view)s."""
    out = [
        (view, stamp, (k, view))
        for k, frame in enumerate(stamps)
        for view, stamp in frame.items()
        if (k, view) not in drop
    ]
    return sorted(out, key=lambda item: item[1])


def feed(sync: ApproximateSync, items) -> list[FrameSet]:
    sets = [sync.add(view, stamp, msg) for view, stamp, msg in items]
    return [s for s in sets if s is not None]


def frames_of(frame_set: FrameSet) -> set[int]:
    return {msg[0] for msg in frame_set.messages.values()}


def test_every_frame_is_found_under_nuscenes_jitter():
    stamps = frame_stamps(30, seed=1)
    sync = ApproximateSync(VIEWS)
    sets = feed(sync, arrivals(stamps))
    assert [frames_of(s) for s in sets] == [{k} for k in range(30)]
    assert all(s.views == VIEWS for s in sets)
    assert sets[4].stamps == {v: stamps[4][v] for v in VIEWS}
    assert sets[4].stamp_ns == max(stamps[4].values())
    assert 35_000_000 < sets[4].spread_ns <= DEFAULT_SLOP_S * 1e9
    stats = sync.stats
    assert (stats.emitted, stats.dropped, stats.incomplete) == (30, 0, 0)
    assert sync.latest is sets[-1]
    assert all(depth == 0 for depth in stats.queue_depths.values())


@pytest.mark.parametrize("dropped_view", VIEWS)
def test_a_dropped_camera_frame_loses_only_that_frame(dropped_view):
    stamps = frame_stamps(12, seed=2)
    sync = ApproximateSync(VIEWS)
    sets = feed(sync, arrivals(stamps, drop={(5, dropped_view)}))
    assert [frames_of(s) for s in sets] == [{k} for k in range(12) if k != 5]
    stats = sync.stats
    assert stats.emitted == 11
    assert stats.dropped == 5  # frame 5's other views, left behind when frame 6 completed
    assert stats.incomplete == 1


def test_a_dead_camera_yields_nothing_and_bounded_queues():
    stamps = frame_stamps(20, seed=3)
    sync = ApproximateSync(VIEWS, queue_size=4)
    drop = {(k, "CAM_BACK") for k in range(20)}
    assert feed(sync, arrivals(stamps, drop)) == []
    stats = sync.stats
    assert stats.emitted == 0
    assert stats.dropped == 5 * (20 - 4)  # queue overflow
    assert stats.incomplete == 20 - 4
    assert stats.queue_depths["CAM_BACK"] == 0
    assert max(stats.queue_depths.values()) == 4


def test_a_slop_below_the_spread_never_completes_a_set():
    sync = ApproximateSync(VIEWS, slop_s=0.02)
    assert feed(sync, arrivals(frame_stamps(6, seed=4))) == []


def test_out_of_order_arrival_within_a_frame_and_late_messages():
    stamps = frame_stamps(10, seed=5)
    items = arrivals(stamps)
    rng = random.Random(0)
    # shuffle each frame's six arrivals (network reordering within ~40 ms)
    shuffled = [it for k in range(10) for it in rng.sample(items[6 * k : 6 * k + 6], 6)]
    sync = ApproximateSync(VIEWS)
    assert [frames_of(s) for s in feed(sync, shuffled)] == [{k} for k in range(10)]
    # a message older than the last emitted set of its view is dropped, never emitted
    assert sync.add("CAM_FRONT", stamps[3]["CAM_FRONT"], "late") is None
    assert sync.add("CAM_FRONT", stamps[9]["CAM_FRONT"], "duplicate") is None
    assert sync.stats.dropped == 2


def test_views_subset_and_validation():
    sync = ApproximateSync(("CAM_FRONT", "CAM_BACK"), slop_s=0.05)
    assert sync.add("CAM_FRONT", 1_000, "f") is None
    frame_set = sync.add("CAM_BACK", 30_000_000, "b")
    assert frame_set is not None and frame_set.views == ("CAM_FRONT", "CAM_BACK")
    with pytest.raises(ValueError, match="not synchronized"):
        sync.add("CAM_FRONT_LEFT", 1, "x")
    with pytest.raises(ValueError, match="unknown camera view"):
        ApproximateSync(("CAM_FRONT", "CAM_TOP"))
    with pytest.raises(ValueError, match="distinct"):
        ApproximateSync(("CAM_FRONT", "CAM_FRONT"))
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateSync(VIEWS, queue_size=0)


def test_threads_adding_concurrently_get_consistent_sets():
    stamps = frame_stamps(40, seed=6)
    sync = ApproximateSync(VIEWS, queue_size=64)
    emitted: list[FrameSet] = []
    lock = threading.Lock()

    def publish(view: str) -> None:
        for k, frame in enumerate(stamps):
            frame_set = sync.add(view, frame[view], (k, view))
            if frame_set is not None:
                with lock:
                    emitted.append(frame_set)

    threads = [threading.Thread(target=publish, args=(v,)) for v in VIEWS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(frames_of(s).pop() for s in emitted) == list(range(40))
    assert all(len(frames_of(s)) == 1 for s in emitted)
    assert sync.stats.emitted == 40


@given(
    drops=st.sets(st.tuples(st.integers(0, 15), st.sampled_from(VIEWS)), max_size=12),
    seed=st.integers(0, 1000),
)
@settings(max_examples=60, deadline=None)
def test_never_mixes_frames_and_emits_every_complete_frame(drops, seed):
    stamps = frame_stamps(16, seed=seed)
    sync = ApproximateSync(VIEWS)
    sets = feed(sync, arrivals(stamps, drops))
    complete = [k for k in range(16) if not any((k, v) in drops for v in VIEWS)]
    assert [frames_of(s) for s in sets] == [{k} for k in complete]
    # frames with some but not all views dropped; those before a complete one must be counted
    partial = {k for k, _ in drops if sum((k, v) in drops for v in VIEWS) < len(VIEWS)}
    superseded = {k for k in partial if complete and k < complete[-1]}
    incomplete = sync.stats.incomplete
    assert (1 if superseded else 0) <= incomplete <= len(partial)


def test_a_looped_bag_pairs_again_with_its_first_frame():
    stamps = frame_stamps(30, seed=2)  # ~2.5 s at 12 Hz
    sync = ApproximateSync(VIEWS)
    first = feed(sync, arrivals(stamps))
    assert len(first) == 30
    again = feed(sync, arrivals(stamps[:3]))
    assert [frames_of(s) for s in again] == [{0}, {1}, {2}], "the loop's first frame pairs"
    assert sync.stats.rewinds == 1
    # a late message under a second old is still just late, not a new timeline
    assert sync.add("CAM_FRONT", stamps[1]["CAM_FRONT"], "late") is None
    assert sync.stats.rewinds == 1
