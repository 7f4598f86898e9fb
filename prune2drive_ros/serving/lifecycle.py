"""What the managed node's lifecycle state means for a question, as plain Python.

The node is a ROS 2 lifecycle (managed) node, as perception stacks run heavy nodes: configure
loads and warms up the model, activate subscribes to the cameras and serves, deactivate stops
taking frames (questions are refused with the remedy, queued ones told so), cleanup frees the
model and its GPU memory, shutdown ends the process. ``~/ask`` and ``~/ask_stream`` exist in
every state, so a question asked at the wrong time gets a reason and the command that fixes it
rather than a service that is not there. The labels are rcl's (``lifecycle_msgs/State``).
"""

from __future__ import annotations

from .worker import SHUTDOWN, Rejection

UNCONFIGURED = "unconfigured"
INACTIVE = "inactive"
ACTIVE = "active"
FINALIZED = "finalized"
CONFIGURING = "configuring"

#: States in which the node holds a loaded model.
LOADED = (INACTIVE, ACTIVE, "activating", "deactivating")


def check_state(state: str, node: str, model: str, failure: str | None = None) -> Rejection | None:
    """Why a question cannot be taken in lifecycle ``state`` (None when active).

    Args:
        state: the rcl state label (``active``, ``inactive``, ``configuring``, ...).
        node: the node's fully qualified name, for the ``ros2 lifecycle set`` remedy.
        model: the model parameter, to say what is loading.
        failure: why the last configure failed, when it did.
    """
    if state == ACTIVE:
        return None
    if state == CONFIGURING:
        return Rejection(
            "not_ready", f"model {model or '(default)'} is still loading; try again shortly"
        )
    if state == INACTIVE:
        return Rejection(
            "inactive",
            "the node is inactive: it takes no frames or questions until activated "
            f"(ros2 lifecycle set {node} activate)",
        )
    if state == UNCONFIGURED:
        why = f" (the last configure failed: {failure})" if failure else ""
        return Rejection(
            "unconfigured",
            f"the node is unconfigured: no model is loaded{why}; "
            f"ros2 lifecycle set {node} configure, then activate",
        )
    if state in (FINALIZED, "shuttingdown"):
        return Rejection("shutdown", SHUTDOWN)
    return Rejection("not_ready", f"the node is {state}; try again shortly")


def deactivated(node: str) -> Rejection:
    """What a question still queued gets when the node is deactivated."""
    return Rejection(
        "inactive",
        "the node was deactivated before this question's turn; ask again once it is active "
        f"(ros2 lifecycle set {node} activate)",
    )
