"""The spread of accuracies on a few dozen questions, and the eval table that shows it."""

from __future__ import annotations

import math

import pytest

from prune2drive_ros.commands.evaluate import Row, exact_counts, exact_match, table_text
from prune2drive_ros.tuning.sources import Sample
from prune2drive_ros.tuning.spread import (
    Accuracy,
    combined_se,
    compare_text,
    standard_error,
    within_noise,
)


def test_the_binomial_standard_error_in_exact_numbers():
    assert standard_error(0.75, 24) == pytest.approx(0.0883883476, abs=1e-10)  # sqrt(.1875/24)
    assert standard_error(0.5, 100) == 0.05
    assert standard_error(0.0, 24) == 0.0 and standard_error(1.0, 36) == 0.0
    assert math.isnan(standard_error(0.5, 0))
    for p, n in ((1.5, 10), (-0.1, 10), (0.5, -1)):
        with pytest.raises(ValueError):
            standard_error(p, n)
    a = Accuracy(18, 24)
    assert (a.p, a.percent()) == (0.75, "75.0 +- 8.8 %")
    assert Accuracy(16, 24).se == pytest.approx(math.sqrt(2 / 3 / 3 / 24))
    assert combined_se(Accuracy(18, 24), Accuracy(18, 24)) == pytest.approx(0.125)
    with pytest.raises(ValueError):
        Accuracy(25, 24)


def test_differences_under_two_combined_standard_errors_are_noise():
    # the case: 24 questions, unpruned 16 right, T-FPS at 10 % 18 right
    assert within_noise(Accuracy(18, 24), Accuracy(16, 24))
    # 2 combined SEs of 75 % vs 54 % on 24 are 27.0 points: 20.8 points apart is noise
    assert within_noise(Accuracy(18, 24), Accuracy(13, 24))
    assert not within_noise(Accuracy(24, 24), Accuracy(12, 24))  # 50 points > 2 x 10.2
    assert within_noise(Accuracy(24, 24), Accuracy(24, 24)), "equal: within, though SE is 0"
    assert not within_noise(Accuracy(24, 24), Accuracy(0, 24)), "0 and 100 %: SE 0, apart"
    assert not within_noise(Accuracy(0, 0), Accuracy(3, 4)), "no questions: nothing to say"
    # the rule's bound is a parameter: at 1 combined SE (13.5 points) the same gap is not noise
    assert not within_noise(Accuracy(18, 24), Accuracy(13, 24), ses=1.0)
    assert compare_text("pruned", Accuracy(16, 24), "unpruned", Accuracy(18, 24)) == (
        "pruned 16 of 24 (66.7 +- 9.6 %) vs unpruned 18 of 24 (75.0 +- 8.8 %): 8.3 points "
        "apart, within the noise (2 combined standard errors: 26.1 points)"
    )
    assert "more than the noise" in compare_text("a", Accuracy(24, 24), "b", Accuracy(10, 24))


def _sample(index: int, kind: str, answer: str) -> Sample:
    return Sample(id=f"q{index}", frame=0, question="?", answer=answer, kind=kind)


def test_exact_match_counts_per_kind():
    samples = [_sample(i, "count" if i % 2 else "lane", "yes") for i in range(6)]
    answers = {"q0": "yes", "q1": "yes", "q2": "no", "q3": " yes ", "q5": "no"}  # q4 unanswered
    counts = exact_counts(samples, answers)
    assert counts == {"all": Accuracy(3, 5), "count": Accuracy(2, 3), "lane": Accuracy(1, 2)}
    assert exact_match(samples, answers) == {"all": 0.6, "count": 2 / 3, "lane": 0.5}


def _row(method: str, rate: str, exact: dict[str, tuple[int, int]]) -> Row:
    counts = {kind: Accuracy(*pair) for kind, pair in exact.items()}
    return Row(
        method=method,
        placement="projector" if method != "none" else "-",
        rate=rate,
        tokens_per_view=64.0 if method == "none" else 6.0,
        kept_min=6,
        kept_max=6,
        kept_sd=0.0,
        score=counts["all"].p,
        parts={},
        prefill_ms=10.0,
        speedup=1.0,
        flops_share=1.0,
        answered=24,
        skipped=0,
        filtered=0,
        exact={kind: a.p for kind, a in counts.items()},
        exact_right={kind: a.right for kind, a in counts.items()},
        exact_n={kind: a.n for kind, a in counts.items()},
        exact_se={kind: a.se for kind, a in counts.items()},
    )


def test_the_table_gives_standard_errors_counts_and_flags_noise():
    rows = [
        _row("tfps", "10 %", {"all": (18, 24), "count": (6, 12), "lane": (12, 12)}),
        _row("random", "10 %", {"all": (8, 24), "count": (2, 12), "lane": (3, 12)}),
        _row("none", "-", {"all": (16, 24), "count": (6, 12), "lane": (10, 12)}),
    ]
    text = table_text(rows, "exact")
    lines = text.splitlines()
    header, tfps, random, none = (line.split("  ") for line in lines[:4])
    cells = lambda line: [c.strip() for c in line if c.strip()]  # noqa: E731
    assert cells(header)[7:10] == ["exact n=24", "count n=12", "lane n=12"]
    # T-FPS above the unpruned model on 24 questions: noise, and marked so
    assert cells(tfps)[7:10] == ["~75.0 +- 8.8 %", "~50.0 +- 14.4 %", "~100.0 +- 0.0 %"]
    # random pruning 33 vs 67 %: 33 points > 2 x sqrt(9.6^2 + 9.6^2) = 27.2: beyond the noise;
    # 17 vs 50 % of 12: 33 points < 2 x sqrt(10.8^2 + 14.4^2) = 36.1: within
    assert cells(random)[7:10] == ["33.3 +- 9.6 %", "~16.7 +- 10.8 %", "25.0 +- 12.5 %"]
    assert cells(none)[7:10] == ["66.7 +- 9.6 %", "50.0 +- 14.4 %", "83.3 +- 10.8 %"]
    assert lines[4:] == [
        "exact match: accuracy +- its binomial standard error sqrt(p(1-p)/n) in points, n the "
        "questions scored (per kind: the column's own n)",
        "~: within the noise of the unpruned row (none); within noise: |difference| < 2 x "
        "sqrt(SE_a^2 + SE_b^2), the binomial standard errors SE = sqrt(p(1-p)/n) of the two "
        "accuracies. Compare any two rows by the same rule",
        "4 of 6 exact-match differences from none are within the noise",
    ]


def test_rows_that_scored_different_counts_say_their_own():
    rows = [
        _row("tfps", "10 %", {"all": (3, 3)}),
        _row("none", "-", {"all": (1, 4)}),
    ]
    text = table_text(rows, "exact")
    assert "exact n=3-4" in text and "100.0 +- 0.0 % n=3" in text and "25.0 +- 21.7 % n=4" in text
    assert text.splitlines()[-1] == "0 of 1 exact-match differences from none are within the noise"


def test_without_reference_answers_there_is_no_legend():
    rows = [_row("none", "-", {"all": (1, 2)})]
    rows = [
        Row(**{**r.__dict__, "exact": {}, "exact_right": {}, "exact_n": {}, "exact_se": {}})
        for r in rows
    ]
    assert len(table_text(rows, "fidelity").splitlines()) == 2
