"""How library code reports progress: through a reporter its caller passes in, never a bar.

Drawing is the caller's business. A bar drawn by the library would land in a ROS node's log,
in a test's captured output or in a redirected log file (``\\r`` redraws, escape codes), and
only the caller knows whether a person is watching a terminal. So a long-running library
function takes ``progress: Progress = NO_PROGRESS`` and reports through it::

    with progress(total=len(items), desc="frames", unit="frame") as bar:
        for item in items:
            ...
            bar.update()

The default :data:`NO_PROGRESS` does nothing, so the library is quiet unless a caller asks;
the commands pass :func:`prune2drive_ros.commands.progress.progress_from` (bars on a
terminal, ``--no-progress`` to switch them off). This module imports no bar library nor torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Protocol, TypeVar

__all__ = ["NO_PROGRESS", "Bar", "Progress", "counted"]

_T = TypeVar("_T")


class Bar(Protocol):
    """One task's progress, open for the ``with`` block (the commands' progress bars are ones)."""

    def __enter__(self) -> Bar: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> object: ...

    def update(self, n: int = 1) -> object:
        """``n`` more units done."""
        ...

    def set_postfix_str(self, s: str = "") -> object:
        """Show ``s`` after the counts (a running loss, the scene being written)."""
        ...


class Progress(Protocol):
    """Opens a :class:`Bar`: ``total`` units (None: unknown) of ``unit``, called ``desc``,
    ``initial`` of them done already (a resumed run); ``leave=False`` for a bar nested in
    another, which should vanish when done."""

    def __call__(
        self,
        *,
        total: int | None,
        desc: str,
        unit: str,
        initial: int = 0,
        leave: bool = True,
    ) -> Bar: ...


class _SilentBar:
    """A :class:`Bar` that shows nothing."""

    def __enter__(self) -> _SilentBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix_str(self, s: str = "") -> None:
        return None


def _silent(
    *, total: int | None, desc: str, unit: str, initial: int = 0, leave: bool = True
) -> Bar:
    return _SilentBar()


#: The library's default reporter: reports nowhere, so library calls stay quiet.
NO_PROGRESS: Progress = _silent


def counted(bar: Bar, items: Iterable[_T]) -> Iterator[_T]:
    """``items``, each counted done on ``bar`` when the loop asks for the next one (so a
    ``continue`` counts too, a ``break`` does not), as a bar wrapped around a loop counts."""
    for item in items:
        yield item
        bar.update()
