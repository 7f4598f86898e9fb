"""The inference worker's queueing policy, without ROS: rejections are immediate, failures are
contained, counters add up, close() leaves nobody waiting."""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest
import torch

from prune2drive_ros.errors import DecodeError
from prune2drive_ros.serving.worker import (
    InferenceWorker,
    JobResult,
    Rejection,
    check_frames,
    check_queue,
    cuda_failure,
    stopped,
)
from prune2drive_ros.stopping import StopSignal

TOPICS = ("/CAM_FRONT/image_rect_compressed", "/CAM_BACK/image_rect_compressed")
SECOND = 1_000_000_000
TIMEOUT = 10.0


class Gate:
    """A job that blocks until released, so tests control what the worker is doing."""

    def __init__(self, value: str = "gated") -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.value = value
        self.stop: StopSignal | None = None

    def __call__(self, stop: StopSignal) -> str:
        self.stop = stop
        self.started.set()
        assert self.release.wait(TIMEOUT), "test forgot to release the gate"
        return self.value


@pytest.fixture
def errors() -> list[str]:
    return []


@pytest.fixture
def worker(errors: list[str]) -> Iterator[InferenceWorker]:
    w = InferenceWorker(max_queue=2, log_error=errors.append)
    yield w
    w.close(timeout=TIMEOUT)


def result(future: Future[JobResult[Any]]) -> JobResult[Any]:
    return future.result(timeout=TIMEOUT)


def raising(exc: BaseException) -> Callable[[StopSignal], object]:
    def job(stop: StopSignal) -> object:
        raise exc

    return job


def test_serves_jobs_in_order(worker: InferenceWorker) -> None:
    futures = [worker.submit(functools.partial(lambda i, stop: i * 10, i)) for i in range(2)]
    assert [result(f).value for f in futures] == [0, 10]
    assert all(result(f).success for f in futures)
    assert worker.counters().served == 2


def test_queue_full_is_rejected_at_once(worker: InferenceWorker) -> None:
    gate = Gate()
    running = worker.submit(gate)
    assert gate.started.wait(TIMEOUT)
    queued = [worker.submit(lambda _: "queued") for _ in range(2)]
    rejected = worker.submit(lambda _: "never runs")
    assert rejected.done(), "submit must not block or queue beyond max_queue"
    outcome = result(rejected)
    assert not outcome.success and outcome.reason == "queue_full"
    assert outcome.message == (
        "queue full (2 waiting, max_queue=2): try again later or raise max_queue"
    )
    counters = worker.counters()
    assert (counters.waiting, counters.busy, counters.rejected) == (2, True, {"queue_full": 1})
    gate.release.set()
    assert result(running).value == "gated"
    assert [result(f).value for f in queued] == ["queued", "queued"]
    assert worker.counters().waiting == 0


def test_callers_rejection_resolves_without_running(worker: InferenceWorker) -> None:
    ran = threading.Event()
    future = worker.submit(lambda _: ran.set(), rejection=Rejection("no_frames", "no frames"))
    assert future.done()
    assert result(future) == JobResult(False, message="no frames", reason="no_frames")
    worker.close(timeout=TIMEOUT)
    assert not ran.is_set()
    assert worker.counters().rejected == {"no_frames": 1}


def test_cuda_oom_is_contained(worker: InferenceWorker, errors: list[str]) -> None:
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    outcome = result(worker.submit(raising(oom)))
    assert not outcome.success and outcome.reason == "cuda_oom"
    assert outcome.message.startswith("CUDA out of memory")
    assert "max_new_tokens" in outcome.message and "retention" in outcome.message
    assert errors, "an OOM is worth a log line"
    assert result(worker.submit(lambda _: "still serving")).value == "still serving"
    counters = worker.counters()
    assert (counters.served, counters.failed) == (1, {"cuda_oom": 1})
    assert counters.last_failure == outcome.message


def test_cuda_cache_is_emptied_after_the_traceback_is_gone(
    worker: InferenceWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failed forward pass's tensors live in the traceback's frames: empty_cache inside the
    except block could not free them."""
    handling: list[object] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: handling.append(sys.exc_info()[1]))
    outcome = result(worker.submit(raising(torch.cuda.OutOfMemoryError("CUDA out of memory"))))
    assert outcome.reason == "cuda_oom"
    assert handling == [None], "empty_cache must run once no exception is being handled"


@pytest.mark.parametrize(
    "exc",
    [
        torch.AcceleratorError("CUDA error: an illegal memory access was encountered"),
        RuntimeError("CUDA error: device-side assert triggered\nCUDA kernel errors might be..."),
        RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx`"),
    ],
)
def test_other_cuda_errors_stop_the_worker(exc: RuntimeError, errors: list[str]) -> None:
    """They break the CUDA context for good: stop serving and say so, for a restart."""
    w = InferenceWorker(max_queue=2, log_error=errors.append)
    gate = Gate()

    def fail_after_gate(stop: StopSignal) -> None:
        gate(stop)
        raise exc

    failing = w.submit(fail_after_gate)
    assert gate.started.wait(TIMEOUT)
    queued = w.submit(lambda _: "never runs")
    assert w.fatal is None
    gate.release.set()
    outcome = result(failing)
    assert (outcome.success, outcome.reason) == (False, "cuda_error")
    first_line = str(exc).splitlines()[0]
    assert outcome.message.startswith(f"CUDA error ({first_line}): the process's CUDA context")
    assert "status 1" in outcome.message and "respawn" in outcome.message
    assert w.fatal == outcome.message
    assert result(queued) == JobResult(False, message=outcome.message, reason="cuda_error")
    late = result(w.submit(lambda _: "never runs"))
    assert (late.reason, late.message) == ("cuda_error", outcome.message)
    assert len(errors) == 1 and "Traceback" in errors[0]
    assert w.close(timeout=TIMEOUT) is True
    counters = w.counters()
    assert (counters.failed, counters.rejected) == ({"cuda_error": 1}, {"cuda_error": 2})


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "cuda_oom"),
        (torch.AcceleratorError("CUDA error: out of memory"), "cuda_oom"),
        (torch.AcceleratorError("CUDA error: misaligned address"), "cuda_error"),
        (RuntimeError("shape mismatch"), None),
        (ValueError("CUDA error: in a ValueError it is not torch's"), None),
    ],
)
def test_cuda_failure_kinds(exc: BaseException, kind: str | None) -> None:
    assert cuda_failure(exc) == kind


def test_package_error_becomes_its_message(worker: InferenceWorker, errors: list[str]) -> None:
    outcome = result(worker.submit(raising(DecodeError("/CAM_BACK: corrupt JPEG"))))
    assert (outcome.success, outcome.message, outcome.reason) == (
        False,
        "/CAM_BACK: corrupt JPEG",
        "DecodeError",
    )
    assert not errors, "an expected error needs no traceback in the log"


def test_unexpected_error_is_logged_with_traceback(
    worker: InferenceWorker, errors: list[str]
) -> None:
    outcome = result(worker.submit(raising(KeyError("boom"))))
    assert not outcome.success and outcome.reason == "internal"
    assert "KeyError" in outcome.message and "node log" in outcome.message
    assert len(errors) == 1 and "Traceback" in errors[0]
    assert result(worker.submit(lambda _: 1)).value == 1


def test_failure_time_comes_from_the_clock() -> None:
    times = iter([42.0])
    w = InferenceWorker(max_queue=1, log_error=lambda _: None, clock=lambda: next(times))
    result(w.submit(raising(KeyError("x"))))
    w.close(timeout=TIMEOUT)
    assert w.counters().last_failure_s == 42.0


def test_close_drains_queue_and_rejects_later_jobs(errors: list[str]) -> None:
    w = InferenceWorker(max_queue=3, log_error=errors.append)
    gate = Gate()
    running = w.submit(gate)
    assert gate.started.wait(TIMEOUT)
    queued = [w.submit(lambda _: "queued") for _ in range(3)]
    closer = threading.Thread(target=w.close, kwargs={"timeout": TIMEOUT})
    closer.start()
    for future in queued:
        outcome = result(future)
        assert (outcome.success, outcome.reason) == (False, "shutdown")
    gate.release.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    assert result(running).value == "gated", "the running job finishes"
    late = result(w.submit(lambda _: "late"))
    assert (late.success, late.reason) == (False, "shutdown")
    assert w.counters().rejected == {"shutdown": 4}


def test_close_answers_a_job_that_outlasts_it(errors: list[str]) -> None:
    """A job still running when close() gives up is answered "shutting down" at once (nobody
    waits on it); when it finishes later, its result is dropped without an error."""
    crashes: list[threading.ExceptHookArgs] = []
    w = InferenceWorker(max_queue=1, log_error=errors.append)
    gate = Gate()
    running = w.submit(gate)
    assert gate.started.wait(TIMEOUT)
    assert w.close(timeout=0.0) is False
    outcome = result(running)
    assert (outcome.success, outcome.reason, outcome.message) == (
        False,
        "shutdown",
        "the node is shutting down",
    )
    saved_hook, threading.excepthook = threading.excepthook, crashes.append
    try:
        gate.release.set()
        assert w.close(timeout=TIMEOUT) is True, "the worker thread ends once the job is done"
    finally:
        threading.excepthook = saved_hook
    assert not crashes and not errors
    assert result(running) == outcome, "the first answer stands"


def test_wait_withdraws_a_queued_job_after_the_timeout(worker: InferenceWorker) -> None:
    gate = Gate()
    running = worker.submit(gate)
    assert gate.started.wait(TIMEOUT)
    ran = threading.Event()
    queued = worker.submit(lambda _: ran.set())
    late = worker.wait(queued, timeout_s=0.0)
    assert (late.success, late.reason) == (False, "timeout")
    assert late.message.startswith("no answer within answer_timeout_s=0 s: the question was")
    assert "withdrawn" in late.message
    assert queued.cancelled()
    busy = worker.wait(running, timeout_s=0.0)
    assert "was being answered and is stopped" in busy.message
    assert gate.stop is not None and gate.stop.reason == "timeout", "its decoding is told to stop"
    gate.release.set()
    assert worker.wait(worker.submit(lambda _: "next"), TIMEOUT).value == "next"
    assert not ran.is_set(), "a withdrawn question never runs"
    counters = worker.counters()
    assert (counters.served, counters.failed) == (2, {"timeout": 2})
    assert counters.last_failure == busy.message


def test_a_withdrawn_question_frees_its_queue_slot(worker: InferenceWorker) -> None:
    gate = Gate()
    running = worker.submit(gate)
    assert gate.started.wait(TIMEOUT)
    queued = [worker.submit(lambda _: "never runs") for _ in range(worker.max_queue)]
    for future in queued:
        assert worker.wait(future, timeout_s=0.0).reason == "timeout"
    assert worker.counters().waiting == 0, "nobody waits for the withdrawn questions"
    later = worker.submit(lambda _: "later")
    assert not later.done(), "queued behind the running answer, not refused 'queue full'"
    gate.release.set()
    assert result(running).value == "gated" and result(later).value == "later"
    assert worker.counters().rejected == {}


def test_withdraw_queued_answers_them_and_keeps_serving(worker: InferenceWorker) -> None:
    gate = Gate()
    running = worker.submit(gate)
    assert gate.started.wait(TIMEOUT)
    queued = worker.submit(lambda _: "never runs")
    worker.withdraw_queued(Rejection("inactive", "the node is inactive"))
    assert (result(queued).reason, result(queued).message) == ("inactive", "the node is inactive")
    gate.release.set()
    assert result(running).value == "gated", "the running answer is not affected"
    assert result(worker.submit(lambda _: "next")).value == "next", "later ones are served"
    assert worker.counters().rejected == {"inactive": 1}


class UntilStopped:
    """A job that runs until its stop signal is set, like a long decoding honouring it."""

    def __init__(self) -> None:
        self.started = threading.Event()

    def __call__(self, stop: StopSignal) -> str:
        self.started.set()
        while not stop.wait_for(0.01):
            pass
        return f"stopped: {stop.reason}"


def test_stop_withdraws_a_queued_job_and_signals_a_running_one(worker: InferenceWorker) -> None:
    job = UntilStopped()
    running = worker.submit(job)
    assert job.started.wait(TIMEOUT)
    queued = worker.submit(lambda _: "never runs")
    assert worker.stop(queued, "cancelled") is True and queued.cancelled()
    withdrawn = worker.wait(queued, TIMEOUT)
    assert (withdrawn.success, withdrawn.reason) == (False, "cancelled")
    assert worker.stop(running, "cancelled") is False, "running: signalled, not withdrawn"
    assert result(running).value == "stopped: cancelled"
    assert result(worker.submit(lambda _: "next")).value == "next"


def test_close_stops_the_running_job_instead_of_abandoning_it() -> None:
    w = InferenceWorker(max_queue=2)
    job = UntilStopped()
    running = w.submit(job)
    assert job.started.wait(TIMEOUT)
    queued = w.submit(lambda _: "never runs")
    assert w.close(timeout=TIMEOUT) is True, "the worker thread ends: no os._exit needed"
    assert result(running).value == "stopped: shutdown"
    assert result(queued).reason == "shutdown"


def test_cancelled_future_is_skipped(worker: InferenceWorker) -> None:
    gate = Gate()
    worker.submit(gate)
    assert gate.started.wait(TIMEOUT)
    ran = threading.Event()
    cancelled = worker.submit(lambda _: ran.set())
    assert cancelled.cancel()
    gate.release.set()
    assert result(worker.submit(lambda _: "next")).value == "next"
    assert not ran.is_set()


def test_a_refusal_before_submitting_is_counted(worker: InferenceWorker) -> None:
    worker.count_rejection(Rejection("queue_full", "the queue is full"))
    assert worker.counters().rejected == {"queue_full": 1}


def test_a_stopped_answer_is_a_failure_that_says_why() -> None:
    done: JobResult[str] = JobResult(True, value="partial")
    assert stopped(done, "length") is done and stopped(done, "stop") is done
    for finish, words in (("shutdown", "shutting down"), ("timeout", "answer_timeout_s")):
        outcome = stopped(done, finish)
        assert (outcome.success, outcome.reason) == (False, finish) and words in outcome.message


def test_max_queue_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        InferenceWorker(max_queue=0)


def test_check_queue() -> None:
    assert check_queue(1, 2) is None
    full = check_queue(2, 2)
    assert full is not None and full.reason == "queue_full"


def test_check_frames_none_yet() -> None:
    silent = check_frames(None, 0, 1.0, {TOPICS[0]: 5, TOPICS[1]: None})
    assert silent is not None and silent.reason == "no_frames"
    assert silent.message.startswith(f"no synchronized frames received yet on {', '.join(TOPICS)}")
    assert f"nothing received at all on {TOPICS[1]}" in silent.message
    dead = check_frames(None, 0, 1.0, dict.fromkeys(TOPICS))
    assert dead is not None and "nothing received on any of them" in dead.message
    unsynced = check_frames(None, 0, 1.0, dict.fromkeys(TOPICS, 5))
    assert unsynced is not None and "sync_slop_s" in unsynced.message


def test_check_frames_age() -> None:
    now = 100 * SECOND
    fresh = dict.fromkeys(TOPICS, now)
    assert check_frames(now - SECOND // 2, now, 1.0, fresh) is None
    old = now - 25 * SECOND // 10
    stale = check_frames(old, now, 1.0, dict.fromkeys(TOPICS, old))
    assert stale is not None and stale.reason == "stale_frames"
    assert stale.message == (
        "frames are 2.5 s old (max_frame_age_s=1): is the bag/camera running? with "
        "use_sim_time check /clock (ros2 bag play --clock)"
    )
    ahead = check_frames(now + 5 * SECOND, now, 1.0, fresh)
    assert ahead is not None and "ahead of the node clock" in ahead.message
    assert check_frames(0, now, 0.0, fresh) is None, "0 disables the age check"
    frozen = check_frames(now, now, 1.0, fresh, arrived_s_ago=4.0)
    assert frozen is not None and frozen.reason == "stale_frames"
    assert "no new synchronized camera set for 4.0 s of steady time" in frozen.message
    assert check_frames(now, now, 1.0, fresh, arrived_s_ago=0.5) is None


def test_check_frames_names_the_cameras_that_stopped() -> None:
    """A camera that died after sending is named, with the age of its newest message."""
    now = 100 * SECOND
    newest = {TOPICS[0]: now, TOPICS[1]: now - 30 * SECOND}
    stale = check_frames(now - 30 * SECOND, now, 1.0, newest)
    assert stale is not None
    assert stale.message == (
        f"frames are 30.0 s old (max_frame_age_s=1): nothing new on {TOPICS[1]} (30.0 s): "
        "is that camera running?"
    )
    drifted = check_frames(now - 30 * SECOND, now, 1.0, dict.fromkeys(TOPICS, now))
    assert drifted is not None
    assert drifted.message.endswith(
        "every camera sends, but their stamps no longer fall within sync_slop_s"
    )
