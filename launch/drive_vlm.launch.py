"""Launch the prune2drive driving-QA lifecycle node.

    ros2 launch prune2drive_ros drive_vlm.launch.py model:=<hub id or path> device:=cuda
    ros2 launch prune2drive_ros drive_vlm.launch.py use_sim_time:=true  # bag play --clock
    ros2 launch prune2drive_ros drive_vlm.launch.py autostart:=false  # a lifecycle manager

The node configures (loads the model) and activates itself unless ``autostart:=false``, which
leaves it unconfigured for a lifecycle manager or ``ros2 lifecycle set``. Every parameter comes
from ``params_file`` (default: the installed config/drive_vlm.yaml); the arguments model,
rates_file, device, use_compressed, use_sim_time and autostart override it only when given, so
an empty argument never clobbers the file's value. The params file and the arguments
are checked before the node starts (ROS itself ignores a misspelt parameter name): a bad one
stops the launch with a message naming it.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from launch import LaunchContext, LaunchDescription
from prune2drive_ros.config import (
    LAUNCH_OVERRIDES,
    NODE_NAME,
    PACKAGE,
    launch_overrides,
    parse_bool,
)

#: Seconds before a node that exited is started again, with respawn:=true.
RESPAWN_DELAY_S = 2.0


def _node(context: LaunchContext) -> list[LifecycleNode]:
    """The node, with only the arguments the user gave layered over the params file."""

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    params_file = arg("params_file")
    overrides = launch_overrides(params_file, {name: arg(name) for name in LAUNCH_OVERRIDES})
    respawn = parse_bool("respawn", arg("respawn"))
    return [
        LifecycleNode(
            package=PACKAGE,
            executable="drive_vlm_node",
            name=NODE_NAME,
            namespace=arg("namespace"),
            parameters=[params_file, overrides],
            respawn=respawn,
            respawn_delay=RESPAWN_DELAY_S,
            output="screen",
            emulate_tty=True,
            on_exit=None if respawn else _node_exited,
        )
    ]


def _node_exited(event: ProcessExited, context: LaunchContext) -> list[Shutdown]:
    """End the launch with the node, and make a failure visible to scripts: launch ignores a
    process's exit status (``ros2 launch`` would exit 0 after the node exits 1 on a bad model
    path), but it exits 1 when an action raises, so a failed node raises here."""
    if event.returncode != 0:
        raise RuntimeError(
            f"{NODE_NAME} exited with status {event.returncode} (1: the model did not load or "
            "CUDA failed, 2: invalid parameters); its log above says why"
        )
    return [Shutdown(reason=f"{NODE_NAME} exited")]


def generate_launch_description() -> LaunchDescription:
    """Arguments, then the node built from their values."""
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "drive_vlm.yaml")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "model",
                default_value="",
                description="VLM hub id or local path; empty = the params file's model "
                "(there empty = the tiny random-weight test model, which answers nonsense)",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=default_params,
                description="ROS 2 params file with every node parameter",
            ),
            DeclareLaunchArgument(
                "rates_file",
                default_value="",
                description="per-view retention rates YAML; empty = the params file's",
            ),
            DeclareLaunchArgument(
                "namespace", default_value="", description="namespace of the node"
            ),
            DeclareLaunchArgument(
                "use_compressed",
                default_value="",
                description="true: CompressedImage topics, false: Image; empty = the params file's",
            ),
            DeclareLaunchArgument(
                "device",
                default_value="",
                description="auto | cuda | cpu; empty = the params file's",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="",
                description="true when replaying a bag with `ros2 bag play --clock`; empty = the "
                "params file's (false when it has none)",
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="",
                description="true: the node configures and activates itself; false: it waits "
                "unconfigured for a lifecycle manager; empty = the params file's (true)",
            ),
            DeclareLaunchArgument(
                "respawn",
                default_value="false",
                description="true: start the node again when it exits, e.g. with status 1 after "
                "a CUDA error that leaves the GPU unusable to the process",
            ),
            OpaqueFunction(function=_node),
        ]
    )
