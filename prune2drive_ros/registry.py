"""The one registry style: a name -> ``"module:attribute"`` table, imported on first use.

Pruners, model families, checkpoint formats and optuna samplers are plug-ins chosen by name
(a flag, a parameter, a ``config.json`` field). Each kind is one :class:`Registry` whose
entries are dotted paths, so that listing the names (``--help``, a choices check, an error's
"expected one of") imports nothing: torch and transformers load only when a plug-in is used.
Adding a plug-in is one line in its registry; an unknown name is refused with the known ones
and the closest match.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from .errors import ConfigError, Prune2DriveError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Plug-ins of one kind by name: a read-only mapping whose values import on first access.

    ``registry[name]`` (and :meth:`load`) import ``module`` and return ``attribute``;
    iterating, ``len`` and ``in`` only read the names. An unknown name raises ``error`` (a
    :class:`ConfigError` unless the kind says otherwise) naming the known ones.
    """

    def __init__(
        self,
        kind: str,
        entries: Mapping[str, str],
        *,
        error: type[Prune2DriveError] = ConfigError,
        remedy: str = "",
    ) -> None:
        """``kind`` names the plug-ins in messages ("pruner"); ``entries`` maps each name to
        ``"package.module:attribute"``; ``remedy`` is appended to the unknown-name message."""
        for name, target in entries.items():
            if target.count(":") != 1:
                raise ValueError(f"{kind} {name!r}: {target!r} is not 'module:attribute'")
        self.kind = kind
        self._entries = dict(entries)
        self._error = error
        self._remedy = remedy
        self._loaded: dict[str, T] = {}

    def __getitem__(self, name: str) -> T:
        return self.load(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order (the order help lists them in)."""
        return tuple(self._entries)

    def target(self, name: str) -> str:
        """``name``'s ``"module:attribute"``, without importing it (raises like :meth:`load`)."""
        try:
            return self._entries[name]
        except KeyError:
            raise self.unknown(name) from None

    def load(self, name: str) -> T:
        """The plug-in registered as ``name``, its module imported on first use."""
        if name not in self._loaded:
            module, attribute = self.target(name).split(":")
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
        return self._loaded[name]

    def unknown(self, name: object) -> Prune2DriveError:
        """The error for a name that is not registered: the known names and the closest one."""
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        message = f"unknown {self.kind} {name!r}{hint}; expected one of {', '.join(self)}"
        return self._error(message + (f"; {self._remedy}" if self._remedy else ""))
