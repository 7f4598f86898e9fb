"""The one schema of ``retention_rates.yaml``: the tuner writes it, the node and replay read it.

::

    rates:                      # required: every view of VIEWS, each a rate in (0, 1]
      CAM_FRONT: 0.1
      ...
    study: prune2drive-tune     # optional provenance, all of it
    storage: sqlite:///study.db #   optuna storage URL, any password removed
    score: 0.52                 #   objective value of the chosen trial
    tokens_kept: {total: 438, per_view: {CAM_FRONT: 73, ...}}
    tokens_full: 4374           #   tokens of all views before pruning
    trials: 200
    date: '2026-11-24T13:09:08+00:00'
    model: lmms-lab/llava-onevision-qwen2-0.5b-ov
    reward: 0.55                #   score part of the objective
    lambda: 0.03                #   weight of the token cost in the objective
    note: free text
    front:                      # optional: the study's Pareto front of score vs tokens
    - rates: {CAM_FRONT: 0.05, ...}   #   every view, each a rate in (0, 1]
      tokens: 219               #   visual tokens these rates keep (a whole number >= 1)
      score: 0.41               #   their score R (the measure ``reward`` gives the chosen rates)
    - ...

``rates`` stays the rates the node serves; ``front`` is what a latency budget
(:mod:`~prune2drive_ros.serving.latency`) trades along when the chosen rates would answer too
late, so the tuner writes every point it found worth having, not only the one it chose.
Unknown top-level keys are refused, so that a typo (``rate:``) is reported instead of ignored
(so a file with ``front`` is refused by readers older than that key; files without it read as
before).
Writes are atomic (:func:`~prune2drive_ros.files.write_atomically`): a tuner killed mid-write
leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from ..errors import BudgetError, ConfigError
from ..files import read_yaml, write_text_atomically
from ..pruning.budget import Rates, validate_rates
from ..views import VIEWS

logger = logging.getLogger(__name__)

#: Optional provenance keys beside ``rates``.
META_KEYS: tuple[str, ...] = (
    "study",
    "storage",
    "score",
    "tokens_kept",
    "tokens_full",
    "trials",
    "date",
    "model",
    "reward",
    "lambda",
    "note",
)
_TEXT_KEYS = ("study", "storage", "date", "model", "note")
_NUMBER_KEYS = ("score", "reward", "lambda")
_COUNT_KEYS = ("tokens_full", "trials")

SCHEMA_HINT = (
    "expected a YAML mapping with 'rates:' mapping each of "
    f"{', '.join(VIEWS)} to a retention rate in (0, 1], and optionally 'front:' and "
    f"{', '.join(META_KEYS)}"
)
FRONT_HINT = (
    "expected a list of points {rates: {<view>: <rate in (0, 1]>, ...}, tokens: <whole number "
    ">= 1>, score: <finite number>}"
)
#: The keys of one point of ``front``.
_POINT_KEYS = ("rates", "tokens", "score")

_HEADER = (
    "# Prune2Drive per-view retention rates: the fraction of visual tokens kept per camera.\n"
    "# Written by prune2drive_ros.sensors.rates_file.save_rates; "
    "read by the node, replay and eval.\n"
    "# Schema: 'rates' maps every camera view to a rate in (0, 1] (the rates served); 'front'\n"
    "# lists other rates worth serving under a latency budget; other keys are provenance.\n"
)


@dataclass(frozen=True)
class FrontPoint:
    """One point of the tuning study's Pareto front: no point scores higher with fewer tokens.

    Attributes:
        rates: retention rate by view, in :data:`~prune2drive_ros.views.VIEWS` order.
        tokens: visual tokens these rates kept on the tuned model (all views together).
        score: their score R on the validation set (higher is better).
    """

    rates: dict[str, float]
    tokens: int
    score: float


@dataclass(frozen=True)
class RatesFile:
    """Retention rates by view (in :data:`~prune2drive_ros.views.VIEWS` order) + provenance,
    and the study's Pareto front when the tuner wrote one (empty otherwise)."""

    rates: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)
    front: tuple[FrontPoint, ...] = ()

    @classmethod
    def uniform(cls, rate: float, **meta: Any) -> RatesFile:
        """The same ``rate`` for every view (validated), with optional provenance."""
        return cls(rates=validate_rates(rate), meta=_check_meta(meta, "uniform rates"))

    @property
    def mean_rate(self) -> float:
        """Fraction of all visual tokens kept when every view has as many tokens."""
        return sum(self.rates.values()) / len(self.rates)


def load_rates(path: str | Path) -> RatesFile:
    """Read and validate a rates file.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or does not follow the schema.
        BudgetError: a view is unknown or missing, or a rate is outside (0, 1]; the message
            starts with the file name.
    """
    path = Path(path)
    data = read_yaml(
        path,
        what="retention rates file",
        remedy="write one with `prune2drive tune` or use config/retention_rates.yaml",
    )
    if not isinstance(data, Mapping):
        what = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{path} is {what}; {SCHEMA_HINT}")
    if "rates" not in data:
        raise ConfigError(f"{path} has no 'rates:' key; {SCHEMA_HINT}")
    raw_rates = data["rates"]
    if not isinstance(raw_rates, Mapping):
        raise ConfigError(f"{path}: 'rates' is {raw_rates!r}, not a mapping; {SCHEMA_HINT}")
    try:
        rates = validate_rates(raw_rates)
    except BudgetError as err:
        raise BudgetError(f"{path}: {err}") from err
    meta = {key: value for key, value in data.items() if key not in ("rates", "front")}
    front = _check_front(data["front"], str(path)) if "front" in data else ()
    return RatesFile(rates=rates, meta=_check_meta(meta, str(path)), front=front)


def save_rates(
    path: str | Path, rates: Rates, front: Sequence[FrontPoint] = (), **meta: Any
) -> RatesFile:
    """Validate and atomically write a rates file; returns what was written.

    ``rates`` is a mapping by view or one float for every view: the rates the node serves.
    ``front`` is the study's Pareto front (written in the order given; none: no ``front:``
    key). ``meta`` takes the provenance keys of :data:`META_KEYS` (``lambda`` is a Python
    keyword: pass ``lambda_=0.03`` or ``**{"lambda": 0.03}``). ``date`` defaults to now (UTC,
    ISO 8601); a password in ``storage`` is removed.

    Raises:
        BudgetError: bad rates, also of a front point. ConfigError: bad provenance or front
            point, or the file cannot be written.
    """
    path = Path(path)
    if "lambda_" in meta:
        meta["lambda"] = meta.pop("lambda_")
    meta.setdefault("date", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    if isinstance(meta.get("storage"), str):
        meta["storage"] = redact_url(meta["storage"])
    written = RatesFile(
        rates=validate_rates(rates),
        meta=_check_meta(meta, str(path)),
        front=_check_front([asdict(point) for point in front], str(path)) if front else (),
    )
    document: dict[str, Any] = {"rates": written.rates, **written.meta}
    if written.front:
        document["front"] = [asdict(point) for point in written.front]
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    try:
        write_text_atomically(path, _HEADER + body)
    except OSError as err:
        raise ConfigError(f"cannot write retention rates file {path}: {err}") from err
    logger.info("wrote retention rates to %s (mean rate %.3f)", path, written.mean_rate)
    return written


def redact_url(url: str) -> str:
    """``url`` without its password (``postgresql://user:secret@host/db`` -> ``user@host``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc))


def redact_command(argv: Sequence[str]) -> list[str]:
    """The command line ``argv`` with :func:`redact_url` applied to each argument, and to the
    value of each ``--flag=VALUE``: a ``--storage`` URL's password never reaches the files
    (the tuning report) that show how a run was started."""
    redacted = []
    for arg in argv:
        flag, equals, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        redacted.append(f"{flag}{equals}{redact_url(value)}")
    return redacted


def _plain(value: Any) -> Any:
    """NumPy scalars (which YAML cannot write) as Python numbers; anything else unchanged."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, str | bytes):
        try:
            return item()
        except (TypeError, ValueError):  # an array of several values: left for the check
            return value
    return value


def _number(value: Any, key: str, source: str) -> float:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{source}: '{key}' is {value!r}, expected a finite number")
    return value


def _count(value: Any, key: str, source: str, least: int = 0) -> int:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{source}: '{key}' is {value!r}, expected a whole number >= {least}")
    return value


def _check_front(value: Any, source: str) -> tuple[FrontPoint, ...]:
    """The points of ``front``, each checked; an error names the point (``front[2]``)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise ConfigError(
            f"{source}: 'front' is {value!r}; {FRONT_HINT} (leave 'front' out for none)"
        )
    return tuple(_front_point(point, f"front[{i}]", source) for i, point in enumerate(value))


def _front_point(point: Any, name: str, source: str) -> FrontPoint:
    if not isinstance(point, Mapping):
        raise ConfigError(f"{source}: {name} is {point!r}; {FRONT_HINT}")
    missing = [key for key in _POINT_KEYS if key not in point]
    unknown = sorted(str(key) for key in point if key not in _POINT_KEYS)
    if missing or unknown:
        wrong = [f"lacks {', '.join(missing)}"] * bool(missing)
        wrong += [f"has unknown key(s) {', '.join(unknown)}"] * bool(unknown)
        raise ConfigError(f"{source}: {name} {' and '.join(wrong)}; {FRONT_HINT}")
    if not isinstance(point["rates"], Mapping):
        raise ConfigError(f"{source}: {name}.rates is {point['rates']!r}, not a mapping by view")
    try:
        rates = validate_rates(point["rates"])
    except BudgetError as err:
        raise BudgetError(f"{source}: {name}: {err}") from err
    return FrontPoint(
        rates=rates,
        tokens=_count(point["tokens"], f"{name}.tokens", source, least=1),
        score=float(_number(point["score"], f"{name}.score", source)),
    )


def _tokens_kept(value: Any, source: str) -> dict[str, Any]:
    expected = "expected {total: <int>, per_view: {<view>: <int>, ...}}"
    if not isinstance(value, Mapping) or set(value) - {"total", "per_view"}:
        raise ConfigError(f"{source}: 'tokens_kept' is {value!r}; {expected}")
    out: dict[str, Any] = {}
    if "total" in value:
        out["total"] = _count(value["total"], "tokens_kept.total", source)
    if "per_view" in value:
        per_view = value["per_view"]
        if not isinstance(per_view, Mapping) or any(view not in VIEWS for view in per_view):
            raise ConfigError(
                f"{source}: 'tokens_kept.per_view' is {per_view!r}; {expected} with views "
                f"from {', '.join(VIEWS)}"
            )
        out["per_view"] = {
            view: _count(per_view[view], f"tokens_kept.per_view.{view}", source)
            for view in VIEWS
            if view in per_view
        }
    return out


def _check_meta(meta: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Validated provenance in :data:`META_KEYS` order, as plain YAML-writable values."""
    unknown = sorted(str(key) for key in meta if key not in META_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; {SCHEMA_HINT}")
    out: dict[str, Any] = {}
    for key in META_KEYS:
        if key not in meta or meta[key] is None:
            continue
        value = meta[key]
        if key == "date" and isinstance(value, dt.date):
            value = value.isoformat()  # YAML reads an unquoted timestamp as a date(time)
        if key in _TEXT_KEYS:
            if not isinstance(value, str):
                raise ConfigError(f"{source}: '{key}' is {value!r}, expected text")
            out[key] = value
        elif key in _NUMBER_KEYS:
            out[key] = _number(value, key, source)
        elif key in _COUNT_KEYS:
            out[key] = _count(value, key, source)
        else:
            out[key] = _tokens_kept(value, source)
    return out
