"""Offline rate tuning: validation data, feature cache, objective, optuna study, DriveLM scoring.

The scoring names import eagerly (they need only the coco-caption scorers); the tuning names
(:class:`Evaluator`, :class:`FeatureCache`, ...) import torch, transformers and optuna, so they
load on first use: reading a DriveLM file or scoring answers stays light.
"""

from __future__ import annotations

from ..errors import TrialFailed
from ..lazy import lazy_attributes
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

#: Name -> submodule, for the names imported on first use.
_LAZY: dict[str, str] = {
    "Frame": "sources",
    "Sample": "sources",
    "ValidationSet": "sources",
    "bag_validation_set": "sources",
    "drivelm_validation_set": "sources",
    "FeatureCache": "features",
    "model_key": "features",
    "DEFAULT_LAMBDA": "objective",
    "Evaluation": "objective",
    "Evaluator": "objective",
    "choose_reward": "objective",
    "penalty": "objective",
    "SearchSpace": "samplers",
    "choose_trial": "study",
    "knee": "study",
    "make_sampler": "samplers",
    "make_storage": "study",
    "open_study": "study",
    "pareto_front": "study",
    "write_report": "report",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "DriveLMItem",
    "LanguageScores",
    "Score",
    "TrialFailed",
    "accuracy",
    "drivelm_score",
    "fidelity",
    "language",
    "load_drivelm",
    "local_score",
    "match",
    "score_answers",
    "score_drivelm",
    *_LAZY,
]
