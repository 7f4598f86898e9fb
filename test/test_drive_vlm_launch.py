"""Launch test: the drive_vlm_node lifecycle node with the tiny model on CPU answers over ROS 2.

Six synthetic CompressedImage JPEG cameras at ~12 Hz with per-camera offsets and jitter feed the
node; a service call to ~/ask must succeed, ~/answers and /diagnostics must carry messages
(``launch_testing_ros.WaitForTopics``), among them the standing question's answer and the
node's status; a burst of 50 calls gets one response each; the ~/ask_stream action streams
feedback and stops on cancel; the kept-token picture is published while subscribed; the
lifecycle services deactivate and activate it. Runs under ``colcon test`` on a ROS 2 machine
(launch_testing collects it); plain pytest without launch_testing skips it (``test_node.py``
runs the same node in-process with rclpy alone).
"""

from __future__ import annotations

import pytest

pytest.importorskip("launch_testing", reason="needs ROS 2's launch_testing; runs under colcon test")

import array
import os
import random
import threading
import time
import unittest
from collections.abc import Callable
from typing import Any

import launch_ros.actions
import launch_testing.actions
import launch_testing.asserts
import numpy as np
import rclpy
from action_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from launch_testing_ros import WaitForTopics
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from prune2drive_interfaces.action import Ask as AskAction
from prune2drive_interfaces.msg import DrivingAnswer
from prune2drive_interfaces.srv import Ask
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage

import launch
from prune2drive_ros.sensors.imaging import encode_jpeg
from prune2drive_ros.views import VIEWS, image_topic

STANDING_QUESTION = "What is in front of the ego vehicle?"
#: Keep the test's DDS traffic to itself: a domain of this run's own (other tests and nodes on
#: the machine use others), discovery on this machine only: ROS_AUTOMATIC_DISCOVERY_RANGE since
#: Iron, ROS_LOCALHOST_ONLY on Humble, which knows nothing else (later distributions deprecate it).
DISCOVERY = {
    "ROS_DOMAIN_ID": str(1 + os.getpid() % 100),
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    **({"ROS_LOCALHOST_ONLY": "1"} if os.environ.get("ROS_DISTRO") == "humble" else {}),
}
#: A service client that keeps every response (a burst's would otherwise overflow its reader).
KEEP_ALL = QoSProfile(history=HistoryPolicy.KEEP_ALL)
#: Loading (and on first use building) the tiny checkpoint on a busy CI runner.
READY_TIMEOUT_S = 300.0
TIMEOUT_S = 60.0


@pytest.mark.launch_test
def generate_test_description() -> tuple[launch.LaunchDescription, dict[str, Any]]:
    vlm_node = launch_ros.actions.LifecycleNode(
        package="prune2drive_ros",
        executable="drive_vlm_node",
        name="prune2drive",
        namespace="",
        parameters=[
            {
                "model": "tiny",
                "device": "cpu",
                "max_new_tokens": 4,
                "max_frame_age_s": 10.0,
                "standing_question": STANDING_QUESTION,
                "standing_period_s": 1.0,
            }
        ],
        additional_env={**DISCOVERY, "PYTHONUNBUFFERED": "1"},
        output="screen",
    )
    return (
        launch.LaunchDescription([vlm_node, launch_testing.actions.ReadyToTest()]),
        {"vlm_node": vlm_node},
    )


def _view_jpeg(index: int, width: int = 160, height: int = 90) -> bytes:
    """A small distinct JPEG per view: a horizontal ramp tinted by the view index."""
    ramp = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    tint = np.full((height, width), 40 * index, np.uint8)
    return encode_jpeg(np.dstack([ramp, ramp, tint]))


class CameraRig:
    """Publishes six JPEG views like a nuScenes rig: cameras fire ~8 ms apart, +-5 ms jitter."""

    def __init__(self, node: Any, period_s: float = 1 / 12) -> None:
        self._node = node
        self._random = random.Random(0)
        self._publishers = {
            view: node.create_publisher(CompressedImage, image_topic(view), qos_profile_sensor_data)
            for view in VIEWS
        }
        self._jpegs = {view: array.array("B", _view_jpeg(i)) for i, view in enumerate(VIEWS)}
        self._timer = node.create_timer(period_s, self._publish)

    def _publish(self) -> None:
        now_ns = self._node.get_clock().now().nanoseconds
        for i, view in enumerate(VIEWS):
            stamp_ns = now_ns + i * 8_000_000 + self._random.randint(-5_000_000, 5_000_000)
            msg = CompressedImage(format="jpeg", data=self._jpegs[view])
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            msg.header.frame_id = view
            self._publishers[view].publish(msg)


class TestDriveVLMNode(unittest.TestCase):
    """Talks to the launched node from a second ROS process (this one)."""

    @classmethod
    def setUpClass(cls) -> None:
        cls._saved_env = {key: os.environ.get(key) for key in DISCOVERY}
        os.environ.update(DISCOVERY)
        rclpy.init()
        cls.node = rclpy.create_node("prune2drive_launch_test")
        cls.rig = CameraRig(cls.node)
        cls.lock = threading.Lock()
        cls.answers: list[DrivingAnswer] = []
        cls.statuses: list[DiagnosticStatus] = []
        cls.pictures: list[CompressedImage] = []
        cls.node.create_subscription(DrivingAnswer, "/prune2drive/answers", cls._on_answer, 10)
        cls.node.create_subscription(DiagnosticArray, "/diagnostics", cls._on_diagnostics, 10)
        cls.node.create_subscription(
            CompressedImage, "/prune2drive/kept_tokens/compressed", cls._on_picture, 1
        )
        cls.executor = SingleThreadedExecutor()
        cls.executor.add_node(cls.node)
        cls.spinner = threading.Thread(target=cls.executor.spin, daemon=True)
        cls.spinner.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.executor.shutdown()
        cls.node.destroy_node()
        rclpy.try_shutdown()
        for key, value in cls._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    @classmethod
    def _on_answer(cls, msg: DrivingAnswer) -> None:
        with cls.lock:
            cls.answers.append(msg)

    @classmethod
    def _on_picture(cls, msg: CompressedImage) -> None:
        with cls.lock:
            cls.pictures.append(msg)

    @classmethod
    def _on_diagnostics(cls, msg: DiagnosticArray) -> None:
        with cls.lock:
            cls.statuses.extend(s for s in msg.status if "prune2drive" in s.name)

    def wait_until(self, condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                found = condition()
            if found:
                return found
            time.sleep(0.1)
        self.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")

    def ask(self, question: str) -> Ask.Response:
        return self.ask_many([question])[0]

    def ask_many(self, questions: list[str]) -> list[Ask.Response]:
        """All ``questions`` at once from one client (KEEP_ALL: its own side loses no
        response either), each response awaited."""
        client = self.node.create_client(Ask, "/prune2drive/ask", qos_profile=KEEP_ALL)
        try:
            self.assertTrue(client.wait_for_service(timeout_sec=TIMEOUT_S), "no ~/ask service")
            futures = [
                client.call_async(Ask.Request(question=q, max_new_tokens=4)) for q in questions
            ]
            self.wait_until(
                lambda: all(f.done() for f in futures),
                TIMEOUT_S,
                f"{len(futures)} ~/ask response(s), {sum(f.done() for f in futures)} came",
            )
            return [f.result() for f in futures]
        finally:
            self.node.destroy_client(client)

    def test_1_ready(self, proc_output: Any, vlm_node: Any) -> None:
        # rclpy logs to stderr; assertWaitFor reads stderr unless told stream="stdout".
        proc_output.assertWaitFor(
            "active: ask on", process=vlm_node, timeout=READY_TIMEOUT_S, stream="stderr"
        )

    def test_2_ask(self) -> None:
        response = self.ask("Is it safe to change to the left lane?")
        self.assertTrue(response.success, response.message)
        self.assertEqual(list(response.view_names), list(VIEWS))
        self.assertEqual(len(response.kept_tokens), len(VIEWS))
        self.assertTrue(all(k > 0 for k in response.kept_tokens))
        self.assertGreater(response.total_ms, 0.0)
        self.assertGreater(response.frames_stamp.sec, 0)
        self.assertTrue(response.random_weights, "the tiny model must say it answers nonsense")

    def test_3_bad_question_is_refused_not_fatal(self) -> None:
        response = self.ask("   ")
        self.assertFalse(response.success)
        self.assertIn("empty", response.message)
        self.assertTrue(self.ask("Is the road clear?").success, "the node keeps serving")

    def test_4_answers_and_diagnostics_are_published(self) -> None:
        # launch_testing_ros's own waiter, from a node and context of its own (Humble and Jazzy
        # both have wait() and shutdown()); the tests below read what was published.
        waiter = WaitForTopics(
            [("/prune2drive/answers", DrivingAnswer), ("/diagnostics", DiagnosticArray)],
            timeout=TIMEOUT_S,
        )
        try:
            self.assertTrue(waiter.wait(), "nothing on /prune2drive/answers and /diagnostics")
        finally:
            waiter.shutdown()

    def test_5_standing_question_is_published(self) -> None:
        answer = self.wait_until(
            lambda: [a for a in self.answers if a.question == STANDING_QUESTION],
            TIMEOUT_S,
            "a standing-question answer on /prune2drive/answers",
        )[-1]
        self.assertEqual(len(answer.kept_tokens), len(VIEWS))
        self.assertTrue(answer.random_weights)

    def test_6_diagnostics(self) -> None:
        status = self.wait_until(
            lambda: [
                s for s in self.statuses if s.level == DiagnosticStatus.OK and s.message == "ready"
            ],
            TIMEOUT_S,
            "an OK prune2drive status on /diagnostics",
        )[-1]
        values = {kv.key: kv.value for kv in status.values}
        self.assertGreater(float(values["synchronized sets/s"]), 1.0)
        self.assertGreaterEqual(int(values["questions served"]), 1)
        self.assertIn("prefill ms p50", values)
        self.assertEqual(values["lifecycle state"], "active")

    def test_7_a_burst_of_calls_gets_one_response_each(self) -> None:
        """50 calls at once: each answered or refused at once ("queue full"), none lost (the
        services' default KEEP_LAST(10) used to drop all past ten, never answered)."""
        responses = self.ask_many([f"Burst question {i}?" for i in range(50)])
        answered = [r for r in responses if r.success]
        refused = [r for r in responses if not r.success]
        self.assertEqual(len(answered) + len(refused), 50)
        self.assertGreaterEqual(len(answered), 1)
        self.assertTrue(all("queue" in r.message for r in refused), {r.message for r in refused})

    def test_8_streamed_answer_with_feedback_then_a_cancel(self) -> None:
        client = ActionClient(self.node, AskAction, "/prune2drive/ask_stream")
        try:
            self.assertTrue(client.wait_for_server(timeout_sec=TIMEOUT_S), "no ~/ask_stream")
            feedback: list[AskAction.Feedback] = []

            def on_feedback(msg: Any) -> None:
                with self.lock:
                    feedback.append(msg.feedback)

            # a whole answer: feedback every few tokens, the service response's fields
            sent = client.send_goal_async(
                AskAction.Goal(question="Is the road clear?", max_new_tokens=8),
                feedback_callback=on_feedback,
            )
            self.wait_until(sent.done, TIMEOUT_S, "the goal accepted")
            goal = sent.result()
            self.assertTrue(goal.accepted)
            done = goal.get_result_async()
            self.wait_until(done.done, TIMEOUT_S, "the result")
            outcome = done.result()
            self.assertEqual(outcome.status, GoalStatus.STATUS_SUCCEEDED)
            self.assertTrue(outcome.result.success, outcome.result.message)
            self.assertEqual(outcome.result.finish, "length")
            self.assertEqual(len(outcome.result.kept_tokens), len(VIEWS))
            self.assertEqual([f.tokens for f in feedback][:2], [1, 4])
            self.assertTrue(outcome.result.answer.startswith(feedback[-1].answer_so_far.strip()))

            # a long answer (the tiny model never stops by itself), cancelled mid-generation
            feedback.clear()
            sent = client.send_goal_async(
                AskAction.Goal(question="Describe the scene.", max_new_tokens=512),
                feedback_callback=on_feedback,
            )
            self.wait_until(sent.done, TIMEOUT_S, "the long goal accepted")
            goal = sent.result()
            self.wait_until(lambda: feedback, TIMEOUT_S, "the first feedback")
            cancel = goal.cancel_goal_async()
            self.wait_until(cancel.done, TIMEOUT_S, "the cancel response")
            done = goal.get_result_async()
            self.wait_until(done.done, TIMEOUT_S, "the cancelled result")
            outcome = done.result()
            with self.lock:
                streamed = max(f.tokens for f in feedback)
            self.assertLess(streamed, 512, "decoding stopped early, not at the length limit")
            self.assertEqual(outcome.status, GoalStatus.STATUS_CANCELED)
            self.assertFalse(outcome.result.success)
            self.assertEqual(outcome.result.finish, "cancelled")
            self.assertTrue(outcome.result.answer, "what was generated until the cancel")
        finally:
            client.destroy()

    def lifecycle(self, service: type, name: str, request: Any) -> Any:
        client = self.node.create_client(service, f"/prune2drive/{name}")
        try:
            self.assertTrue(client.wait_for_service(timeout_sec=TIMEOUT_S), f"no {name}")
            future = client.call_async(request)
            self.wait_until(future.done, TIMEOUT_S, f"the {name} response")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def rig_until_set(self) -> None:
        """Wait for the cameras (still publishing) to give the reactivated node a set."""
        deadline = time.monotonic() + TIMEOUT_S
        while "no synchronized frames" in self.ask("Ready?").message:
            self.assertLess(time.monotonic(), deadline, "no camera set after activation")
            time.sleep(0.2)

    def test_90_lifecycle_deactivate_and_activate_again(self) -> None:
        state = self.lifecycle(GetState, "get_state", GetState.Request()).current_state
        self.assertEqual(state.label, "active", "autostart configured and activated it")
        for label in ("deactivate", "activate"):
            request = ChangeState.Request(transition=Transition(label=label))
            self.assertTrue(self.lifecycle(ChangeState, "change_state", request).success, label)
            if label == "deactivate":
                refused = self.ask("Is the road clear?")
                self.assertIn("inactive", refused.message)
        self.rig_until_set()
        self.assertTrue(self.ask("Is the road clear?").success, "served again once activated")

    def test_9_kept_token_picture_while_subscribed(self) -> None:
        self.assertTrue(self.ask("What is ahead?").success)
        picture = self.wait_until(lambda: self.pictures, TIMEOUT_S, "a kept-token picture")[-1]
        self.assertEqual(picture.format, "jpeg")
        self.assertEqual(bytes(picture.data[:2]), b"\xff\xd8", "a JPEG")
        self.assertGreater(picture.header.stamp.sec, 0, "stamped with its frame set")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info: Any) -> None:
        """Ctrl-C (SIGINT from launch) is a clean exit."""
        launch_testing.asserts.assertExitCodes(proc_info)
