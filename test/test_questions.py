"""Questions files: round trip, and bad lines reported with their line number."""

from __future__ import annotations

import json

import pytest

from prune2drive_ros.errors import QuestionError
from prune2drive_ros.sensors.questions import QAItem, read_questions, write_questions


def test_round_trip(tmp_path):
    items = [
        QAItem(1_532_402_927_647_951_000, "How many cars are in the front camera?", "2"),
        QAItem(7, "Is the light green? ünïcode", None),
        QAItem(9, "Which lane is the ego car in?", "the left lane", kind="lane"),
    ]
    path = tmp_path / "q.jsonl"
    assert write_questions(path, items) == 3
    assert read_questions(path) == items
    assert json.loads(path.read_text().splitlines()[0])["stamp"] == items[0].stamp_ns


def test_blank_lines_and_missing_answer_are_fine(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('\n{"stamp": 5, "question": "Why?"}\n\n')
    assert read_questions(path) == [QAItem(5, "Why?", None)]


@pytest.mark.parametrize(
    "line, problem",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"stamp": "1", "question": "q"}', "'stamp' must be a non-negative integer"),
        ('{"stamp": 1.5, "question": "q"}', "'stamp' must be a non-negative integer"),
        ('{"stamp": true, "question": "q"}', "'stamp' must be a non-negative integer"),
        ('{"stamp": -1, "question": "q"}', "'stamp' must be a non-negative integer"),
        ('{"question": "q"}', "'stamp' must be a non-negative integer"),
        ('{"stamp": 1, "question": "  "}', "'question' must be a non-empty string"),
        ('{"stamp": 1, "question": "q", "answer": 3}', "'answer' must be a string or null"),
        ('{"stamp": 1, "question": "q", "kind": ""}', "'kind' must be a non-empty string"),
    ],
)
def test_bad_line_is_reported_with_its_number(tmp_path, line, problem):
    path = tmp_path / "q.jsonl"
    path.write_text('{"stamp": 1, "question": "fine"}\n\n' + line + "\n")
    with pytest.raises(QuestionError, match=rf"q\.jsonl:3: {problem}"):
        read_questions(path)


def test_missing_file_says_how_to_get_one(tmp_path):
    with pytest.raises(QuestionError, match=r"does not exist.*make-bag"):
        read_questions(tmp_path / "none.jsonl")


def test_byte_order_mark_and_crlf_line_ends_are_accepted(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"stamp": 5, "question": "Why?"}\r\n{"stamp": 6, "question": "How?"}\r\n'
    )
    assert read_questions(path) == [QAItem(5, "Why?"), QAItem(6, "How?")]


def test_a_byte_that_is_not_utf8_is_reported_by_its_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'{"stamp": 5, "question": "Why?"}\n{"stamp": 6, "question": "caf\xe9?"}\n')
    with pytest.raises(QuestionError, match=r"q\.jsonl: line 2 is not UTF-8 text \(byte 0xe9\)"):
        read_questions(path)


def test_repeated_questions_are_warned_about_once_and_kept(tmp_path, caplog):
    lines = [
        {"stamp": 5, "question": "Why?"},
        {"stamp": 6, "question": "Why?"},  # another frame: not a repeat
        {"stamp": 5, "question": "Why?", "answer": "because"},
        {"stamp": 5, "question": "Why?"},
    ]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with caplog.at_level("WARNING"):
        items = read_questions(path)
    assert len(items) == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "repeats 2 question(s)" in warnings[0] and "line 3 repeats line 1" in warnings[0]
