"""Runs the node in-process with real rclpy, and a client node that plays cameras and asks.

Both nodes live in a ROS context of their own on a DDS domain of this process's own, discovery on
this machine only, each spun by its own executor thread: the node's executor has as many threads
as ``main()`` gives it, so a service call waiting for its answer never starves the client.
Used by ``test_node.py``; needs rclpy and the built ``prune2drive_interfaces`` (``make
install-ros``, or a sourced ROS 2 workspace under ``colcon test``).
"""

from __future__ import annotations

import array
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future as ConcurrentFuture
from contextlib import contextmanager
from typing import Any

import numpy as np
import rclpy
from action_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from prune2drive_interfaces.action import Ask as AskAction
from prune2drive_interfaces.msg import DrivingAnswer
from prune2drive_interfaces.srv import Ask
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CompressedImage

from prune2drive_ros.node import DriveVLMNode, executor_threads
from prune2drive_ros.sensors.imaging import encode_jpeg
from prune2drive_ros.views import VIEWS, image_topic

#: Waits on a busy CI runner: loading (first use: building) the tiny model, one answer.
READY_S = 300.0
WAIT_S = 60.0
SECOND = 1_000_000_000

#: A client that keeps every response (a burst's would otherwise overflow its reader).
KEEP_ALL = QoSProfile(history=HistoryPolicy.KEEP_ALL)

#: Node parameters every test starts from: the tiny random-weight model on the CPU, short answers.
BASE_PARAMETERS: dict[str, Any] = {
    "model": "tiny",
    "device": "cpu",
    "max_new_tokens": 4,
    "max_frame_age_s": 30.0,
}

#: Discovery on this machine only (Jazzy), and a DDS domain per node of this process's own.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
_domains = iter(range(100 + os.getpid() % 25 * 4, 232))


def view_jpeg(index: int, width: int = 160, height: int = 90) -> bytes:
    """A small distinct JPEG per view: a horizontal ramp tinted by the view index."""
    ramp = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    tint = np.full((height, width), 40 * index, np.uint8)
    return encode_jpeg(np.dstack([ramp, ramp, tint]))


def wait_for(condition: Callable[[], bool], timeout_s: float = WAIT_S, what: str = "") -> None:
    """Poll ``condition`` until true; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.01)


class Harness:
    """The node under test and a client node that talks to it over ROS."""

    def __init__(
        self, context: Context, node: DriveVLMNode | None, name: str = "/prune2drive"
    ) -> None:
        """``node``: the node in this process, or None when it runs in another (``name``)."""
        self.context = context
        self._node = node
        self.client = Node("prune2drive_test_client", context=context)
        self.ask_client = self.client.create_client(Ask, f"{name}/ask", qos_profile=KEEP_ALL)
        self.stream = ActionClient(self.client, AskAction, f"{name}/ask_stream")
        self.change_client = self.client.create_client(ChangeState, f"{name}/change_state")
        self.state_client = self.client.create_client(GetState, f"{name}/get_state")
        self.params_client = self.client.create_client(SetParameters, f"{name}/set_parameters")
        self.cameras = {
            view: self.client.create_publisher(
                CompressedImage, image_topic(view), qos_profile_sensor_data
            )
            for view in VIEWS
        }
        self.clock = self.client.create_publisher(ClockMsg, "/clock", 10)
        self.jpegs = {view: array.array("B", view_jpeg(i)) for i, view in enumerate(VIEWS)}
        self.answers: list[DrivingAnswer] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.client.create_subscription(DrivingAnswer, f"{name}/answers", self.answers.append, 50)
        self.client.create_subscription(
            DiagnosticArray, "/diagnostics", self.diagnostics.append, 50
        )
        self._executors: list[Any] = [SingleThreadedExecutor(context=context)]
        self._executors[0].add_node(self.client)
        if node is not None:
            threads = executor_threads(node.config.max_queue)
            self._executors.append(MultiThreadedExecutor(num_threads=threads, context=context))
            self._executors[1].add_node(node)
        self._threads = [
            threading.Thread(target=executor.spin, daemon=True) for executor in self._executors
        ]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ cameras and clock

    def publish_frame(self, stamp_ns: int | None = None, data: bytes | None = None) -> int:
        """Six JPEGs a few ms apart (a nuScenes-like rig), stamped from ``stamp_ns`` (default:
        the client's clock now); ``data`` replaces every image's bytes. Returns the stamp."""
        if stamp_ns is None:
            stamp_ns = self.client.get_clock().now().nanoseconds
        for i, view in enumerate(VIEWS):
            msg = CompressedImage(
                format="jpeg", data=self.jpegs[view] if data is None else array.array("B", data)
            )
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(
                stamp_ns + i * 8_000_000, SECOND
            )
            msg.header.frame_id = view
            self.cameras[view].publish(msg)
        return stamp_ns

    def publish_image(self, view: str, stamp_ns: int, jpeg: bytes, frame_id: str = "") -> None:
        """One camera's JPEG, as a recording holds it (``ros2 bag play`` publishes it so)."""
        msg = CompressedImage(format="jpeg", data=array.array("B", jpeg))
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, SECOND)
        msg.header.frame_id = frame_id or view
        self.cameras[view].publish(msg)

    @property
    def node(self) -> DriveVLMNode:
        assert self._node is not None, "the node runs in another process"
        return self._node

    def publish_clock(self, stamp_ns: int) -> None:
        msg = ClockMsg()
        msg.clock.sec, msg.clock.nanosec = divmod(stamp_ns, SECOND)
        self.clock.publish(msg)

    def until_frames(self, count: int = 1, period_s: float = 1 / 12) -> None:
        """Publish frames until the node has paired ``count`` more sets."""
        start = self.node._sync.stats.emitted
        deadline = time.monotonic() + WAIT_S
        while self.node._sync.stats.emitted < start + count:
            assert time.monotonic() < deadline, "the node paired no camera set"
            self.publish_frame()
            time.sleep(period_s)

    # ------------------------------------------------------------------ service, action

    def ask_async(self, question: str, max_new_tokens: int = 0) -> Any:
        assert self.ask_client.wait_for_service(WAIT_S), "~/ask not advertised"
        return self.ask_client.call_async(
            Ask.Request(question=question, max_new_tokens=max_new_tokens)
        )

    def ask(self, question: str = "Is the left lane free?", max_new_tokens: int = 0) -> Any:
        return result(self.ask_async(question, max_new_tokens), "the ~/ask response")

    def send_goal(
        self, question: str, max_new_tokens: int, feedback: list[Any] | None = None
    ) -> Any:
        """The goal handle of an ``~/ask_stream`` goal (accepted or not)."""
        assert self.stream.wait_for_server(WAIT_S), "~/ask_stream not advertised"
        future = self.stream.send_goal_async(
            AskAction.Goal(question=question, max_new_tokens=max_new_tokens),
            feedback_callback=None
            if feedback is None
            else (lambda msg: feedback.append(msg.feedback)),
        )
        return result(future, "the goal response")

    # ------------------------------------------------------------------ lifecycle, parameters

    def change_state(self, label: str) -> bool:
        assert self.change_client.wait_for_service(WAIT_S)
        request = ChangeState.Request(transition=Transition(label=label))
        return bool(result(self.change_client.call_async(request), f"{label}", READY_S).success)

    def get_state(self) -> str:
        assert self.state_client.wait_for_service(WAIT_S)
        return str(
            result(
                self.state_client.call_async(GetState.Request()), "get_state"
            ).current_state.label
        )

    def set_parameter(self, name: str, value: Any) -> Any:
        """``ros2 param set`` through the node's parameter service: the SetParametersResult."""
        assert self.params_client.wait_for_service(WAIT_S)
        request = SetParameters.Request(
            parameters=[Parameter(name, value=value).to_parameter_msg()]
        )
        return result(self.params_client.call_async(request), f"set {name}").results[0]

    def latest_status(self) -> Any:
        """The node's newest DiagnosticStatus."""
        wait_for(lambda: bool(self.diagnostics), what="/diagnostics")
        return self.diagnostics[-1].status[0]

    def latest_status_after(self, condition: Callable[[Any], bool]) -> Any:
        """The first DiagnosticStatus from now on that meets ``condition``."""
        seen = len(self.diagnostics)

        def found() -> bool:
            return any(condition(a.status[0]) for a in self.diagnostics[seen:])

        wait_for(found, what="a /diagnostics status")
        return next(a.status[0] for a in self.diagnostics[seen:] if condition(a.status[0]))

    def close(self) -> bool:
        idle = self._node is None or self._node.close()
        for executor in self._executors:
            executor.shutdown(timeout_sec=5.0)
        for thread in self._threads:
            thread.join(5.0)
        self.stream.destroy()
        self.client.destroy_node()
        if self._node is not None:
            self._node.destroy_node()
        return idle


def result(future: Any, what: str, timeout_s: float = WAIT_S) -> Any:
    """The result of an rclpy future, waited for on this thread (the executors spin elsewhere)."""
    done = ConcurrentFuture[None]()
    future.add_done_callback(lambda _: done.set_result(None))
    done.result(timeout=timeout_s)
    return future.result()


def goal_result(handle: Any, timeout_s: float = WAIT_S) -> tuple[int, Any]:
    """(status, result) of an accepted goal."""
    response = result(handle.get_result_async(), "the goal result", timeout_s)
    return response.status, response.result


CANCELED = GoalStatus.STATUS_CANCELED
ABORTED = GoalStatus.STATUS_ABORTED
SUCCEEDED = GoalStatus.STATUS_SUCCEEDED


@contextmanager
def client_of(domain_id: int) -> Iterator[Harness]:
    """A client of a node running in another process on DDS domain ``domain_id``."""
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    harness = Harness(context, None)
    try:
        yield harness
    finally:
        harness.close()
        context.try_shutdown()


def next_domain() -> int:
    """A DDS domain no other node of this test process uses."""
    return next(_domains)


@contextmanager
def running_node(ready: bool = True, **parameters: Any) -> Iterator[Harness]:
    """The node with :data:`BASE_PARAMETERS` and ``parameters`` (``ready``: wait until it is
    active and has paired a camera set), and its client; everything shut down afterwards."""
    context = Context()
    rclpy.init(context=context, domain_id=next_domain())
    overrides = [Parameter(k, value=v) for k, v in {**BASE_PARAMETERS, **parameters}.items()]
    harness = None
    try:
        node = DriveVLMNode(context=context, parameter_overrides=overrides)
        harness = Harness(context, node)
        if ready:
            wait_for(lambda: node.state == "active", READY_S, "the node to become active")
            harness.until_frames()
        yield harness
    finally:
        if harness is not None:
            harness.close()
        context.try_shutdown()
