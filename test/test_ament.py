"""Static checks of the ROS packaging, runnable without ROS.

ROS cannot be installed where this package is developed, so what colcon and the node would
trip over is checked from the files: package.xml declares every ROS package the node, the
launch files and the launch tests import; setup.py installs what ament needs; the launch file
declares the documented arguments; only node.py imports ROS; the interface files have the
documented fields and the node sets no field they lack.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import runpy
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import setuptools

from prune2drive_ros.config import LAUNCH_OVERRIDES, DriveVLMConfig

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "prune2drive_ros"
NODE = REPO / PACKAGE / "node.py"
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
#: Tests that import ROS: the launch tests (colcon test), and the in-process node tests.
LAUNCH_TESTS = [
    *sorted((REPO / "test").glob("test_*_launch.py")),
    REPO / "test" / "test_node.py",
    REPO / "test" / "ros_harness.py",
]
INTERFACES = REPO / "interfaces" / "prune2drive_interfaces"

#: Python module -> the ROS package that provides it. Extend it when the node imports more.
ROS_PACKAGE_OF: dict[str, str] = {
    "rclpy": "rclpy",
    "action_msgs": "action_msgs",
    "lifecycle_msgs": "lifecycle_msgs",
    "rosgraph_msgs": "rosgraph_msgs",
    "rcl_interfaces": "rcl_interfaces",
    "builtin_interfaces": "builtin_interfaces",
    "std_msgs": "std_msgs",
    "sensor_msgs": "sensor_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "diagnostic_updater": "diagnostic_updater",
    "message_filters": "message_filters",
    "prune2drive_interfaces": "prune2drive_interfaces",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "launch_testing": "launch_testing",
    "launch_testing_ros": "launch_testing_ros",
    "ament_index_python": "ament_index_python",
    "cv_bridge": "cv_bridge",
    "rosbag2_py": "rosbag2_py",
}

LAUNCH_ARGUMENTS = {
    "model",
    "params_file",
    "rates_file",
    "namespace",
    "use_compressed",
    "device",
    "use_sim_time",
    "respawn",
    "autostart",
}

FLOATS = ["decode_ms", "encode_ms", "prune_ms", "prefill_ms", "generate_ms", "total_ms"]
ANSWER_FIELDS = [
    ("string", "answer"),
    ("builtin_interfaces/Time", "frames_stamp"),
    ("string[]", "view_names"),
    ("uint32[]", "kept_tokens"),
    *(("float32", name) for name in FLOATS),
    ("string", "model"),
    ("bool", "random_weights"),
    ("float32", "ttft_budget_ms"),
    ("float32", "ttft_predicted_ms"),
    ("float32", "ttft_ms"),
    ("bool", "budget_met"),
]
ASK_REQUEST = [("string", "question"), ("uint32", "max_new_tokens")]
ASK_RESPONSE = [("bool", "success"), ("string", "message"), *ANSWER_FIELDS]
DRIVING_ANSWER = [("std_msgs/Header", "header"), ("string", "question"), *ANSWER_FIELDS]


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path`` (function-level ones included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def ros_packages(path: Path) -> set[str]:
    """ROS packages ``path`` imports; an import that is neither ROS nor available fails."""
    packages = set()
    for module in imported_modules(path):
        if module in ROS_PACKAGE_OF:
            packages.add(ROS_PACKAGE_OF[module])
        elif module not in sys.stdlib_module_names and module != "__future__":
            assert importlib.util.find_spec(module) is not None, (
                f"{path.name} imports {module}, which is neither installed here nor in "
                "ROS_PACKAGE_OF: map it to its ROS package"
            )
    return packages


def manifest(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "package" and root.get("format") == "3", f"{path}: not package format 3"
    return root


def tags(root: ET.Element, *names: str) -> set[str]:
    return {(element.text or "").strip() for name in names for element in root.findall(name)}


def interface_fields(text: str) -> list[tuple[str, str]]:
    """(type, name) of each field of a .msg or .srv (both halves); comments dropped."""
    fields = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and line != "---":
            type_, name = line.split()[:2]
            fields.append((type_, name))
    return fields


def launch_tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) == name or getattr(node.func, "attr", None) == name)
    ]


@pytest.fixture(scope="module")
def setup_kwargs() -> dict[str, Any]:
    """The arguments setup.py passes to setuptools.setup (run with setup() patched out)."""
    captured: dict[str, Any] = {}
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(REPO)
            runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = original
    return captured


def test_package_xml_is_ament_python(setup_kwargs: dict[str, Any]) -> None:
    root = manifest(REPO / "package.xml")
    assert root.findtext("name") == setup_kwargs["name"] == PACKAGE
    assert root.findtext("version") == setup_kwargs["version"]
    assert root.findtext("export/build_type") == "ament_python"


def test_package_xml_declares_what_the_node_and_launch_files_import() -> None:
    root = manifest(REPO / "package.xml")
    exec_depends = tags(root, "exec_depend", "depend")
    for path in [NODE, *LAUNCH_FILES]:
        missing = ros_packages(path) - exec_depends
        assert not missing, f"package.xml lacks <exec_depend> for {sorted(missing)} ({path.name})"
    test_depends = exec_depends | tags(root, "test_depend")
    for path in LAUNCH_TESTS:
        missing = ros_packages(path) - test_depends
        assert not missing, f"package.xml lacks <test_depend> for {sorted(missing)} ({path.name})"


def test_only_node_imports_ros() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_modules(path) & set(ROS_PACKAGE_OF))
        for path in (REPO / PACKAGE).rglob("*.py")
        if path != NODE
    }
    assert not {k: v for k, v in offenders.items() if v}, "only node.py may import ROS"


def test_setup_installs_ament_files(setup_kwargs: dict[str, Any]) -> None:
    installed = {
        (folder, Path(src).as_posix())
        for folder, files in setup_kwargs["data_files"]
        for src in files
    }
    share = f"share/{PACKAGE}"
    assert ("share/ament_index/resource_index/packages", f"resource/{PACKAGE}") in installed
    assert (REPO / "resource" / PACKAGE).is_file()
    assert (share, "package.xml") in installed
    for path in LAUNCH_FILES:
        assert (f"{share}/launch", f"launch/{path.name}") in installed
    for path in (REPO / "config").glob("*.yaml"):
        assert (f"{share}/config", f"config/{path.name}") in installed
    scripts = setup_kwargs["entry_points"]["console_scripts"]
    assert "drive_vlm_node = prune2drive_ros.node:main" in scripts


def test_launch_file_declares_documented_arguments() -> None:
    tree = launch_tree(REPO / "launch" / "drive_vlm.launch.py")
    declared = {
        call.args[0].value
        for call in calls(tree, "DeclareLaunchArgument")
        if call.args and isinstance(call.args[0], ast.Constant)
    }
    assert declared == LAUNCH_ARGUMENTS
    (node_call,) = calls(tree, "LifecycleNode")
    keywords = {k.arg: k.value for k in node_call.keywords}
    assert ast.literal_eval(keywords["executable"]) == "drive_vlm_node"
    assert getattr(keywords["name"], "id", None) == "NODE_NAME"
    assert calls(tree, "launch_overrides"), "the launch file must check the params file"
    schema = {spec.name for spec in DriveVLMConfig.specs()}
    assert set(LAUNCH_OVERRIDES) <= LAUNCH_ARGUMENTS
    assert set(LAUNCH_OVERRIDES) - {"use_sim_time"} <= schema


def test_interfaces_package_builds_every_interface_file() -> None:
    files = sorted(
        p.relative_to(INTERFACES).as_posix()
        for p in [
            *INTERFACES.glob("msg/*.msg"),
            *INTERFACES.glob("srv/*.srv"),
            *INTERFACES.glob("action/*.action"),
        ]
    )
    assert files == ["action/Ask.action", "msg/DrivingAnswer.msg", "srv/Ask.srv"]
    cmake = (INTERFACES / "CMakeLists.txt").read_text(encoding="utf-8")
    generate = re.search(r"rosidl_generate_interfaces\((.*?)\)", cmake, re.S)
    assert generate is not None, "CMakeLists.txt must call rosidl_generate_interfaces"
    assert sorted(re.findall(r'"([^"]+\.(?:msg|srv|action))"', generate.group(1))) == files
    root = manifest(INTERFACES / "package.xml")
    assert root.findtext("name") == "prune2drive_interfaces"
    assert root.findtext("export/build_type") == "ament_cmake"
    assert "rosidl_interface_packages" in tags(root, "member_of_group")
    assert {"ament_cmake", "rosidl_default_generators"} <= tags(root, "buildtool_depend")
    assert "rosidl_default_runtime" in tags(root, "exec_depend")
    used = {
        type_.split("/")[0]
        for path in files
        for type_, _ in interface_fields((INTERFACES / path).read_text(encoding="utf-8"))
        if "/" in type_
    }
    used.add("action_msgs")  # what every action's generated types build on
    assert used <= tags(root, "depend", "build_depend"), "depend on every message package used"
    dependencies = re.search(r"DEPENDENCIES([^)]*)", generate.group(1))
    assert dependencies is not None and used <= set(dependencies.group(1).split())


def test_interface_fields_are_documented() -> None:
    request, response = (INTERFACES / "srv" / "Ask.srv").read_text(encoding="utf-8").split("---")
    assert interface_fields(request) == ASK_REQUEST
    assert interface_fields(response) == ASK_RESPONSE
    answer = (INTERFACES / "msg" / "DrivingAnswer.msg").read_text(encoding="utf-8")
    assert interface_fields(answer) == DRIVING_ANSWER
    action = (INTERFACES / "action" / "Ask.action").read_text(encoding="utf-8").split("---")
    goal, result, feedback = (interface_fields(part) for part in action)
    assert goal == ASK_REQUEST
    assert result == [*ASK_RESPONSE[:3], ("string", "finish"), *ASK_RESPONSE[3:]]
    assert feedback == [("string", "answer_so_far"), ("uint32", "tokens")]


def test_node_sets_only_existing_fields() -> None:
    """node.py cannot run here; make sure it fills no field the interfaces lack."""
    tree = ast.parse(NODE.read_text(encoding="utf-8"))
    (function,) = [
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "answer_fields"
    ]
    (returned,) = [n.value for n in ast.walk(function) if isinstance(n, ast.Return)]
    assert isinstance(returned, ast.Dict)
    shared = {ast.literal_eval(key) for key in returned.keys if key is not None}
    assert shared == {name for _, name in ANSWER_FIELDS}
    assigned: dict[str, set[str]] = {"response": set(), "msg": set(), "result": set()}
    for node in ast.walk(tree):
        for target in getattr(node, "targets", []):
            while isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute):
                target = target.value
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                assigned.get(target.value.id, set()).add(target.attr)
    assert assigned["response"] <= {name for _, name in ASK_RESPONSE}
    assert assigned["result"] <= {name for _, name in ASK_RESPONSE} | {"finish"}
    assert assigned["msg"] <= {name for _, name in DRIVING_ANSWER}
    assert assigned["response"] and assigned["msg"], "the scan found the assignments"
