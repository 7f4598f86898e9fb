"""What one retention-rates vector is worth: reward R, token penalty P, objective R - lambda * P.

* **Reward** ``R`` (``--reward``):

  - ``drivelm``: the local DriveLM score (:func:`~.scoring.local_score` of
    :func:`~.scoring.score_questions`: accuracy, language and match, the GPT part left out) of the
    pruned model's answers against the reference answers. Items are routed by their DriveLM
    tags, or by their answers when untagged (plain questions files), under
    :class:`~.scoring.ScoringRules` (default the challenge's: exact accuracy, and the filter of
    later questions of a frame, :func:`~.scoring.challenge_keep`; it depends on each trial's
    answers, so each trial is scored on the questions its own first answers located, as the
    challenge scores each submission).
  - ``fidelity``: agreement of the pruned model's answers with the unpruned model's answers to
    the same questions (:func:`~.scoring.fidelity`); needs no labels, 1.0 when nothing changes.
  - ``exact``: the share of answers equal to their reference answer (stripped strings), for
    questions with short canonical answers such as the synthetic scenes' ("2", "the left lane"),
    which DriveLM's language metrics would score by n-gram overlap instead.

  The default is ``drivelm`` when every question has a reference answer, else ``fidelity``
  (an empty answer is no reference: nothing is scored against one).
* **Penalty** ``P``: the fraction of visual tokens kept, ``sum(budgets) / (6 * tokens per
  view)``, i.e. the mean retention rate over the six views (up to the rounding of each rate to
  whole tokens, at most half a token per view).
* **Objective** ``R - lambda * P``. The reference search maximises
  ``0.5 * language + 0.5 * accuracy - 0.03 * sum(rates)``; with ``P`` the mean rate,
  ``0.03 * sum(rates) = 0.03 * 6 * mean(rates) = 0.18 * P``, so the default ``lambda = 0.18``
  is the reference's weight (:data:`DEFAULT_LAMBDA`).

A sample that cannot be answered in a trial (a corrupt image, an error in the model) is skipped
with a warning and counted; the trial fails only when no sample is left.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, TrialFailed
from ..progress import NO_PROGRESS, Progress
from ..pruning.budget import Rates, validate_rates
from ..views import VIEWS
from .ptb import Tokenizer, language_tokenizer
from .scoring import (
    BY_ANSWER,
    CHALLENGE_RULES,
    EXTRACT,
    TAG_ACCURACY,
    TAG_LANGUAGE,
    TAG_MATCH,
    LanguageScores,
    Score,
    ScoringRules,
    fidelity,
    route,
    score_questions,
)
from .sources import Frame, Sample, ValidationSet

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from ..engine import Engine
    from ..vlm import DrivingVLM
    from .features import FeatureCache

logger = logging.getLogger(__name__)

REWARDS: tuple[str, ...] = ("drivelm", "fidelity", "exact")
#: The rewards scored against reference answers (every question needs one).
_REFERENCE_REWARDS = ("drivelm", "exact")
#: The reference's weight per unit of the SUM of the six rates.
REFERENCE_SUM_LAMBDA = 0.03
#: The same weight per unit of the MEAN rate (what ``--lambda`` takes): 0.03 * 6 = 0.18.
DEFAULT_LAMBDA = REFERENCE_SUM_LAMBDA * len(VIEWS)

EXACT_DESCRIPTION = "exact = share of answers equal to their reference answer"
FIDELITY_DESCRIPTION = (
    "fidelity = mean over questions of (exact agreement + ROUGE-L) / 2 between the pruned and "
    "the unpruned model's answers (1.0 = pruning changed no answer)"
)


def penalty(budgets: Sequence[int], full: Sequence[int]) -> float:
    """Fraction of the visual tokens kept (``full``: every view's tokens): with views of equal
    size, the mean retention over the views."""
    return sum(budgets) / sum(full)


def objective_value(reward: float, token_penalty: float, lam: float) -> float:
    """``R - lambda * P``: what the single-objective study maximises."""
    return reward - lam * token_penalty


def unanswered(samples: Sequence[Sample]) -> list[str]:
    """Ids of the samples without a reference answer (None, or empty as in the DriveLM
    challenge's question-only file)."""
    return [s.id for s in samples if not (s.answer or "").strip()]


def choose_reward(requested: str | None, data: ValidationSet) -> tuple[str, str]:
    """The reward to use and why.

    Raises:
        ConfigError: ``drivelm`` asked for but some questions have no reference answer, or an
            unknown reward.
    """
    missing = unanswered(data.samples)
    if requested is None:
        if len(missing) == len(data.samples):
            return "fidelity", (
                "no question has a reference answer (a question-only file, such as the DriveLM "
                "challenge's, whose answers are on its server), so answers are scored against "
                "the unpruned model's"
            )
        if missing:
            return "fidelity", (
                f"{len(missing)} of {len(data.samples)} questions have no reference answer "
                f"(first: {missing[0]}), so answers are scored against the unpruned model's"
            )
        return "drivelm", "every question has a reference answer"
    if requested not in REWARDS:
        raise ConfigError(f"unknown reward {requested!r}; expected one of {', '.join(REWARDS)}")
    if requested in _REFERENCE_REWARDS and missing:
        raise ConfigError(
            f"--reward {requested} needs a reference answer for every question; {len(missing)} "
            f"have none (first: {missing[0]}). Use --reward fidelity or add the answers"
        )
    return requested, "asked for with --reward"


def score_from_parts(parts: Mapping[str, Any]) -> Score:
    """Rebuild a :class:`Score` from its :meth:`Score.as_dict` (stored with each trial)."""
    language = None
    if parts.get("language") is not None:
        language = LanguageScores(
            bleu=(parts["Bleu_1"], parts["Bleu_2"], parts["Bleu_3"], parts["Bleu_4"]),
            rouge_l=parts["ROUGE_L"],
            cider=parts["CIDEr"],
            tokenizer=parts.get("tokenizer"),
        )
    # Trials stored before the rules were recorded extracted the option and did not filter;
    # before the untagged rule was recorded, untagged items were routed by their answers.
    rules = ScoringRules(
        accuracy=parts.get("accuracy_mode", EXTRACT),
        challenge_filter=bool(parts.get("challenge_filter", False)),
        untagged=parts.get("untagged_rule", BY_ANSWER),
    )
    return Score(
        accuracy=parts.get("accuracy"),
        language=language,
        match=parts.get("match"),
        counts={k.removeprefix("n_"): int(v) for k, v in parts.items() if k.startswith("n_")},
        rules=rules,
    )


@dataclass(frozen=True)
class Evaluation:
    """The worth of one rates vector (or of no pruning) on the validation set.

    Attributes:
        rates: retention per view (1.0 everywhere for the unpruned model).
        budgets: tokens kept per view.
        reward, penalty, objective: ``R``, ``P`` and ``R - lambda * P``.
        parts: the parts of the reward (:meth:`Score.as_dict`, or ``{"fidelity": R}``).
        answered, skipped: samples answered, and samples skipped after an error.
        score: the DriveLM parts (``drivelm`` reward only).
        answers: the answer to each answered sample, by sample id (not stored with a trial).
        kept: per answered frame, the tokens each view kept (a pruner with shared budgets
            moves them between views frame by frame; not stored with a trial).
    """

    rates: dict[str, float]
    budgets: tuple[int, ...]
    reward: float
    penalty: float
    objective: float
    parts: dict[str, Any]
    answered: int
    skipped: int
    score: Score | None = field(default=None, compare=False)
    answers: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    kept: tuple[tuple[int, ...], ...] = field(default=(), compare=False, repr=False)

    @property
    def tokens_per_view(self) -> dict[str, int]:
        """Tokens kept per view."""
        return dict(zip(VIEWS, self.budgets, strict=True))

    def kept_spread(self) -> tuple[int, int, float]:
        """Fewest and most tokens any view kept on any frame, and the mean over views of the
        standard deviation across frames of a view's tokens (0 for fixed budgets)."""
        frames = self.kept or (self.budgets,)
        per_view = list(zip(*frames, strict=True))
        low = min(min(view) for view in per_view)
        high = max(max(view) for view in per_view)
        return low, high, statistics.fmean(statistics.pstdev(view) for view in per_view)

    def describe(self) -> str:
        """How the reward is made up (the DriveLM weighting, exact match or fidelity)."""
        if self.score is not None:
            return self.score.describe()
        described = EXACT_DESCRIPTION if "exact" in self.parts else FIDELITY_DESCRIPTION
        return described + f" = {self.reward:.4f}"

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> Evaluation:
        """The evaluation a study stored with ``trial`` (:meth:`user_attrs`, rates as params).

        The one reader of the stored attributes, so studies written before stay readable.
        """
        attrs = trial.user_attrs
        parts = dict(attrs["parts"])
        return cls(
            rates={view: float(trial.params[view]) for view in VIEWS},
            budgets=tuple(int(b) for b in attrs["tokens_per_view"]),
            reward=float(attrs["reward"]),
            penalty=float(attrs["penalty"]),
            objective=float(attrs["objective"]),
            parts=parts,
            answered=int(attrs["answered"]),
            skipped=int(attrs["skipped"]),
            score=None if "fidelity" in parts or "exact" in parts else score_from_parts(parts),
        )

    @staticmethod
    def stored(trial: FrozenTrial) -> bool:
        """Whether ``trial`` carries an evaluation (:meth:`from_trial` can read it)."""
        return "reward" in trial.user_attrs and all(view in trial.params for view in VIEWS)

    def user_attrs(self) -> dict[str, Any]:
        """What a study stores with the trial (JSON values)."""
        return {
            "reward": self.reward,
            "penalty": self.penalty,
            "objective": self.objective,
            "tokens_per_view": list(self.budgets),
            "parts": self.parts,
            "answered": self.answered,
            "skipped": self.skipped,
        }


class Evaluator:
    """Scores rates on a validation set with cached visual tokens: prune, prefill, generate.

    Args:
        vlm: the model.
        features: its feature cache (the encoder runs only on a cache miss).
        data: the validation set.
        reward: one of :data:`REWARDS`.
        lam: ``lambda`` of the objective.
        pruner: default pruner name.
        max_new_tokens: answer length limit.
        seed: seed of the pruner (the ``random`` baseline uses it).
        progress: reports the unpruned answers and the samples of each evaluation.
        tokenizer: of the language metrics (``drivelm`` reward; default
            :func:`~.ptb.language_tokenizer`).
        rules: accuracy mode and per-frame filter of the ``drivelm`` reward (default the
            challenge's).

    Raises:
        ConfigError: the ``drivelm`` reward on samples without a reference answer, or on items
            that no local metric scores (only GPT items).
    """

    def __init__(
        self,
        vlm: DrivingVLM,
        features: FeatureCache,
        data: ValidationSet,
        *,
        reward: str,
        lam: float,
        pruner: str = "tfps",
        max_new_tokens: int = 32,
        seed: int = 0,
        progress: Progress = NO_PROGRESS,
        tokenizer: Tokenizer | None = None,
        rules: ScoringRules = CHALLENGE_RULES,
    ) -> None:
        if reward not in REWARDS:
            raise ConfigError(f"unknown reward {reward!r}; expected one of {', '.join(REWARDS)}")
        self.vlm = vlm
        self.features = features
        self.groups = data.by_frame()
        self.samples = len(data.samples)
        self.reward = reward
        self.lam = lam
        self.seed = seed
        self.progress = progress
        self.tokenizer = tokenizer
        self.rules = rules
        self._unpruned: dict[str, list[str]] | None = None
        missing = unanswered(data.samples) if reward in _REFERENCE_REWARDS else []
        if missing:
            raise ConfigError(
                f"the {reward} reward needs a reference answer for every question; "
                f"{len(missing)} have none (first: {missing[0]}); use the fidelity reward"
            )
        if reward == "drivelm":
            references = [s.answer or "" for _, group in self.groups for s in group]
            routed = route(
                references,
                [s.tags for _, group in self.groups for s in group],
                untagged=self.rules.untagged,
            )
            if not any(routed[tag] for tag in (TAG_ACCURACY, TAG_LANGUAGE, TAG_MATCH)):
                raise ConfigError(
                    "no question is scored by a local DriveLM metric (accuracy, language or "
                    "match; the others need a GPT score); use --reward fidelity"
                )
        #: answers from the cached visual tokens (budgets per call; unpruned by default), with
        #: the default pruner and the answer length.
        from ..engine import Engine  # torch: the package's light modules import this one

        self.engine = Engine(vlm, None, pruner=pruner, max_new_tokens=max_new_tokens)

    def unpruned_answers(self) -> dict[str, list[str]]:
        """The unpruned model's answers per frame key (computed once, cached on disk).

        A frame whose answers fail is left out with a warning; its questions are then skipped
        wherever unpruned answers are needed.
        """
        if self._unpruned is None:
            self._unpruned = {}
            bar = self.progress(total=len(self.groups), desc="unpruned answers", unit="frame")
            with bar:
                for frame, group in self.groups:
                    try:
                        self._unpruned[frame.key] = self.features.unpruned_answers(
                            frame, [s.question for s in group], self.engine
                        )
                    except Exception as exc:  # one bad frame must not stop the study
                        logger.warning("no unpruned answers for %s: %s", frame.label, exc)
                    bar.update()
        return self._unpruned

    def evaluate(self, rates: Rates, *, pruner: str | None = None) -> Evaluation:
        """Score ``rates``; at full budgets (rates 1.0) that is the unpruned model, whose
        answers are computed once and cached.

        Raises:
            TrialFailed: every sample failed.
            BudgetError: invalid rates.
        """
        table = validate_rates(rates)
        budgets = self.vlm.budgets(table)
        keep_all = budgets == self.engine.full_budgets
        need_unpruned = keep_all or self.reward == "fidelity"
        unpruned = self.unpruned_answers() if need_unpruned else {}
        scored: list[tuple[Sample, str, str]] = []
        kept: list[tuple[int, ...]] = []
        skipped = 0
        first_error = ""
        bar = self.progress(total=self.samples, desc="samples", unit="q", leave=False)
        with bar:
            for frame, group in self.groups:
                bar.update(len(group))
                if need_unpruned and frame.key not in unpruned:
                    skipped += len(group)
                    first_error = first_error or f"{frame.label}: no unpruned answers"
                    continue
                try:
                    texts, frame_kept = (
                        (unpruned[frame.key], tuple(budgets))
                        if keep_all
                        else self._pruned_answers(frame, group, budgets, pruner)
                    )
                except Exception as exc:  # one bad frame must not fail the whole trial
                    skipped += len(group)
                    first_error = first_error or f"{frame.label}: {exc}"
                    logger.warning("skipped %d question(s) on %s: %s", len(group), frame.label, exc)
                    logger.debug("the error in full", exc_info=True)
                    continue
                references = (
                    unpruned[frame.key]
                    if self.reward == "fidelity"
                    else [s.answer or "" for s in group]
                )
                scored += zip(group, texts, references, strict=True)
                kept.append(frame_kept)
        if not scored:
            raise TrialFailed(f"every sample failed; first error: {first_error}")
        reward, parts, score = self._reward(scored)
        token_penalty = penalty(budgets, self.engine.full_budgets)
        return Evaluation(
            rates=table,
            budgets=tuple(budgets),
            reward=reward,
            penalty=token_penalty,
            objective=objective_value(reward, token_penalty, self.lam),
            parts=parts,
            answered=len(scored),
            skipped=skipped,
            score=score,
            answers={sample.id: text for sample, text, _ in scored},
            kept=tuple(kept),
        )

    def _pruned_answers(
        self, frame: Frame, group: Sequence[Sample], budgets: Sequence[int], pruner: str | None
    ) -> tuple[list[str], tuple[int, ...]]:
        """The answers to ``group`` on ``frame``, and the tokens each view kept."""
        generations, _ = self.engine.answer_encoded(
            self.features.visual(frame),
            [s.question for s in group],
            budgets=budgets,
            pruner=pruner,
            seed=self.seed,
        )
        return [g.text for g in generations], generations[0].kept_per_view

    def _reward(
        self, scored: Sequence[tuple[Sample, str, str]]
    ) -> tuple[float, dict[str, Any], Score | None]:
        predictions = [text for _, text, _ in scored]
        references = [reference for _, _, reference in scored]
        if self.reward == "fidelity":
            value = fidelity(predictions, references)
            return value, {"fidelity": value}, None
        if self.reward == "exact":
            hits = [p.strip() == r.strip() for p, r in zip(predictions, references, strict=True)]
            value = sum(hits) / len(hits)
            return value, {"exact": value}, None
        score = score_questions(
            [s.frame.key for s, _, _ in scored],
            [s.question for s, _, _ in scored],
            predictions,
            references,
            [s.tags for s, _, _ in scored],
            rules=self.rules,
            tokenizer=self.tokenizer,
        )
        try:
            value = score.value
        except ValueError as exc:  # the skipped samples took every locally scored item along
            raise TrialFailed(f"no answered question is scored locally: {exc}") from exc
        return value, score.as_dict(), score


def reward_tokenizer(reward: str, choice: str) -> Tokenizer | None:
    """The tokenizer of the language metrics for ``--tokenizer choice``, or None when the
    reward uses none (``fidelity`` tokenises with the emulation, see :func:`~.scoring.fidelity`).

    Raises:
        ConfigError: as :func:`~.ptb.language_tokenizer`.
    """
    return language_tokenizer(choice) if reward == "drivelm" else None


@dataclass
class EvaluationSetup:
    """A model, its validation set with cached visual tokens, and the evaluator over them."""

    data: ValidationSet
    features: FeatureCache
    evaluator: Evaluator
    reward: str
    reward_reason: str
    tokenizer: Tokenizer | None


def prepare_evaluation(
    engine: Engine,
    data: ValidationSet,
    reward: tuple[str, str],
    *,
    tokenizer: Tokenizer | None,
    rules: ScoringRules = CHALLENGE_RULES,
    lam: float = DEFAULT_LAMBDA,
    cache_dir: Path | None = None,
    seed: int = 0,
    progress: Progress = NO_PROGRESS,
) -> EvaluationSetup:
    """Build the evaluator for ``reward`` (name and why, from :func:`choose_reward`; language
    metrics on ``tokenizer``, from :func:`reward_tokenizer`; accuracy mode and per-frame filter
    ``rules``), then encode every frame that is
    not cached yet: the evaluator's checks come before the encoder. The model, pruner and
    answer length are ``engine``'s (the command's config); the feature cache lives in
    ``cache_dir`` (default: the package's cache); ``seed`` seeds the pruner.

    Raises:
        ConfigError: as :class:`Evaluator`.
    """
    from .features import FeatureCache

    name, reason = reward
    features = FeatureCache(engine.vlm, cache_dir)
    evaluator = Evaluator(
        engine.vlm,
        features,
        data,
        reward=name,
        lam=lam,
        pruner=engine.pruner,
        max_new_tokens=engine.max_new_tokens,
        seed=seed,
        progress=progress,
        tokenizer=tokenizer,
        rules=rules,
    )
    features.prepare(data.frames, progress=progress)
    return EvaluationSetup(data, features, evaluator, name, reason, tokenizer)
