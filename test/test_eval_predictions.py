"""DriveLM challenge rules in ``eval`` and ``tune``'s objective: prediction files (output.json)
written and scored, question-only files, and the accuracy mode and filter every report names.

The end-to-end runs use the tiny random-weight model: they check the machinery (ids, files,
the same number from the table and from the written file), never the scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import quick_eval_flags

from prune2drive_ros.commands.cli import main
from prune2drive_ros.sensors.imaging import encode_jpeg
from prune2drive_ros.tuning.drivelm import CATEGORIES, load_drivelm, resolve_image
from prune2drive_ros.tuning.objective import choose_reward, score_from_parts
from prune2drive_ros.tuning.sources import Frame, Sample, ValidationSet

FIXTURE = Path(__file__).parent / "fixtures" / "drivelm_small.json"
QUESTIONS = 14


def _last_json(text: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return result


def _write_output(path: Path, answers: dict[str, str]) -> Path:
    path.write_text(
        json.dumps([{"id": k, "question": "", "answer": v} for k, v in answers.items()])
    )
    return path


def _reference_answers() -> dict[str, str]:
    return {item.id: item.answer or "" for item in load_drivelm(FIXTURE, ".", check_images=False)}


def _question_only(tmp_path: Path) -> Path:
    """The fixture as the challenge's question-only file: every "A" empty."""
    data = json.loads(FIXTURE.read_text())
    for scene in data.values():
        for frame in scene["key_frames"].values():
            for category in CATEGORIES:
                for qa in frame["QA"].get(category, []):
                    qa["A"] = ""
    path = tmp_path / "q_only.json"
    path.write_text(json.dumps(data))
    return path


def _score(*args: str) -> list[str]:
    return ["eval", "--tokenizer", "regex", "--json", "--score-predictions", *args]


def test_a_predictions_file_is_scored_without_a_model(tmp_path, monkeypatch, capsys):
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("--score-predictions loaded a model")

    monkeypatch.setattr("prune2drive_ros.engine.load_vlm", no_model)
    answers = _reference_answers()
    perfect = _write_output(tmp_path / "perfect.json", answers)
    assert main(_score(str(perfect), "--drivelm", str(FIXTURE))) == 0
    out = capsys.readouterr().out
    result = _last_json(out)
    assert f"answers {QUESTIONS} of the {QUESTIONS} questions" in out
    assert (result["accuracy"], result["accuracy_mode"], result["challenge_filter"]) == (
        1.0,
        "exact",
        True,
    )
    assert result["n_filtered"] == 0 and result["missing"] == 0
    assert "accuracy (exact: exact string equality, as the challenge)" in out

    # Letters with a period: wrong for the challenge, right when the option is extracted.
    loose = {k: v + "." if v in {"B", "C", "D"} else v for k, v in answers.items()}
    dotted = _write_output(tmp_path / "dotted.json", loose)
    assert main(_score(str(dotted), "--drivelm", str(FIXTURE))) == 0
    exact = _last_json(capsys.readouterr().out)
    assert main(_score(str(dotted), "--drivelm", str(FIXTURE), "--accuracy", "extract")) == 0
    extracted = _last_json(capsys.readouterr().out)
    # only the "No." answers; one of them has an empty tag list: not scored, as the challenge
    assert exact["accuracy"] == pytest.approx(1 / 4)
    assert (extracted["accuracy"], extracted["accuracy_mode"]) == (1.0, "extract")
    assert main(_score(str(dotted), "--drivelm", str(FIXTURE), "--untagged-by-answer")) == 0
    assert _last_json(capsys.readouterr().out)["accuracy"] == pytest.approx(2 / 5)


def test_missing_answers_are_reported_and_the_rest_scored(tmp_path, capsys):
    answers = _reference_answers()
    first = next(iter(answers))
    del answers[first]
    path = _write_output(tmp_path / "output.json", answers)
    assert main(_score(str(path), "--drivelm", str(FIXTURE), "--no-challenge-filter")) == 1
    out = capsys.readouterr().out
    assert f"1 questions have no answer (first: {first})" in out
    assert "KeyError" in out
    result = _last_json(out)
    assert (result["missing"], result["answered"], result["challenge_filter"]) == (1, 13, False)


def test_scoring_needs_reference_answers_and_matching_ids(tmp_path, capsys):
    answers = _write_output(tmp_path / "output.json", _reference_answers())
    assert main(_score(str(answers), "--drivelm", str(_question_only(tmp_path)))) == 2
    assert "question-only file" in capsys.readouterr().err
    other = _write_output(tmp_path / "other.json", {"scene_frame_0": "B"})
    assert main(_score(str(other), "--drivelm", str(FIXTURE))) == 2
    assert "answers none of the 14 questions" in capsys.readouterr().err
    assert main(_score(str(answers))) == 2
    assert "give --drivelm FILE.json" in capsys.readouterr().err
    assert main(_score(str(answers), "--drivelm", str(FIXTURE), "--reward", "fidelity")) == 2
    assert "fidelity needs the unpruned model" in capsys.readouterr().err


def test_blank_answers_are_no_references_and_old_trials_read_as_extracted():
    frame = Frame(key="k", label="frame", read=dict)
    blank = [Sample(f"q{i}", frame, "Any bus?", answer) for i, answer in enumerate(["", None])]
    reward, why = choose_reward(None, ValidationSet(blank, description="d", identity="i"))
    assert reward == "fidelity" and "question-only file" in why
    # Trials stored before the rules were recorded extracted options and did not filter.
    old = score_from_parts({"accuracy": 0.5, "n_accuracy": 2})
    assert (old.rules.accuracy, old.rules.challenge_filter) == ("extract", False)


@pytest.fixture
def nuscenes(tmp_path: Path) -> Path:
    """A nuScenes root with a small JPEG for every image the fixture names."""
    root = tmp_path / "nuscenes"
    rng = np.random.default_rng(0)
    for scene in json.loads(FIXTURE.read_text()).values():
        for frame in scene["key_frames"].values():
            for raw in frame["image_paths"].values():
                image = resolve_image(raw, root)
                image.parent.mkdir(parents=True, exist_ok=True)
                image.write_bytes(encode_jpeg(rng.integers(0, 255, (36, 64, 3), dtype=np.uint8)))
    return root


def _eval(drivelm: Path, nuscenes: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--drivelm",
        str(drivelm),
        "--nuscenes-root",
        str(nuscenes),
        "--samples",
        str(QUESTIONS),
        *quick_eval_flags(tmp_path),
        *extra,
    ]


@pytest.mark.slow
def test_eval_writes_a_predictions_file_that_scores_as_its_table_row(nuscenes, tmp_path, capsys):
    output = tmp_path / "output.json"
    args = _eval(FIXTURE, nuscenes, tmp_path, "--uniform", "0.3", "--save-predictions", str(output))
    assert main(args) == 0
    printed = capsys.readouterr().out
    table = _last_json(printed)
    assert (table["accuracy_mode"], table["challenge_filter"]) == ("exact", True)
    header = next(line for line in printed.splitlines() if line.startswith("method"))
    assert "accuracy (exact)" in header and header.endswith("filtered")
    assert "per-frame filter: on, as the challenge" in printed
    row = table["rows"][0]
    assert row["method"] == "tfps" and "filtered" in row
    assert f"wrote {QUESTIONS} answers of tfps to {output}, for {QUESTIONS} questions" in printed
    assert "questions out" not in printed
    records = json.loads(output.read_text())
    assert [r["id"] for r in records] == list(_reference_answers())
    assert set(records[0]) == {"id", "question", "answer"}
    # The file, scored by the same rules, gives the first row's score.
    assert main(_score(str(output), "--drivelm", str(FIXTURE))) == 0
    scored = _last_json(capsys.readouterr().out)
    assert scored["score"] == pytest.approx(row["score"])
    assert scored["n_filtered"] == row["filtered"]


def test_eval_on_a_question_only_file_says_so_and_writes_the_submission(nuscenes, tmp_path, capsys):
    output = tmp_path / "output.json"
    args = _eval(_question_only(tmp_path), nuscenes, tmp_path, "--no-pruning")
    assert main([*args, "--save-predictions", str(output), "--samples", "5"]) == 0
    printed = capsys.readouterr().out
    assert "reward: fidelity (no question has a reference answer (a question-only file" in printed
    assert _last_json(printed)["accuracy_mode"] is None
    assert len(json.loads(output.read_text())) == 5
    assert "left 9 questions out; the test server looks up every question" in printed
