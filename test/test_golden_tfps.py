"""T-FPS picks the tokens the paper's own ``farway_point_sampling`` picks.

Golden file ``golden/farway_point_sampling.json``: the walks (picks in order) that the
Prune2Drive reference code made on seeded random tokens, recorded from that code (recipe in
the file and in ``golden/README.md``). A greedy walk's prefix of length b is its selection for a
budget of b, so every budget checked here is a prefix, compared as a set (the package returns
kept indices sorted). Exact equality, no tolerance: the inputs are continuous random tokens
in float32 with no exact ties (the package breaks an exact tie at the isolated start
differently from the paper's code) and the smallest margin between the chosen token and the
runner-up (``min_gap``, 4e-7 on the 729-step walk) is above float32 rounding of the distances.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from golden_files import load_golden, require_same_input, seeded_normal, sha256_of

from prune2drive_ros.pruning import reference_tfps, tfps

GOLDEN = load_golden("farway_point_sampling")
CASES = {case["name"]: case for case in GOLDEN["cases"]}
#: Budgets checked per case, besides every budget of the 16-token walk: the paper's 10 %
#: (int(729 * 0.1) = 72), this package's rounding (73), and the views' budgets differing.
BUDGETS: dict[str, list[list[int]]] = {
    "one_view_16x8": [[b] for b in range(1, 17)],
    "six_views_729x32": [[1] * 6, [72] * 6, [73] * 6, [73, 72, 36, 18, 7, 1]],
    "one_view_729x32_full": [[1], [72], [73], [182], [364], [546], [728], [729]],
    "two_views_64x4096": [[1, 64], [6, 6], [32, 17], [64, 64]],
}


def _tokens(case: dict[str, Any]) -> torch.Tensor:
    tokens = seeded_normal(case["seed"], (case["views"], case["tokens"], case["dim"]))
    require_same_input(
        "farway_point_sampling",
        f"the tokens of {case['name']}",
        sha256_of([tokens.tobytes()]),
        case["tokens_sha256"],
    )
    return torch.from_numpy(tokens)


@pytest.mark.parametrize("pruner", [tfps, reference_tfps], ids=["tfps", "reference_tfps"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_the_papers_picks(name: str, pruner: Any) -> None:
    case = CASES[name]
    tokens = _tokens(case)
    for budgets in BUDGETS[name]:
        kept = pruner(tokens, budgets).per_view()
        for view, budget in enumerate(budgets):
            expected = sorted(case["walk"][view][:budget])
            assert kept[view].tolist() == expected, (name, budgets, view)


def test_every_case_is_checked() -> None:
    assert BUDGETS.keys() == CASES.keys()
    for name, case in CASES.items():
        assert all(len(walk) == len(case["walk"][0]) for walk in case["walk"])
        assert max(max(b) for b in BUDGETS[name]) <= len(case["walk"][0])
