"""Six-view approximate time synchronizer: one policy for the live node and for bag replay.

The policy follows message_filters' ApproximateTimeSynchronizer in spirit: every view keeps a
queue of up to ``queue_size`` messages sorted by header stamp; after each arrival the newest
*pivot* stamp ``p`` is searched for which every view has a message in ``[p - slop, p]`` (the
newest such message per view is taken); that set is emitted, and everything up to it is
removed, so no later set can reach back before it. Emitting as soon as a set is complete adds
no latency, and it never picks a worse set than waiting would, as long as the slop admits at
most one set per frame (see below).

Choosing the slop for nuScenes-like rigs. The six cameras fire in sequence as the lidar sweeps
past them (front-left, front, front-right, back-right, back, back-left, about 8 ms apart), so
the six stamps of one frame spread over ``S`` ~ 42 ms, while one camera's frames are ``P`` ~ 83
ms apart (12 Hz). A set is only found if ``slop >= S`` plus jitter. The order-agnostic bound
for never mixing frames, ``slop < P - S`` ~ 41 ms, cannot be met together with that; but the
firing order is fixed, and a set mixing frames k and k+1 must then take the first cameras of
k+1 and the last ones of k, which spans at least ``P - g`` with ``g`` the largest gap between
consecutive cameras in the firing order (~75 ms). :data:`DEFAULT_SLOP_S` = 60 ms sits in
``[S, P - g)`` with ~15 ms margin on both sides. A rig whose cameras are hardware-triggered
together (S ~ 0) is served by the same value.

The queue only holds messages of frames not complete yet: ``queue_size`` = 5 rides out one
view lagging by ~0.4 s at 12 Hz, while bounding what a dead view makes the others hold (raw
1600 x 900 images are 4.3 MB each).

Thread-safe: one lock guards the queues; callers decode outside it (the node's subscription
callbacks only queue message objects).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..views import check_view

#: Largest stamp spread of one set, seconds (see the module docstring for the analysis).
DEFAULT_SLOP_S = 0.06
#: Messages kept per view while waiting for the other views.
DEFAULT_QUEUE_SIZE = 5

#: A view's stamp this far before its message in the last set means the timeline restarted (a
#: bag looped or was played again): pairing starts afresh at once, instead of dropping every
#: message until the new timeline catches up with the old one.
REWIND_S = 1.0
REWIND_NS = round(REWIND_S * 1e9)


@dataclass(frozen=True)
class FrameSet:
    """One message per view whose stamps lie within the slop.

    ``stamp_ns`` is the newest of the views' stamps: the moment the set became complete, a stamp
    that exists in the recording, and the one "frame age" diagnostics should measure from
    (``now - stamp_ns`` is the age of the freshest image; add ``spread_ns`` for the oldest).
    """

    stamps: Mapping[str, int]
    messages: Mapping[str, Any]

    @property
    def views(self) -> tuple[str, ...]:
        """The views, in the synchronizer's order."""
        return tuple(self.stamps)

    @property
    def stamp_ns(self) -> int:
        """Newest header stamp of the set, ns."""
        return max(self.stamps.values())

    @property
    def spread_ns(self) -> int:
        """Newest minus oldest header stamp of the set, ns."""
        return max(self.stamps.values()) - min(self.stamps.values())


@dataclass(frozen=True)
class SyncStats:
    """Counters since construction (for diagnostics)."""

    emitted: int
    #: messages thrown away without being part of an emitted set: queue overflow, arriving
    #: older than the last emitted set of their view, duplicate stamps, or left behind when a
    #: newer set was emitted
    dropped: int
    #: frames that could not be completed: a view was missing while its partners were pushed out
    #: of their queues or superseded by a newer set. A lower bound: the dropped messages are
    #: grouped into as few slop-wide windows as cover them (no set spans more than the slop).
    incomplete: int
    #: times the stamps went back by more than :data:`REWIND_S` and pairing started afresh
    rewinds: int = 0
    queue_depths: Mapping[str, int] = field(default_factory=dict)


class ApproximateSync:
    """Pair up one message per view by header stamp; see the module docstring for the policy."""

    def __init__(
        self,
        views: Sequence[str],
        slop_s: float = DEFAULT_SLOP_S,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        if not views or len(set(views)) != len(views):
            raise ValueError(f"views must be distinct and non-empty, got {list(views)}")
        for view in views:
            check_view(view)
        if not slop_s >= 0:
            raise ValueError(f"slop_s must be >= 0 seconds, got {slop_s}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.views: tuple[str, ...] = tuple(views)
        self.slop_ns = round(slop_s * 1e9)
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._stamps: dict[str, list[int]] = {v: [] for v in self.views}
        self._messages: dict[str, list[Any]] = {v: [] for v in self.views}
        self._floor: dict[str, int] = {}  # per view: stamp of its message in the last set
        self._latest: FrameSet | None = None
        self._emitted = 0
        self._dropped = 0
        self._incomplete = 0
        self._incomplete_until = -1  # end of the last frame window counted as incomplete
        self._rewinds = 0

    @property
    def latest(self) -> FrameSet | None:
        """The newest emitted set (what the node answers questions about), or None."""
        with self._lock:
            return self._latest

    @property
    def stats(self) -> SyncStats:
        """A consistent snapshot of the counters and queue depths."""
        with self._lock:
            return SyncStats(
                emitted=self._emitted,
                dropped=self._dropped,
                incomplete=self._incomplete,
                rewinds=self._rewinds,
                queue_depths={v: len(s) for v, s in self._stamps.items()},
            )

    def add(self, view: str, stamp_ns: int, msg: Any) -> FrameSet | None:
        """Queue ``msg`` of ``view`` stamped ``stamp_ns``; return the set it completes, if any."""
        if view not in self._stamps:
            raise ValueError(f"view {view!r} is not synchronized here; views: {self.views}")
        with self._lock:
            if stamp_ns < self._floor.get(view, stamp_ns) - REWIND_NS:
                self._rewind()
            stamps, messages = self._stamps[view], self._messages[view]
            pos = bisect.bisect_left(stamps, stamp_ns)
            if stamp_ns <= self._floor.get(view, -1) or (
                pos < len(stamps) and stamps[pos] == stamp_ns
            ):
                self._dropped += 1
                return None
            stamps.insert(pos, stamp_ns)
            messages.insert(pos, msg)
            if len(stamps) > self.queue_size:
                self._drop_unmatched([stamps[0]])
                del stamps[0], messages[0]
            frame_set = self._find_set()
            if frame_set is not None:
                self._consume(frame_set)
            return frame_set

    def _rewind(self) -> None:
        """Start pairing afresh: the stamps went back (a looped bag). The newest set stays
        :attr:`latest` until the new timeline completes one. Caller holds the lock."""
        for view in self.views:
            self._dropped += len(self._stamps[view])
            self._stamps[view].clear()
            self._messages[view].clear()
        self._floor.clear()
        self._incomplete_until = -1
        self._rewinds += 1

    def _find_set(self) -> FrameSet | None:
        """The complete set with the newest pivot, or None. Caller holds the lock."""
        if any(not s for s in self._stamps.values()):
            return None
        pivots = sorted({t for s in self._stamps.values() for t in s}, reverse=True)
        for pivot in pivots:
            chosen: dict[str, int] = {}
            for view in self.views:
                stamps = self._stamps[view]
                idx = bisect.bisect_right(stamps, pivot) - 1
                if idx < 0 or pivot - stamps[idx] > self.slop_ns:
                    break
                chosen[view] = idx
            else:
                return FrameSet(
                    stamps={v: self._stamps[v][i] for v, i in chosen.items()},
                    messages={v: self._messages[v][i] for v, i in chosen.items()},
                )
        return None

    def _consume(self, frame_set: FrameSet) -> None:
        """Emit ``frame_set``: drop it and everything older from the queues. Caller holds lock."""
        left_behind: list[int] = []
        for view, stamp in frame_set.stamps.items():
            stamps, messages = self._stamps[view], self._messages[view]
            cut = bisect.bisect_right(stamps, stamp)
            left_behind.extend(stamps[: cut - 1])
            del stamps[:cut], messages[:cut]
            self._floor[view] = stamp
        self._drop_unmatched(sorted(left_behind))
        self._emitted += 1
        self._latest = frame_set

    def _drop_unmatched(self, stamps: Sequence[int]) -> None:
        """Count sorted ``stamps`` as dropped, and the sets they could have formed as incomplete.

        A stamp within one slop after the start of the last counted window could have been in
        that window's set, so a frame is counted once however many of its views are dropped and
        at whichever call. Caller holds the lock.
        """
        self._dropped += len(stamps)
        for stamp in stamps:
            if stamp > self._incomplete_until:
                self._incomplete += 1
                self._incomplete_until = stamp + self.slop_ns
