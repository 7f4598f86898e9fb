"""Questions files: JSON Lines, one ``{"stamp": ns, "question": str, "answer": str|null}`` a line.

An optional ``"kind"`` (a string such as ``"cars"`` or ``"lane"``) names the question's type;
``prune2drive eval`` reports accuracy per kind where the file has them. Two more optional fields
come from DriveLM (``prune2drive drivelm-questions`` writes them): ``"tag"``, the question's
DriveLM metric tags (a list of integers, as the challenge's files have it; the DriveLM score
routes a question by them, or by its answer when absent), and ``"id"``, the question's DriveLM
id (``<scene>_<frame>_<index>``). A file whose every question has an ``id`` is drawn by whole
frames (all questions of one stamp), as DriveLM files are, for the challenge's per-frame filter.

One line per question keeps files appendable and diff-able, and a bad line can be reported by
its number. ``stamp`` is the header stamp (ns) of the frame set the question is about; replay
answers it on the frame set nearest that stamp. ``answer`` is the reference answer for scoring
and may be null (or absent) for questions to be answered only.

A question repeated (the same stamp and question) is warned about once, and kept: replay's
answer lines stay one per question line, and nothing the user wrote is dropped by a guess at
which copy (answer, kind, id) was meant. Scoring counts it as often as it is written.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import QuestionError
from ..files import read_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QAItem:
    """A question about the frame set at ``stamp_ns``, with its reference answer if known."""

    stamp_ns: int
    question: str
    answer: str | None = None
    kind: str | None = None
    tags: tuple[int, ...] = ()
    id: str | None = None


def read_questions(path: str | os.PathLike[str]) -> list[QAItem]:
    """Read a questions file; raise :class:`QuestionError` naming the file and line on bad input.

    Blank lines are skipped; a UTF-8 byte-order mark and CRLF line ends are accepted. Repeated
    questions are kept, with one warning that counts them and shows the first.
    """
    path = Path(path)
    text = read_text(
        path,
        what="questions file",
        remedy="write one (JSON Lines with stamp, question, answer) or let "
        "`prune2drive make-bag` write one beside a synthetic bag",
        error=QuestionError,
    )
    items = []
    first_line: dict[tuple[int, str], int] = {}  # (stamp, question) -> line it first appears on
    repeats: list[tuple[int, int]] = []  # (line, line it repeats)
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            item = _parse_line(line, f"{path}:{number}")
            items.append(item)
            first = first_line.setdefault((item.stamp_ns, item.question), number)
            if first != number:
                repeats.append((number, first))
    if repeats:
        logger.warning(
            "questions file %s repeats %d question(s) (same stamp and question), e.g. line %d "
            "repeats line %d; each copy is answered (and scored) again: delete the copies if "
            "they are not meant",
            path,
            len(repeats),
            *repeats[0],
        )
    return items


def write_questions(path: str | os.PathLike[str], items: Iterable[QAItem]) -> int:
    """Write ``items`` as JSON Lines (replacing ``path``); return how many were written."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for item in items:
            record: dict[str, object] = {
                "stamp": item.stamp_ns,
                "question": item.question,
                "answer": item.answer,
            }
            if item.kind is not None:
                record["kind"] = item.kind
            if item.tags:
                record["tag"] = list(item.tags)
            if item.id is not None:
                record["id"] = item.id
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def _parse_line(line: str, where: str) -> QAItem:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise QuestionError(f"{where}: not valid JSON ({exc.msg}); expected {_EXAMPLE}") from None
    if not isinstance(record, dict):
        raise QuestionError(f"{where}: expected a JSON object like {_EXAMPLE}")
    stamp = record.get("stamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int) or stamp < 0:
        raise QuestionError(
            f"{where}: 'stamp' must be a non-negative integer in nanoseconds, got {stamp!r}"
        )
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise QuestionError(f"{where}: 'question' must be a non-empty string, got {question!r}")
    answer = record.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise QuestionError(f"{where}: 'answer' must be a string or null, got {answer!r}")
    kind = record.get("kind")
    if kind is not None and (not isinstance(kind, str) or not kind):
        raise QuestionError(f"{where}: 'kind' must be a non-empty string or absent, got {kind!r}")
    tags = record.get("tag", [])
    if not isinstance(tags, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in tags
    ):
        raise QuestionError(f"{where}: 'tag' must be a list of integers or absent, got {tags!r}")
    item_id = record.get("id")
    if item_id is not None and (not isinstance(item_id, str) or not item_id):
        raise QuestionError(f"{where}: 'id' must be a non-empty string or absent, got {item_id!r}")
    return QAItem(
        stamp_ns=stamp, question=question, answer=answer, kind=kind, tags=tuple(tags), id=item_id
    )


_EXAMPLE = '{"stamp": 1532402927647951000, "question": "...", "answer": "..."}'
