"""A latency budget as plain Python: what an answer will cost, and the rates that keep a budget.

:class:`CostModel` predicts the time to first token (TTFT: encode + prune + prefill) of a
loaded model on its device as a function of the visual tokens kept, from a quadratic fitted to
warm-up measurements and corrected by every answer's measured stage times (devices slow down
when they warm up or share work; the fit alone would go stale). :func:`choose_rates` then picks,
per question, the rates whose predicted TTFT after the queue wait fits the budget: the
best-scoring point of the tuned Pareto front (the rates file's ``front``), or without a front
the rates file's rates scaled down. Both are deterministic and torch-free, so the node imports
them cheaply and tests run them on synthetic costs.
"""

from __future__ import annotations

import math
import numbers
import operator
import statistics
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from ..errors import BudgetError
from ..pruning.budget import budgets_from_rates, validate_rates
from ..sensors.rates_file import FrontPoint

#: Different token counts a fit needs: three points determine a quadratic.
MIN_FIT_SIZES = 3
#: Recent answers the online correction remembers; it follows the median of their ratios, so
#: a changed device is followed after about half of them, one slow answer never.
WINDOW = 7
#: The warm-up fit counts as this many answers at ratio 1: one slow first answer moves nothing.
PRIOR_WEIGHT = 2
#: Measured-over-predicted ratios are clipped to this range: a ratio beyond it is a measurement
#: mistake (a clock jump, a near-zero prediction), and the median must not be dragged by it.
RATIO_LIMITS = (0.05, 20.0)
#: The share of answers a budget is planned to be met by: the controller prices tokens with
#: this quantile of the recent measured/predicted ratios, not their median (which would put
#: every choice on the budget's edge, missed one time in two), and the second largest of the
#: window at most, so that one slow answer still moves nothing.
PLANNING_QUANTILE = 0.8
#: Halvings of the scale factor when rates are scaled down: far finer than one token.
_BISECTIONS = 50

Coefficients = tuple[float, float, float]


class _RunningMedian:
    """The median of the last :data:`WINDOW` values, seeded with ``prior`` (counted as
    :data:`PRIOR_WEIGHT` values) until real ones push it out. Thread-safe: the node's worker
    observes while its diagnostics timer reads."""

    def __init__(self, prior: float | None) -> None:
        self._values: deque[float] = deque(
            [] if prior is None else [prior] * PRIOR_WEIGHT, maxlen=WINDOW
        )
        self._lock = threading.Lock()
        self._observed = 0

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(value)
            self._observed += 1

    @property
    def value(self) -> float | None:
        """The running median; None before any value (and without a prior)."""
        with self._lock:
            return statistics.median(self._values) if self._values else None

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (nearest rank) of the values, never their maximum when there
        are two or more; None before any value."""
        with self._lock:
            values = sorted(self._values)
        if not values:
            return None
        rank = min(math.ceil(q * len(values)), max(len(values) - 1, 1))
        return values[rank - 1]

    @property
    def observed(self) -> int:
        """Values added since the start (the prior not counted)."""
        with self._lock:
            return self._observed


class CostModel:
    """Predicted milliseconds of one answer's stages as a function of the visual tokens kept.

    TTFT(n) = (a + b n + c n^2) * k: the quadratic fitted to warm-up times (attention makes
    prefill quadratic in its length, the rest is linear or fixed), times a correction ``k``,
    the median of the recent ratios measured / predicted. Decode time per generated token is a
    running median too. Build one with :meth:`fit`.
    """

    def __init__(self, coefficients: Coefficients, decode_ms_per_token: float | None = None):
        """The model ``a + b n + c n^2`` of known ``coefficients`` (``(a, b, c)``, ms);
        :meth:`fit` finds them from measurements.

        Raises:
            BudgetError: a coefficient or the decode time is not finite.
        """
        if not all(math.isfinite(value) for value in coefficients):
            raise BudgetError(f"cost model coefficients {coefficients} are not all finite")
        if decode_ms_per_token is not None:
            decode_ms_per_token = _ms(decode_ms_per_token, "the decode time per token")
        self._coefficients = coefficients
        self._correction = _RunningMedian(1.0)
        self._decode = _RunningMedian(decode_ms_per_token)

    @classmethod
    def fit(
        cls,
        samples: Sequence[tuple[int, float]],
        *,
        decode_ms_per_token: float | None = None,
    ) -> CostModel:
        """Fit ``a + b n + c n^2`` by least squares to ``(tokens kept, TTFT ms)`` samples
        measured at warm-up; ``decode_ms_per_token`` is a warm-up measurement too (None: unknown
        until :meth:`observe_decode`).

        Raises:
            BudgetError: fewer than :data:`MIN_FIT_SIZES` different token counts, or a count
                or time that is not a whole number / finite number >= 0.
        """
        checked = [(_tokens(n, "a fit sample"), _ms(ms, "a fit sample")) for n, ms in samples]
        sizes = sorted({n for n, _ in checked})
        if len(sizes) < MIN_FIT_SIZES:
            raise BudgetError(
                f"a cost model needs times at {MIN_FIT_SIZES} or more different token counts, "
                f"got {len(sizes)} ({', '.join(map(str, sizes)) or 'none'}): measure the "
                "warm-up at more sizes (e.g. all tokens, half and a tenth of them)"
            )
        tokens = np.array([n for n, _ in checked], dtype=np.float64)
        times = np.array([ms for _, ms in checked], dtype=np.float64)
        c, b, a = np.polyfit(tokens, times, 2)
        return cls((float(a), float(b), float(c)), decode_ms_per_token)

    @property
    def coefficients(self) -> Coefficients:
        """``(a, b, c)`` of the fitted ``a + b n + c n^2`` (milliseconds), uncorrected."""
        return self._coefficients

    @property
    def correction(self) -> float:
        """The factor measured times ran over the fit, lately (1.0 until answers come in)."""
        value = self._correction.value
        return 1.0 if value is None else value

    @property
    def planning_correction(self) -> float:
        """The factor tokens are priced with: the :data:`PLANNING_QUANTILE` of the recent
        ratios (1.0 until answers come in)."""
        value = self._correction.quantile(PLANNING_QUANTILE)
        return 1.0 if value is None else max(value, self.correction)

    def predict_ttft_ms(self, tokens: int, *, cautious: bool = False) -> float:
        """Predicted encode + prune + prefill milliseconds with ``tokens`` visual tokens kept:
        the typical time, or with ``cautious`` the time :data:`PLANNING_QUANTILE` of recent
        answers stayed within (what the controller plans with)."""
        factor = self.planning_correction if cautious else self.correction
        return self._fitted_ms(_tokens(tokens, "a prediction")) * factor

    def observe(self, tokens: int, measured_ms: float) -> None:
        """Learn from one answer: its tokens kept and its measured encode + prune + prefill.

        Raises:
            BudgetError: ``tokens`` or ``measured_ms`` is not a whole / finite number >= 0.
        """
        n, ms = _tokens(tokens, "an observation"), _ms(measured_ms, "an observed TTFT")
        fitted = self._fitted_ms(n)
        if fitted > 0:  # a zero prediction has no ratio to correct
            low, high = RATIO_LIMITS
            self._correction.add(min(max(ms / fitted, low), high))

    @property
    def decode_ms_per_token(self) -> float | None:
        """Milliseconds per generated token, lately; None before any measurement."""
        return self._decode.value

    def observe_decode(self, tokens: int, ms: float) -> None:
        """Learn from one answer's decoding: ``tokens`` generated in ``ms`` (0 tokens: nothing
        to learn).

        Raises:
            BudgetError: ``tokens`` or ``ms`` is not a whole / finite number >= 0.
        """
        count, elapsed = _tokens(tokens, "a decode observation"), _ms(ms, "a decode time")
        if count:
            self._decode.add(elapsed / count)

    def describe(self) -> dict[str, str]:
        """The fit, its correction and the decode rate, for diagnostics and logs."""
        a, b, c = self._coefficients
        decode = self.decode_ms_per_token
        return {
            "ttft_fit_ms": f"{a:.4g} + {b:.4g} n + {c:.4g} n^2",
            "ttft_correction": f"{self.correction:.3f}",
            "ttft_planning_correction": f"{self.planning_correction:.3f}",
            "ttft_observed": str(self._correction.observed),
            "decode_ms_per_token": "unknown" if decode is None else f"{decode:.3f}",
        }

    def _fitted_ms(self, tokens: int) -> float:
        """The fitted quadratic, made non-decreasing in ``tokens`` (its maximum over
        [0, tokens]) and non-negative: noise can bend a fit down at one end, and the controller
        relies on more tokens never being predicted faster."""
        a, b, c = self._coefficients
        points = [0.0, float(tokens)]
        if c < 0 and 0 < -b / (2 * c) < tokens:  # a concave fit peaks inside: that peak
            points.append(-b / (2 * c))
        return max(0.0, *(a + b * x + c * x * x for x in points))


@dataclass(frozen=True)
class BudgetDecision:
    """The rates to answer with under a latency budget, and why.

    Attributes:
        rates: retention rate by view.
        tokens: visual tokens they keep on the served model (all views).
        predicted_ms: predicted time to first token: queue wait + encode, prune and prefill.
        fits: whether ``predicted_ms`` is within the budget (False: the cheapest choice, and
            the budget will be missed).
        why: the choice in words, for logs and diagnostics.
    """

    rates: dict[str, float]
    tokens: int
    predicted_ms: float
    fits: bool
    why: str


def choose_rates(
    cost: CostModel,
    *,
    budget_ms: float,
    queue_ms: float,
    rates: Mapping[str, float],
    view_tokens: Sequence[int],
    front: Sequence[FrontPoint] = (),
    min_rate: float = 0.0,
) -> BudgetDecision:
    """The rates whose predicted time to first token after ``queue_ms`` fits ``budget_ms``.

    - ``budget_ms`` 0 (off): ``rates``, the rates file's chosen rates, unchanged.
    - With a ``front``: its best-scoring point that fits (a tie: fewer tokens, then the earlier
      point); none fits: the point with the fewest tokens, and the decision says it misses.
    - Without one: ``rates`` when they fit, else each view's rate scaled by one factor (so
      each view keeps its share) down to the largest total that fits, no rate under
      ``min_rate`` nor under one token; not even that floor fits: the floor, missed.

    Tokens are counted on the served model (``view_tokens``: each view's tokens before
    pruning), not taken from the file, so a front tuned on another model costs what it costs
    here. A larger budget never chooses fewer tokens: the prediction never falls as tokens grow,
    so what fits a budget fits a larger one, and ties in score go to fewer tokens.

    Raises:
        BudgetError: a negative or non-finite budget or queue wait, bad rates or view tokens,
            ``min_rate`` outside [0, 1].
    """
    budget_ms = _ms(budget_ms, "the latency budget", "give > 0 ms, or 0 to turn it off")
    queue_ms = _ms(queue_ms, "the predicted queue wait")
    if isinstance(min_rate, bool) or not 0.0 <= min_rate <= 1.0:
        raise BudgetError(f"min_rate is {min_rate!r}; give a rate in [0, 1]")
    price = partial(
        _priced, cost=cost, queue_ms=queue_ms, view_tokens=view_tokens, budget_ms=budget_ms
    )
    base = validate_rates(rates)
    if budget_ms == 0:
        return replace(price(base), fits=True, why="no latency budget: the rates file's rates")
    if front:
        return _choose_on_front([price(point.rates) for point in front], front, budget_ms)
    return _scale_down(base, view_tokens, min_rate, budget_ms, price)


def _priced(
    rates: Mapping[str, float],
    *,
    cost: CostModel,
    queue_ms: float,
    view_tokens: Sequence[int],
    budget_ms: float,
) -> BudgetDecision:
    """``rates`` with their tokens on the served model and predicted TTFT; no reason yet."""
    kept = sum(budgets_from_rates(rates, view_tokens))
    predicted = queue_ms + cost.predict_ttft_ms(kept, cautious=True)
    return BudgetDecision(dict(rates), kept, predicted, predicted <= budget_ms, why="")


def _choose_on_front(
    priced: Sequence[BudgetDecision], front: Sequence[FrontPoint], budget_ms: float
) -> BudgetDecision:
    """The best-scoring point that fits, else the cheapest (missed)."""
    fitting = [i for i, decision in enumerate(priced) if decision.fits]
    if fitting:
        i = min(fitting, key=lambda i: (-front[i].score, priced[i].tokens, i))
        how = f"the best score predicted within the {budget_ms:g} ms budget"
    else:
        i = min(range(len(priced)), key=lambda i: (priced[i].tokens, -front[i].score, i))
        how = f"no point is predicted within the {budget_ms:g} ms budget, so the cheapest"
    why = (
        f"front point {i + 1} of {len(front)} (score {front[i].score:.4g}, {priced[i].tokens} "
        f"tokens, {priced[i].predicted_ms:.1f} ms): {how}"
    )
    return replace(priced[i], why=why)


def _scale_down(
    base: dict[str, float],
    view_tokens: Sequence[int],
    min_rate: float,
    budget_ms: float,
    price: Callable[[Mapping[str, float]], BudgetDecision],
) -> BudgetDecision:
    """``base`` when it fits, else scaled by the largest factor that fits (found by bisection:
    tokens and prediction only grow with the factor), else the floor, missed."""
    whole = budgets_from_rates(1.0, view_tokens)  # each view's tokens, checked
    floors = {
        view: min(rate, max(min_rate, 1.0 / count))
        for (view, rate), count in zip(base.items(), whole, strict=True)
    }

    def scaled(factor: float) -> dict[str, float]:
        return {view: max(floors[view], factor * rate) for view, rate in base.items()}

    def explained(decision: BudgetDecision, how: str) -> BudgetDecision:
        why = f"{how} ({decision.tokens} tokens, {decision.predicted_ms:.1f} ms)"
        return replace(decision, why=why)

    unscaled = price(base)
    if unscaled.fits:
        return explained(unscaled, f"the rates file's rates, within the {budget_ms:g} ms budget")
    floor = price(scaled(0.0))
    if not floor.fits:
        return explained(floor, f"even the fewest tokens allowed miss the {budget_ms:g} ms budget")
    low, high = 0.0, 1.0  # fits at low, misses at high
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        low, high = (middle, high) if price(scaled(middle)).fits else (low, middle)
    return explained(
        price(scaled(low)),
        f"the rates file's rates scaled by {low:.3f}, each view's share kept: the most tokens "
        f"predicted within the {budget_ms:g} ms budget",
    )


def _ms(value: object, what: str, remedy: str = "give a finite time >= 0") -> float:
    """``value`` as milliseconds, or a BudgetError naming ``what`` and the ``remedy``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BudgetError(f"{what} is {value!r}, not a number of milliseconds; {remedy}")
    if not math.isfinite(value) or value < 0:
        raise BudgetError(f"{what} is {value} ms; {remedy}")
    return float(value)


def _tokens(value: object, what: str) -> int:
    """``value`` as a count of tokens (a whole number >= 0), or a BudgetError."""
    try:
        count = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        count = -1
    if isinstance(value, bool) or count < 0:
        raise BudgetError(f"the tokens of {what} are {value!r}; give a whole number >= 0")
    return count
