"""The rates' search space and optuna's samplers, chosen by name without importing optuna.

``tune --sampler`` is checked (:func:`sampler_name`) before anything expensive runs, and
``--help`` lists :data:`SAMPLERS`' names: neither imports optuna. Each factory builds its
sampler from the search space and a seed when a study starts.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass
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
    per view, evenly spaced and including both ends."""

    low: float = DEFAULT_MIN_RATE
    high: float = DEFAULT_MAX_RATE
    grid_steps: int = DEFAULT_GRID_STEPS

    def __post_init__(self) -> None:
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

    def suggest(self, trial: Trial) -> dict[str, float]:
        """One rate per view from the trial's sampler."""
        return {view: trial.suggest_float(view, self.low, self.high) for view in VIEWS}

    def start_point(self, rates: Mapping[str, float], *, grid: bool) -> dict[str, float]:
        """``rates`` moved into the space (and onto the grid for the grid sampler)."""
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


def sampler_name(name: str | None, *, multi_objective: bool) -> str:
    """The sampler a run uses: ``name``, or TPE (NSGA-II for a multi-objective study).

    Called before anything expensive runs, so a sampler that cannot be used stops the command
    before the model loads.

    Raises:
        ConfigError: an unknown name, CMA-ES for two objectives, or CMA-ES without ``cmaes``.
    """
    name = name or ("nsga2" if multi_objective else "tpe")
    SAMPLERS.target(name)
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
