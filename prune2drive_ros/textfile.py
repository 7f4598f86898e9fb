"""Reading the small text files a user hands in (questions, rates, params, DriveLM JSON).

One rule for all of them: a missing file says how to make one, any other failure (a folder, no
permission, not UTF-8) names the file and the reason, and both are the caller's domain error,
so the CLI and the node report them as bad input rather than crash.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import Prune2DriveError


def read_text(
    path: str | os.PathLike[str], *, what: str, remedy: str, error: type[Prune2DriveError]
) -> str:
    """The UTF-8 text of the ``what`` file at ``path``.

    Raises:
        error: ``"<what> <path> does not exist; <remedy>"``, or ``"cannot read <what> <path>:
            <reason>"`` for a file that exists but cannot be read as UTF-8 text.
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; {remedy}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise error(f"cannot read {what} {path}: {reason}") from exc
