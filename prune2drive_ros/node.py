"""The ROS 2 lifecycle node ``prune2drive``: six camera topics in; answers, latency and
diagnostics out.

The only module of the package that imports ROS. Everything it decides is delegated to ROS-free
modules that are tested without ROS: parameters to :mod:`.config`, frame pairing to
:mod:`.sync` (the same policy bag replay uses, so live and replayed questions see the same
frame sets), lifecycle states to :mod:`.serving.lifecycle`, admission and queueing to
:mod:`.worker`, diagnostics to :mod:`.stats`, and the answering itself to
:class:`~prune2drive_ros.engine.Engine`.

Threads: a MultiThreadedExecutor runs the camera subscriptions (one mutually exclusive group;
they only queue message objects, no decoding), the ``~/ask`` service (a reentrant group: each
call waits on its own future, so waiting never blocks the executor), the lifecycle transitions
(a group of their own: configure loads the model while the rest keeps answering, "still
loading"), and the timers. Inference runs on the worker's single thread. No call waits without
bound: each waits at most ``answer_timeout_s``, and at shutdown every waiting call is answered
within :data:`CLOSE_TIMEOUT_S`, before launch escalates to SIGTERM: a running generation is
stopped after its current token (the worker's stop hook). ``~/ask_stream`` goals run like
service calls, with feedback from the worker thread and cancel through the same hook.
"""

from __future__ import annotations

import array
import copy
import functools
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import rclpy
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
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
from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn
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
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from transformers.utils.logging import disable_progress_bar

from .config import (
    NODE_NAME,
    PACKAGE,
    DriveVLMConfig,
    ParamSpec,
    check_parameter_names,
    check_qos_overrides,
    check_question,
    is_ros_parameter,
    qos_override_names,
    resolve_rates_file,
)
from .devices import allocated_bytes, release_memory
from .engine import Answer, Engine
from .errors import ConfigError, Prune2DriveError, QuestionError
from .sensors.rates_file import load_rates
from .sensors.resizing import check_resize_mode
from .sensors.sync import ApproximateSync
from .serving.lifecycle import ACTIVE, FINALIZED, check_state, deactivated
from .serving.stats import NodeStats
from .serving.worker import (
    InferenceWorker,
    JobResult,
    Rejection,
    check_frames,
    check_queue,
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
#: the parameter services), the action server's own requests (goals, cancels, results), and
#: the lifecycle transitions.
_OTHER_GROUPS = 5

#: Seconds a cancelled goal's execution waits for rclpy to mark it CANCELING (it does so only
#: after the cancel callback returned), so that it ends CANCELED, not ABORTED.
CANCEL_STATE_S = 1.0

#: Seconds a question waits for the first camera set after activation or a clock jump, when
#: max_frame_age_s is 0 (else it waits that long).
FIRST_SET_WAIT_S = 1.0

#: Camera topics, ``~/answers`` and the picture take ``qos_overrides.<topic>.<entity>.<policy>``
#: parameters (history, depth, reliability), e.g. a reliable camera subscription.
QOS_OVERRIDES = QoSOverridingOptions.with_default_policies()

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
    timings, budget = answer.timings_ms, answer.budget
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
        "ttft_budget_ms": budget.budget_ms if budget else 0.0,
        "ttft_predicted_ms": budget.predicted_ms if budget else 0.0,
        "ttft_ms": budget.measured_ms if budget else 0.0,
        "budget_met": budget.met if budget else True,
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
    """The installed share folder (default rates file); None when not installed by colcon
    (a pip install, where no AMENT_PREFIX_PATH may be set at all)."""
    try:
        return get_package_share_directory(PACKAGE)
    except (PackageNotFoundError, OSError):
        return None


class DriveVLMNode(LifecycleNodeMixin, Node):
    """Answers driving questions about the latest synchronized set of the six cameras.

    A lifecycle (managed) node: configure loads and warms up the model, activate subscribes to
    the cameras and serves, deactivate stops taking frames, cleanup frees the model, shutdown
    ends the process (:mod:`.serving.lifecycle` says what each state answers). With the
    ``autostart`` parameter (the default) it configures and activates itself once spinning.

    Raises:
        ConfigError: a parameter or QoS override is invalid (the message names it and what it
            allows).
    """

    def __init__(self, **node_options: Any) -> None:
        """``node_options`` go to rclpy's ``Node`` (``context``, ``parameter_overrides``:
        tests run the node in-process this way)."""
        Node.__init__(self, NODE_NAME, **node_options)
        # Transitions get a group of their own: configure loads the model for minutes, and the
        # parameter services (default group) must keep answering meanwhile.
        self._lifecycle_group = MutuallyExclusiveCallbackGroup()
        LifecycleNodeMixin.__init__(self, callback_group=self._lifecycle_group)
        package_log = logging.getLogger(PACKAGE)
        package_log.setLevel(logging.INFO)
        self._log_handler = RosLogHandler(self.get_logger())
        package_log.addHandler(self._log_handler)
        self.config = self._declare_parameters()
        # ROS ignores an override nobody declares: a misspelt -p or params-file name would
        # leave its parameter on the default. rclpy keeps the overrides in a private dict.
        overrides = list(getattr(self, "_parameter_overrides", {}))
        check_parameter_names(name for name in overrides if not is_ros_parameter(name))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._share_dir = _share_dir()
        self._engine: Engine | None = None
        self._configure_failure: str | None = None  # why the last configure failed
        self._start_failure: str | None = None  # autostart failed: main() exits 1
        self._configuring = False
        self._device: str | None = None  # the model's device, kept after cleanup

        self._stats = NodeStats()
        self._worker = InferenceWorker(self.config.max_queue, log_error=self.get_logger().error)
        self._topics = self.config.resolved_image_topics()
        self._msg_type = CompressedImage if self.config.use_compressed else Image
        #: set by every new synchronized set; questions before the first one wait on it
        self._fresh_set = threading.Event()
        self._start_pairing()
        # A bag played with --clock --loop, or played again, sends the node clock back: the
        # newest set then lies in the future of the node clock; pair afresh on the new timeline.
        self._time_jumps = self.get_clock().create_jump_callback(
            JumpThreshold(
                min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=False
            ),
            post_callback=self._on_clock_jumped_back,
        )

        self._image_group = MutuallyExclusiveCallbackGroup()
        self._image_subscriptions: list[Any] = []  # while active
        self._answers = self.create_publisher(
            DrivingAnswer, "~/answers", 10, qos_overriding_options=QOS_OVERRIDES
        )
        # Drawn only while someone subscribes (rqt_image_view, Foxglove): no cost otherwise.
        self._picture = self.create_publisher(
            CompressedImage, "~/kept_tokens/compressed", 1, qos_overriding_options=QOS_OVERRIDES
        )
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        subscribed = [self.resolve_topic_name(topic) for topic in self._topics.values()]
        check_qos_overrides(
            (name for name in overrides if name.startswith("qos_overrides.")),
            qos_override_names([self._answers.topic_name, self._picture.topic_name], subscribed),
        )
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
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._standing_timer: Any = None
        self._standing_future: Future[JobResult[Answer]] | None = None
        # On the steady clock: under use_sim_time the node clock stands still until /clock
        # arrives, which is when /diagnostics is needed most.
        self._diagnostics_timer: Any = None
        self._reset_diagnostics_timer()
        self._autostart: Any = None
        if self.config.autostart:
            self._autostart = self.create_timer(
                0.0, self._start, callback_group=self._lifecycle_group
            )
        self.get_logger().info(
            f"sensor_msgs/{self._msg_type.__name__} on {', '.join(self._topics.values())}; model "
            f"{self.config.model or '(default)'}; "
            + (
                "configuring and activating (autostart)"
                if self.config.autostart
                else f"unconfigured: ros2 lifecycle set {self.get_fully_qualified_name()} "
                "configure, then activate"
            )
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
        """Apply run-time changes (read-only ones never get here) after validating them; a
        new ``rates_file`` or ``pruner`` is loaded and checked before it replaces the old."""
        names = {spec.name for spec in DriveVLMConfig.specs()}
        changes = {p.name: p.value for p in parameters if p.name in names}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            candidate = self.config.with_changes(**changes)
            pruning = (candidate.rates_file, candidate.pruner)
            rates = None
            if pruning != (self.config.rates_file, self.config.pruner):
                path = resolve_rates_file(candidate, self._share_dir)
                loaded = load_rates(path)
                rates = loaded.rates
                if self._engine is not None:
                    self._engine.set_pruning(rates, candidate.pruner, loaded.front)
            if self._engine is not None:
                self._engine.ttft_budget_ms = candidate.ttft_budget_ms
                self._engine.vlm.image_resize = check_resize_mode(candidate.image_resize)
        except Prune2DriveError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        previous, self.config = self.config, candidate
        if rates is not None:
            self.get_logger().info(
                f"pruner {candidate.pruner}, rates from {path} apply from the next question: "
                + ", ".join(f"{view}={rate:g}" for view, rate in rates.items())
            )
        standing = (candidate.standing_question, candidate.standing_period_s)
        if standing != (previous.standing_question, previous.standing_period_s):
            self._reset_standing_timer()
        if candidate.diagnostics_period_s != previous.diagnostics_period_s:
            self._reset_diagnostics_timer()
        return SetParametersResult(successful=True)

    @property
    def fatal(self) -> str | None:
        """Why the node must exit with status 1: autostart could not configure or activate it,
        or a CUDA error broke the process's CUDA context (a fresh process, e.g. launch's
        respawn, recovers); None while it serves."""
        return self._start_failure or self._worker.fatal

    @property
    def state(self) -> str:
        """The lifecycle state label (``unconfigured``, ``configuring``, ``active``, ...)."""
        return str(self._state_machine.current_state[1])

    @property
    def finalized(self) -> bool:
        """True once shut down through the lifecycle: main() then ends the process."""
        return self.state == FINALIZED

    # ------------------------------------------------------------------ lifecycle

    def _start(self) -> None:
        """Autostart: configure, then activate (the executor spins, so the node answers
        "still loading" meanwhile)."""
        self.destroy_timer(self._autostart)
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self._start_failure = f"configure failed: {self._configure_failure}"
        elif self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            self._start_failure = "activate failed (see the log above)"

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and warm up the model; on failure stay unconfigured and say why."""
        self._configure_failure = None
        self._configuring = True
        try:
            engine = Engine.from_config(self.config, share_dir=self._share_dir)
            engine.warmup()
        except Exception as exc:  # a bad model must not end the node: configure may be retried
            detail = "" if isinstance(exc, Prune2DriveError) else f"\n{traceback.format_exc()}"
            self.get_logger().error(
                f"configure failed: cannot load model {self.config.model or '(default)'}: "
                f"{exc}{detail}"
            )
            self._configure_failure = str(exc)
            return TransitionCallbackReturn.FAILURE
        finally:
            self._configuring = False
        self._engine = engine
        self._device = str(engine.vlm.device)
        facts = engine.describe()
        self.get_logger().info(
            "configured: " + ", ".join(f"{key} {value}" for key, value in facts.items())
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the cameras, serve questions, start the standing question."""
        self._image_subscriptions = [
            self.create_subscription(
                self._msg_type,
                topic,
                functools.partial(self._on_image, view),
                # a copy each: rclpy writes a topic's QoS overrides into the profile it is given
                copy.copy(qos_profile_sensor_data),
                callback_group=self._image_group,
                qos_overriding_options=QOS_OVERRIDES,
            )
            for view, topic in self._topics.items()
        ]
        self._reset_standing_timer()
        self.get_logger().info(
            f"active: ask on {self.resolve_service_name(self._service.srv_name)}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames and questions; queued questions are told so (the one being
        answered finishes)."""
        self._stop_serving()
        self.get_logger().info("inactive: no frames or questions taken until activated")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model and the memory it held (shown in /diagnostics)."""
        self._release_model()
        self.get_logger().info("unconfigured: the model is freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: stop serving and free the model; main() then ends the process."""
        self._stop_serving()
        self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: back to unconfigured, without the model."""
        self._stop_serving()
        self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def _stop_serving(self) -> None:
        """Unsubscribe, stop the standing question, tell the queued questions."""
        for subscription in self._image_subscriptions:
            self.destroy_subscription(subscription)
        self._image_subscriptions = []
        if self._standing_timer is not None:
            self.destroy_timer(self._standing_timer)
            self._standing_timer = None
        self._worker.withdraw_queued(deactivated(self.get_fully_qualified_name()))
        self._start_pairing()  # frames from before are stale once activated again

    def _release_model(self) -> None:
        """Drop the engine (a question still being answered keeps it until it ends)."""
        self._engine = None
        release_memory()

    # ------------------------------------------------------------------ cameras

    def _start_pairing(self) -> None:
        """A fresh synchronizer, and no camera heard yet."""
        self._sync = ApproximateSync(VIEWS, self.config.sync_slop_s, self.config.sync_queue_size)
        #: camera topic -> header stamp of its newest message, None before its first
        self._newest: dict[str, int | None] = dict.fromkeys(self._topics.values())
        self._fresh_set.clear()

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
            self._fresh_set.set()

    def _await_pairing(self) -> None:
        """Just after activation or a clock jump back (a looped bag) no set is paired yet: wait
        for the first one (up to ``max_frame_age_s``, or :data:`FIRST_SET_WAIT_S` when that is
        0) instead of refusing a question that comes a camera period too early."""
        if self.state == ACTIVE and self._sync.latest is None:
            self._fresh_set.wait(self.config.max_frame_age_s or FIRST_SET_WAIT_S)

    # ------------------------------------------------------------------ questions

    def _admission(self, question: str, max_new_tokens: int) -> Rejection | None:
        """Why the question cannot be taken now (state, request, frames), or None."""
        config, frames = self.config, self._sync.latest
        return (
            check_state(
                self.state, self.get_fully_qualified_name(), config.model, self._configure_failure
            )
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
        asked = time.monotonic()

        def job(stop: StopSignal) -> Answer:
            assert engine is not None and frames is not None  # admitted
            waited_ms = (time.monotonic() - asked) * 1e3  # spent of a latency budget
            return engine.answer(
                frames,
                question,
                tokens,
                stop=stop,
                on_text=on_text,
                picture=picture,
                waited_ms=waited_ms,
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
        self._stats.record_answer(
            answer.timings_ms,
            answer.kept_tokens,
            None if answer.budget is None else answer.budget.met,
        )
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
        self._await_pairing()
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
        self._await_pairing()
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
        result.finish = outcome.reason if answer is None else answer.finish
        if answer is not None:
            for name, value in answer_fields(answer).items():
                setattr(result, name, value)
            outcome = stopped(outcome, answer.finish)
        result.success = outcome.success
        result.message = outcome.message
        if outcome.reason == "cancelled" and _cancel_accepted(goal_handle):
            goal_handle.canceled()
        elif outcome.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    def _reset_standing_timer(self) -> None:
        """(Re)create the standing-question timer from the current parameters (when active)."""
        if self._standing_timer is not None:
            self.destroy_timer(self._standing_timer)
            self._standing_timer = None
        if self.config.standing_question and self._image_subscriptions:
            self._standing_timer = self.create_timer(
                self.config.standing_period_s,
                self._ask_standing,
                callback_group=self._timer_group,
            )

    def _ask_standing(self) -> None:
        """Ask the standing question, unless the last one still runs."""
        pending = self._standing_future
        if pending is not None and not pending.done():
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
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
        self._diagnostics_timer = self.create_timer(
            self.config.diagnostics_period_s,
            self._publish_diagnostics,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )

    def _publish_diagnostics(self) -> None:
        """One ``DiagnosticStatus`` on /diagnostics: the :mod:`.serving.stats` report."""
        engine = self._engine
        info = engine.describe() if engine is not None else {"model": self.config.model}
        device = self._device
        report = self._stats.report(
            now_ns=self.get_clock().now().nanoseconds,
            max_frame_age_s=self.config.max_frame_age_s,
            state=self.state,
            failure=self._configure_failure,
            worker=self._worker.counters(),
            newest=dict(self._newest),
            sync=self._sync.stats,
            gpu_memory_bytes=None if device is None else functools.partial(allocated_bytes, device),
            info=info,
        )
        status = DiagnosticStatus(
            level=LEVELS[report.level],
            name=f"{self.get_name()}: driving QA",
            message=report.message,
            hardware_id=device or "none",
            values=[KeyValue(key=key, value=value) for key, value in report.values],
        )
        diagnostics = DiagnosticArray(status=[status])
        diagnostics.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(diagnostics)

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
        return answered and not self._configuring

    def destroy_node(self) -> None:
        """Also stop forwarding the package's logging to this node's logger."""
        logging.getLogger(PACKAGE).removeHandler(self._log_handler)
        super().destroy_node()


def _cancel_accepted(goal_handle: ServerGoalHandle) -> bool:
    """Whether the goal is in CANCELING: rclpy moves it there only after the cancel callback
    returned, and the withdrawn job ends at once, so wait a moment for that state change."""
    deadline = time.monotonic() + CANCEL_STATE_S
    while not goal_handle.is_cancel_requested and time.monotonic() < deadline:
        time.sleep(0.005)
    return bool(goal_handle.is_cancel_requested)


def _interrupt(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM: leave the spin loop like Ctrl-C does, the ROS context still up."""
    raise KeyboardInterrupt


def main(args: list[str] | None = None) -> int:
    """Entry point ``drive_vlm_node``: exit 0 on Ctrl-C or a lifecycle shutdown, 1 if autostart
    could not load the model or CUDA fails, 2 on bad params."""
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
        while rclpy.ok() and node.fatal is None and not node.finalized:
            executor.spin_once(timeout_sec=0.25)
        if node.fatal is not None:
            get_logger(NODE_NAME).fatal(node.fatal)
            status = 1
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
            executor.shutdown(timeout_sec=0.0)
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
