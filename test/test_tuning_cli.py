"""``prune2drive tune`` and ``eval`` end to end on a synthetic bag with the tiny model.

The tiny model has random weights: these tests check the machinery (files, resuming, workers
sharing a study, killed workers), never the scores.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from prune2drive_ros.commands.cli import main
from prune2drive_ros.errors import ConfigError
from prune2drive_ros.pruning import PRUNERS, budgets_from_rates
from prune2drive_ros.sensors.rates_file import load_rates
from prune2drive_ros.tuning.spread import Accuracy, within_noise
from prune2drive_ros.tuning.study import make_storage
from prune2drive_ros.views import VIEWS

POSTGRES_ENV = "PRUNE2DRIVE_TEST_POSTGRES_URL"
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


def _eval_args(bag, tmp_path) -> list[str]:
    """``eval`` on ``bag`` with a private feature cache, timing one frame once."""
    return [
        "eval",
        *_data_args(bag),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--timing-frames",
        "1",
        "--repeats",
        "1",
    ]


def _data_args(bag) -> list[str]:
    return [
        "--bag",
        str(bag.path),
        "--questions",
        str(bag.questions_path),
        "--samples",
        "3",
        "--model",
        "tiny",
        "--max-new-tokens",
        "2",
        "--device",
        "cpu",
        "--no-progress",
    ]


def _tune_args(bag, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "tune",
        *_data_args(bag),
        "--out",
        str(tmp_path / "out"),
        "--cache-dir",
        str(tmp_path / "cache"),
        *extra,
    ]


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set (.ci/run starts a throwaway PostgreSQL)")
    try:
        make_storage(url, heartbeat_s=0)
    except ConfigError as exc:
        pytest.skip(f"PostgreSQL at {POSTGRES_ENV} is unreachable: {exc}")
    return url


def _storage_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    if kind == "journal":
        return f"journal:{tmp_path / 'shared.log'}"
    return _postgres_url()


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=make_storage(url, heartbeat_s=0)).trials


def _worker(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A ``prune2drive`` process; its output goes to ``log`` (a pipe could fill and block it)."""
    with log.open("wb") as stream:
        return subprocess.Popen(
            [sys.executable, "-m", "prune2drive_ros.commands.cli", *args],
            stdout=stream,
            stderr=subprocess.STDOUT,
        )


def _wait_for_finished(
    worker: subprocess.Popen[bytes], url: str, name: str, count: int, log: Path
) -> dict[int, dict[str, float]]:
    """Poll the storage until the study has ``count`` finished trials: their params by number."""
    deadline = time.monotonic() + 600
    finished: dict[int, dict[str, float]] = {}
    while len(finished) < count:
        assert worker.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the worker finished too few trials in time"
        time.sleep(0.5)
        try:
            trials = _trials(url, name)
        except KeyError:  # the worker has not created the study yet
            continue
        finished = {t.number: t.params for t in trials if t.state == TrialState.COMPLETE}
    return finished


def test_tune_with_a_token_total_searches_how_the_views_share_it(small_bag, tmp_path, capsys):
    argv = _tune_args(small_bag, tmp_path, "--trials", "3", "--tokens", "60", "--json")
    assert main(argv) == 0
    result = _last_json(capsys.readouterr().out)
    written = load_rates(tmp_path / "out" / "retention_rates.yaml")
    kept = budgets_from_rates(written.rates, 729)
    assert sum(kept) == 60 and min(kept) >= 1, "every trial keeps exactly the total"
    assert result["completed_this_run"] == 3
    for refused in (["--multi-objective"], ["--sampler", "grid"]):
        assert main([*argv, *refused]) == 2
        assert "--tokens fixes the tokens kept" in capsys.readouterr().err
    assert main([*argv[:-3], "--tokens", "5000", "--force"]) == 2
    assert "more than the model's 4374 visual tokens" in capsys.readouterr().err


def test_tune_writes_a_rates_file_report_and_plots_then_resumes(small_bag, tmp_path, capsys):
    assert main(_tune_args(small_bag, tmp_path, "--trials", "2", "--json")) == 0
    first = _last_json(capsys.readouterr().out)
    assert first["completed_this_run"] == 2
    assert first["encoder_calls"] == first["frames"] >= 1
    assert first["reward"] == "drivelm"  # the synthetic questions all have reference answers
    out = tmp_path / "out"
    written = load_rates(out / "retention_rates.yaml")
    assert set(written.rates) == set(VIEWS)
    assert written.meta["study"] == first["study"]
    assert written.meta["trials"] == 2
    assert written.meta["lambda"] == pytest.approx(0.18)
    assert written.meta["storage"].startswith("sqlite:///")
    assert written.meta["tokens_full"] == 6 * 729
    report = (out / "report.md").read_text()
    assert "random-weight" in report and "rates_file:=" in report and "Top 5" in report
    for plot in ("history.png", "rates.png", "score_vs_tokens.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG")

    # The same questions copied elsewhere (a newer file time, another name) resume the study.
    questions = tmp_path / "copied" / "questions.jsonl"
    questions.parent.mkdir()
    shutil.copy(small_bag.questions_path, questions)
    resumed = _tune_args(small_bag, tmp_path, "--trials", "2", "--json")
    resumed[resumed.index(str(small_bag.questions_path))] = str(questions)
    assert main(resumed) == 0
    second = _last_json(capsys.readouterr().out)
    assert second["study"] == first["study"]
    assert second["study_completed"] == 4
    assert second["encoder_calls"] == 0
    assert load_rates(out / "retention_rates.yaml").meta["trials"] == 4


def test_multi_objective_writes_the_pareto_front(small_bag, tmp_path, capsys):
    args = _tune_args(
        small_bag, tmp_path, "--trials", "3", "--multi-objective", "--reward", "fidelity"
    )
    assert main([*args, "--sampler", "random", "--json"]) == 0
    summary = _last_json(capsys.readouterr().out)
    front = yaml.safe_load((tmp_path / "out" / "pareto.yaml").read_text())
    assert front and {"trial", "rates", "score", "tokens", "tokens_kept"} <= set(front[0])
    assert summary["chosen_trial"] in [point["trial"] for point in front]
    assert "pareto" in summary["study"]
    assert summary["lambda"] is None and summary["objective"] is None
    # Two objectives have no lambda: neither the rates file nor the report invents one.
    written = load_rates(tmp_path / "out" / "retention_rates.yaml")
    assert "lambda" not in written.meta and "score" not in written.meta
    assert "objective =" not in (tmp_path / "out" / "report.md").read_text()


def test_grid_sampler_runs(small_bag, tmp_path):
    args = _tune_args(small_bag, tmp_path, "--trials", "3", "--sampler", "grid")
    assert main([*args, "--grid-steps", "2", "--reward", "fidelity"]) == 0
    rates = load_rates(tmp_path / "out" / "retention_rates.yaml").rates
    assert set(rates.values()) <= {0.05, 1.0}


def test_tune_searches_the_priors_of_shared_budgets(small_bag, tmp_path, capsys):
    args = _tune_args(small_bag, tmp_path, "--trials", "2", "--reward", "fidelity", "--json")
    assert main([*args, "--pruner", "tfps_shared", "--sampler", "random"]) == 0
    written = load_rates(tmp_path / "out" / "retention_rates.yaml")
    assert "priors of tfps_shared" in written.meta["note"]
    study = optuna.load_study(study_name=written.meta["study"], storage=written.meta["storage"])
    assert "tfps_shared" in json.dumps(study.user_attrs), "a study of its own, for its pruner"


def test_eval_prints_the_table_for_every_pruner_and_no_pruning(small_bag, tmp_path, capsys):
    common = [*_eval_args(small_bag, tmp_path), "--json"]
    assert main([*common, "--uniform", "0.3", "--tokenizer", "regex"]) == 0
    printed = capsys.readouterr().out
    table = _last_json(printed)
    assert table["tokenizer"] == "regex"
    assert "score of tfps, and how each row's score is made up" in printed
    assert "0.4*GPT/100 + 0.2*language + 0.2*match/100 + 0.2*accuracy" in printed
    assert "tokens: regular-expression emulation of Stanford PTBTokenizer" in printed
    rows = {row["method"]: row for row in table["rows"]}
    # FastV ranks by the language model's attention: it runs only with placement layer:K.
    assert list(rows) == [*(p for p in PRUNERS if p != "fastv"), "none"]
    assert rows["none"]["tokens_per_view"] == 729 and rows["none"]["speedup"] == 1.0
    assert rows["none"]["flops_share"] == 1.0
    assert rows["tfps"]["tokens_per_view"] == round(0.3 * 729)
    assert 0 < rows["tfps"]["flops_share"] < 1
    assert set(rows["tfps"]["parts"]) == {"accuracy", "language", "match"}

    assert main([*common, "--no-pruning", "--reward", "fidelity"]) == 0
    printed = capsys.readouterr().out
    only = _last_json(printed)
    assert only["tokenizer"] is None and "fidelity = mean over questions" in printed
    assert [row["method"] for row in only["rows"]] == ["none"]
    assert only["rows"][0]["score"] == 1.0
    assert only["encoder_calls"] == 0  # the first run cached every frame


def test_eval_rows_per_rate_with_exact_match_per_kind(small_bag, tmp_path, capsys):
    args = [
        *_eval_args(small_bag, tmp_path),
        "--reward",
        "exact",
        "--uniform",
        "0.1",
        "0.5",
        "--json",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "exact = share of answers equal to their reference answer" in printed
    rows = _last_json(printed)["rows"]
    assert [(r["method"], r["rate"]) for r in rows][-1] == ("none", "-")
    rated = [r for r in rows if r["method"] == "tfps"]
    assert [r["rate"] for r in rated] == ["10 %", "50 %"]
    assert rated[0]["tokens_per_view"] < rated[1]["tokens_per_view"]
    # the synthetic questions name their kinds: exact match overall and per kind
    kinds = {s["kind"] for s in map(json.loads, small_bag.questions_path.read_text().splitlines())}
    for row in rows:
        assert row["parts"] == {} and "all" in row["exact"]
        assert set(row["exact"]) - {"all"} <= kinds
        assert row["score"] == row["exact"]["all"]


def test_eval_logs_the_rates_it_scores_and_the_spread_of_its_accuracies(
    small_bag, tmp_path, capsys, caplog
):
    caplog.set_level(logging.INFO, logger="prune2drive_ros")
    args = [*_eval_args(small_bag, tmp_path), "--reward", "exact", "--pruners", "tfps", "--json"]
    assert main([*args, "--uniform", "0.1"]) == 0
    printed = capsys.readouterr().out
    assert "retention rates: uniform 10 % on every view (--uniform; no rates file is read)" in (
        caplog.text
    )
    assert "retention_rates.yaml" not in caplog.text, "not the file --uniform overrides"
    rows = _last_json(printed)["rows"]
    assert [r["method"] for r in rows] == ["tfps", "none"]
    for row in rows:
        n, p = row["exact_n"]["all"], row["exact"]["all"]
        assert n == 3 and row["exact_right"]["all"] == round(p * n)
        assert row["exact_se"]["all"] == pytest.approx(math.sqrt(p * (1 - p) / n))
    assert "exact n=3" in printed and "+-" in printed
    assert "~: within the noise of the unpruned row (none)" in printed
    kinds = list(rows[0]["exact"])  # "all" and the kinds of the questions drawn
    noise = sum(
        within_noise(*(Accuracy(r["exact_right"][kind], r["exact_n"][kind]) for r in rows))
        for kind in kinds
    )
    assert f"{noise} of {len(kinds)} exact-match differences from none are within" in printed

    caplog.clear()
    assert main(args) == 0  # the package's rates file: named, with its rates
    logged = [r.getMessage() for r in caplog.records if "retention rates" in r.getMessage()]
    assert len(logged) == 1 and logged[0].startswith("retention rates: from ")
    assert "retention_rates.yaml: CAM_FRONT=" in logged[0]


@pytest.mark.slow
def test_eval_scores_placements_side_by_side_with_fastv_inside_the_decoder(
    small_bag, tmp_path, capsys
):
    args = [
        *_eval_args(small_bag, tmp_path),
        "--reward",
        "fidelity",
        "--uniform",
        "0.3",
        "--placements",
        "projector",
        "layer:1",
        "--json",
    ]
    assert main(args) == 0
    table = _last_json(capsys.readouterr().out)
    placed = [(r["method"], r["placement"]) for r in table["rows"]]
    assert ("fastv", "layer:1") in placed and ("fastv", "projector") not in placed
    assert {p for m, p in placed if m == "tfps"} == {"projector", "layer:1"}
    assert placed[-1] == ("none", "-") and [m for m, _ in placed].count("none") == 1
    assert main([*args[:-4], "--placements", "layer:x"]) == 2
    assert "neither 'projector'" in capsys.readouterr().err


def test_eval_scores_quantisations_side_by_side(small_bag, tmp_path, capsys):
    args = [*_eval_args(small_bag, tmp_path), "--reward", "exact", "--uniform", "0.1"]
    args += ["--pruners", "tfps", "random", "--quantizations", "none", "int8", "int4", "--json"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    table = _last_json(printed)
    rows = [(r["method"], r["quantization"]) for r in table["rows"]]
    assert rows == [
        (method, scheme)
        for scheme in ("none", "int8", "int4")
        for method in ("tfps", "random", "none")
    ], "each scheme's rows, then its own unpruned row"
    models = {m["quantization"]: m for m in table["models"]}
    assert list(models) == ["none", "int8", "int4"]
    assert models["none"]["method"] == "none"
    assert models["int8"]["method"].startswith("int8 (torchao ")
    lm = {scheme: model["language_model_bytes"] for scheme, model in models.items()}
    # int4 on the CPU stores a byte a value (and a scale per group): int8's memory, not less
    assert lm["int8"] < lm["none"] and lm["int4"] < lm["none"]
    for model in models.values():
        assert model["model_bytes"] > model["language_model_bytes"]
        assert model["prefill_ms"] > 0 and model["decode_ms_per_token"] > 0
    assert table["encoder_calls"] > 0
    assert "quantization  placement" in printed  # the table's column
    assert "LM weights MB" in printed and "decode ms/token" in printed
    assert "~: within the noise of the unpruned row (none, none)" in printed


def test_eval_scores_chosen_pruners_and_the_spread_of_shared_budgets(small_bag, tmp_path, capsys):
    args = [*_eval_args(small_bag, tmp_path), "--reward", "fidelity", "--uniform", "0.1"]
    assert main([*args, "--pruners", "tfps_shared", "tfps", "--json"]) == 0
    printed = capsys.readouterr().out
    assert "view min-max" in printed and "view sd" in printed
    rows = {row["method"]: row for row in _last_json(printed)["rows"]}
    assert list(rows) == ["tfps_shared", "tfps", "none"], "the order given, then unpruned"
    fixed, shared = rows["tfps"], rows["tfps_shared"]
    assert (fixed["kept_min"], fixed["kept_max"], fixed["kept_sd"]) == (73, 73, 0.0)
    assert shared["tokens_per_view"] == fixed["tokens_per_view"], "the same total, shared"
    assert 37 <= shared["kept_min"] <= shared["kept_max"] <= 109, "within half to 1.5 x"
    with pytest.raises(SystemExit):
        main([*args, "--pruners", "v2drop"])
    assert "invalid choice: 'v2drop'" in capsys.readouterr().err


@pytest.mark.parametrize("placements", [[], ["--placements", "projector", "layer:0"]])
def test_eval_refuses_fastv_before_the_decoder_up_front(tmp_path, capsys, placements):
    """Not one row of FastV's could run: refused before the data (here missing) is read."""
    missing = str(tmp_path / "missing")
    args = ["eval", "--bag", missing, "--questions", missing, "--pruners", "fastv", *placements]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "pruner fastv ranks tokens by the language model's attention" in error
    assert "--placements layer:K with K >= 1 (FastV's K is 2)" in error
    assert len(error.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        ({"CAM_FRONT": 0.5, "CAM_TOP": 0.5}, "unknown view"),
        ({view: 1.5 for view in VIEWS}, "must lie in (0, 1]"),
    ],
)
def test_eval_refuses_bad_rates_files(small_bag, tmp_path, capsys, rates, message):
    path = tmp_path / "rates.yaml"
    path.write_text(yaml.safe_dump({"rates": rates}))
    assert main(["eval", *_data_args(small_bag), "--rates", str(path)]) == 2
    error = capsys.readouterr().err
    assert message in error and str(path) in error


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lambda", "nan"], "argument --lambda: must be a finite number of at least 0"),
        (["--lambda", "inf"], "argument --lambda: must be a finite number of at least 0"),
        (["--lambda", "-0.1"], "argument --lambda: must be a finite number of at least 0"),
        (["--min-rate", "0"], "argument --min-rate: must lie in (0, 1]"),
        (["--max-rate", "1.5"], "argument --max-rate: must lie in (0, 1]"),
        (["--budget", "0"], "argument --budget: must lie in (0, 1]"),
        (["--timeout", "-5"], "argument --timeout: must be a finite number above 0"),
        (["--samples", "0"], "argument --samples: must be at least 1, got 0"),
        (["--max-gap-ms", "inf"], "argument --max-gap-ms: must be a finite number above 0"),
    ],
)
def test_bad_tune_numbers_are_usage_errors(small_bag, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(_tune_args(small_bag, tmp_path, *flags))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_tune_options_are_clear_errors(small_bag, tmp_path, capsys):
    assert main(_tune_args(small_bag, tmp_path, "--min-rate", "0.5", "--max-rate", "0.2")) == 2
    assert "--min-rate <= --max-rate" in capsys.readouterr().err
    assert main(_tune_args(small_bag, tmp_path, "--budget", "0.2")) == 2
    assert "--multi-objective" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--storage", "postgresql://user:secret@127.0.0.1:1/db"], "storage"),
        (["--storage", "nowhere.db"], "is not an optuna storage"),
        (["--sampler", "cmaes", "--multi-objective"], "CMA-ES optimises one objective"),
    ],
)
def test_storage_and_sampler_errors_come_before_the_model_loads(
    small_bag, tmp_path, capsys, flags, message
):
    assert main(_tune_args(small_bag, tmp_path, *flags)) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "secret" not in captured.err
    assert "NOTE" not in captured.out  # printed once the (random-weight) model has loaded


def test_a_study_with_other_settings_is_refused_before_any_frame_is_encoded(
    small_bag, tmp_path, capsys
):
    named = ("--study-name", "mine", "--reward", "fidelity")
    assert main(_tune_args(small_bag, tmp_path, *named, "--trials", "1")) == 0
    capsys.readouterr()
    fresh_cache = tmp_path / "fresh-cache"
    args = _tune_args(small_bag, tmp_path, *named, "--lambda", "0.5")
    args[args.index(str(tmp_path / "cache"))] = str(fresh_cache)
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "other settings (lambda differ)" in captured.err
    assert "vision encoder calls" not in captured.out
    assert not list(fresh_cache.rglob("*.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["sqlite", "journal", pytest.param("postgres", marks=[pytest.mark.postgres])]
)
def test_two_processes_share_one_study(small_bag, tmp_path, kind):
    url = _storage_url(kind, tmp_path)
    name = f"shared-{uuid.uuid4().hex[:8]}"
    workers = [
        _worker(
            _tune_args(
                small_bag,
                tmp_path / f"w{seed}",
                "--trials",
                "2",
                "--storage",
                url,
                "--study-name",
                name,
                "--sampler-seed",
                str(seed),
                "--reward",
                "fidelity",
            ),
            tmp_path / f"w{seed}.log",
        )
        for seed in (1, 2)
    ]
    for seed, worker in zip((1, 2), workers, strict=True):
        assert worker.wait(timeout=600) == 0, (tmp_path / f"w{seed}.log").read_text()
    complete = [t for t in _trials(url, name) if t.state == TrialState.COMPLETE]
    assert len(complete) >= 4
    assert len({t.user_attrs["worker"] for t in complete}) == 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", POSTGRES])
def test_a_killed_worker_loses_no_finished_trial(small_bag, tmp_path, capsys, kind, age_heartbeats):
    url = _storage_url(kind, tmp_path)
    name = f"killed-{uuid.uuid4().hex[:8]}"
    args = _tune_args(
        small_bag, tmp_path, "--storage", url, "--study-name", name, "--heartbeat", "1"
    )
    worker = _worker([*args, "--trials", "500"], tmp_path / "worker.log")
    try:
        finished = _wait_for_finished(worker, url, name, 2, tmp_path / "worker.log")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=60)
    age_heartbeats(url)  # the killed worker's running trial: past the grace period now
    assert main([*args, "--trials", "1", "--json"]) == 0
    summary = _last_json(capsys.readouterr().out)
    trials = {t.number: t for t in _trials(url, name)}
    for number, params in finished.items():
        assert trials[number].state == TrialState.COMPLETE
        assert trials[number].params == params
    assert summary["study_completed"] >= len(finished) + 1
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]


@pytest.mark.slow
def test_ctrl_c_finishes_the_trial_writes_the_results_and_exits_130(small_bag, tmp_path):
    url, name = f"sqlite:///{tmp_path / 'study.db'}", "interrupted"
    args = _tune_args(small_bag, tmp_path, "--storage", url, "--study-name", name)
    log = tmp_path / "worker.log"
    worker = _worker([*args, "--trials", "500"], log)
    try:
        _wait_for_finished(worker, url, name, 1, log)
        worker.send_signal(signal.SIGINT)
        assert worker.wait(timeout=600) == 130
    finally:
        worker.kill()
    output = log.read_text()
    assert "press Ctrl-C again" in output and "Traceback" not in output
    written = load_rates(tmp_path / "out" / "retention_rates.yaml")
    states = [t.state for t in _trials(url, name)]
    assert TrialState.RUNNING not in states and TrialState.FAIL not in states
    assert written.meta["trials"] == states.count(TrialState.COMPLETE)


@pytest.mark.parametrize("command", ["tune", "eval"])
@pytest.mark.parametrize(
    ("change", "message"),
    [(("--bag", "nope"), "does not exist"), (("--reward", "drivelm"), "reference answer")],
)
def test_data_and_reward_are_checked_before_the_model_loads(
    small_bag, tmp_path, monkeypatch, capsys, command, change, message
):
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr("prune2drive_ros.engine.load_vlm", no_model)
    questions = tmp_path / "unanswered.jsonl"
    stamp = json.loads(small_bag.questions_path.read_text().splitlines()[0])["stamp"]
    questions.write_text(json.dumps({"stamp": stamp, "question": "Any bus?"}) + "\n")
    args = [command, *_data_args(small_bag), "--cache-dir", str(tmp_path / "cache")]
    args[args.index("--questions") + 1] = str(questions)
    if command == "tune":
        args += ["--out", str(tmp_path / "out")]
    flag, value = change
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def _refusing_model_loads(monkeypatch) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr("prune2drive_ros.engine.load_vlm", no_model)


@pytest.mark.parametrize("command", ["tune", "eval"])
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("exists", "exists already; pass --force to replace it"),
        ("input", "is also an input"),
        ("read-only", "is not writable; write elsewhere or fix its permissions"),
    ],
)
def test_outputs_are_checked_before_the_model_loads(
    small_bag, tmp_path, monkeypatch, capsys, command, case, message
):
    """tune's --out files and eval's --save-predictions: an existing file (without --force; a
    tune folder of another storage), an input (even with --force) or a folder that cannot be
    written is one line before the model loads, and nothing is overwritten."""
    _refusing_model_loads(monkeypatch)
    out = tmp_path / ("read-only" if case == "read-only" else "out")
    out.mkdir()
    read_only, access = tmp_path / "read-only", os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: Path(path) != read_only and access(path, mode, **kw)
    )  # read-only as for a user who is not root, whom a folder's mode does not stop
    questions = out / "questions.jsonl"
    shutil.copy(small_bag.questions_path, questions)
    target = out / ("report.md" if command == "tune" else "output.json")
    if case == "input":
        target = questions
    elif case == "exists":
        target.write_text("kept\n")
    args = [command, *_data_args(small_bag), "--cache-dir", str(tmp_path / "cache")]
    args[args.index("--questions") + 1] = str(questions)
    if command == "tune":  # the target is one of the files tune writes into --out
        args += ["--out", str(out), "--storage", f"journal:{tmp_path / 'journal.log'}"]
        if case == "input":
            args[args.index("--questions") + 1] = str(out / "report.md")
            shutil.copy(questions, out / "report.md")
            target = out / "report.md"
    else:  # --save-predictions needs DriveLM ids: a questions file with ids is not enough
        drivelm = Path(__file__).parent / "fixtures" / "drivelm_small.json"
        args = [a for a in args if a not in ("--bag", str(small_bag.path))]
        i = args.index("--questions")
        args[i : i + 2] = ["--drivelm", str(drivelm), "--nuscenes-root", str(tmp_path)]
        args += ["--save-predictions", str(target)]
        if case == "input":
            target = tmp_path / "drivelm.json"
            shutil.copy(drivelm, target)
            args[args.index("--drivelm") + 1] = str(target)
            args[args.index("--save-predictions") + 1] = str(target)
    before = target.read_bytes() if target.exists() else None
    assert main([*args, *["--force"] * (case == "input")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1
    assert (target.read_bytes() if target.exists() else None) == before


def test_tune_replaces_another_storage_s_outputs_only_with_force(small_bag, tmp_path, capsys):
    """Re-running with the same storage resumes (the first test); another storage's outputs in
    --out are refused before anything runs, and replaced with --force."""
    args = _tune_args(small_bag, tmp_path, "--trials", "1")
    assert main(args) == 0
    other = [*args, "--storage", f"journal:{tmp_path / 'other.log'}"]
    capsys.readouterr()
    assert main(other) == 2
    assert "retention_rates.yaml exists already; pass --force" in capsys.readouterr().err
    assert main([*other, "--force"]) == 0
    assert (
        load_rates(tmp_path / "out" / "retention_rates.yaml").meta["storage"].startswith("journal:")
    )


@pytest.mark.parametrize("command", ["tune", "eval"])
def test_a_too_long_question_is_refused_before_the_model_loads(
    small_bag, tmp_path, monkeypatch, capsys, command
):
    _refusing_model_loads(monkeypatch)
    stamp = json.loads(small_bag.questions_path.read_text().splitlines()[0])["stamp"]
    questions = tmp_path / "long.jsonl"
    question = "Is it safe? " + "x" * 100_000
    questions.write_text(json.dumps({"stamp": stamp, "question": question}) + "\n")
    args = [command, *_data_args(small_bag), "--cache-dir", str(tmp_path / "cache")]
    args[args.index("--questions") + 1] = str(questions)
    if command == "tune":
        args += ["--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "long.jsonl:1: the question 'Is it safe? xxx" in err
    assert f"has {len(question)} characters, more than max_question_chars=1000" in err
    assert len(err) < 400
