"""Offline rate tuning: DriveLM data, DriveLM scoring, label-free fidelity."""

from .drivelm import DriveLMItem, load_drivelm, score_drivelm
from .scoring import (
    LanguageScores,
    Score,
    accuracy,
    drivelm_score,
    fidelity,
    language,
    local_score,
    match,
    score_answers,
)

__all__ = [
    "DriveLMItem",
    "LanguageScores",
    "Score",
    "accuracy",
    "drivelm_score",
    "fidelity",
    "language",
    "load_drivelm",
    "local_score",
    "match",
    "score_answers",
    "score_drivelm",
]
