"""DriveLM scoring gives the numbers the challenge's own ``evaluation.py`` gives.

Golden file ``golden/drivelm_evaluation.json``: a hand-written answer set (a DriveLM test file
with tags and an ``output.json``) and what OpenDriveLab/DriveLM's ``challenge/evaluation.py``
computed on it with its GPT scorer stubbed to 0 (recipe in the file and ``golden/README.md``).
The package scores the same two files through ``prune2drive eval --score-predictions``'s
path, with the challenge's rules (exact accuracy, per-frame filter, untagged items unscored).

Tolerances: accuracy and the language metrics are compared at 1e-12 (the same arithmetic on
the same tokens); the match F1 at 1e-5 on its x100 scale, because the original adds 1e-8 to
each precision / recall / F1 denominator (a perfect F1 is 1 - 1e-8 there, exactly 1 here).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from golden_files import load_golden

from prune2drive_ros.commands.cli import main
from prune2drive_ros.tuning.drivelm import (
    load_drivelm,
    match_predictions,
    read_predictions,
    score_drivelm,
)
from prune2drive_ros.tuning.ptb import java_problem, tokenizer_named
from prune2drive_ros.tuning.scoring import drivelm_score

GOLDEN = load_golden("drivelm_evaluation")
EXPECTED = GOLDEN["expected"]
LANGUAGE = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")
#: The original's match is (F1 x100 + GPT) / 2, recorded with GPT 0.
MATCH_F1 = 2 * EXPECTED["match"]


@pytest.fixture(params=["ptb", "regex"])
def tokenizer(request: pytest.FixtureRequest) -> str:
    """The PTB jar (the challenge's tokenizer; needs Java) and its emulation."""
    if request.param == "ptb" and java_problem():
        pytest.skip(f"no Java for the PTB tokenizer: {java_problem()}")
    return str(request.param)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The answer set as evaluation.py reads it: the test file and output.json."""
    folder = tmp_path_factory.mktemp("drivelm")
    (folder / "test.json").write_text(json.dumps(GOLDEN["drivelm"]), encoding="utf-8")
    (folder / "output.json").write_text(json.dumps(GOLDEN["predictions"]), encoding="utf-8")
    return folder / "test.json", folder / "output.json"


def test_the_challenges_numbers(files: tuple[Path, Path], tokenizer: str) -> None:
    drivelm, output = files
    items = load_drivelm(drivelm, ".", check_images=False)
    coverage = match_predictions(items, read_predictions(output))
    assert not coverage.missing and not coverage.unknown
    score = score_drivelm(
        coverage.items, coverage.predictions, tokenizer=tokenizer_named(tokenizer)
    )
    assert score.accuracy == pytest.approx(EXPECTED["accuracy"], abs=1e-12)
    assert score.language is not None and score.match is not None
    language = score.language.as_dict()
    for name in LANGUAGE:
        assert language[name] == pytest.approx(EXPECTED["language"][f"val/{name}"], abs=1e-12), name
    assert score.match == pytest.approx(MATCH_F1, abs=1e-5)
    # Which items each metric scored: routing by tag, and the per-frame filter.
    counts = EXPECTED["counts"]
    assert {k: score.counts[k] for k in counts} == counts
    # The official formula with the GPT parts the recording had (0).
    official = drivelm_score(replace(score, gpt=EXPECTED["chatgpt"], match_gpt=EXPECTED["chatgpt"]))
    assert official == pytest.approx(EXPECTED["final_score"], abs=1e-7)


def test_the_command_prints_the_same_numbers(
    files: tuple[Path, Path], tokenizer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    drivelm, output = files
    args = ["eval", "--score-predictions", str(output), "--drivelm", str(drivelm)]
    assert main([*args, "--tokenizer", tokenizer, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["accuracy"] == pytest.approx(EXPECTED["accuracy"], abs=1e-12)
    for name in LANGUAGE:
        assert result[name] == pytest.approx(EXPECTED["language"][f"val/{name}"], abs=1e-12), name
    assert result["match"] == pytest.approx(MATCH_F1, abs=1e-5)
    counts = EXPECTED["counts"]
    assert {k: result[f"n_{k}"] for k in counts} == counts
