"""The locally computable parts of the DriveLM challenge score, and label-free fidelity.

Everything here follows the official evaluation, ``challenge/evaluation.py`` in
OpenDriveLab/DriveLM (read at commit 0469200577), so that numbers computed while tuning
retention rates can be compared with published DriveLM results:

* Each question carries ``tag`` codes that route it to metrics: 0 accuracy, 1 GPT score,
  2 language metrics, 3 match (which itself is half coordinate F1, half GPT score). A question
  with an empty tag list goes to no metric there (``forward`` appends it only under the tags it
  has), and so it is not scored here either (:data:`NOT_SCORED`, the default;
  :attr:`ScoringRules.untagged`). :data:`BY_ANSWER` instead routes it by its reference answer
  (:func:`route`), this package's rule; so are the questions of a source in which no question
  has tags (DriveLM's training file, a plain questions file), which evaluation.py cannot read at
  all (it needs ``tag`` on every question). The score breakdown counts both.
* accuracy: the official code counts ``answer == GT`` (exact string equality) on tag-0 items,
  which are four-way multiple-choice questions with a letter as answer and yes/no questions
  answered "Yes." / "No.". :func:`accuracy` does the same by default (:data:`EXACT`); with
  :data:`EXTRACT` it reads the letter or the yes/no out of free text first (see
  :func:`extract_choice` and :func:`final_answer`), which is NOT the challenge's number (it
  lifted one test set from 0.17 to 0.77), so every report names the mode (:class:`ScoringRules`).
* language: BLEU-1..4, ROUGE-L and CIDEr over all tag-2 items as one corpus, through the
  coco-caption scorers (the official code calls ``language_evaluation.CocoEvaluator``, a
  wrapper of the same Bleu(4), Rouge() and Cider() classes that :mod:`pycocoevalcap` ships),
  on the tokens of Stanford's PTBTokenizer when Java runs, else of its emulation (see
  :mod:`.ptb`; the score says which).
  The final score folds them as ``mean(BLEU-1..4)/3 + ROUGE-L/3 + CIDEr/30`` (the
  ``/4./3.``, ``/3.`` and ``/10./3.`` in the official loop over the result keys).
* match: per item, every ``\\d+\\.\\d+`` number in the text is read, consecutive numbers form
  (x, y) points (an odd last number of the prediction is dropped), each predicted point in
  turn takes the nearest not-yet-matched reference point by L1 distance and is a hit when that
  distance is below 16 px (strictly); F1 of hits, x100, averaged over items. The camera named
  in ``<c1,CAM_FRONT,714.2,520.8>`` is NOT compared; :func:`match` can do so on request.
  The official ``match`` is the mean of that F1 and a GPT score of the same items.
* final = 0.4 * GPT/100 + 0.2 * language + 0.2 * match/100 + 0.2 * accuracy.
* Only questions whose objects the model located are scored: the first question of each key
  frame always counts, and its matched reference points form a "graph"; a later question of
  the frame counts only if every point it mentions is in that graph (:func:`challenge_keep`;
  on by default, :attr:`ScoringRules.challenge_filter`). :func:`score_questions` applies both
  rules; :func:`score_answers` scores a given list as it is.

The GPT parts need an external service and are left out. :func:`local_score` is what this
package reports (``tune`` objective, ``eval``); :func:`drivelm_score` is the official formula
and only gives a number when the GPT parts are supplied from elsewhere.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from ..errors import ConfigError
from .ptb import Tokenizer, language_tokenizer, regex_tokens, tokenizer_named

logger = logging.getLogger(__name__)

#: Tag codes of the DriveLM challenge files (``qa["tag"]``).
TAG_ACCURACY, TAG_GPT, TAG_LANGUAGE, TAG_MATCH = 0, 1, 2, 3

#: Weights of the official final score.
WEIGHTS: Mapping[str, float] = {"gpt": 0.4, "language": 0.2, "match": 0.2, "accuracy": 0.2}

#: A predicted point is a hit when its L1 distance to a reference point is below this.
MATCH_RADIUS_PX = 16.0


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions for {len(references)} references; "
            "give one prediction per reference"
        )
    if not references:
        raise ValueError("nothing to score: no predictions and references were given")


# --------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------

#: Accuracy as the challenge computes it: ``answer == GT``, the strings exactly equal.
EXACT = "exact"
#: Accuracy on the option (or yes/no) read out of free text: "B.", "(A)", "Answer: B" count.
EXTRACT = "extract"
ACCURACY_MODES: tuple[str, ...] = (EXACT, EXTRACT)

_ACCURACY_DESCRIPTIONS = {
    EXACT: "exact string equality, as the challenge",
    EXTRACT: "option or yes/no extracted from free text, NOT the challenge's exact equality",
}

_CHOICE_ONLY = re.compile(r"\(?([A-Da-d])[.):]?")
_CHOICE_LEAD = re.compile(r"\(?([A-D])(?:[.):]|$)")
_CHOICE_PHRASE = re.compile(r"(?i:\b(?:answer|option|choice))\s*(?i:is)?\s*:?\s*\(?([A-D])\b")
_YES_NO = re.compile(r"\s*(yes|no)\b", re.IGNORECASE)
# "Final Answer: B", "**Final Answer:** B", "**Final Answer**: B", "The final answer is: B".
_FINAL_ANSWER = re.compile(r"\bfinal\s+answer(?:\s+is)?[*\s]*:?[*\s]*", re.IGNORECASE)


def final_answer(text: str) -> str:
    """The part of ``text`` after its last "Final Answer" marker, or all of ``text``.

    Reasoning models such as DriveLMM-o1 answer "Reasoning Steps: ... Final Answer: B. ...";
    the steps may name other options ("option A is ruled out"), so the choice is read from
    the final answer only. Markers as DriveLMM-o1's own evaluation splits on them:
    "Final Answer:", "**Final Answer:**", "**Final Answer**:", "The final answer is:".
    """
    found = list(_FINAL_ANSWER.finditer(text))
    return text[found[-1].end() :] if found else text


def extract_choice(text: str) -> str | None:
    """The choice letter (A-D) a free-text answer gives, or None when it names none.

    Tried in order, on the :func:`final_answer` part of the text with surrounding white space
    removed:

    1. the whole text is one letter, optionally in parentheses or followed by ``.``, ``)`` or
       ``:`` ("B", "b.", "(C)");
    2. the text starts with a capital letter followed by ``.``, ``)`` or ``:`` or the end
       ("B. Going ahead.", "(A) Stopped.");
    3. the first "answer", "option" or "choice" (any case), optionally followed by "is" and a
       colon, then a capital letter as a word ("The answer is C", "Option: (D)").

    Only capitals count after rule 1, so the article in "A car is turning" is not read as A.
    """
    text = final_answer(text).strip()
    alone = _CHOICE_ONLY.fullmatch(text)
    if alone:
        return alone.group(1).upper()
    found = _CHOICE_LEAD.match(text) or _CHOICE_PHRASE.search(text)
    return found.group(1) if found else None


def is_choice_answer(reference: str) -> bool:
    """True when ``reference`` is a bare choice letter ("B" or "B."), as DriveLM MCQs have."""
    return re.fullmatch(r"[A-D]\.?", reference.strip()) is not None


def _yes_no(text: str) -> str | None:
    found = _YES_NO.match(final_answer(text))
    return found.group(1).lower() if found else None


def words(text: str) -> list[str]:
    """The words of ``text`` for comparing answers with each other (accuracy, fidelity): its
    :func:`~.ptb.regex_tokens` without trailing periods, so that "B." and "b" agree (PTB keeps
    the period of an abbreviation such as a lone letter)."""
    return [token.rstrip(".") or token for token in regex_tokens(text)]


def _is_yes_no_answer(reference: str) -> bool:
    return words(reference) in (["yes"], ["no"])


def _correct(prediction: str, reference: str) -> bool:
    if is_choice_answer(reference):
        return extract_choice(prediction) == reference.strip()[0]
    if _is_yes_no_answer(reference):
        return _yes_no(prediction) == words(reference)[0]
    return words(final_answer(prediction)) == words(reference)


def check_accuracy_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`ACCURACY_MODES`.

    Raises:
        ConfigError: another value.
    """
    if mode not in ACCURACY_MODES:
        raise ConfigError(
            f"unknown accuracy mode {mode!r}; expected {EXACT} (the challenge's) or {EXTRACT}"
        )
    return mode


def accuracy(predictions: Sequence[str], references: Sequence[str], *, mode: str = EXACT) -> float:
    """Fraction of answers that are right, in [0, 1] (the official scale).

    :data:`EXACT` (the default) is the official ``answer == GT``: the model must answer
    exactly "B" or "No.". With :data:`EXTRACT` a prediction is right when: for a choice-letter
    reference, :func:`extract_choice` finds that letter; for a "Yes."/"No." reference, the
    prediction starts with the same word ("No, it is not." counts); otherwise both word lists
    (:func:`words`) are equal; each time on the :func:`final_answer` part of the prediction.

    Raises:
        ConfigError: an unknown ``mode``.
    """
    _check_pairs(predictions, references)
    if check_accuracy_mode(mode) == EXTRACT:
        hits = [_correct(p, r) for p, r in zip(predictions, references, strict=True)]
    else:
        hits = [p == r for p, r in zip(predictions, references, strict=True)]
    return sum(hits) / len(hits)


#: Questions with no tags are not scored, as the challenge's evaluation.py (which scores a
#: question only under the tags it has) - unless no question of the source has tags.
NOT_SCORED = "not_scored"
#: Questions with no tags are routed by their reference answers (:func:`route`): not the
#: challenge's rule (``--untagged-by-answer``).
BY_ANSWER = "by_answer"
UNTAGGED_RULES: tuple[str, ...] = (NOT_SCORED, BY_ANSWER)

_UNTAGGED_DESCRIPTIONS = {
    NOT_SCORED: "not scored, as the challenge (by their answers where no question has tags)",
    BY_ANSWER: "routed by their answers (--untagged-by-answer), NOT the challenge's rule",
}


@dataclass(frozen=True)
class ScoringRules:
    """How DriveLM answers are scored, beyond the metrics themselves.

    Attributes:
        accuracy: :data:`EXACT` (the challenge's, default) or :data:`EXTRACT`.
        challenge_filter: score a later question of a key frame only when its objects were found
            by the frame's first answer (:func:`challenge_keep`), as the challenge does.
        untagged: what becomes of a question with an empty tag list among tagged ones:
            :data:`NOT_SCORED` (the challenge's, default) or :data:`BY_ANSWER`. Where no
            question has tags, they are all routed by their answers either way (the challenge
            cannot score such a source; :func:`routes_by_answer`).

    Raises:
        ConfigError: an unknown accuracy mode or untagged rule.
    """

    accuracy: str = EXACT
    challenge_filter: bool = True
    untagged: str = NOT_SCORED

    def __post_init__(self) -> None:
        check_accuracy_mode(self.accuracy)
        check_untagged_rule(self.untagged)

    def describe(self) -> str:
        """One line for people: the accuracy mode, the filter and the untagged rule, and
        whether they are the challenge's."""
        accuracy_text = _ACCURACY_DESCRIPTIONS[self.accuracy]
        filter_text = (
            "on, as the challenge"
            if self.challenge_filter
            else "off, every question scored (the challenge scores fewer)"
        )
        return (
            f"accuracy: {self.accuracy} ({accuracy_text}); per-frame filter: {filter_text}; "
            f"questions without tags: {_UNTAGGED_DESCRIPTIONS[self.untagged]}"
        )


def check_untagged_rule(rule: str) -> str:
    """``rule`` if it is one of :data:`UNTAGGED_RULES`.

    Raises:
        ConfigError: another value.
    """
    if rule not in UNTAGGED_RULES:
        raise ConfigError(
            f"unknown rule for questions without tags {rule!r}; expected {NOT_SCORED} (the "
            f"challenge's) or {BY_ANSWER}"
        )
    return rule


#: The rules of the challenge's evaluation.py: exact accuracy, per-frame filter on, questions
#: with an empty tag list not scored.
CHALLENGE_RULES = ScoringRules()


# --------------------------------------------------------------------------------------------
# Language
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageScores:
    """Corpus-level coco-caption scores: BLEU and ROUGE-L in [0, 1], CIDEr in [0, 10], and the
    name of the tokenizer they were computed on (:mod:`.ptb`; None when not recorded)."""

    bleu: tuple[float, float, float, float]
    rouge_l: float
    cider: float
    tokenizer: str | None = None

    @property
    def combined(self) -> float:
        """``mean(BLEU-1..4)/3 + ROUGE-L/3 + CIDEr/30``: the challenge's language score."""
        return sum(self.bleu) / 4 / 3 + self.rouge_l / 3 + self.cider / 10 / 3

    def as_dict(self) -> dict[str, float | str | None]:
        """Scores under the coco-caption names, plus ``language`` (the combined value) and
        ``tokenizer``."""
        out: dict[str, float | str | None] = {
            f"Bleu_{n}": value for n, value in enumerate(self.bleu, start=1)
        }
        out.update(
            ROUGE_L=self.rouge_l, CIDEr=self.cider, language=self.combined, tokenizer=self.tokenizer
        )
        return out


def language(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    tokenizer: Tokenizer | None = None,
) -> LanguageScores:
    """BLEU-1..4, ROUGE-L and CIDEr of ``predictions`` against one reference each.

    Texts are tokenised as the challenge does (``tokenizer``, default
    :func:`~.ptb.language_tokenizer`: the PTB jar when Java runs), predictions and references
    each as one batch in the given order, as coco-caption does.
    All items form one corpus, as in the official evaluation: BLEU is corpus-level (clipped
    n-gram counts summed over items, "closest" brevity penalty), ROUGE-L (beta 1.2) and CIDEr
    are means over items, and CIDEr's IDF comes from the references of these items only. Hence:

    * an empty prediction scores 0 on every metric (and nothing raises);
    * with a single item every n-gram occurs in all (one) reference documents, its IDF is
      log(1/1) = 0 and CIDEr is 0, so the combined score is at most 2/3; CIDEr needs a corpus of
      several items to mean anything;
    * when every reference is empty coco-caption's CIDEr cannot run (no document frequencies);
      it is reported as 0 here.
    """
    _check_pairs(predictions, references)
    tokenizer = tokenizer or language_tokenizer()
    predicted, referenced = tokenizer(predictions, references)
    res = {i: [" ".join(tokens)] for i, tokens in enumerate(predicted)}
    gts = {i: [" ".join(tokens)] for i, tokens in enumerate(referenced)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge_l, _ = Rouge().compute_score(gts, res)
    if any(ref for (ref,) in gts.values()):
        cider, _ = Cider().compute_score(gts, res)
    else:
        logger.warning("every reference answer is empty: CIDEr is reported as 0")
        cider = 0.0
    b1, b2, b3, b4 = (float(b) for b in bleu)
    return LanguageScores(
        bleu=(b1, b2, b3, b4), rouge_l=float(rouge_l), cider=float(cider), tokenizer=tokenizer.name
    )


# --------------------------------------------------------------------------------------------
# Match
# --------------------------------------------------------------------------------------------

_DECIMAL = re.compile(r"\d+\.\d+")
_OBJECT_TAG = re.compile(r"<\s*c\d+\s*,\s*(CAM_[A-Z_]+)\s*,\s*(\d+\.\d+)\s*,\s*(\d+\.\d+)\s*>")


class Point(NamedTuple):
    """An object position in image pixels; ``camera`` is None when not compared."""

    camera: str | None
    x: float
    y: float


def points(text: str, *, by_camera: bool = False) -> list[Point]:
    """The object positions a text mentions.

    By default exactly as the official code reads them: every decimal number (``\\d+\\.\\d+``,
    so integers and signs are ignored) in order, paired up, an odd last number dropped, camera
    ignored. With ``by_camera`` only ``<cN,CAM_X,x,y>`` tags are read, with their camera.
    """
    if by_camera:
        return [Point(cam, float(x), float(y)) for cam, x, y in _OBJECT_TAG.findall(text)]
    nums = [float(n) for n in _DECIMAL.findall(text)]
    return [Point(None, x, y) for x, y in zip(nums[0::2], nums[1::2], strict=False)]


def matched_points(predicted: Sequence[Point], reference: Sequence[Point]) -> list[Point]:
    """Reference points hit by ``predicted``, greedily in prediction order.

    Each predicted point takes the nearest remaining reference point (L1 distance, the first on a
    tie, same camera when cameras are given); it is a hit when the distance is below
    :data:`MATCH_RADIUS_PX`, and a hit reference point cannot be hit again.
    """
    remaining = list(reference)
    hits: list[Point] = []
    for pred in predicted:
        best, best_distance = None, math.inf
        for i, ref in enumerate(remaining):
            if ref.camera != pred.camera:
                continue
            distance = abs(pred.x - ref.x) + abs(pred.y - ref.y)
            if distance < best_distance:
                best, best_distance = i, distance
        if best is not None and best_distance < MATCH_RADIUS_PX:
            hits.append(remaining.pop(best))
    return hits


def match_f1(prediction: str, reference: str, *, same_camera: bool = False) -> float:
    """F1 in [0, 1] of the object positions of one answer (0 when either side has none).

    The official code adds 1e-8 to each denominator, so its perfect F1 is 1 - 1e-8; this one is
    exactly 1.
    """
    predicted = points(prediction, by_camera=same_camera)
    reference_points = points(reference, by_camera=same_camera)
    hits = len(matched_points(predicted, reference_points))
    if hits == 0:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(reference_points)
    return 2 * precision * recall / (precision + recall)


def match(
    predictions: Sequence[str], references: Sequence[str], *, same_camera: bool = False
) -> float:
    """Mean per-item F1 of object positions, x100 (in [0, 100], the challenge's scale).

    This is the locally computable half of the official ``match``; the other half is a GPT
    score of the same answers. ``same_camera`` additionally requires the camera of a
    ``<cN,CAM_X,x,y>`` tag to agree (stricter than the challenge, which compares numbers only).
    """
    _check_pairs(predictions, references)
    f1 = [
        match_f1(p, r, same_camera=same_camera)
        for p, r in zip(predictions, references, strict=True)
    ]
    return 100.0 * sum(f1) / len(f1)


def challenge_keep(
    frames: Sequence[str],
    questions: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[str],
) -> list[bool]:
    """Which items the official evaluation scores (its ``set_graph`` / ``eval_graph``).

    The first item of each frame (in the given order; the official order is perception,
    prediction, planning, behavior, numbered as :attr:`~.drivelm.DriveLMItem.index`) always
    counts, and the reference points its prediction hits (:func:`matched_points`, as
    ``match_result``'s ``matched_out``) become the frame's graph. A later item of the frame
    counts only when every point its question mentions (:func:`points`: decimal numbers in
    pairs) is in that graph, compared by exact float equality as ``q not in self.graph`` does;
    a question naming no point always counts. Questions about objects the model did not find
    are not scored at all, by any metric.

    Where the challenge stops (numpy cannot pair an odd count of numbers in a reference or a
    question), the last number is dropped here; :func:`odd_coordinates` finds such texts.
    """
    _check_pairs(predictions, references)
    if not len(frames) == len(questions) == len(references):
        raise ValueError("frames, questions, predictions and references must have equal length")
    graphs: dict[str, set[Point]] = {}
    keep = []
    for frame, question, prediction, reference in zip(
        frames, questions, predictions, references, strict=True
    ):
        if frame not in graphs:
            graphs[frame] = set(matched_points(points(prediction), points(reference)))
            keep.append(True)
        else:
            keep.append(all(p in graphs[frame] for p in points(question)))
    return keep


def odd_coordinates(text: str) -> bool:
    """True when ``text`` holds an odd count of decimal numbers: the challenge's
    ``match_result`` and ``eval_graph`` cannot pair them (a numpy reshape error) when it is a
    reference answer or a question, and this package drops the last one."""
    return len(_DECIMAL.findall(text)) % 2 == 1


# --------------------------------------------------------------------------------------------
# Combined score
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """The parts of a DriveLM score and what they combine to.

    Attributes:
        accuracy: in [0, 1]; None when no item was scored for accuracy.
        language: coco-caption scores; None when no item was scored for language.
        match: local coordinate F1 x100 in [0, 100]; None when no item was scored for match.
        gpt: GPT score in [0, 100] from an external service; None here.
        match_gpt: GPT score of the match items in [0, 100]; None here.
        counts: items per part (``gpt``: items only a GPT score can judge; the ``match`` items
            need one too, for ``match_gpt``); ``untagged``: items without tags left unscored, as
            the challenge leaves them, and ``by_answer``: items without tags routed by their
            answers instead (:func:`route`); and ``filtered``: questions the per-frame filter
            left out (:func:`score_questions`).
        rules: the accuracy mode, whether the per-frame filter was applied, and the rule for
            items without tags.
    """

    accuracy: float | None = None
    language: LanguageScores | None = None
    match: float | None = None
    gpt: float | None = None
    match_gpt: float | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    rules: ScoringRules = ScoringRules(challenge_filter=False)

    @property
    def value(self) -> float:
        """The local score (see :func:`local_score`): what this package reports."""
        return local_score(self)

    @property
    def challenge(self) -> float | None:
        """The official final score, or None without the GPT parts (see :func:`drivelm_score`)."""
        return drivelm_score(self)

    def as_dict(self) -> dict[str, Any]:
        """Flat, JSON-ready view: every part, the language sub-scores, counts, both totals and
        the rules (``accuracy_mode``, ``challenge_filter``, ``untagged_rule``)."""
        out: dict[str, Any] = {
            "score": self.value,
            "challenge_score": self.challenge,
            "accuracy_mode": self.rules.accuracy,
            "challenge_filter": self.rules.challenge_filter,
            "untagged_rule": self.rules.untagged,
            "accuracy": self.accuracy,
            "language": None if self.language is None else self.language.combined,
            "match": self.match,
            "gpt": self.gpt,
            "match_gpt": self.match_gpt,
        }
        if self.language is not None:
            out.update({k: v for k, v in self.language.as_dict().items() if k != "language"})
        out.update({f"n_{part}": n for part, n in self.counts.items()})
        return out

    def describe(self) -> str:
        """Human-readable account of the weighting and of which parts are present."""

        def show(value: float | None, fmt: str) -> str:
            return "not available" if value is None else format(value, fmt)

        def n(part: str) -> str:
            return f" (n={self.counts[part]})" if part in self.counts else ""

        lang = None if self.language is None else self.language.combined
        final = self.challenge
        lines = [
            "DriveLM challenge score (OpenDriveLab/DriveLM challenge/evaluation.py):",
            "  final = 0.4*GPT/100 + 0.2*language + 0.2*match/100 + 0.2*accuracy",
            f"  language = mean(BLEU-1..4)/3 + ROUGE-L/3 + CIDEr/30 = {show(lang, '.4f')}"
            + n("language"),
        ]
        if self.language is not None and self.language.tokenizer is not None:
            tokens = tokenizer_named(self.language.tokenizer).description
            lines.append(f"    tokens: {tokens}")
        lines += [
            f"  match = (coordinate F1 x100 + GPT)/2; F1 x100 = {show(self.match, '.2f')}, "
            f"GPT = {show(self.match_gpt, '.2f')}" + n("match"),
            f"  accuracy ({self.rules.accuracy}: {_ACCURACY_DESCRIPTIONS[self.rules.accuracy]}) "
            f"= {show(self.accuracy, '.4f')}" + n("accuracy"),
            f"  GPT = {show(self.gpt, '.2f')}" + n("gpt"),
            f"  final = {show(final, '.4f')}"
            + ("" if final is not None else " (needs both GPT parts)"),
            "  " + self._filter_line(),
            *(f"  {line}" for line in self._untagged_lines()),
            "local score = (0.2*language + 0.2*F1x100/100 + 0.2*accuracy) / 0.6, over the parts "
            f"present = {self.value:.4f}  <- reported by tune and eval",
        ]
        return "\n".join(lines)

    def _untagged_lines(self) -> list[str]:
        """What became of the items without tags (none when every item has tags)."""
        lines = []
        left_out = self.counts.get("untagged", 0)
        if left_out:
            lines.append(
                f"{left_out} item(s) with no tags are not scored, as the challenge's "
                "evaluation.py (--untagged-by-answer routes them by their answers)"
            )
        routed = self.counts.get("by_answer", 0)
        if routed:
            lines.append(
                f"{routed} item(s) with no tags routed by their answers (a letter or yes/no to "
                "accuracy, else language, and match with object tags): this package's rule, NOT "
                "the challenge's, whose evaluation.py scores a question only under its tags"
            )
        return lines

    def _filter_line(self) -> str:
        if not self.rules.challenge_filter:
            return "per-frame filter: off, every question scored (the challenge scores fewer)"
        left_out = self.counts.get("filtered", 0)
        return (
            f"per-frame filter: on, as the challenge: {left_out} question(s) not scored (they "
            "name objects the first answer of their key frame did not find)"
        )


def drivelm_score(parts: Score) -> float | None:
    """The official final score in [0, 1] (x100 as papers print it), or None.

    ``0.4*GPT/100 + 0.2*language + 0.2*match/100 + 0.2*accuracy`` with the official match
    ``(F1 x100 + match_gpt)/2``. None unless every part, both GPT ones included, is present:
    the GPT parts need an external service, so locally this is None and :func:`local_score` is
    reported instead.
    """
    if (
        parts.gpt is None
        or parts.match_gpt is None
        or parts.language is None
        or parts.match is None
        or parts.accuracy is None
    ):
        return None
    official_match = (parts.match + parts.match_gpt) / 2
    return (
        WEIGHTS["gpt"] * parts.gpt / 100
        + WEIGHTS["language"] * parts.language.combined
        + WEIGHTS["match"] * official_match / 100
        + WEIGHTS["accuracy"] * parts.accuracy
    )


def local_score(parts: Score) -> float:
    """The official weights without GPT, renormalised: in [0, 1] (language may exceed 1).

    ``(0.2*language + 0.2*F1x100/100 + 0.2*accuracy) / 0.6``, i.e. the mean of the three local
    parts; a part with no items (None) is left out and the weights of the others renormalised.
    Not comparable with published final scores, which carry 40 % GPT score plus half of match.

    Raises:
        ValueError: no local part is present.
    """
    terms = {
        "language": None if parts.language is None else parts.language.combined,
        "match": None if parts.match is None else parts.match / 100,
        "accuracy": parts.accuracy,
    }
    present = {name: value for name, value in terms.items() if value is not None}
    if not present:
        raise ValueError("no local score part (language, match, accuracy) has any item")
    total_weight = sum(WEIGHTS[name] for name in present)
    return sum(WEIGHTS[name] * value for name, value in present.items()) / total_weight


def _parts_of(reference: str) -> set[int]:
    """Metrics an untagged item goes to: accuracy for a letter or yes/no answer, else language
    (and match too when the reference names object positions)."""
    if is_choice_answer(reference) or _is_yes_no_answer(reference):
        return {TAG_ACCURACY}
    return {TAG_LANGUAGE, TAG_MATCH} if _OBJECT_TAG.search(reference) else {TAG_LANGUAGE}


def routes_by_answer(tags: Sequence[Sequence[int]] | None, untagged: str = NOT_SCORED) -> bool:
    """Whether items without tags are routed by their answers: with :data:`BY_ANSWER`, and
    with :data:`NOT_SCORED` only when no item has tags (``tags`` None or all empty: a source
    not in the challenge's format, which evaluation.py cannot score at all). Otherwise they
    are not scored, as the challenge leaves them.

    Raises:
        ConfigError: an unknown ``untagged`` rule.
    """
    check_untagged_rule(untagged)
    return untagged == BY_ANSWER or tags is None or not any(tags)


def route(
    references: Sequence[str],
    tags: Sequence[Sequence[int]] | None = None,
    *,
    untagged: str = NOT_SCORED,
) -> dict[int, list[int]]:
    """Which items (indices) each metric tag scores: by the items' tags; items without tags
    by their reference when :func:`routes_by_answer` says so (see :func:`score_answers`),
    else nowhere.

    Raises:
        ValueError: ``tags`` of another length, or an unknown tag.
        ConfigError: an unknown ``untagged`` rule.
    """
    return _route(references, tags, by_answer=routes_by_answer(tags, untagged))


def _route(
    references: Sequence[str], tags: Sequence[Sequence[int]] | None, *, by_answer: bool
) -> dict[int, list[int]]:
    if tags is not None and len(tags) != len(references):
        raise ValueError(f"got {len(tags)} tag lists for {len(references)} references")
    routed: dict[int, list[int]] = {
        code: [] for code in (TAG_ACCURACY, TAG_GPT, TAG_LANGUAGE, TAG_MATCH)
    }
    for i, reference in enumerate(references):
        if tags is not None and tags[i]:
            item_tags = set(tags[i])
        else:
            item_tags = _parts_of(reference) if by_answer else set()
        unknown = item_tags - routed.keys()
        if unknown:
            raise ValueError(f"item {i} has unknown tag(s) {sorted(unknown)}; known: 0, 1, 2, 3")
        for code in item_tags:
            routed[code].append(i)
    return routed


def _untagged_count(references: Sequence[str], tags: Sequence[Sequence[int]] | None) -> int:
    return len(references) if tags is None else sum(1 for item_tags in tags if not item_tags)


def score_answers(
    predictions: Sequence[str],
    references: Sequence[str],
    tags: Sequence[Sequence[int]] | None = None,
    *,
    accuracy_mode: str = EXACT,
    untagged: str = NOT_SCORED,
    same_camera: bool = False,
    tokenizer: Tokenizer | None = None,
) -> Score:
    """Score answers part by part, routing each item by its challenge tags; every tagged item
    given is scored (see :func:`score_questions` for the challenge's per-frame filter).

    An item with an empty tag list among tagged items is not scored, as the challenge's
    evaluation.py leaves it (``counts["untagged"]``), unless ``untagged`` is :data:`BY_ANSWER`.
    Where no item has tags (``tags`` None or all empty, as in DriveLM's training file and plain
    question files), or with :data:`BY_ANSWER`, items without tags are routed by their
    reference (``counts["by_answer"]``): a choice letter or yes/no to accuracy, anything else
    to language, and also to match when it holds ``<cN,CAM_X,x,y>`` tags.
    ``accuracy_mode`` goes to :func:`accuracy`, ``tokenizer`` to :func:`language`.

    Raises:
        ConfigError: an unknown accuracy mode or ``untagged`` rule.
    """
    return _score_answers(
        predictions,
        references,
        tags,
        by_answer=routes_by_answer(tags, untagged),
        rules=ScoringRules(accuracy_mode, challenge_filter=False, untagged=untagged),
        same_camera=same_camera,
        tokenizer=tokenizer,
    )


def _score_answers(
    predictions: Sequence[str],
    references: Sequence[str],
    tags: Sequence[Sequence[int]] | None,
    *,
    by_answer: bool,
    rules: ScoringRules,
    same_camera: bool,
    tokenizer: Tokenizer | None,
) -> Score:
    _check_pairs(predictions, references)
    routed = _route(references, tags, by_answer=by_answer)
    accuracy_mode = rules.accuracy
    untagged = _untagged_count(references, tags)

    def pick(code: int) -> tuple[list[str], list[str]]:
        return [predictions[i] for i in routed[code]], [references[i] for i in routed[code]]

    return Score(
        accuracy=(
            accuracy(*pick(TAG_ACCURACY), mode=accuracy_mode) if routed[TAG_ACCURACY] else None
        ),
        language=(
            language(*pick(TAG_LANGUAGE), tokenizer=tokenizer) if routed[TAG_LANGUAGE] else None
        ),
        match=match(*pick(TAG_MATCH), same_camera=same_camera) if routed[TAG_MATCH] else None,
        counts={
            "accuracy": len(routed[TAG_ACCURACY]),
            "language": len(routed[TAG_LANGUAGE]),
            "match": len(routed[TAG_MATCH]),
            "gpt": len(routed[TAG_GPT]),
            "untagged": 0 if by_answer else untagged,
            "by_answer": untagged if by_answer else 0,
        },
        rules=rules,
    )


def score_questions(
    frames: Sequence[str],
    questions: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[str],
    tags: Sequence[Sequence[int]] | None = None,
    *,
    rules: ScoringRules = CHALLENGE_RULES,
    same_camera: bool = False,
    tokenizer: Tokenizer | None = None,
) -> Score:
    """Score the answers to the questions of key frames as the challenge's evaluation.py does.

    With ``rules.challenge_filter`` only the items :func:`challenge_keep` keeps are scored
    (``frames`` names each item's key frame; a frame's items in the challenge's order), the
    count of the others is ``counts["filtered"]``; then :func:`score_answers` with
    ``rules.accuracy`` and ``rules.untagged``. Whether any item has tags
    (:func:`routes_by_answer`) is decided on all the items given, filtered ones included.

    Raises:
        ValueError: sequences of different lengths, or nothing to score.
    """
    keep = (
        challenge_keep(frames, questions, predictions, references)
        if rules.challenge_filter
        else [True] * len(references)
    )
    chosen = [i for i, kept in enumerate(keep) if kept]
    score = _score_answers(
        [predictions[i] for i in chosen],
        [references[i] for i in chosen],
        None if tags is None else [tags[i] for i in chosen],
        by_answer=routes_by_answer(tags, rules.untagged),
        rules=rules,
        same_camera=same_camera,
        tokenizer=tokenizer,
    )
    counts = {**score.counts, "filtered": len(keep) - len(chosen)}
    return replace(score, counts=counts)


# --------------------------------------------------------------------------------------------
# Label-free agreement with the unpruned model
# --------------------------------------------------------------------------------------------


def fidelity(pruned_answers: Sequence[str], unpruned_answers: Sequence[str]) -> float:
    """Agreement of the pruned model's answers with the unpruned model's, in [0, 1].

    Per item the mean of exact agreement (equal word lists, :func:`words`, so "B." and "b"
    agree) and ROUGE-L (LCS-based F, beta 1.2) between the two word lists (no JVM per trial for
    a measure that has no reference implementation to agree with); then the mean over items.
    Identical answers give 1.0. Used to tune or check rates without labels. The full language
    score is not used here because two of its parts do not reach 1 on identical answers: BLEU-4
    is near 0 for answers shorter than four tokens, and CIDEr depends on the batch through its
    IDF (0 for a single item).
    """
    _check_pairs(pruned_answers, unpruned_answers)
    rouge = Rouge()
    per_item = []
    for pruned, full in zip(pruned_answers, unpruned_answers, strict=True):
        pruned_tokens, full_tokens = words(pruned), words(full)
        exact = float(pruned_tokens == full_tokens)
        overlap = rouge.calc_score([" ".join(pruned_tokens)], [" ".join(full_tokens)])
        per_item.append((exact + float(overlap)) / 2)
    return sum(per_item) / len(per_item)
