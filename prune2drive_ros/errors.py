"""Domain errors. Each says what went wrong and what to do about it.

They derive from :class:`Prune2DriveError` so that the CLI and the node can catch the
package's own errors (and show their message) without swallowing programming errors.
"""

from __future__ import annotations


class Prune2DriveError(Exception):
    """Base class of every error this package raises on purpose."""


class BudgetError(Prune2DriveError, ValueError):
    """Retention rates or token budgets that cannot be used (unknown view, out of range)."""


class PruningInputError(Prune2DriveError, ValueError):
    """Tokens handed to a pruner have the wrong shape, are empty or hold NaN/inf."""


class ModelLoadError(Prune2DriveError):
    """A checkpoint cannot be loaded: bad path, unsupported family, mismatched image size."""


class DecodeError(Prune2DriveError, ValueError):
    """An image message cannot be decoded: unknown encoding, corrupt data, size mismatch."""


class BagError(Prune2DriveError):
    """A rosbag2 recording cannot be read: missing, truncated, missing topics."""


class QuestionError(Prune2DriveError, ValueError):
    """A question cannot be answered: empty, too long, or outside the recording."""


class ConfigError(Prune2DriveError, ValueError):
    """A configuration or rates file does not follow the schema."""


class OutputError(Prune2DriveError, OSError):
    """An output cannot be written while a command runs: the disk is full, the file went away."""


class StudyError(Prune2DriveError):
    """The study cannot give a result (no finished trial, too many failures)."""


class TrialFailed(Prune2DriveError):
    """No sample of a trial could be scored."""


class TokenizerError(Prune2DriveError):
    """The Java tokeniser failed part-way (it worked when the process started)."""


class ConversionError(Prune2DriveError):
    """A checkpoint folder cannot be converted: not a known original format, or inconsistent."""
