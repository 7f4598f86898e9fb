"""How far an accuracy on a few dozen questions can be trusted: its standard error, and whether
two accuracies differ by more than their noise.

An accuracy of ``right`` out of ``n`` questions is a binomial proportion ``p = right / n``; its
standard error is the binomial one, ``sqrt(p * (1 - p) / n)`` (the normal approximation: at
``p`` = 0 or 1 it is 0, which says only that ``n`` questions showed no spread). Two accuracies
``a`` and ``b`` are **within the noise** of each other when

    |p_a - p_b| < 2 * sqrt(SE_a^2 + SE_b^2)

(:data:`NOISE_SES` combined standard errors, about a 95 % two-sided interval of the difference;
equal accuracies are within the noise whatever their errors). The two are treated as independent
samples; two rows of ``eval`` answer the same questions, which makes the rule conservative (a
paired test would call some differences real that this one calls noise), never the opposite.
On 24 questions at 75 % the standard error is 8.8 points: two such rows must differ by about 25
points before the rule calls the difference more than noise.

Plain Python: no torch, no ROS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Combined standard errors a difference must reach to count as more than noise.
NOISE_SES = 2.0

#: The rule, as the tables' legends state it.
NOISE_RULE = (
    "within noise: |difference| < 2 x sqrt(SE_a^2 + SE_b^2), the binomial standard errors "
    "SE = sqrt(p(1-p)/n) of the two accuracies"
)


def standard_error(p: float, n: int) -> float:
    """Binomial standard error ``sqrt(p (1 - p) / n)`` of a proportion ``p`` of ``n`` trials
    (NaN without trials).

    Raises:
        ValueError: ``p`` outside [0, 1] or ``n`` negative.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a proportion is in [0, 1], not {p}")
    if n < 0:
        raise ValueError(f"a count of questions is not negative: {n}")
    return math.sqrt(p * (1.0 - p) / n) if n else math.nan


@dataclass(frozen=True)
class Accuracy:
    """``right`` answers out of ``n`` questions."""

    right: int
    n: int

    def __post_init__(self) -> None:
        if not 0 <= self.right <= self.n:
            raise ValueError(f"{self.right} right of {self.n} questions")

    @property
    def p(self) -> float:
        """The share right (NaN without questions)."""
        return self.right / self.n if self.n else math.nan

    @property
    def se(self) -> float:
        """Its binomial standard error (:func:`standard_error`)."""
        return standard_error(self.p, self.n) if self.n else math.nan

    def percent(self) -> str:
        """``"75.0 +- 8.8 %"``: the share and its standard error in points."""
        return f"{100 * self.p:.1f} +- {100 * self.se:.1f} %"


def combined_se(a: Accuracy, b: Accuracy) -> float:
    """Standard error of the difference of two independent accuracies,
    ``sqrt(SE_a^2 + SE_b^2)``."""
    return math.hypot(a.se, b.se)


def within_noise(a: Accuracy, b: Accuracy, ses: float = NOISE_SES) -> bool:
    """Whether ``a`` and ``b`` differ by less than ``ses`` combined standard errors (or not at
    all); False when either has no questions."""
    if not (a.n and b.n):
        return False
    difference = abs(a.p - b.p)
    return difference == 0.0 or difference < ses * combined_se(a, b)


def compare_text(name_a: str, a: Accuracy, name_b: str, b: Accuracy) -> str:
    """One line on whether two accuracies differ by more than their noise, e.g. ``pruned 16 of
    24 (66.7 +- 9.6 %) vs unpruned 18 of 24 (75.0 +- 8.8 %): 8.3 points apart, within the
    noise (2 combined standard errors: 26.1 points)``."""
    difference = 100 * abs(a.p - b.p)
    bound = 100 * NOISE_SES * combined_se(a, b)
    verdict = "within the noise" if within_noise(a, b) else "more than the noise"
    return (
        f"{name_a} {a.right} of {a.n} ({a.percent()}) vs {name_b} {b.right} of {b.n} "
        f"({b.percent()}): {difference:.1f} points apart, {verdict} "
        f"({NOISE_SES:g} combined standard errors: {bound:.1f} points)"
    )
