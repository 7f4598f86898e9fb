"""The rates' search space and optuna's samplers, chosen by name without importing optuna.

``tune --sampler`` is checked (:func:`sampler_name`) before anything expensive runs, and
``--help`` lists :data:`SAMPLERS`' names: neither imports optuna. Each factory builds its
sampler from the search space and a seed when a study starts.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from ..errors import ConfigError
from ..registry import Registry
from ..views import VIEWS

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler
    from optuna.trial import Trial

DEFAULT_MIN_RATE = 0.05
DEFAULT_MAX_RATE = 1.0
DEFAULT_GRID_STEPS = 5


@dataclass(frozen=True)
class SearchSpace:
    """Each view's rate uniform in ``[low, high]``; the grid sampler takes ``grid_steps`` values
    per view, evenly spaced and including both ends.

    With ``tokens`` the search is over how a fixed total of visual tokens per frame set is
    shared among the views instead (what a deadline fixes): each trial draws one weight per view
    in [0, 1], and the views get ``tokens`` in proportion to them, each at least one
    (:meth:`share`); the rates follow from each view's tokens (``view_tokens``, known once the
    model is loaded: :meth:`bind`).
    """

    low: float = DEFAULT_MIN_RATE
    high: float = DEFAULT_MAX_RATE
    grid_steps: int = DEFAULT_GRID_STEPS
    tokens: int | None = None
    view_tokens: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.tokens is not None and not len(VIEWS) <= self.tokens:
            raise ConfigError(
                f"--tokens {self.tokens}: give at least {len(VIEWS)}, one token a view"
            )
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ConfigError(f"rate bounds must be finite, got [{self.low}, {self.high}]")
        if not 0.0 < self.low <= self.high <= 1.0:
            raise ConfigError(
                f"rates must be searched within (0, 1] with --min-rate <= --max-rate; got "
                f"[{self.low}, {self.high}]"
            )
        if self.grid_steps < 2 and self.low != self.high:
            raise ConfigError(f"--grid-steps must be at least 2, got {self.grid_steps}")

    def grid_values(self) -> list[float]:
        """The grid of one view's rates."""
        if self.low == self.high:
            return [self.low]
        step = (self.high - self.low) / (self.grid_steps - 1)
        return [round(self.low + i * step, 10) for i in range(self.grid_steps)]

    def bind(self, view_tokens: Sequence[int]) -> SearchSpace:
        """This space for a model whose views hold ``view_tokens`` tokens each.

        Raises:
            ConfigError: ``tokens`` is more than the views hold.
        """
        if self.tokens is not None and self.tokens > sum(view_tokens):
            raise ConfigError(
                f"--tokens {self.tokens} is more than the model's {sum(view_tokens)} visual "
                "tokens; give fewer"
            )
        return replace(self, view_tokens=tuple(view_tokens))

    def suggest(self, trial: Trial) -> dict[str, float]:
        """One rate per view from the trial's sampler (with ``tokens``: from one weight per
        view, the rates stored as the trial's ``rates`` attribute)."""
        if self.tokens is None:
            return {view: trial.suggest_float(view, self.low, self.high) for view in VIEWS}
        weights = {view: trial.suggest_float(view, 0.0, 1.0) for view in VIEWS}
        rates = self.share(weights)
        trial.set_user_attr("rates", rates)
        return rates

    def share(self, weights: Mapping[str, float]) -> dict[str, float]:
        """The rates that give each view its share of ``tokens`` by ``weights``: one token
        each, the rest split in proportion (largest remainders; all weights 0: equally), no
        view more than it holds (its excess goes to the others by the same rule).

        Raises:
            ConfigError: the space has no ``tokens`` or is not bound to a model (:meth:`bind`).
        """
        if self.tokens is None or self.view_tokens is None:
            raise ConfigError("share() needs a token total and the model's view tokens (bind)")
        caps = dict(zip(VIEWS, self.view_tokens, strict=True))
        kept = dict.fromkeys(VIEWS, 1)
        left = self.tokens - len(VIEWS)
        while left > 0:
            open_views = [v for v in VIEWS if kept[v] < caps[v]]
            total = sum(weights[v] for v in open_views)
            parts = {
                v: left * (weights[v] / total if total > 0 else 1 / len(open_views))
                for v in open_views
            }
            given = {v: min(math.floor(parts[v]), caps[v] - kept[v]) for v in open_views}
            by_remainder = sorted(open_views, key=lambda v: math.floor(parts[v]) - parts[v])
            extra = left - sum(given.values())
            for v in by_remainder:
                if extra <= 0:
                    break
                if kept[v] + given[v] < caps[v]:
                    given[v] += 1
                    extra -= 1
            for v in open_views:
                kept[v] += given[v]
            left -= sum(given.values())
        return {v: kept[v] / caps[v] for v in VIEWS}

    def start_point(self, rates: Mapping[str, float], *, grid: bool) -> dict[str, float]:
        """``rates`` moved into the space (and onto the grid for the grid sampler); with
        ``tokens``, equal weights (every view the same share) whatever ``rates`` are."""
        if self.tokens is not None:
            return dict.fromkeys(VIEWS, 1.0)
        clipped = {view: min(max(float(rates[view]), self.low), self.high) for view in VIEWS}
        if not grid:
            return clipped
        values = self.grid_values()
        return {view: min(values, key=lambda v: abs(v - rate)) for view, rate in clipped.items()}


class SamplerFactory(Protocol):
    """Builds one optuna sampler for a search space, seeded."""

    def __call__(self, space: SearchSpace, seed: int) -> BaseSampler: ...


def tpe(space: SearchSpace, seed: int) -> BaseSampler:
    """Tree-structured Parzen estimator: the paper's choice, the default for one objective."""
    from optuna.samplers import TPESampler

    return TPESampler(seed=seed)


def cmaes(space: SearchSpace, seed: int) -> BaseSampler:
    """CMA-ES (needs the ``cmaes`` package; one objective only)."""
    from optuna.samplers import CmaEsSampler

    return CmaEsSampler(seed=seed)


def random(space: SearchSpace, seed: int) -> BaseSampler:
    """Uniform random rates: the baseline a smarter sampler must beat."""
    from optuna.samplers import RandomSampler

    return RandomSampler(seed=seed)


def grid(space: SearchSpace, seed: int) -> BaseSampler:
    """Every combination of :meth:`SearchSpace.grid_values` per view, in a seeded order."""
    from optuna.samplers import GridSampler

    return GridSampler({view: space.grid_values() for view in VIEWS}, seed=seed)


def nsga2(space: SearchSpace, seed: int) -> BaseSampler:
    """NSGA-II: the default for two objectives (accuracy and kept tokens)."""
    from optuna.samplers import NSGAIISampler

    return NSGAIISampler(seed=seed)


#: Sampler name -> factory building the optuna sampler from the search space and a seed.
SAMPLERS: Registry[SamplerFactory] = Registry(
    "sampler", {name: f"{__name__}:{name}" for name in ("tpe", "cmaes", "random", "grid", "nsga2")}
)


def sampler_name(name: str | None, *, multi_objective: bool, tokens: int | None = None) -> str:
    """The sampler a run uses: ``name``, or TPE (NSGA-II for a multi-objective study).

    Called before anything expensive runs, so a sampler that cannot be used stops the command
    before the model loads.

    Raises:
        ConfigError: an unknown name, CMA-ES for two objectives, or CMA-ES without ``cmaes``.
    """
    name = name or ("nsga2" if multi_objective else "tpe")
    SAMPLERS.target(name)
    if tokens and (multi_objective or name == "grid"):
        raise ConfigError(
            "--tokens fixes the tokens kept, so there is no second objective to trade and no "
            "rate grid: leave out --multi-objective and --sampler grid"
        )
    if name == "cmaes":
        if multi_objective:
            raise ConfigError("CMA-ES optimises one objective; use nsga2 or tpe with two")
        if importlib.util.find_spec("cmaes") is None:
            raise ConfigError("optuna's CMA-ES sampler needs the cmaes package: pip install cmaes")
    return name


def make_sampler(
    name: str | None, space: SearchSpace, *, seed: int, multi_objective: bool
) -> BaseSampler:
    """optuna's sampler ``name`` (see :func:`sampler_name`), seeded.

    Raises:
        ConfigError: as :func:`sampler_name`.
    """
    return SAMPLERS[sampler_name(name, multi_objective=multi_objective)](space, seed)
