"""Tokenisation before BLEU, ROUGE-L and CIDEr, as the DriveLM challenge does it.

The challenge (``challenge/evaluation.py`` in OpenDriveLab/DriveLM) scores language with
``language_evaluation.CocoEvaluator``, whose coco-caption code tokenises every answer with
Stanford CoreNLP 3.4.1's ``PTBTokenizer`` (Java, run as ``-preserveLines -lowerCase``) and then
drops the tokens of coco-caption's ``PUNCTUATIONS`` list. pycocoevalcap ships the same jar and
list. Two consequences matter for driving answers:

* the list names brackets in upper case (``-LRB-``) while the tokens arrive lower-cased, so
  ``(``, ``[`` and ``{`` survive as the words ``-lrb-``, ``-lsb-``, ``-lcb-`` (and their
  closing ones);
* an object tag ``<c1,CAM_BACK,1088.3,497.5>`` becomes ``< c1 cam_back ,1088.3,497.5 >``: PTB
  reads ``,1088.3,497.5`` as one number, comma included.

Two tokenisers, chosen once per process (:func:`language_tokenizer`, ``--tokenizer``):

``ptb``
    the jar itself, when ``java`` runs: the answers of one side (all references, or all
    predictions) go through one JVM in one batch, as coco-caption does, and the two sides run
    side by side. Batches must keep coco-caption's order: the jar lexes the batch as one
    stream, so whether ``B.`` at the end of an answer keeps its period depends on the first
    word of the next one. Line breaks inside an answer become spaces (coco-caption replaces
    ``\\n`` only; a ``\\r`` there would shift every later answer by a line). The jar's
    ``-lowerCase`` now and then leaves the first token of a run as written (seen in 9 of about
    300 runs with OpenJDK 17), so its output is lower-cased again here.
``regex``
    :func:`regex_tokens`, a rule-by-rule emulation of the jar for text without Java. It agrees
    with the jar on DriveLM-style answers (``test_scoring.py`` checks a set against the jar);
    it does not know URLs, e-mail addresses, SGML, fractions such as ``3 1/2``, currency
    prefixes (``US$``), words with inner apostrophes other than ``o'clock`` (``'90s``), an
    acronym before a hyphen (``U.S.-based``), US-state abbreviations, and the cross-answer
    look-ahead above.

The other uses of tokens in :mod:`.scoring` (accuracy's normalisation, fidelity) are this
package's own and always use :func:`regex_tokens`.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pycocoevalcap.tokenizer import ptbtokenizer

from ..errors import ConfigError, TokenizerError

logger = logging.getLogger(__name__)

#: ``--tokenizer`` choices: ``auto`` is ``ptb`` when Java runs, else ``regex``.
TOKENIZERS: tuple[str, ...] = ("auto", "ptb", "regex")
#: Tokens coco-caption drops after PTBTokenizer (the upper-case bracket names never match).
PUNCTUATIONS = frozenset(ptbtokenizer.PUNCTUATIONS)
# Split on single spaces as coco-caption does (a "3 1/2" token holds a no-break space).
_DROPPED = PUNCTUATIONS | {""}
#: Stanford CoreNLP 3.4.1, shipped by pycocoevalcap beside its wrapper.
PTB_JAR = Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
_PTB_CLASS = "edu.stanford.nlp.process.PTBTokenizer"
_PROBE = "There is a car (the white one) at <c1,CAM_BACK,1088.3,497.5>."
_PROBE_TOKENS = [
    *("there", "is", "a", "car", "-lrb-", "the", "white", "one", "-rrb-", "at"),
    *("<", "c1", "cam_back", ",1088.3,497.5", ">"),
]


@dataclass(frozen=True)
class Tokenizer:
    """A way to turn answers into coco-caption's tokens.

    Attributes:
        name: ``ptb`` or ``regex``.
        description: for reports and ``eval``'s output.
    """

    name: str
    description: str
    _batches: Callable[[Sequence[Sequence[str]]], list[list[list[str]]]] = field(repr=False)

    def __call__(self, *batches: Sequence[str]) -> list[list[list[str]]]:
        """Tokens of every text of each batch (each batch as one run of the tokeniser)."""
        return self._batches(batches)


def tokenizer_name(tokenizer: Tokenizer | None) -> str | None:
    """``tokenizer``'s name for settings and JSON; None for a reward without language metrics."""
    return None if tokenizer is None else tokenizer.name


def _regex_batches(batches: Sequence[Sequence[str]]) -> list[list[list[str]]]:
    return [[regex_tokens(text) for text in batch] for batch in batches]


def _ptb_batches(batches: Sequence[Sequence[str]]) -> list[list[list[str]]]:
    """Each batch through its own JVM, all at once (a JVM start costs more than the lexing)."""
    java = shutil.which("java")
    if java is None:
        raise TokenizerError("java is no longer on PATH; restart with --tokenizer regex")
    command = [java, "-cp", str(PTB_JAR), _PTB_CLASS, "-preserveLines", "-lowerCase"]
    runs = []
    for batch in batches:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
        )
        runs.append((process, [_LINE_BREAKS.sub(" ", text) for text in batch]))
    return [_ptb_result(process, lines) for process, lines in runs]


def _ptb_result(process: subprocess.Popen[str], lines: list[str]) -> list[list[str]]:
    out, err = process.communicate("\n".join(lines))
    if process.returncode != 0:
        reason = err.strip().splitlines()[-1] if err.strip() else f"exit {process.returncode}"
        raise TokenizerError(f"Stanford PTBTokenizer failed: {reason}")
    tokenized = out.split("\n")
    if len(tokenized) < len(lines):
        raise TokenizerError(
            f"Stanford PTBTokenizer returned {len(tokenized)} lines for {len(lines)} answers"
        )
    return [
        [token for token in line.lower().rstrip().split(" ") if token not in _DROPPED]
        for line in tokenized[: len(lines)]
    ]


REGEX = Tokenizer(
    "regex", "regular-expression emulation of Stanford PTBTokenizer, without Java", _regex_batches
)
PTB = Tokenizer(
    "ptb",
    "Stanford PTBTokenizer 3.4.1 via java, as the DriveLM challenge's coco-caption",
    _ptb_batches,
)
_BY_NAME = {tokenizer.name: tokenizer for tokenizer in (REGEX, PTB)}


def tokenizer_named(name: str) -> Tokenizer:
    """The tokenizer of a recorded ``name`` (``ptb`` or ``regex``)."""
    return _BY_NAME[name]


@functools.cache
def java_problem() -> str | None:
    """Why the jar cannot be used here, or None when it runs (checked once per process, by
    tokenising one sentence; its cost: see BENCHMARKS.md)."""
    if shutil.which("java") is None:
        return "java is not on PATH"
    if not PTB_JAR.is_file():
        return f"pycocoevalcap's {PTB_JAR.name} is missing"
    try:
        tokens = _ptb_batches([[_PROBE]])[0][0]
    except (OSError, TokenizerError) as exc:
        return str(exc)
    if tokens != _PROBE_TOKENS:
        return f"the jar tokenised a test sentence as {tokens}, expected {_PROBE_TOKENS}"
    return None


@functools.cache
def language_tokenizer(choice: str = "auto") -> Tokenizer:
    """The tokenizer of the language metrics for ``choice`` (one of :data:`TOKENIZERS`),
    logged once per process.

    Raises:
        ConfigError: ``ptb`` asked for where Java cannot run it, or an unknown choice.
    """
    if choice not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {choice!r}; expected one of {', '.join(TOKENIZERS)}")
    problem = None if choice == "regex" else java_problem()
    if choice == "ptb" and problem:
        raise ConfigError(
            f"--tokenizer ptb cannot run: {problem}. Install a Java runtime (Debian: apt install "
            "default-jre-headless) or use --tokenizer regex"
        )
    tokenizer = REGEX if choice == "regex" or problem else PTB
    if problem:
        logger.warning("language metrics: %s (%s)", tokenizer.description, problem)
    else:
        logger.info("language metrics: %s", tokenizer.description)
    return tokenizer


# --------------------------------------------------------------------------------------------
# The emulation
# --------------------------------------------------------------------------------------------

_LINE_BREAKS = re.compile(r"[\n\r\u2028\u2029\x0b\x0c\x85]")
# Characters PTB reads as another (its output forms, or ones coco-caption then drops alike).
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "--",
        "\u2014": "--",
        "\u2026": "...",
        "\u00bc": "1/4",
        "\u00bd": "1/2",
        "\u00be": "3/4",
        "(": " -LRB- ",
        ")": " -RRB- ",
        "[": " -LSB- ",
        "]": " -RSB- ",
        "{": " -LCB- ",
        "}": " -RCB- ",
    }
)
# PTB splits these words in two: can not, gon na, wan na, got ta; and n't off its word.
_SPLIT_WORDS = re.compile(r"\b(can)(not)\b|\b(gon|wan)(na)\b|\b(got)(ta)\b", re.IGNORECASE)
_NEGATION = re.compile(r"(?<=[A-Za-z])(n't)\b", re.IGNORECASE)
# A single letter with a period is an abbreviation ("B." stays whole) unless one of these words
# follows (then the period ends a sentence): PTB's list, case-sensitive as PTB has it.
_SENTENCE_STARTS = (
    "About|According|Additionally|After|An|A|As|At|But|Earlier|He|Her|Here|However|If|In|It|"
    "Last|Many|More|Mr\\.|Ms\\.|Now|Once|One|Other|Our|She|Since|So|Some|Such|That|The|Then|"
    "There|These|They|This|We|When|While|What|Yet|You"
)
# Words PTB keeps with their period, any case (titles, company words, months, "etc.", ...).
_ABBREVIATIONS = (
    "Mrs|Mr|Ms|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|"
    "Mt|Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Jr|Sr|Bros|Blvd|Rd|Esq|"
    "Inc|Cos?|Corp|Ltd|Plc|Dept|Assn|Univ|Intl|Sys|Prop|Ph|tel|est|ext|sq|ft|"
    "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec|Mon|Tues?|Wed|Thu|Thurs|Fri|etc|al|seq|vs|cf"
)
_TOKEN = re.compile(
    rf"""
    \.{{2,}}                                            # "..." (dropped; ".." as dots)
    | [A-Za-z](?=\.\s+(?:{_SENTENCE_STARTS})[ \t])        # "B" of "B. The": sentence end
    | [A-Za-z](?:\.[A-Za-z])+\.(?![A-Za-z0-9])          # acronyms: "U.S.", "e.g.", "a.m."
    | (?i:{_ABBREVIATIONS})\.(?![A-Za-z0-9])            # "Mr.", "St.", "etc."
    | (?i:nos?|fig|art|pp|op)\.(?=\s*[0-9])             # before a number: "No. 5", "Fig. 3"
    | [A-Za-z]\.(?![A-Za-z])                            # one letter: "B.", "a."
    | [A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)+   # dotted words: "U.S", "going.the"
    | (?:[A-HJ-XZ]|o)'[A-Za-z]{{2,}}                    # "o'clock", "O'Neil"
    | [A-Za-z0-9][A-Za-z0-9.,]*(?:-[A-Za-z0-9]+)+       # hyphenated: "3.5-meter", "T-junction"
    | [-+]?[0-9]*(?:[.:,][0-9]+)+                       # numbers: "3.5", "12:30", ",1088.3,497.5"
    | [-+][0-9]+                                        # signed integers: "-5"
    | [A-Za-z0-9]+(?:-[A-Za-z]+){{0,2}}(?:/[A-Za-z0-9]+(?:-[A-Za-z]+){{0,2}}){{1,2}}  # "km/h"
    | (?i:n't)                                          # split off its word before
    | '(?:[msdMSD]|re|RE|ve|VE|ll|LL)(?![A-Za-z])       # clitics: 's 're 've 'll 'd 'm
    | -LRB-|-RRB-|-LSB-|-RSB-|-LCB-|-RCB-               # brackets, already renamed
    | \w+(?:-\w+)*                                      # words (underscores and hyphens inside)
    | -+                                                # dashes
    | [?!]+                                             # "?!" stays one token
    | \S                                                # anything else, one character
    """,
    re.VERBOSE,
)


def regex_tokens(text: str) -> list[str]:
    """Lower-cased tokens of ``text`` as PTBTokenizer and coco-caption's punctuation filter
    give them, without Java (see the module doc for what it does not cover): for instance
    ``A car (white) at <c1,CAM_BACK,1088.3,497.5>, isn't it?`` gives ``a car -lrb- white -rrb-
    at < c1 cam_back ,1088.3,497.5 > is n't it``.
    """
    text = _LINE_BREAKS.sub(" ", text).translate(_TRANSLATE)
    text = _SPLIT_WORDS.sub(lambda m: " ".join(part for part in m.groups() if part), text)
    text = _NEGATION.sub(r" \1", text)
    tokens = []
    for token in _TOKEN.findall(text):
        if (token.startswith("--") and len(token) <= 4) or token.startswith(".."):
            continue  # PTB's "--" and "...", dropped by coco-caption
        token = token.lower()
        if token not in PUNCTUATIONS and token != '"':
            tokens.append(token)
    return tokens
