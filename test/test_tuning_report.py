"""The tuning report's plots and tables, on studies made up of hand-written trials."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.samplers import RandomSampler
from optuna.storages import InMemoryStorage
from optuna.trial import create_trial
from safetensors.torch import save_file

import prune2drive_ros.tuning.plots as plots_module
import prune2drive_ros.tuning.report as report_module
from prune2drive_ros.files import write_atomically, write_text_atomically
from prune2drive_ros.sensors.rates_file import save_rates
from prune2drive_ros.tuning.objective import Evaluation
from prune2drive_ros.tuning.plots import history_figure, rates_figure, trade_off_figure
from prune2drive_ros.tuning.report import (
    ReportContext,
    report_text,
    write_pareto_front,
    write_report,
)
from prune2drive_ros.tuning.study import choose_trial, completed_trials, open_study
from prune2drive_ros.views import VIEWS

POINTS = [(0.1, 0.1), (0.5, 0.2), (0.55, 0.6), (0.6, 1.0), (0.4, 0.5), (0.5, 0.3)]


def _context(multi: bool, points: list[tuple[float, float]] = POINTS) -> ReportContext:
    settings = {"reward": "fidelity", "lambda": None if multi else 0.18, "multi_objective": multi}
    study = open_study(InMemoryStorage(), "s", settings, lambda n: RandomSampler(seed=n))
    for i, (reward, tokens) in enumerate(points):
        objective = reward - 0.18 * tokens
        study.add_trial(
            create_trial(
                params={view: 0.1 + 0.1 * i for view in VIEWS},
                distributions=dict.fromkeys(VIEWS, FloatDistribution(0.05, 1.0)),
                values=[reward, tokens] if multi else [objective],
                user_attrs=Evaluation(
                    {view: 0.1 + 0.1 * i for view in VIEWS},
                    (round(729 * tokens),) * len(VIEWS),
                    reward,
                    tokens,
                    objective,
                    {"fidelity": reward},
                    6,
                    0,
                ).user_attrs(),
            )
        )
    unpruned = Evaluation(
        dict.fromkeys(VIEWS, 1.0), (729,) * 6, 1.0, 1.0, 0.82, {"fidelity": 1.0}, 6, 0
    )
    return ReportContext(
        study=study,
        choice=choose_trial(study, multi_objective=multi),
        reward="fidelity",
        reward_reason="asked for",
        lam=None if multi else 0.18,
        storage="sqlite:///x.db",
        model="m",
        random_weights=True,
        view_tokens=(729,) * 6,
        data="6 questions",
        unpruned=unpruned,
        encoder_calls=0,
        rates_file=Path("retention_rates.yaml"),
        command=["prune2drive", "tune"],
    )


@pytest.mark.parametrize("multi", [False, True])
def test_plots_have_whole_trial_numbers_and_legends_off_the_points(multi, tmp_path):
    context = _context(multi, POINTS[:2])  # two trials: matplotlib alone would tick 0.2, 0.4
    trials = completed_trials(context.study)
    history = history_figure(trials, context)
    assert len(history.axes) == (2 if multi else 1)  # with two objectives: R and P per trial
    ticks = history.axes[-1].get_xticks()
    assert len(ticks) > 1 and all(tick == int(tick) for tick in ticks)
    for figure in (history, rates_figure(trials, context), trade_off_figure(trials, context)):
        assert all(axes.get_legend() is None for axes in figure.axes)  # below, not on the axes
        assert len(figure.legends) == 1
    for path in write_report(tmp_path, context)[1:]:
        assert path.read_bytes().startswith(b"\x89PNG")


def test_the_pareto_front_is_drawn_as_a_staircase():
    context = _context(multi=True)
    axes = trade_off_figure(completed_trials(context.study), context).axes[0]
    (front,) = [line for line in axes.get_lines() if line.get_label() == "Pareto front"]
    assert front.get_drawstyle() == "steps-post"
    # (tokens, score) of the front, fewest tokens first: (0.4, 0.5) and (0.5, 0.3) are beaten.
    assert list(zip(front.get_xdata(), front.get_ydata(), strict=True)) == [
        (0.1, 0.1),
        (0.2, 0.5),
        (0.6, 0.55),
        (1.0, 0.6),
    ]


def test_two_objectives_show_no_lambda_objective():
    text = report_text(completed_trials(_context(multi=True).study), _context(multi=True))
    assert "objective =" not in text and "| objective |" not in text
    assert "| trial | R | P |" in text
    single = _context(multi=False)
    assert "| trial | objective | R | P |" in report_text(completed_trials(single.study), single)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)], indirect=["umask"])
def test_every_output_gets_the_mode_open_would_give_it(umask, mode, tmp_path):
    context = _context(multi=True, points=POINTS[:2])
    written = [*write_report(tmp_path, context), write_pareto_front(tmp_path, context.study)]
    save_rates(tmp_path / "retention_rates.yaml", 0.5)
    written.append(tmp_path / "retention_rates.yaml")
    assert {p.name for p in written} >= {"report.md", "pareto.yaml", "history.png"}
    for path in written:
        assert oct(path.stat().st_mode & 0o777) == oct(mode), path.name
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in written)  # no temporary file
    # Rewriting a file takes the new mode too (not the old file's, not mkstemp's 0600).
    write_text_atomically(tmp_path / "report.md", "again")
    assert oct((tmp_path / "report.md").stat().st_mode & 0o777) == oct(mode)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)], indirect=["umask"])
def test_a_writer_that_replaces_the_file_leaves_the_mode_open_would_give(umask, mode, tmp_path):
    """safetensors' save_file writes a private file and renames it over the one it is given."""
    path = tmp_path / "entry.safetensors"
    write_atomically(path, lambda tmp: save_file({"x": torch.zeros(2)}, str(tmp)))
    assert oct(path.stat().st_mode & 0o777) == oct(mode)


def test_the_command_to_run_again_shows_no_password():
    url = "postgresql://user:s3cret@db.example:5432/studies"
    context = dataclasses.replace(
        _context(multi=False),
        command=["prune2drive", "tune", "--storage", url, f"--storage={url}", "--trials", "5"],
    )
    text = report_text(completed_trials(context.study), context)
    assert "s3cret" not in text
    redacted = "postgresql://user@db.example:5432/studies"
    assert f"--storage {redacted} --storage={redacted} --trials 5" in text


def test_the_report_is_written_first_and_a_failing_plot_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    context = _context(False, POINTS[:2])
    original = plots_module.save_figure

    def disk_full_for_rates(path: Path, figure: Any) -> Path:
        if path.name == report_module.RATES_PNG:
            raise OSError(28, "No space left on device")
        return original(path, figure)

    monkeypatch.setattr(plots_module, "save_figure", disk_full_for_rates)
    written = write_report(tmp_path, context)
    assert written[0] == tmp_path / "report.md" and written[0].read_text().strip()
    assert [p.name for p in written[1:]] == [report_module.HISTORY_PNG, report_module.TRADE_OFF_PNG]
    assert "plot" in caplog.text and "No space left on device" in caplog.text
