"""``--help`` and every mistake that needs no model answer without importing torch.

Each case runs the command in a fresh interpreter (this one has torch loaded already) and
checks ``sys.modules`` afterwards, not the clock: torch and transformers are what make a
command take seconds to start, and a test that times it would be as noisy as the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from prune2drive_ros.commands.cli import COMMANDS

#: Modules that cost seconds to import, and that a command needs only to run a model.
HEAVY = ("torch", "transformers", "matplotlib")


def _commands() -> list[list[str]]:
    return [
        [name, *([job] if job else [])]
        for name, target in COMMANDS.items()
        for job in (target if isinstance(target, dict) else [None])
    ]


def _run_light(argv: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``prune2drive argv`` in a fresh interpreter; fails the test if a heavy module loaded."""
    code = (
        "import json, sys\n"
        "from prune2drive_ros.commands.cli import main\n"
        "try:\n"
        f"    status = main({list(argv)!r})\n"
        "except SystemExit as exc:\n"
        "    status = exc.code\n"
        f"heavy = sorted(set({HEAVY!r}) & set(sys.modules))\n"
        "print(json.dumps({'status': status, 'heavy': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["heavy"] == [], f"{' '.join(argv)} imported {record['heavy']}"
    done.returncode = record["status"]
    return done


@pytest.mark.parametrize("argv", [[], *_commands()], ids=lambda argv: " ".join(argv) or "top")
def test_help_imports_no_model_library(argv: list[str]) -> None:
    done = _run_light([*argv, "--help"])
    assert done.returncode == 0
    assert "usage: prune2drive" in done.stdout
    assert ":func:" not in done.stdout and ":class:" not in done.stdout and "``" not in done.stdout


def _mistakes(tmp: Path) -> list[tuple[list[str], str]]:
    """(argv, what the one-line error says) for a model-free mistake of each command."""
    questions = tmp / "questions.jsonl"
    questions.write_text('{"stamp": 1, "question": "How many cars?"}\n')
    existing = tmp / "answers.jsonl"
    existing.write_text("{}\n")
    return [
        (["replay", "missing-bag", "--questions", str(tmp / "none.jsonl")], "none.jsonl"),
        (
            ["replay", "bag", "--questions", str(questions), "--out", str(existing)],
            "--force",
        ),
        (["replay", "bag", "--questions", str(questions), "--pruner", "tfp"], "tfp"),
        (["viz", "missing-bag", "--out", str(tmp / "x.jpg")], ".png"),
        (["tune", "--bag", "b", "--questions", str(questions), "--budget", "0.5"], "--budget"),
        (
            [
                "tune",
                "--bag",
                "b",
                "--questions",
                str(questions),
                "--sampler",
                "cmaes",
                "--multi-objective",
            ],
            "CMA-ES",
        ),
        (
            ["eval", "--bag", "b", "--questions", str(questions), "--save-predictions", "o.json"],
            "--drivelm",
        ),
        (["eval", "--bag", "b", "--questions", str(questions), "--placements", "layer:x"], "layer"),
        (["convert", str(tmp / "missing"), str(tmp / "out")], "missing"),
        (["train", "--out", str(tmp)], "exists already"),
        (["demo", "--rate", "2"], "rate"),
        (["bench", "gpu", "--out", str(tmp / "no" / "x.json")], "does not exist"),
        (["bench", "objects", "--model", str(tmp)], "no scene model folder"),
        (["bench", "objects", "--variant", "paper"], "prune2drive train --variant paper"),
        (["bench", "prefill", "--placement", "layer:x"], "layer"),
        (["bench", "tfps", "--retention", "2"], "retention"),
    ]


def test_mistakes_are_refused_without_importing_a_model_library(tmp_path: Path) -> None:
    for argv, says in _mistakes(tmp_path):
        done = _run_light(argv, cwd=tmp_path)
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert says in done.stderr, (argv, done.stderr)
        assert "Traceback" not in done.stderr
