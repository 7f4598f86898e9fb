"""The node in-process over real rclpy (PyPI wheels in CI, a ROS 2 install under colcon test):
service, burst, action, lifecycle, parameters, QoS overrides, stale and bad frames, clock jumps,
shutdown. A client node in the same process plays the cameras and asks, as ``ros2`` would."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="needs rclpy: make install-ros (ROS 2 wheels) or ROS 2")
pytest.importorskip(
    "prune2drive_interfaces", reason="needs prune2drive_interfaces: make install-ros or colcon"
)

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticStatus
from ros_harness import (
    ABORTED,
    BASE_PARAMETERS,
    CANCELED,
    READY_S,
    SECOND,
    SUCCEEDED,
    WAIT_S,
    client_of,
    goal_result,
    next_domain,
    result,
    running_node,
    wait_for,
)

from prune2drive_ros.errors import ConfigError
from prune2drive_ros.views import VIEWS

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR

#: The node's entry point where no console script is installed (a colcon build puts it in lib/).
RUN_MAIN = "import sys; from prune2drive_ros.node import main; sys.exit(main())"


def test_ask_answers_and_publishes_the_answer_and_diagnostics() -> None:
    with running_node() as ros:
        response = ros.ask("What is in front of the ego vehicle?")
        assert response.success, response.message
        assert list(response.view_names) == list(VIEWS)
        assert list(response.kept_tokens) == [73] * len(VIEWS)  # tiny model: 10 % of 729
        assert response.random_weights and response.total_ms > 0
        wait_for(lambda: bool(ros.answers), what="~/answers")
        assert ros.answers[-1].question == "What is in front of the ego vehicle?"
        status = ros.latest_status_after(  # one sent while it configured may still be the last
            lambda s: any(kv.value == "active" for kv in s.values)
        )
        values = {kv.key: kv.value for kv in status.values}
        assert values["lifecycle state"] == "active"
        assert status.name == "prune2drive: driving QA"


def test_a_latency_budget_is_kept_reported_and_counted_in_diagnostics() -> None:
    with running_node(ttft_budget_ms=60000.0) as ros:
        response = ros.ask("What is in front of the ego vehicle?")
        assert response.success, response.message
        assert response.ttft_budget_ms == 60000.0 and response.budget_met
        assert response.ttft_predicted_ms > 0 and 0 < response.ttft_ms < 60000.0
        wait_for(lambda: bool(ros.answers), what="~/answers")
        assert ros.answers[-1].ttft_budget_ms == 60000.0
        status = ros.latest_status_after(
            lambda s: any(kv.key.startswith("latency budget met") for kv in s.values)
        )
        values = {kv.key: kv.value for kv in status.values}
        assert values["ttft_budget_ms"] == "60000"
        assert values["latency budget met, last 60 s"].endswith("of 1")
        assert "ttft_fit_ms" in values
        assert ros.set_parameter("ttft_budget_ms", 0.0).successful
        assert ros.ask("Is the left lane free?").ttft_budget_ms == 0.0


def test_a_quantised_model_answers_and_diagnostics_name_its_scheme() -> None:
    with running_node(quantization="int8") as ros:
        response = ros.ask("What is in front of the ego vehicle?")
        assert response.success, response.message
        status = ros.latest_status_after(lambda s: any(kv.key == "quantization" for kv in s.values))
        values = {kv.key: kv.value for kv in status.values}
        assert values["quantization"].startswith("int8 (torchao ")
        assert float(values["language_model_weights_mb"]) > 0


def test_a_burst_of_50_calls_each_gets_one_response() -> None:
    with running_node(max_queue=4) as ros:
        futures = [ros.ask_async(f"Question {i}?") for i in range(50)]
        responses = [result(future, f"response {i}") for i, future in enumerate(futures)]
        answered = [r for r in responses if r.success]
        refused = [r for r in responses if not r.success]
        assert answered, "the first questions are answered"
        assert all(r.message.startswith("queue full") for r in refused), {
            r.message for r in refused
        }
        assert len(answered) + len(refused) == 50, "none lost"


def test_the_action_streams_feedback_and_a_cancel_stops_it_within_a_token() -> None:
    with running_node() as ros:
        feedback: list = []
        handle = ros.send_goal("Describe the scene.", 512, feedback)
        assert handle.accepted
        wait_for(lambda: bool(feedback), what="feedback")
        result(handle.cancel_goal_async(), "the cancel response")
        status, outcome = goal_result(handle)
        assert status == CANCELED and outcome.finish == "cancelled"
        assert outcome.message == "cancelled by the caller"
        assert feedback[-1].tokens < 512, "decoding stopped early"


def test_a_second_goal_waits_and_a_cancelled_queued_goal_ends_canceled() -> None:
    with running_node() as ros:
        feedback: list = []
        first = ros.send_goal("Describe the scene.", 4096, feedback)
        wait_for(lambda: bool(feedback), what="the first goal generating")
        second = ros.send_goal("And behind?", 2)
        third = ros.send_goal("And left?", 2)
        assert first.accepted and second.accepted and third.accepted, "queued, not refused"
        wait_for(lambda: ros.node._worker.counters().waiting == 2, what="two goals queued")
        result(third.cancel_goal_async(), "the cancel response")
        status, outcome = goal_result(third)
        assert (status, outcome.finish, outcome.success) == (CANCELED, "cancelled", False)
        assert outcome.message == "cancelled by the caller"
        result(first.cancel_goal_async(), "the cancel response")
        assert goal_result(first)[0] == CANCELED
        status, outcome = goal_result(second)
        assert status == SUCCEEDED and outcome.finish in ("stop", "length")


def test_stale_frames_are_refused_with_the_reason() -> None:
    with running_node(max_frame_age_s=0.3) as ros:
        wait_for(lambda: not ros.ask().success, what="the frames to go stale")
        response = ros.ask()
        assert "max_frame_age_s=0.3" in response.message, response.message
        ros.until_frames()
        assert ros.ask().success


def test_a_bad_image_fails_its_question_and_the_node_serves_on() -> None:
    with running_node() as ros:
        ros.publish_frame(data=b"not a jpeg")
        wait_for(
            lambda: ros.node._sync.latest.messages["CAM_FRONT"].data.tobytes() == b"not a jpeg"
        )
        response = ros.ask()
        assert not response.success
        assert "/CAM_FRONT/image_rect_compressed" in response.message, response.message
        ros.until_frames()
        assert ros.ask().success, "the next good frame set is answered"
        wait_for(lambda: "failed DecodeError" in {kv.key for kv in ros.latest_status().values})


def test_lifecycle_transitions_through_the_standard_services(tmp_path: Path) -> None:
    with running_node(ready=False, autostart=False) as ros:
        assert ros.get_state() == "unconfigured"
        refused = ros.ask()
        assert (
            not refused.success and "ros2 lifecycle set /prune2drive configure" in refused.message
        )
        assert ros.change_state("configure") and ros.get_state() == "inactive"
        refused = ros.ask()
        assert "ros2 lifecycle set /prune2drive activate" in refused.message, refused.message
        assert ros.latest_status_after(lambda s: s.message.startswith("inactive")).level == OK
        assert ros.change_state("activate") and ros.get_state() == "active"
        ros.until_frames()
        assert ros.ask().success

        running = ros.send_goal("Describe the scene.", 512)
        queued = ros.ask_async("Still there?")
        wait_for(lambda: ros.node._worker.counters().waiting == 1, what="a queued question")
        assert ros.change_state("deactivate") and ros.get_state() == "inactive"
        told = result(queued, "the queued question's answer")
        assert not told.success and "deactivated" in told.message, told.message
        assert goal_result(running)[0] == SUCCEEDED, "the answer under way finishes"
        assert not ros.node._image_subscriptions, "no frames taken while inactive"

        assert ros.change_state("cleanup") and ros.get_state() == "unconfigured"
        assert ros.node._engine is None
        status = ros.latest_status_after(lambda s: s.message.startswith("unconfigured"))
        assert status.level == WARN
        assert ros.change_state("shutdown") and ros.get_state() == "finalized"
        assert ros.node.finalized


def test_a_failed_configure_stays_unconfigured_with_the_reason() -> None:
    with running_node(ready=False, autostart=False, model="/nonexistent/model") as ros:
        assert not ros.change_state("configure")
        assert ros.get_state() == "unconfigured"
        refused = ros.ask()
        assert (
            "the last configure failed" in refused.message
            and "/nonexistent/model" in refused.message
        )
        status = ros.latest_status_after(lambda s: "configure failed" in s.message)
        assert status.level == ERROR
        assert ros.node.fatal is None, "without autostart the node waits for a new configure"


def test_autostart_that_cannot_load_the_model_is_fatal() -> None:
    with running_node(ready=False, model="/nonexistent/model") as ros:
        wait_for(lambda: ros.node.fatal is not None, what="the autostart failure")
        assert "configure failed" in ros.node.fatal and "/nonexistent/model" in ros.node.fatal


def test_rates_file_pruner_and_image_resize_change_live_and_a_bad_value_is_refused(
    tmp_path: Path,
) -> None:
    rates = tmp_path / "tuned.yaml"
    rates.write_text(
        "rates:\n"
        + "".join(f"  {view}: {0.2 if view == 'CAM_FRONT' else 0.05}\n" for view in VIEWS)
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("rates:\n  CAM_FRONT: 1.5\n")
    with running_node() as ros:
        applied = ros.set_parameter("rates_file", str(rates))
        assert applied.successful, applied.reason
        kept = ros.ask().kept_tokens
        assert list(kept) == [146, 36, 36, 36, 36, 36], list(kept)
        refused = ros.set_parameter("rates_file", str(bad))
        assert not refused.successful and str(bad) in refused.reason, refused.reason
        missing = ros.set_parameter("rates_file", str(tmp_path / "missing.yaml"))
        assert not missing.successful and "not found" in missing.reason
        assert list(ros.ask().kept_tokens) == [146, 36, 36, 36, 36, 36], "the old rates kept"
        assert ros.node.config.rates_file == str(rates)
        assert ros.set_parameter("pruner", "random").successful
        assert ros.node._engine.pruner == "random"
        refused = ros.set_parameter("pruner", "fastv")
        assert not refused.successful and "placement layer:K" in refused.reason, refused.reason
        assert ros.node._engine.pruner == "random"
        assert ros.node._engine.vlm.image_resize == "exact"
        assert ros.set_parameter("image_resize", "fast").successful
        assert ros.node._engine.vlm.image_resize == "fast" and ros.ask().success
        refused = ros.set_parameter("image_resize", "cubic")
        assert not refused.successful and "image_resize" in refused.reason, refused.reason


def test_unknown_parameters_and_qos_overrides_are_refused_at_start() -> None:
    misspelt = pytest.raises(ConfigError, match=r"max_qeue \(did you mean max_queue\?\)")
    with misspelt, running_node(ready=False, max_qeue=3):
        pass
    typo = "qos_overrides./CAM_FRONT/image_rect_compresed.subscription.reliability"
    unknown = pytest.raises(ConfigError, match=r"did you mean [^ ]*image_rect_compressed\.sub")
    with unknown, running_node(ready=False, **{typo: "reliable"}):
        pass


def test_qos_overrides_apply_to_the_camera_subscriptions() -> None:
    name = "qos_overrides./CAM_FRONT/image_rect_compressed.subscription.depth"
    with running_node(**{name: 2}) as ros:
        front, left = ros.node._image_subscriptions[:2]
        assert front.topic_name == "/CAM_FRONT/image_rect_compressed"
        assert (front.qos_profile.depth, left.qos_profile.depth) == (2, 5), "only the one named"
        assert ros.node.get_parameter(name).value == 2


def test_after_a_clock_jump_back_a_question_waits_for_the_new_timeline() -> None:
    with running_node(ready=False, use_sim_time=True, max_frame_age_s=5.0) as ros:
        t0 = 1000 * SECOND
        ros.publish_clock(t0)
        wait_for(lambda: ros.node.state == "active", READY_S, "active")
        wait_for(lambda: ros.node.get_clock().now().nanoseconds == t0, what="sim time")
        for k in range(3):
            ros.publish_frame(t0 + k * SECOND // 12)
        wait_for(lambda: ros.node._sync.latest is not None, what="a frame set")
        assert ros.ask().success
        ros.publish_clock(t0 - 60 * SECOND)  # the bag looped
        wait_for(lambda: ros.node._sync.latest is None, what="pairing afresh")
        pending = ros.ask_async("Asked in the gap?")
        time.sleep(0.2)
        ros.publish_frame(t0 - 60 * SECOND)
        response = result(pending, "the answer")
        assert response.success, response.message
        assert response.frames_stamp.sec == 940, "about the new timeline's first set"


def test_shutdown_while_answering_answers_everyone_and_stops_the_generation() -> None:
    with running_node(max_queue=3) as ros:
        feedback: list = []
        running = ros.send_goal("Describe the scene.", 4096, feedback)
        wait_for(lambda: bool(feedback), what="generation under way")
        queued = [ros.ask_async(f"Queued {i}?") for i in range(3)]
        wait_for(lambda: ros.node._worker.counters().waiting == 3, what="three queued")
        begin = time.monotonic()
        assert ros.node.close(), "the generation stopped: no thread left inside torch"
        closed_s = time.monotonic() - begin
        status, outcome = goal_result(running)
        assert (status, outcome.finish) == (ABORTED, "shutdown"), outcome.message
        for future in queued:
            assert result(future, "a queued answer").message == "the node is shutting down"
        print(f"close() with a generation and 3 queued questions: {closed_s * 1e3:.0f} ms")


def node_process(domain_id: int, *arguments: str) -> subprocess.Popen[str]:
    """``drive_vlm_node`` as ``ros2 run`` starts it, on DDS domain ``domain_id``."""
    script = Path(sys.executable).with_name("drive_vlm_node")
    command = [str(script)] if script.exists() else [sys.executable, "-c", RUN_MAIN]
    parameters = [
        f"{k}:={v}" for k, v in {**BASE_PARAMETERS, **dict(a.split("=") for a in arguments)}.items()
    ]
    return subprocess.Popen(
        [*command, "--ros-args", *(p for parameter in parameters for p in ("-p", parameter))],
        env={**os.environ, "ROS_DOMAIN_ID": str(domain_id), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arguments", "status", "says"),
    [
        (("max_qeue=3",), 2, "max_qeue (did you mean max_queue?)"),
        (
            ("model=/nonexistent/model",),
            1,
            "configure failed: checkpoint folder /nonexistent/model",
        ),
    ],
)
def test_the_process_exits_with_the_documented_status(
    arguments: tuple[str, ...], status: int, says: str
) -> None:
    process = node_process(next_domain(), *arguments)
    output, _ = process.communicate(timeout=READY_S)
    assert process.returncode == status, output
    assert says in output


@pytest.mark.slow
def test_sigint_while_generating_answers_everyone_and_exits_0() -> None:
    domain = next_domain()
    process = node_process(domain)
    try:
        with client_of(domain) as ros:
            feedback: list = []
            deadline = time.monotonic() + READY_S
            handle = None
            while handle is None or not handle.accepted:  # refused until active with frames
                assert time.monotonic() < deadline and process.poll() is None, "never ready"
                for _ in range(3):
                    ros.publish_frame()
                    time.sleep(1 / 12)
                handle = ros.send_goal("Describe the scene.", 4096, feedback)
            wait_for(lambda: bool(feedback), what="generation under way")
            burst = [ros.ask_async(f"Burst {i}?") for i in range(8)]  # 4 queued, 4 refused
            time.sleep(0.5)
            begin = time.monotonic()
            process.send_signal(signal.SIGINT)
            status, outcome = goal_result(handle)
            assert (status, outcome.finish) == (ABORTED, "shutdown"), outcome.message
            messages = {result(future, "a burst answer").message for future in burst}
            assert messages <= {"the node is shutting down"} | {
                m for m in messages if m.startswith("queue full")
            }, messages
            assert process.wait(timeout=WAIT_S) == 0
            print(
                "SIGINT to exit with a generation under way and a burst of 8 asks: "
                f"{time.monotonic() - begin:.2f} s"
            )
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_a_converted_nuscenes_bag_drives_the_node(tmp_path: Path) -> None:
    """What ``ros2 bag play`` publishes from a nuscenes2bag bag, up to a key frame: the node
    answers about exactly that key frame's six images."""
    pytest.importorskip("nuscenes", reason="needs nuscenes-devkit: make install")
    from nuscenes_fixture import write_nuscenes

    from prune2drive_ros.sensors.bag import open_camera_bag
    from prune2drive_ros.sensors.nuscenes import convert_nuscenes, keyframe_index_path

    dataset = write_nuscenes(tmp_path / "nuscenes")
    scene = dataset.scenes[0].name
    convert_nuscenes(dataset.root, tmp_path / "bags", scenes=[scene])
    bag_path = tmp_path / "bags" / scene
    key_frame = next(
        iter(json.loads(keyframe_index_path(bag_path).read_text())["samples"].values())
    )
    with running_node(ready=False, max_frame_age_s=0.0) as ros, open_camera_bag(bag_path) as bag:
        wait_for(lambda: ros.node.state == "active", READY_S, "active")
        for message in bag.messages():
            if message.stamp_ns <= key_frame["frame_stamp_ns"]:
                ros.publish_image(message.view, message.stamp_ns, bytes(message.msg.data))
                time.sleep(0.005)
        wait_for(
            lambda: (
                ros.node._sync.latest is not None
                and ros.node._sync.latest.stamp_ns == key_frame["frame_stamp_ns"]
            ),
            what="the key frame paired",
        )
        response = ros.ask("What is in front of the ego vehicle?")
        assert response.success, response.message
        stamp = response.frames_stamp.sec * SECOND + response.frames_stamp.nanosec
        assert stamp == key_frame["frame_stamp_ns"]
        latest = ros.node._sync.latest
        for view in VIEWS:
            jpeg = (dataset.root / key_frame["files"][view]).read_bytes()
            assert bytes(latest.messages[view].data) == jpeg, view
