"""The ROS 2 node ``prune2drive``: six camera topics in; answers, latency and diagnostics out.

The only module of the package that imports ROS. Everything it decides is delegated to ROS-free
modules that are tested without ROS: parameters to :mod:`.config`, frame pairing to
:mod:`.sync` (the same policy bag replay uses, so live and replayed questions see the same
frame sets), admission and queueing to :mod:`.worker`, diagnostics to :mod:`.stats`, and the
answering itself to :class:`~prune2drive_ros.engine.Engine`.

Threads: a MultiThreadedExecutor runs the camera subscriptions (one mutually exclusive group;
they only queue message objects, no decoding), the ``~/ask`` service (a reentrant group: each
call waits on its own future, so waiting never blocks the executor), and the timers. Inference
runs on the worker's single thread; the model loads on a thread of its own so the node is
visible, and its diagnostics say "model not loaded", while a large checkpoint loads. No call
waits without bound: each waits at most ``answer_timeout_s``, and at shutdown every waiting
call is answered within :data:`CLOSE_TIMEOUT_S`, before launch escalates to SIGTERM: a running
generation is stopped after its current token (the worker's stop hook). ``~/ask_stream`` goals
run like service calls, with feedback from the worker thread and cancel through the same hook.
"""

from __future__ import annotations

import array
import functools
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import rclpy
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_updater import DiagnosticStatusWrapper, FunctionDiagnosticTask, Updater
from prune2drive_interfaces.action import Ask as AskAction
from prune2drive_interfaces.msg import DrivingAnswer
from prune2drive_interfaces.srv import Ask
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from transformers.utils.logging import disable_progress_bar

from .config import (
    NODE_NAME,
    PACKAGE,
    SUPERSEDED,
    UPDATER_PERIOD,
    DriveVLMConfig,
    ParamSpec,
    check_parameter_names,
    check_question,
    is_ros_parameter,
)
from .engine import Answer, Engine
from .errors import ConfigError, Prune2DriveError, QuestionError
from .sensors.sync import ApproximateSync
from .serving.stats import NodeStats
from .serving.worker import (
    InferenceWorker,
    JobResult,
    Rejection,
    check_frames,
    check_queue,
    check_ready,
    stopped,
)
from .stopping import FINISHED, StopSignal
from .views import VIEWS

#: stats.py levels -> DiagnosticStatus constants (``level`` is a byte on Jazzy: never an int).
LEVELS = {
    "OK": DiagnosticStatus.OK,
    "WARN": DiagnosticStatus.WARN,
    "ERROR": DiagnosticStatus.ERROR,
}

#: Callback groups besides the service's, each holding at most one executor thread at a time:
#: the cameras, the standing-question timer, the node's default group (the diagnostics timer,
#: the parameter services), and the action server's own requests (goals, cancels, results).
_OTHER_GROUPS = 4

#: Seconds the executor keeps spinning after close(), so its answers reach their callers.
FLUSH_S = 0.5

#: ``~/ask_stream`` feedback every this many generated tokens (and after the first).
FEEDBACK_EVERY = 4

#: ``~/ask`` requests wait in the middleware until the executor takes them, however many come
#: at once: with the services' default KEEP_LAST(10), a burst past ten dropped requests that
#: were then never answered nor counted. Every request taken is queued or refused at once.
SERVICE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_ALL,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

#: Seconds the running question gets to finish at shutdown. launch escalates Ctrl-C (SIGINT) to
#: SIGTERM after 5 s, and that to SIGKILL: the node must be gone well before, and exiting takes
#: a second or more after this (seen: 3.6 s from Ctrl-C to exit with 3 s here, on CPU).
CLOSE_TIMEOUT_S = 2.0


def executor_threads(max_queue: int) -> int:
    """Executor threads so that no callback waits for a thread.

    Up to ``max_queue + 1`` service calls and action goals wait for an answer at once (the
    queued questions and the one being answered), each holding its thread; one more serves a
    call that is refused at once, and each other callback group needs one.
    """
    return (max_queue + 1) + 1 + _OTHER_GROUPS


def parameter_descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor of one schema parameter: description, range, read-only flag."""
    descriptor = ParameterDescriptor(
        description=spec.description,
        additional_constraints=spec.constraints(),
        read_only=spec.read_only,
    )
    if spec.low is not None and spec.high is not None:
        if spec.kind is int:
            descriptor.integer_range = [
                IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)
            ]
        elif spec.kind is float:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)
            ]
    return descriptor


def time_msg(stamp_ns: int) -> TimeMsg:
    """``builtin_interfaces/Time`` of a stamp in nanoseconds."""
    return TimeMsg(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def answer_fields(answer: Answer) -> dict[str, Any]:
    """The fields ``Ask.Response`` and ``DrivingAnswer`` share, filled from an engine Answer."""
    timings = answer.timings_ms
    return {
        "answer": answer.text,
        "frames_stamp": time_msg(answer.frames_stamp_ns),
        "view_names": list(answer.kept_tokens),
        "kept_tokens": [int(n) for n in answer.kept_tokens.values()],
        "decode_ms": timings.decode,
        "encode_ms": timings.encode,
        "prune_ms": timings.prune,
        "prefill_ms": timings.prefill,
        "generate_ms": timings.generate,
        "total_ms": timings.total,
        "model": answer.model,
        "random_weights": bool(answer.random_weights),
    }


class RosLogHandler(logging.Handler):
    """Forwards the package's Python logging (engine, model loader) to the node's ROS log.

    One call site per severity: rclpy's logger refuses a call site whose severity changes.
    """

    def __init__(self, logger: Any) -> None:
        super().__init__()
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            self._logger.error(message)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(message)
        elif record.levelno >= logging.INFO:
            self._logger.info(message)
        else:
            self._logger.debug(message)


def _share_dir() -> str | None:
    """The installed share folder (default rates file); None when not installed by colcon."""
    try:
        return get_package_share_directory(PACKAGE)
    except PackageNotFoundError:
        return None


class DriveVLMNode(Node):
    """Answers driving questions about the latest synchronized set of the six cameras.

    Raises:
        ConfigError: a parameter is invalid (the message names it and what it allows).
    """

    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        package_log = logging.getLogger(PACKAGE)
        package_log.setLevel(logging.INFO)
        package_log.addHandler(RosLogHandler(self.get_logger()))
        self.config = self._declare_parameters()
        # ROS ignores an override nobody declares: a misspelt -p or params-file name would
        # leave its parameter on the default. rclpy keeps the overrides in a private dict.
        overrides = getattr(self, "_parameter_overrides", {})
        check_parameter_names(name for name in overrides if not is_ros_parameter(name))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._load_failure: str | None = None  # set by the loader thread
        self._engine: Engine | None = None
        self._gpu_memory: Callable[[], int | None] | None = None

        self._stats = NodeStats()
        self._worker = InferenceWorker(self.config.max_queue, log_error=self.get_logger().error)
        self._topics = self.config.resolved_image_topics()
        self._start_pairing()
        # A bag played with --clock --loop, or played again, sends the node clock back: the
        # cameras' stamps then fall before the last synchronized set, and sync.py (which never
        # goes back in time) would drop every frame until bag time caught up with it again.
        self._time_jumps = self.get_clock().create_jump_callback(
            JumpThreshold(
                min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=False
            ),
            post_callback=self._on_clock_jumped_back,
        )

        image_group = MutuallyExclusiveCallbackGroup()
        msg_type = CompressedImage if self.config.use_compressed else Image
        for view, topic in self._topics.items():
            self.create_subscription(
                msg_type,
                topic,
                functools.partial(self._on_image, view),
                qos_profile_sensor_data,
                callback_group=image_group,
            )
        self._answers = self.create_publisher(DrivingAnswer, "~/answers", 10)
        self._service = self.create_service(
            Ask,
            "~/ask",
            self._on_ask,
            qos_profile=SERVICE_QOS,
            callback_group=ReentrantCallbackGroup(),
        )
        #: goal id -> the future of its job, for cancel (goals run on executor threads)
        self._goals: dict[bytes, Future[JobResult[Answer]]] = {}
        self._goals_lock = threading.Lock()
        self._stream = ActionServer(
            self,
            AskAction,
            f"{self.get_fully_qualified_name()}/ask_stream",
            execute_callback=self._execute_goal,
            goal_callback=self._on_goal,
            cancel_callback=self._on_cancel,
            callback_group=ReentrantCallbackGroup(),
        )
        # Drawn only while someone subscribes (rqt_image_view, Foxglove): no cost otherwise.
        self._picture = self.create_publisher(CompressedImage, "~/kept_tokens/compressed", 1)
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._standing_timer: Any = None
        self._standing_future: Future[JobResult[Answer]] | None = None
        self._reset_standing_timer()

        # Updater declares diagnostic_updater.period (an override of it was refused above, and
        # _on_set_parameters refuses setting it later).
        self._updater = Updater(self, period=self.config.diagnostics_period_s)
        # Updater's timer runs on the node clock, which stands still under use_sim_time until
        # /clock arrives (a bag played without --clock, or not yet): re-create it on the steady
        # clock so /diagnostics keeps reporting, which is when it is needed most.
        self._reset_diagnostics_timer()
        self._updater.setHardwareID("loading")
        self._updater.add(FunctionDiagnosticTask("driving QA", self._diagnose))

        self._loader = threading.Thread(target=self._load, name="prune2drive-load", daemon=True)
        self.get_logger().info(
            f"subscribing to {msg_type.__name__} on {', '.join(self._topics.values())}; "
            f"loading model {self.config.model or '(tiny random-weight test model)'}"
        )

    # ------------------------------------------------------------------ parameters

    def _declare_parameters(self) -> DriveVLMConfig:
        """Declare every schema parameter (one at a time, to name the one ROS rejects)."""
        values: dict[str, Any] = {}
        for spec in DriveVLMConfig.specs():
            default = list(spec.default) if spec.kind is tuple else spec.default
            try:
                parameter = self.declare_parameter(spec.name, default, parameter_descriptor(spec))
            except ParameterException as exc:
                raise ConfigError(
                    f"parameter {spec.name}: {exc} (allowed: {spec.constraints()})"
                ) from exc
            values[spec.name] = parameter.value
        return DriveVLMConfig.from_mapping(values)

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Apply run-time changes (read-only ones never get here) after validating them."""
        for parameter in parameters:
            # Only Updater's own declaration, with the node's period, gets through.
            if parameter.name == UPDATER_PERIOD and parameter.value != (
                self.config.diagnostics_period_s
            ):
                return SetParametersResult(
                    successful=False,
                    reason=f"this node does not use {UPDATER_PERIOD}: set "
                    f"{SUPERSEDED[UPDATER_PERIOD]} instead",
                )
        names = {spec.name for spec in DriveVLMConfig.specs()}
        changes = {p.name: p.value for p in parameters if p.name in names}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            candidate = self.config.with_changes(**changes)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        previous, self.config = self.config, candidate
        standing = (candidate.standing_question, candidate.standing_period_s)
        if standing != (previous.standing_question, previous.standing_period_s):
            self._reset_standing_timer()
        if candidate.diagnostics_period_s != previous.diagnostics_period_s:
            self._reset_diagnostics_timer()
        return SetParametersResult(successful=True)

    @property
    def fatal(self) -> str | None:
        """Why the node must exit with status 1: the model did not load, or a CUDA error broke
        the process's CUDA context (a fresh process, e.g. launch's respawn, recovers); None
        while it serves."""
        return self._load_failure or self._worker.fatal

    # ------------------------------------------------------------------ model

    def start(self) -> None:
        """Start loading the model (in the background: the executor keeps spinning)."""
        self._loader.start()

    def _load(self) -> None:
        """Load and warm up the engine; on failure set :attr:`fatal` so main() exits."""
        try:
            engine = Engine.from_config(self.config, share_dir=_share_dir())
            engine.warmup()
        except Exception as exc:  # reported to the main thread, which exits non-zero
            detail = "" if isinstance(exc, Prune2DriveError) else f"\n{traceback.format_exc()}"
            self.get_logger().fatal(
                f"cannot load model {self.config.model or '(tiny test model)'}: {exc}{detail}"
            )
            self._load_failure = str(exc)
            return
        facts = engine.describe()
        self._gpu_memory = engine.gpu_memory_bytes
        self._updater.setHardwareID(facts["device"])
        self._engine = engine
        self.get_logger().info(
            "ready: "
            + ", ".join(f"{key} {value}" for key, value in facts.items())
            + f"; ask on {self.resolve_service_name(self._service.srv_name)}"
        )

    # ------------------------------------------------------------------ cameras

    def _start_pairing(self) -> None:
        """A fresh synchronizer, and no camera heard yet."""
        self._sync = ApproximateSync(VIEWS, self.config.sync_slop_s, self.config.sync_queue_size)
        #: camera topic -> header stamp of its newest message, None before its first
        self._newest: dict[str, int | None] = dict.fromkeys(self._topics.values())

    def _on_clock_jumped_back(self, jump: TimeJump) -> None:
        """Pair the cameras afresh once the node clock went back (a bag looped or restarted),
        and stop diagnostics judging frames by the old timeline's stamp."""
        self._start_pairing()
        self._stats.forget_frames()
        self.get_logger().info(
            f"the clock went back {-jump.delta.nanoseconds / 1e9:.1f} s (a bag looped or was "
            "played again): pairing the cameras afresh; if this repeats, more than one node "
            "publishes /clock",
            throttle_duration_sec=5.0,
        )

    def _on_image(self, view: str, msg: CompressedImage | Image) -> None:
        """Queue one camera message for pairing; no decoding here (it waits for a question)."""
        stamp = msg.header.stamp
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        self._newest[self._topics[view]] = stamp_ns
        frame_set = self._sync.add(view, stamp_ns, msg)
        if frame_set is not None:
            self._stats.record_frameset(frame_set.stamp_ns)

    # ------------------------------------------------------------------ questions

    def _admission(self, question: str, max_new_tokens: int) -> Rejection | None:
        """Why the question cannot be taken now (model, request, frames), or None."""
        config, frames = self.config, self._sync.latest
        return (
            check_ready(self._engine is not None, config.model)
            or self._check_request(question, max_new_tokens)
            or check_frames(
                None if frames is None else frames.stamp_ns,
                self.get_clock().now().nanoseconds,
                config.max_frame_age_s,
                dict(self._newest),
                self._stats.arrival_age_s(),
            )
        )

    def _submit(
        self, question: str, max_new_tokens: int, on_text: Callable[[str, int], None] | None = None
    ) -> Future[JobResult[Answer]]:
        """Check the question against the current state and queue it; never blocks."""
        engine, frames = self._engine, self._sync.latest
        rejection = self._admission(question, max_new_tokens)
        tokens = max_new_tokens or self.config.max_new_tokens
        picture = self._picture.get_subscription_count() > 0

        def job(stop: StopSignal) -> Answer:
            assert engine is not None and frames is not None  # admitted
            return engine.answer(
                frames, question, tokens, stop=stop, on_text=on_text, picture=picture
            )

        future = self._worker.submit(job, rejection=rejection)
        future.add_done_callback(self._publish)
        return future

    def _check_request(self, question: str, max_new_tokens: int) -> Rejection | None:
        """The question check and the token limit, as an immediate rejection."""
        limit = DriveVLMConfig.spec("max_new_tokens").high
        if limit is not None and max_new_tokens > limit:
            return Rejection(
                "bad_request", f"max_new_tokens={max_new_tokens} exceeds {limit:g}; ask for less"
            )
        try:
            check_question(question, self.config.max_question_chars)
        except QuestionError as exc:
            return Rejection("bad_question", str(exc))
        return None

    def _publish(self, future: Future[JobResult[Answer]]) -> None:
        """Record and publish every answer (service calls and the standing question alike)."""
        if future.cancelled():  # withdrawn after answer_timeout_s, never ran
            return
        outcome = future.result()
        if not outcome.success or outcome.value is None:
            return
        answer = outcome.value
        if answer.finish not in FINISHED:  # stopped early (timeout, shutdown): not an answer
            return
        self._stats.record_answer(answer.timings_ms, answer.kept_tokens)
        msg = DrivingAnswer(**answer_fields(answer))
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.question = answer.question
        self._answers.publish(msg)
        if answer.picture is not None:
            picture = CompressedImage(format="jpeg", data=array.array("B", answer.picture))
            picture.header.stamp = time_msg(answer.frames_stamp_ns)
            picture.header.frame_id = "prune2drive_kept_tokens"
            self._picture.publish(picture)

    def _on_ask(self, request: Ask.Request, response: Ask.Response) -> Ask.Response:
        """Service ``~/ask``: wait for this question's own future (reentrant group)."""
        future = self._submit(request.question, request.max_new_tokens)
        outcome = self._worker.wait(future, self.config.answer_timeout_s)
        if outcome.success and outcome.value is not None:  # stopped early: not an answer
            outcome = stopped(outcome, outcome.value.finish)
        response.success = outcome.success
        response.message = outcome.message
        if outcome.success and outcome.value is not None:
            for name, value in answer_fields(outcome.value).items():
                setattr(response, name, value)
        else:
            self.get_logger().info(f"question not answered: {outcome.message}")
        return response

    def _on_goal(self, goal: AskAction.Goal) -> GoalResponse:
        """``~/ask_stream`` goals: refused at once when the question cannot be taken now or
        the queue is full (the reason is logged and counted; the protocol carries none)."""
        rejection = self._admission(goal.question, goal.max_new_tokens) or check_queue(
            self._worker.counters().waiting, self.config.max_queue
        )
        if rejection is None:
            return GoalResponse.ACCEPT
        self._worker.count_rejection(rejection)
        self.get_logger().info(f"ask_stream goal rejected: {rejection.message}")
        return GoalResponse.REJECT

    def _on_cancel(self, goal_handle: ServerGoalHandle) -> CancelResponse:
        """Cancel: a queued goal is withdrawn, a running one stops after its current token."""
        with self._goals_lock:
            future = self._goals.get(bytes(goal_handle.goal_id.uuid))
        if future is not None:
            self._worker.stop(future, "cancelled")
        self.get_logger().info("ask_stream goal cancelled")
        return CancelResponse.ACCEPT

    def _execute_goal(self, goal_handle: ServerGoalHandle) -> AskAction.Result:
        """Answer a goal with feedback every :data:`FEEDBACK_EVERY` tokens; the result has the
        service response's fields, and what was generated when it was cancelled."""
        goal = goal_handle.request

        def feedback(text: str, tokens: int) -> None:
            if tokens == 1 or tokens % FEEDBACK_EVERY == 0:
                goal_handle.publish_feedback(AskAction.Feedback(answer_so_far=text, tokens=tokens))

        key = bytes(goal_handle.goal_id.uuid)
        future = self._submit(goal.question, goal.max_new_tokens, on_text=feedback)
        with self._goals_lock:
            self._goals[key] = future
        if goal_handle.is_cancel_requested:  # cancelled before its future was known
            self._worker.stop(future, "cancelled")
        try:
            outcome = self._worker.wait(future, self.config.answer_timeout_s)
        finally:
            with self._goals_lock:
                self._goals.pop(key, None)
        result = AskAction.Result()
        answer = outcome.value if outcome.success else None
        if answer is not None:
            for name, value in answer_fields(answer).items():
                setattr(result, name, value)
            result.finish = answer.finish
            outcome = stopped(outcome, answer.finish)
        result.success = outcome.success
        result.message = outcome.message
        if outcome.reason == "cancelled" and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif outcome.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    def _reset_standing_timer(self) -> None:
        """(Re)create the standing-question timer from the current parameters."""
        if self._standing_timer is not None:
            self.destroy_timer(self._standing_timer)
            self._standing_timer = None
        if self.config.standing_question:
            self._standing_timer = self.create_timer(
                self.config.standing_period_s,
                self._ask_standing,
                callback_group=self._timer_group,
            )

    def _ask_standing(self) -> None:
        """Ask the standing question, unless the model loads or the last one still runs."""
        pending = self._standing_future
        if self._engine is None or (pending is not None and not pending.done()):
            return
        self._standing_future = future = self._submit(self.config.standing_question, 0)
        future.add_done_callback(self._log_standing_failure)

    def _log_standing_failure(self, future: Future[JobResult[Answer]]) -> None:
        outcome = future.result()
        if not outcome.success:
            self.get_logger().warning(
                f"standing question not answered: {outcome.message}", throttle_duration_sec=30.0
            )

    # ------------------------------------------------------------------ diagnostics

    def _reset_diagnostics_timer(self) -> None:
        """(Re)create the /diagnostics timer, on the steady clock, from diagnostics_period_s."""
        self.destroy_timer(self._updater.timer)
        self._updater.timer = self.create_timer(
            self.config.diagnostics_period_s,
            self._updater.update,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )

    def _diagnose(self, stat: DiagnosticStatusWrapper) -> DiagnosticStatusWrapper:
        """The diagnostic_updater task: the stats.py report as a DiagnosticStatus."""
        engine = self._engine
        info = (
            engine.describe()
            if engine is not None
            else {"model": self.config.model or "(tiny test model)", "state": "loading"}
        )
        report = self._stats.report(
            now_ns=self.get_clock().now().nanoseconds,
            max_frame_age_s=self.config.max_frame_age_s,
            model_loaded=engine is not None,
            worker=self._worker.counters(),
            newest=dict(self._newest),
            sync=self._sync.stats,
            gpu_memory_bytes=self._gpu_memory,
            info=info,
        )
        stat.summary(LEVELS[report.level], report.message)
        for key, value in report.values:
            stat.add(key, value)
        return stat

    def close(self) -> bool:
        """Stop taking questions: the queued ones are answered "shutting down" and the one
        running is stopped after its current token (or, still in a prefill after
        :data:`CLOSE_TIMEOUT_S`, answered "shutting down" anyway), so no executor thread is
        left waiting.

        Returns:
            False while a thread is still inside torch: answering, or loading the model.
        """
        answered = self._worker.close(timeout=CLOSE_TIMEOUT_S)
        if not answered:
            self.get_logger().warning(
                f"the question being answered did not finish within {CLOSE_TIMEOUT_S:g} s; "
                "its asker is told the node is shutting down, and the process ends without it"
            )
        return answered and not self._loader.is_alive()


def _interrupt(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM: leave the spin loop like Ctrl-C does, the ROS context still up."""
    raise KeyboardInterrupt


def main(args: Sequence[str] | None = None) -> int:
    """Entry point ``drive_vlm_node``: exit 0 on Ctrl-C, 1 if the model does not load or CUDA
    fails, 2 on bad params."""
    # A progress bar is noise in a node's log (launch shows it as blank lines): the rclpy logger
    # says when the model is loaded.
    disable_progress_bar()
    # rclpy's own handlers shut the ROS context down the moment Ctrl-C arrives, after which no
    # waiting caller can be told "shutting down": take the signals here, close, then shut down.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    node: DriveVLMNode | None = None
    executor: MultiThreadedExecutor | None = None
    status = 0
    try:
        try:
            node = DriveVLMNode()
        except ConfigError as exc:
            get_logger(NODE_NAME).fatal(f"invalid parameters: {exc}")
            return 2
        executor = MultiThreadedExecutor(num_threads=executor_threads(node.config.max_queue))
        executor.add_node(node)
        node.start()
        while rclpy.ok() and node.fatal is None:
            executor.spin_once(timeout_sec=0.25)
        status = 0 if node.fatal is None else 1
    except (KeyboardInterrupt, ExternalShutdownException):
        status = 0
    finally:
        # Ctrl-C in a terminal reaches the node twice (launch forwards its own SIGINT): a second
        # one must not cut this bounded shutdown short and leave callers waiting.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        idle = node is None or node.close()
        if executor is not None:
            # The answers close() gave ("shutting down", a stopped goal's result) still have to
            # go out: spin a moment so the service responses and action results are sent.
            deadline = time.monotonic() + FLUSH_S
            while rclpy.ok() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if not idle:
        # A thread is still inside torch: a model load, or a prefill (a generation stops
        # after its current token when the worker closes, so it does not get here).
        # The interpreter's normal exit would tear torch's thread pools down under it and abort
        # the process (SIGABRT, "terminate called without an active exception"): end it here.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status
