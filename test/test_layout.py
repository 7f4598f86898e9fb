"""README's layout rules hold in the code: its import arrows go one way, only ``node.py``
imports ROS, only ``commands/`` prints or draws progress bars.

The arrows are read from README's "Arrows go one way:" sentence, so the rule and its check
cannot drift apart: ``a -> b -> c`` means that nothing in ``c`` imports ``b`` or ``a`` and
nothing in ``b`` imports ``a``. Every import counts, those inside functions too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "prune2drive_ros"
#: Top-level modules of ROS 2 (client library, messages, launch).
ROS_MODULES = (
    "rclpy",
    "rcl_interfaces",
    "builtin_interfaces",
    "std_msgs",
    "sensor_msgs",
    "diagnostic_msgs",
    "lifecycle_msgs",
    "action_msgs",
    "prune2drive_interfaces",
    "launch",
    "launch_ros",
)


def _modules() -> dict[str, ast.Module]:
    """Each module of the package by its path relative to the package (``vlm/base.py``)."""
    return {
        path.relative_to(PACKAGE).as_posix(): ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _imports(path: str, tree: ast.Module) -> Iterator[str]:
    """Every module ``tree`` imports, absolute and dotted (``prune2drive_ros.vlm.base``)."""
    package = ["prune2drive_ros", *path.split("/")[:-1]]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def _part(module: str) -> str | None:
    """The README part a dotted module belongs to: ``vlm/``, ``engine.py``, or None."""
    parts = module.split(".")
    if parts[0] != "prune2drive_ros" or len(parts) < 2:
        return None
    return f"{parts[1]}/" if (PACKAGE / parts[1]).is_dir() else f"{parts[1]}.py"


def _arrows() -> list[list[list[str]]]:
    """README's chains: ``a -> b, c -> d`` is ``[[a], [b, c]...]`` per chain."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sentence = re.search(r"Arrows go one way: (.+?)\. Only", readme, re.S)
    assert sentence, "README lost its 'Arrows go one way:' sentence"
    chains = []
    for chain in sentence.group(1).replace("\n", " ").split(";"):
        links = [re.findall(r"`([^`]+)`", link) for link in chain.split("->")]
        chains.append(links)
    return chains


def test_readme_names_arrows_and_parts_that_exist() -> None:
    for chain in _arrows():
        assert len(chain) >= 2
        for part in (p for link in chain for p in link):
            assert (PACKAGE / part.rstrip("/")).exists(), part


@pytest.mark.parametrize("chain", _arrows(), ids=lambda chain: " -> ".join(map(",".join, chain)))
def test_imports_follow_readme_arrows(chain: list[list[str]]) -> None:
    modules = _modules()
    wrong = []
    for k, link in enumerate(chain):
        upstream = {part for earlier in chain[:k] for part in earlier}
        for path, tree in modules.items():
            here = path.split("/")[0] + ("/" if "/" in path else "")
            if here not in link:
                continue
            wrong += [
                f"{path} imports {name}" for name in _imports(path, tree) if _part(name) in upstream
            ]
    assert not wrong, "imports against README's arrows:\n" + "\n".join(sorted(set(wrong)))


def test_only_the_node_imports_ros() -> None:
    wrong = [
        f"{path} imports {name}"
        for path, tree in _modules().items()
        if path != "node.py"
        for name in _imports(path, tree)
        if name.split(".")[0] in ROS_MODULES
    ]
    assert not wrong, "\n".join(wrong)


def test_only_commands_print_or_draw_bars() -> None:
    wrong = []
    for path, tree in _modules().items():
        if path.startswith("commands/"):
            continue
        for node in ast.walk(tree):
            call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            if call and node.func.id == "print":  # type: ignore[attr-defined]
                wrong.append(f"{path}:{node.lineno} prints")
        wrong += [f"{path} imports {n}" for n in _imports(path, tree) if n.split(".")[0] == "tqdm"]
    assert not wrong, "\n".join(wrong)
