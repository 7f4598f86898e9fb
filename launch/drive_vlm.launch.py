"""Launch the prune2drive driving-QA node.

    ros2 launch prune2drive_ros drive_vlm.launch.py model:=<hub id or path> device:=cuda
    ros2 launch prune2drive_ros drive_vlm.launch.py use_sim_time:=true  # bag play --clock

Every parameter comes from ``params_file`` (default: the installed config/drive_vlm.yaml); the
arguments model, rates_file, device and use_compressed override it only when given, so an empty
argument never clobbers the file's value.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchContext, LaunchDescription

PACKAGE = "prune2drive_ros"

#: String arguments that override the params file when non-empty.
STRING_OVERRIDES = ("model", "rates_file", "device")


def _parse_bool(name: str, text: str) -> bool:
    """A launch argument as a bool; anything but true/false is an error naming the argument."""
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"launch argument {name} must be true or false, got {text!r}")
    return lowered == "true"


def _node(context: LaunchContext) -> list[Node]:
    """The node, with only the arguments the user gave layered over the params file."""

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides: dict[str, object] = {name: arg(name) for name in STRING_OVERRIDES if arg(name)}
    if arg("use_compressed"):
        overrides["use_compressed"] = _parse_bool("use_compressed", arg("use_compressed"))
    overrides["use_sim_time"] = _parse_bool("use_sim_time", arg("use_sim_time"))
    return [
        Node(
            package=PACKAGE,
            executable="drive_vlm_node",
            name="prune2drive",
            namespace=arg("namespace"),
            parameters=[arg("params_file"), overrides],
            output="screen",
            emulate_tty=True,
        )
    ]


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
                default_value="false",
                description="true when replaying a bag with `ros2 bag play --clock`",
            ),
            OpaqueFunction(function=_node),
        ]
    )
