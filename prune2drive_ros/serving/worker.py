"""The inference worker: one thread, a bounded queue, and answers that never block the asker.

One GPU answers one question at a time, so questions queue for a single worker thread. A ROS
service callback must never wait for a queue slot (that would stall the executor), so
:meth:`InferenceWorker.submit` returns a future at once: either queued, or already resolved with
a rejection that says why and what to do. The admission checks are plain functions that the
node and the tests share; the worker runs opaque callables, so it knows nothing of the engine.

Each job gets its own :class:`~prune2drive_ros.stopping.StopSignal`: :meth:`InferenceWorker.stop`
(an action goal cancelled), :meth:`InferenceWorker.wait` running past its timeout and
:meth:`InferenceWorker.close` set it, and the engine's decoding ends within one step.

A job that raises never kills the worker: package errors become their message, a CUDA
out-of-memory frees the cache and says how to use less memory, anything else is logged with its
traceback, and the next question is served. Except other CUDA errors (an illegal memory access,
a device-side assert): they leave the process's CUDA context unusable, so every later question
would fail too. The worker then stops taking questions and reports :attr:`InferenceWorker.fatal`;
the node exits with status 1 so that launch's ``respawn`` can start a fresh process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeoutError  # builtin only from 3.11
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..errors import Prune2DriveError
from ..stopping import FINISHED, StopSignal

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: What a question still queued or running gets when the node shuts down.
SHUTDOWN = "the node is shutting down"

#: CUDA errors as torch before 2.8 raised them (plain RuntimeError); later ones raise
#: ``torch.AcceleratorError``.
_CUDA_ERROR = re.compile(r"CUDA error|CUBLAS_STATUS_|CUDNN_STATUS_|cuDNN error")


@dataclass(frozen=True)
class Rejection:
    """Why a question is not taken: ``reason`` is the counter key, ``message`` tells the user."""

    reason: str
    message: str


@dataclass(frozen=True)
class JobResult(Generic[T]):
    """Outcome of one submitted job: its value on success, else a message and a reason key."""

    success: bool
    value: T | None = None
    message: str = ""
    reason: str = ""


@dataclass(frozen=True)
class WorkerCounters:
    """A consistent snapshot of the worker's counters (for diagnostics).

    Attributes:
        served: jobs that returned a value.
        rejected: reason -> questions turned away before running.
        failed: reason -> jobs that raised (exception class name, ``cuda_oom``, ``internal``).
        waiting: jobs queued behind the running one.
        busy: a job is running.
        last_failure_s: clock time of the newest failure, None before the first.
        last_failure: its message.
    """

    served: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)
    failed: Mapping[str, int] = field(default_factory=dict)
    waiting: int = 0
    busy: bool = False
    last_failure_s: float | None = None
    last_failure: str = ""


def check_frames(
    stamp_ns: int | None,
    now_ns: int,
    max_age_s: float,
    newest: Mapping[str, int | None],
    arrived_s_ago: float | None = None,
) -> Rejection | None:
    """Reject when no camera set arrived yet, or the newest one is too old; say which camera.

    Args:
        stamp_ns: header stamp of the newest synchronized set, None before the first.
        now_ns: the node clock (sim time with ``use_sim_time``), same epoch as the stamps.
        max_age_s: largest accepted ``|now - stamp|``, and largest steady-clock time since the
            newest set arrived; 0 disables both checks.
        newest: camera topic -> header stamp of its newest message, None before its first
            (pinpoints a camera that never sent, or stopped sending).
        arrived_s_ago: steady-clock seconds since the newest set arrived. Under sim time the
            node clock stops when the bag ends, so the stamps never age: this is what still
            notices that nothing new comes.
    """
    topics = ", ".join(newest)
    if stamp_ns is None:
        silent = [topic for topic, stamp in newest.items() if stamp is None]
        if newest and len(silent) == len(newest):
            detail = "nothing received on any of them: is the bag/camera running?"
        elif silent:
            detail = f"nothing received at all on {', '.join(silent)}"
        else:
            detail = "every topic sends, but their stamps never fall within sync_slop_s"
        return Rejection("no_frames", f"no synchronized frames received yet on {topics}: {detail}")
    age_s = (now_ns - stamp_ns) / 1e9
    if max_age_s <= 0:
        return None
    if abs(age_s) <= max_age_s:
        if arrived_s_ago is None or arrived_s_ago <= max_age_s:
            return None
        return Rejection(
            "stale_frames",
            f"no new synchronized camera set for {arrived_s_ago:.1f} s of steady time "
            f"(max_frame_age_s={max_age_s:g}), though on the node clock the last one is only "
            f"{max(age_s, 0.0):.1f} s old: the bag ended or paused (with use_sim_time the "
            "clock stops with it) or the cameras stopped",
        )
    if age_s < 0:
        return Rejection(
            "stale_frames",
            f"frames are stamped {-age_s:.1f} s ahead of the node clock (max_frame_age_s="
            f"{max_age_s:g}): with use_sim_time check /clock (ros2 bag play --clock); without "
            "it, check the camera clocks",
        )
    stopped = {
        topic: (now_ns - stamp) / 1e9
        for topic, stamp in newest.items()
        if stamp is not None and (now_ns - stamp) / 1e9 > max_age_s
    }
    if stopped and len(stopped) < len(newest):
        ages = ", ".join(f"{topic} ({topic_age:.1f} s)" for topic, topic_age in stopped.items())
        detail = f"nothing new on {ages}: is that camera running?"
    elif stopped or not newest:
        detail = "is the bag/camera running? with use_sim_time check /clock (ros2 bag play --clock)"
    else:
        detail = "every camera sends, but their stamps no longer fall within sync_slop_s"
    return Rejection(
        "stale_frames", f"frames are {age_s:.1f} s old (max_frame_age_s={max_age_s:g}): {detail}"
    )


def stopped(outcome: JobResult[T], finish: str) -> JobResult[T]:
    """``outcome`` of a job whose answer ended with ``finish``: as it is when the answer
    finished by itself (:data:`~..stopping.FINISHED`), else a failure saying why it was stopped
    (a partial answer is not an answer)."""
    if finish in FINISHED:
        return outcome
    messages = {
        "shutdown": SHUTDOWN,
        "timeout": "stopped: answer_timeout_s ran out while answering; ask again later, or "
        "raise answer_timeout_s for a slow model",
        "cancelled": "cancelled by the caller",
    }
    return JobResult(False, message=messages.get(finish, f"stopped: {finish}"), reason=finish)


def check_queue(waiting: int, max_queue: int) -> Rejection | None:
    """Reject when ``max_queue`` jobs already wait behind the running one."""
    if waiting < max_queue:
        return None
    return Rejection(
        "queue_full",
        f"queue full ({waiting} waiting, max_queue={max_queue}): try again later or raise "
        "max_queue",
    )


def cuda_failure(exc: BaseException) -> str | None:
    """``"cuda_oom"``, ``"cuda_error"`` (the CUDA context is lost) or None (not a CUDA error).

    torch is looked up, not imported: a job that raised a CUDA error has loaded it.
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text:
        return "cuda_oom"
    accelerator_error = getattr(torch, "AcceleratorError", ())
    if isinstance(exc, accelerator_error) or _CUDA_ERROR.search(text):
        return "cuda_error"
    return None


class InferenceWorker:
    """Runs submitted jobs one at a time on its own thread.

    Args:
        max_queue: jobs allowed to wait behind the running one.
        log_error: where failures with tracebacks go (the node passes its rclpy logger's
            ``error``; the default is this module's logging logger).
        clock: monotonic seconds, for ``last_failure_s`` (tests pass a fake).
    """

    def __init__(
        self,
        max_queue: int,
        *,
        log_error: Callable[[str], None] = logger.error,
        clock: Callable[[], float] = time.monotonic,
        name: str = "prune2drive-inference",
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.max_queue = max_queue
        self._log_error = log_error
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[tuple[Callable[[StopSignal], Any], Future[Any]]] = deque()
        self._signals: dict[Future[Any], StopSignal] = {}  # queued and running jobs'
        self._refusal: Rejection | None = None  # set once the worker takes no more jobs
        self._running: Future[Any] | None = None
        self._served = 0
        self._rejected: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._last_failure_s: float | None = None
        self._last_failure = ""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(
        self, job: Callable[[StopSignal], T], *, rejection: Rejection | None = None
    ) -> Future[JobResult[T]]:
        """Queue ``job``; never blocks.

        Args:
            job: the work, called with its own stop signal, e.g.
                ``lambda stop: engine.answer(frames, question, n, stop=stop)``.
            rejection: the caller's own admission check failed (``check_*``): resolve the
                future with it at once and count it, without queueing.

        Returns:
            A future resolved with the job's :class:`JobResult`; already resolved when the
            question is rejected (by the caller, a full queue, a closing or failed worker).
        """
        future: Future[JobResult[T]] = Future()
        with self._cond:
            if rejection is None:
                rejection = self._refusal
            if rejection is None:
                rejection = check_queue(len(self._queue), self.max_queue)
            if rejection is None:
                self._queue.append((job, future))
                self._signals[future] = StopSignal()
                self._cond.notify()
                return future
            self._rejected[rejection.reason] += 1
        future.set_result(JobResult(False, message=rejection.message, reason=rejection.reason))
        return future

    def count_rejection(self, rejection: Rejection) -> None:
        """Count a request refused before it became a job (an action goal rejected at once)."""
        with self._cond:
            self._rejected[rejection.reason] += 1

    def counters(self) -> WorkerCounters:
        """A consistent snapshot of the counters."""
        with self._cond:
            return WorkerCounters(
                served=self._served,
                rejected=dict(self._rejected),
                failed=dict(self._failed),
                waiting=len(self._queue),
                busy=self._running is not None,
                last_failure_s=self._last_failure_s,
                last_failure=self._last_failure,
            )

    def stop(self, future: Future[Any], reason: str) -> bool:
        """Withdraw ``future``'s job if it still waits, or ask it to stop (``reason``) if it
        runs: decoding ends after its current token and the job returns what it has.

        Returns:
            True when the job was withdrawn (its future cancelled), False when it runs (or ran).
        """
        with self._cond:
            if future.cancel():  # still queued: its slot is free for the next question
                self._signals.pop(future, None)
                self._queue = deque(entry for entry in self._queue if entry[1] is not future)
                return True
        with self._cond:
            signal = self._signals.get(future)
        if signal is not None:
            signal.set(reason)
        return False

    def wait(self, future: Future[JobResult[T]], timeout_s: float) -> JobResult[T]:
        """The job's result, or a "timeout" failure after ``timeout_s`` seconds.

        A job still queued then is withdrawn (nobody waits for it any more); one already running
        is stopped (:meth:`stop`: it ends after its current token, its partial answer unpublished).
        """
        try:
            return future.result(timeout=timeout_s)
        except CancelledError:  # withdrawn by stop() while it waited (an action's cancel)
            return JobResult(False, message="cancelled by the caller", reason="cancelled")
        except FutureTimeoutError:
            withdrawn = self.stop(future, "timeout")
        message = (
            f"no answer within answer_timeout_s={timeout_s:g} s: "
            + (
                "the question was still queued and is withdrawn"
                if withdrawn
                else "the question was being answered and is stopped"
            )
            + "; ask again later, or raise answer_timeout_s for a slow model"
        )
        with self._cond:
            self._count_failure("timeout", message)
        return JobResult(False, message=message, reason="timeout")

    def close(self, timeout: float | None = None) -> bool:
        """Stop: queued jobs and later submissions resolve as "shutting down", the running job
        is asked to stop (it ends after its current token); join the thread.

        The running job gets ``timeout`` seconds to end. If it outlasts them (a prefill or a
        model call that is not a decoding step) its future is resolved as "shutting down" too
        (so nobody waits on it, and an executor thread blocked on it is released), and the
        thread, a daemon, is left to finish or die with the process.

        Returns:
            True when the worker thread ended within ``timeout``.
        """
        self._refuse(Rejection("shutdown", SHUTDOWN))
        with self._cond:
            running = self._running
        if running is not None:
            self.stop(running, "shutdown")
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        with self._cond:
            running = self._running
        if running is not None:
            _resolve(running, JobResult(False, message=SHUTDOWN, reason="shutdown"))
        return False

    @property
    def fatal(self) -> str | None:
        """Why the worker stopped for good (a CUDA error), None while it serves."""
        with self._cond:
            refusal = self._refusal
        return refusal.message if refusal is not None and refusal.reason == "cuda_error" else None

    def withdraw_queued(self, rejection: Rejection) -> None:
        """Answer every queued job with ``rejection`` (counted), leaving the running one and
        later submissions alone: e.g. the node deactivated, and will serve again."""
        with self._cond:
            pending = self._take_queued(rejection)
        _refuse_all(pending, rejection)

    def _refuse(self, rejection: Rejection) -> None:
        """Take no more jobs: the queued ones and later submissions get ``rejection`` (the
        first reason stays: a closing worker that failed still says why)."""
        with self._cond:
            if self._refusal is None:
                self._refusal = rejection
            rejection = self._refusal
            pending = self._take_queued(rejection)
            self._cond.notify_all()
        _refuse_all(pending, rejection)

    def _take_queued(self, rejection: Rejection) -> list[Future[Any]]:
        """Empty the queue, counting its jobs as refused for ``rejection`` (the caller holds
        the lock, and resolves the returned futures once it let go of it)."""
        pending = [future for _, future in self._queue]
        self._queue.clear()
        for future in pending:
            self._signals.pop(future, None)
        if pending:
            self._rejected[rejection.reason] += len(pending)
        return pending

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and self._refusal is None:
                    self._cond.wait()
                if not self._queue:
                    return
                job, future = self._queue.popleft()
                signal = self._signals.get(future, StopSignal())
                if not future.set_running_or_notify_cancel():
                    self._signals.pop(future, None)
                    continue  # the asker gave up before its turn
                self._running = future
            result = self._execute(functools.partial(job, signal))
            with self._cond:
                self._running = None
                self._signals.pop(future, None)
                if result.success:
                    self._served += 1
                else:
                    self._count_failure(result.reason, result.message)
            _resolve(future, result)
            if result.reason == "cuda_error":
                self._refuse(Rejection(result.reason, result.message))

    def _count_failure(self, reason: str, message: str) -> None:
        """Count a failure (the caller holds the lock)."""
        self._failed[reason] += 1
        self._last_failure_s = self._clock()
        self._last_failure = message

    def _execute(self, job: Callable[[], object]) -> JobResult[object]:
        """Run one job, turning every exception into a failed result."""
        try:
            return JobResult(True, value=job())
        except Exception as exc:
            failure = self._failure(exc)
        # Only out here is the traceback gone, and with it the failed forward pass's tensors
        # that its frames hold: emptying the cache inside the except block would keep them.
        if failure.reason == "cuda_oom":
            sys.modules["torch"].cuda.empty_cache()
        return failure

    def _failure(self, exc: Exception) -> JobResult[object]:
        """The failed result of a job that raised ``exc`` (logged here when unexpected)."""
        kind = cuda_failure(exc)
        first_line = next(iter(str(exc).strip().splitlines()), "")
        if kind == "cuda_oom":
            message = (
                f"CUDA out of memory ({first_line}): try a lower retention (rates_file) "
                "or max_new_tokens, a smaller dtype or model"
            )
            self._log_error(message)
            return JobResult(False, message=message, reason=kind)
        if kind == "cuda_error":
            message = (
                f"CUDA error ({first_line}): the process's CUDA context is unusable; the node "
                "exits with status 1 so that it can be restarted (launch respawn:=true)"
            )
            self._log_error(f"{message}\n{traceback.format_exc()}")
            return JobResult(False, message=message, reason=kind)
        if isinstance(exc, Prune2DriveError):
            return JobResult(False, message=str(exc), reason=type(exc).__name__)
        self._log_error(f"question failed with an unexpected error:\n{traceback.format_exc()}")
        return JobResult(
            False,
            message=f"internal error: {type(exc).__name__}: {exc} (traceback in the node log)",
            reason="internal",
        )


def _refuse_all(futures: list[Future[Any]], rejection: Rejection) -> None:
    """Resolve each of ``futures`` with ``rejection``."""
    refused: JobResult[Any] = JobResult(False, message=rejection.message, reason=rejection.reason)
    for future in futures:
        _resolve(future, refused)


def _resolve(future: Future[T], result: T) -> None:
    """Resolve ``future`` unless it already is (close() may have answered "shutting down")."""
    with contextlib.suppress(InvalidStateError):  # resolved or cancelled: its asker is answered
        future.set_result(result)
