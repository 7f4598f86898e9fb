"""What each lifecycle state tells an asker, without ROS."""

from __future__ import annotations

import pytest

from prune2drive_ros.serving.lifecycle import check_state, deactivated

NODE = "/prune2drive"


def test_active_takes_questions() -> None:
    assert check_state("active", NODE, "m") is None


@pytest.mark.parametrize(
    ("state", "failure", "reason", "remedy"),
    [
        ("configuring", None, "not_ready", "model m is still loading; try again shortly"),
        ("inactive", None, "inactive", "ros2 lifecycle set /prune2drive activate"),
        ("unconfigured", None, "unconfigured", "ros2 lifecycle set /prune2drive configure"),
        ("unconfigured", "no such model", "unconfigured", "the last configure failed: no such"),
        ("finalized", None, "shutdown", "shutting down"),
        ("activating", None, "not_ready", "the node is activating; try again shortly"),
    ],
)
def test_other_states_refuse_with_the_remedy(
    state: str, failure: str | None, reason: str, remedy: str
) -> None:
    rejection = check_state(state, NODE, "m", failure)
    assert rejection is not None and rejection.reason == reason
    assert remedy in rejection.message


def test_queued_questions_are_told_the_node_was_deactivated() -> None:
    rejection = deactivated(NODE)
    assert rejection.reason == "inactive"
    assert "deactivated" in rejection.message and "activate" in rejection.message
