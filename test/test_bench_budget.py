"""``prune2drive bench budget`` runs end to end and reports what it promises (its figures are
the machine's, so only their shape is checked here)."""

from __future__ import annotations

import json

import pytest

from prune2drive_ros.commands.cli import main
from prune2drive_ros.vlm.tiny import cached_tiny


@pytest.mark.slow
def test_bench_budget_compares_the_budget_with_fixed_rates_under_both_loads(capsys) -> None:
    argv = ["bench", "budget", "--model", str(cached_tiny("llava_onevision"))]
    assert main([*argv, "--questions", "2", "--budgets", "80", "--max-new-tokens", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["benchmark"] == "budget" and result["random_weights"]
    rows = {(r["method"], r["load"]): r for r in result["rows"]}
    assert set(rows) == {(m, load) for m in ("budget", "fixed") for load in ("idle", "neighbour")}
    for row in rows.values():
        assert 0.0 <= row["hit_rate"] <= 1.0 and row["questions"] == 2
        assert 0 < row["mean_tokens"] <= result["full_tokens"]
    assert "ttft_fit_ms" in result["cost_model"]


def test_bench_budget_never_trains_a_model(tmp_path, capsys) -> None:
    assert main(["bench", "budget", "--model", str(tmp_path / "none")]) == 2
    assert "no folder" in capsys.readouterr().err
