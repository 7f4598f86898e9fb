"""A stop signal for a running generation, set from any thread (torch-free).

A 64-token answer of an 8B model takes a second or more. Cancelling an action goal, a service
call that ran past ``answer_timeout_s`` and the node shutting down all want it to end now, not
after its last token: each job the worker runs gets its own :class:`StopSignal`, and greedy
decoding checks it after every token (one decoding step is the longest it waits). The first
reason given is kept: it becomes the answer's ``finish``.
"""

from __future__ import annotations

import threading

#: ``Answer.finish`` of an answer that ended by itself: at a stop token, or at the length limit.
FINISHED = ("stop", "length")


class StopSignal:
    """Set once, read often: whether (and why) a generation should end after this token."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reason = ""

    def set(self, reason: str) -> None:
        """Ask the generation to stop, e.g. ``"cancelled"``, ``"timeout"``, ``"shutdown"``; a
        later reason does not replace the first."""
        with self._lock:
            if not self._reason:
                self._reason = reason
        self._event.set()

    def is_set(self) -> bool:
        """True once :meth:`set` was called (cheap: no lock)."""
        return self._event.is_set()

    def wait_for(self, timeout_s: float) -> bool:
        """Block until set or ``timeout_s`` passed; True when set."""
        return self._event.wait(timeout_s)

    @property
    def reason(self) -> str:
        """The first reason given, empty while not set."""
        with self._lock:
            return self._reason
