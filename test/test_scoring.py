"""DriveLM scoring: every metric on examples small enough to check by hand."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from prune2drive_ros.errors import ConfigError
from prune2drive_ros.tuning import ptb
from prune2drive_ros.tuning.ptb import PTB, REGEX, java_problem, language_tokenizer, regex_tokens
from prune2drive_ros.tuning.scoring import (
    BY_ANSWER,
    CHALLENGE_RULES,
    EXACT,
    EXTRACT,
    NOT_SCORED,
    TAG_LANGUAGE,
    LanguageScores,
    Point,
    Score,
    ScoringRules,
    accuracy,
    challenge_keep,
    drivelm_score,
    extract_choice,
    fidelity,
    final_answer,
    language,
    local_score,
    match,
    match_f1,
    odd_coordinates,
    points,
    route,
    score_answers,
    score_questions,
)


def _tokens(text: str) -> str:
    return " ".join(regex_tokens(text))


def test_regex_tokens_lowercase_and_drop_coco_captions_punctuation() -> None:
    assert (
        _tokens("The ego vehicle's speed: FAST, isn't it?")
        == "the ego vehicle 's speed fast is n't it"
    )


def test_regex_tokens_of_brackets_numbers_and_object_tags_are_ptbs() -> None:
    # coco-caption lower-cases before it filters "-LRB-", so bracket names stay as words; PTB
    # reads ",1088.3,497.5" as one number, leading comma included.
    assert _tokens("A champagne-colored sedan (3.5 m) at <c1,CAM_BACK,1088.3,497.5>.") == (
        "a champagne-colored sedan -lrb- 3.5 m -rrb- at < c1 cam_back ,1088.3,497.5 >"
    )


def test_regex_tokens_keep_abbreviations_whole() -> None:
    assert _tokens("Approx. 5 m, e.g. the U.S. car of Mr. Smith, etc.") == (
        "approx 5 m e.g. the u.s. car of mr. smith etc."
    )
    # One letter with a period is an abbreviation unless a sentence plainly starts after it.
    assert _tokens("A. Going ahead.") == "a. going ahead"
    assert _tokens("B. The car stops.") == "b the car stops"


#: DriveLM-style answers, one per line: in the challenge files' style and as models answer.
DRIVELM_STYLE = (
    (Path(__file__).parent / "fixtures" / "drivelm_style_answers.txt")
    .read_text(encoding="utf-8")
    .splitlines()
)


def test_regex_tokens_agree_with_the_ptb_jar_on_drivelm_style_answers() -> None:
    problem = java_problem()
    if problem:
        pytest.skip(f"the PTB jar cannot run here: {problem}")
    # The jar lexes a batch as one stream: a line's last period may depend on the next line's
    # first word. A lower-case line between the answers gives each the end of text it has
    # alone, which is what the emulation sees.
    separated = [text for answer in DRIVELM_STYLE for text in (answer, "x")]
    (jar,) = PTB(separated)
    assert jar[1::2] == [["x"]] * len(DRIVELM_STYLE)
    for answer, tokens in zip(DRIVELM_STYLE, jar[::2], strict=True):
        assert regex_tokens(answer) == tokens, answer


def test_ptb_batches_keep_one_line_per_answer() -> None:
    if java_problem():
        pytest.skip(f"the PTB jar cannot run here: {java_problem()}")
    answers = ["Stop\rnow.", "", "Keep\u2028going\nahead.", "(A) car."]
    references = ["Yes."]
    assert PTB(answers, references) == [
        [["stop", "now"], [], ["keep", "going", "ahead"], ["-lrb-", "a", "-rrb-", "car"]],
        [["yes"]],
    ]


def test_ptb_is_refused_without_java_and_auto_falls_back(monkeypatch, caplog) -> None:
    monkeypatch.setattr(ptb.shutil, "which", lambda name: None)
    java_problem.cache_clear()
    language_tokenizer.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"java is not on PATH.*--tokenizer regex"):
            language_tokenizer("ptb")
        with caplog.at_level(logging.WARNING):
            assert language_tokenizer("auto") is REGEX
        assert "java is not on PATH" in caplog.text
    finally:
        java_problem.cache_clear()
        language_tokenizer.cache_clear()


def test_language_says_which_tokens_it_scored() -> None:
    scores = language(["the light is red"], ["the light is red"], tokenizer=REGEX)
    assert scores.tokenizer == "regex" and scores.as_dict()["tokenizer"] == "regex"
    described = score_answers(["a car"], ["a truck"], [[2]], tokenizer=REGEX).describe()
    assert "tokens: regular-expression emulation of Stanford PTBTokenizer" in described


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("b.", "B"),
        ("(C)", "C"),
        ("  D)  ", "D"),
        ("B. Going ahead.", "B"),
        ("(A) Stopped.", "A"),
        ("The answer is C.", "C"),
        ("Option: (D)", "D"),
        ("I'd pick choice B because it is stopped", "B"),
        ("A car is turning left.", None),  # the article, not a choice
        ("the answer is a car", None),  # lower-case letters count only when alone
        ("Going ahead.", None),
        ("", None),
        # DriveLMM-o1 style: the steps name other options, the final answer decides.
        ("Reasoning Steps: option A is ruled out, the car stopped. Final Answer: B. Stopped.", "B"),
        ("Reasoning Steps: the answer is not C.\n**Final Answer:** (D) Turn left.", "D"),
        ("Step 1: choice A fails.\n**Final Answer**: C", "C"),
        ("The final answer is: A", "A"),
        ("Reasoning Steps: the answer is C. Final Answer: none of them", None),
    ],
)
def test_extract_choice(text: str, letter: str | None) -> None:
    assert extract_choice(text) == letter


def test_final_answer_is_the_text_after_the_last_marker() -> None:
    assert final_answer("Reasoning Steps: x. Final Answer: No, it is not.") == "No, it is not."
    assert final_answer("no marker here") == "no marker here"
    assert final_answer("Final answer: A. ... final answer: B") == "B"


def test_accuracy_is_exact_string_equality_by_default_as_the_challenge() -> None:
    predictions = ["B", "B.", "No.", "no", " B", "(B)"]
    references = ["B", "B", "No.", "No.", "B", "B"]
    assert accuracy(predictions, references) == pytest.approx(2 / 6)
    assert accuracy(predictions, references, mode=EXACT) == pytest.approx(2 / 6)


def test_accuracy_extracts_letters_and_yes_no_on_request() -> None:
    predictions = [
        "B. The ego vehicle is going straight.",
        "No, it is not.",
        "C",
        "Turn left.",
        "Reasoning Steps: it is not moving, so not A. Final Answer: B",
        "Reasoning Steps: the light is red. Final Answer: Yes.",
    ]
    references = ["B", "No.", "D", "Turn left", "B", "No."]
    # right, right, wrong, right (free text compared token by token: the period is dropped),
    # right (the final answer, not the "A" of the steps), wrong (Yes for No)
    assert accuracy(predictions, references, mode=EXTRACT) == pytest.approx(4 / 6)
    assert accuracy(predictions, references) == 0.0


def test_unknown_accuracy_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"exact .*or extract"):
        accuracy(["B"], ["B"], mode="fuzzy")
    with pytest.raises(ConfigError, match="unknown accuracy mode"):
        ScoringRules("fuzzy")
    assert ScoringRules(EXACT, challenge_filter=True) == CHALLENGE_RULES


def test_bleu_and_rouge_by_hand() -> None:
    # hypothesis "the cat sat on the mat" vs reference "the cat is on the mat", both 6 tokens
    # (brevity penalty 1).
    # BLEU-1: clipped unigram hits the x2, cat, on, mat = 5 of 6         -> 5/6
    # BLEU-2: bigram hits "the cat", "on the", "the mat" = 3 of 5       -> sqrt(5/6 * 3/5)
    # BLEU-3: trigram hit "on the mat" = 1 of 4                         -> (5/6*3/5*1/4)^(1/3)
    # ROUGE-L: LCS "the cat on the mat" = 5, P = R = 5/6               -> 5/6
    scores = language(["The cat sat on the mat."], ["the cat is on the mat"])
    b1, b2, b3, _ = scores.bleu
    assert b1 == pytest.approx(5 / 6, abs=1e-6)
    assert b2 == pytest.approx(math.sqrt(0.5), abs=1e-6)
    assert b3 == pytest.approx(0.5, abs=1e-6)
    assert scores.rouge_l == pytest.approx(5 / 6)


def test_rouge_l_uses_beta_1_2() -> None:
    # "the car turns left" vs "the red car turns right": LCS "the car turns" = 3,
    # P = 3/4, R = 3/5, F = (1 + 1.44) P R / (R + 1.44 P) = 1.098 / 1.68
    scores = language(["the car turns left"], ["the red car turns right"])
    assert scores.rouge_l == pytest.approx(1.098 / 1.68)


def test_single_item_cider_is_zero_and_does_not_raise() -> None:
    # One document: every n-gram's IDF is log(1/1) = 0.
    assert language(["a b c d"], ["a b c d"]).cider == 0.0


def test_cider_rewards_the_right_answer_across_a_corpus() -> None:
    refs = ["the light is red", "a truck is parked", "the pedestrian crosses the road"]
    good = language(refs, refs)
    bad = language(["the light is red", "the light is red", "the light is red"], refs)
    assert good.cider > bad.cider > 0.0


def test_empty_predictions_score_zero() -> None:
    scores = language(["", ""], ["the light is red", "a truck is parked"])
    assert scores.bleu == (0.0, 0.0, 0.0, 0.0)
    assert scores.rouge_l == 0.0
    assert scores.cider == 0.0
    assert scores.combined == 0.0


def test_empty_references_do_not_raise() -> None:
    assert language(["something", "else"], ["", ""]).cider == 0.0


def test_language_combined_is_the_challenge_formula() -> None:
    scores = LanguageScores(bleu=(0.4, 0.3, 0.2, 0.1), rouge_l=0.6, cider=1.5)
    # mean BLEU 0.25 / 3 + 0.6 / 3 + 1.5 / 30 = 0.08333 + 0.2 + 0.05
    assert scores.combined == pytest.approx(0.25 / 3 + 0.2 + 0.05)
    assert scores.as_dict()["language"] == pytest.approx(scores.combined)


def test_match_two_hits_of_three() -> None:
    prediction = "<c1,CAM_FRONT,100.0,200.0>, <c2,CAM_BACK,300.0,400.0>, <c3,CAM_FRONT,900.0,100.0>"
    reference = "<c1,CAM_FRONT,105.0,205.0> <c2,CAM_BACK,310.0,400.0> <c3,CAM_FRONT,500.0,500.0>"
    # L1 distances 10 and 10 (< 16: hits); the third is 800 from the last reference point.
    # TP 2, FP 1, FN 1: precision = recall = 2/3, F1 = 2/3, x100.
    assert match_f1(prediction, reference) == pytest.approx(2 / 3)
    assert match([prediction, reference], [reference, reference]) == pytest.approx(
        (200 / 3 + 100) / 2
    )


def test_match_radius_is_strict_and_points_match_once() -> None:
    reference = "<c1,CAM_FRONT,100.0,100.0>"
    assert match_f1("<c1,CAM_FRONT,108.0,107.9>", reference) == 1.0  # L1 15.9
    assert match_f1("<c1,CAM_FRONT,108.0,108.0>", reference) == 0.0  # L1 16, not below
    # Two predictions near one reference point: one hit, one false positive. P 1/2, R 1.
    twice = "<c1,CAM_FRONT,101.0,100.0> <c2,CAM_FRONT,99.0,100.0>"
    assert match_f1(twice, reference) == pytest.approx(2 * 0.5 / 1.5)


def test_match_ignores_cameras_like_the_challenge_unless_asked() -> None:
    prediction = "<c1,CAM_BACK,100.0,100.0>"
    reference = "<c1,CAM_FRONT,100.0,100.0>"
    assert match_f1(prediction, reference) == 1.0
    assert match_f1(prediction, reference, same_camera=True) == 0.0


def test_points_read_decimals_in_pairs_like_the_challenge() -> None:
    # Integers are not read; an odd last number is dropped.
    assert points("at 12.5, 30.0 and 7 then 1.0") == [Point(None, 12.5, 30.0)]
    assert points("<c2,CAM_FRONT_LEFT,1.5,2.5>", by_camera=True) == [
        Point("CAM_FRONT_LEFT", 1.5, 2.5)
    ]


def test_match_without_points_is_zero() -> None:
    assert match(["no objects"], ["none either"]) == 0.0


def test_challenge_keep_drops_questions_about_objects_not_found() -> None:
    frames = ["f1", "f1", "f1", "f2"]
    questions = [
        "What are the important objects?",
        "What is the status of <c1,CAM_FRONT,100.0,200.0>?",  # found -> kept
        "What is the status of <c2,CAM_BACK,500.0,600.0>?",  # missed -> dropped
        "Anything about <c9,CAM_BACK,1.0,1.0>?",  # first of its frame -> kept
    ]
    predictions = ["<c1,CAM_FRONT,101.0,200.0> and <c2,CAM_BACK,900.0,900.0>", "x", "y", "z"]
    references = ["<c1,CAM_FRONT,100.0,200.0> and <c2,CAM_BACK,500.0,600.0>", "a", "b", "c"]
    assert challenge_keep(frames, questions, predictions, references) == [
        True,
        True,
        False,
        True,
    ]


#: Two key frames in the challenge's order, by hand. The first answer's points, in turn: 3 px
#: (L1) from c1, a hit; 1 px from c1 again, but c1 is taken and the nearest remaining point
#: is 799 px away, a miss; 10 px from c2, a hit; 200 px from c3, a miss; its odd last number is
#: dropped. The graph is {c1, c2}. Frame f2's first answer finds nothing: its graph is empty.
FRAME_QUESTIONS = [
    ("f1", "What are the important objects?"),
    ("f1", "Status of <c1,CAM_FRONT,100.0,200.0>?"),  # c1 in the graph -> kept
    ("f1", "Is <c1,CAM_FRONT,100.0,200.0> near <c2,CAM_BACK,500.0,600.0>?"),  # both -> kept
    ("f1", "What about <c3,CAM_FRONT,900.0,100.0>?"),  # c3 missed -> dropped
    ("f1", "And <c1,CAM_FRONT,100.0,200.0> with <c3,CAM_FRONT,900.0,100.0>?"),  # c3 -> dropped
    ("f1", "Near <c1,CAM_FRONT,101.0,200.0>?"),  # 1 px from c1, not equal -> dropped
    ("f1", "Predict the behavior of the ego vehicle."),  # names no object -> kept
    ("f2", "What are the important objects?"),  # first of f2 -> kept
    ("f2", "Status of <c1,CAM_FRONT,100.0,200.0>?"),  # f2's graph is empty -> dropped
]
FIRST_REFERENCE = (
    "<c1,CAM_FRONT,100.0,200.0>, <c2,CAM_BACK,500.0,600.0> and <c3,CAM_FRONT,900.0,100.0>."
)
FIRST_PREDICTION = (
    "<c1,CAM_FRONT,102.0,201.0>, <c2,CAM_BACK,101.0,200.0>, <c4,CAM_BACK,495.0,605.0> "
    "<c3,CAM_FRONT,1100.0,100.0> 7.5"
)
FILTER_KEEPS = [True, True, True, False, False, False, True, True, False]


def test_challenge_filter_by_hand() -> None:
    frames = [frame for frame, _ in FRAME_QUESTIONS]
    questions = [question for _, question in FRAME_QUESTIONS]
    predictions = [FIRST_PREDICTION, "B", "Yes.", "C", "No.", "Yes.", "A", "nothing", "A"]
    references = [FIRST_REFERENCE, "B", "Yes.", "D", "Yes.", "No.", "A", "A car.", "B"]
    keep = challenge_keep(frames, questions, predictions, references)
    assert keep == FILTER_KEEPS
    # score_questions scores the kept items only, and counts the others.
    tags = [[2, 3], [0], [0], [0], [0], [0], [0], [2], [0]]
    score = score_questions(frames, questions, predictions, references, tags, tokenizer=REGEX)
    assert dict(score.counts) == {
        "accuracy": 3,
        "language": 2,
        "match": 1,
        "gpt": 0,
        "untagged": 0,
        "by_answer": 0,
        "filtered": 4,
    }
    assert score.accuracy == 1.0  # "B", "Yes." and "A": the dropped ones were the wrong ones
    # Match of the first item: 2 hits of 4 predicted points (7.5 dropped) and 3 references.
    assert score.match == pytest.approx(100 * 2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    unfiltered = score_questions(
        frames, questions, predictions, references, tags, rules=ScoringRules(challenge_filter=False)
    )
    assert unfiltered.counts["filtered"] == 0 and unfiltered.counts["accuracy"] == 7
    assert unfiltered.accuracy == pytest.approx(3 / 7)


def test_filter_rules_are_named_in_the_description_and_dict() -> None:
    frames = [frame for frame, _ in FRAME_QUESTIONS]
    questions = [question for _, question in FRAME_QUESTIONS]
    answers = ["x"] * len(questions)
    score = score_questions(frames, questions, answers, answers, tokenizer=REGEX)
    text = score.describe()
    assert "accuracy (exact: exact string equality, as the challenge)" in text
    assert "per-frame filter: on, as the challenge: 6 question(s) not scored" in text
    row = score.as_dict()
    assert (row["accuracy_mode"], row["challenge_filter"], row["n_filtered"]) == ("exact", True, 6)
    loose = score_questions(
        frames, questions, answers, answers, rules=ScoringRules(EXTRACT, False), tokenizer=REGEX
    )
    assert "NOT the challenge's exact equality" in loose.describe()
    assert "per-frame filter: off" in loose.describe()


def test_odd_coordinates() -> None:
    assert odd_coordinates("<c1,CAM_FRONT,1.5,2.5> at 3.0 m")
    assert not odd_coordinates("<c1,CAM_FRONT,1.5,2.5>")
    assert not odd_coordinates("no numbers, 7 integers")


def test_final_weights() -> None:
    parts = Score(
        accuracy=0.7,
        language=LanguageScores(bleu=(0.5, 0.5, 0.5, 0.5), rouge_l=0.5, cider=5.0),
        match=40.0,
        gpt=60.0,
        match_gpt=40.0,
    )
    # language = 0.5/3 + 0.5/3 + 5/30 = 0.5
    # final = 0.4*0.6 + 0.2*0.5 + 0.2*0.4 + 0.2*0.7 = 0.24 + 0.10 + 0.08 + 0.14
    assert drivelm_score(parts) == pytest.approx(0.56)
    # local = (0.2*0.5 + 0.2*0.4 + 0.2*0.7) / 0.6
    assert local_score(parts) == pytest.approx(0.32 / 0.6)
    assert parts.value == pytest.approx(0.32 / 0.6)


def test_final_score_reproduces_the_official_readme_example() -> None:
    # challenge/README.md of OpenDriveLab/DriveLM: accuracy 0.0, chatgpt 65.111..., match 28.25,
    # the language dict below, final score 0.3240234750718823.
    parts = Score(
        accuracy=0.0,
        language=LanguageScores(
            bleu=(
                0.0495223110147729,
                0.00021977465683011536,
                3.6312541763196866e-05,
                1.4776149283286042e-05,
            ),
            rouge_l=0.08383567940883102,
            cider=0.09901486412073952,
        ),
        match=28.25,
        gpt=65.11111111111111,
        match_gpt=28.25,  # the README gives the combined match only
    )
    assert drivelm_score(parts) == pytest.approx(0.3240234750718823, abs=1e-12)


def test_final_score_needs_both_gpt_parts() -> None:
    parts = Score(accuracy=1.0, match=50.0, gpt=70.0)
    assert drivelm_score(parts) is None
    assert parts.challenge is None


def test_local_score_renormalises_over_present_parts() -> None:
    assert local_score(Score(accuracy=0.8)) == pytest.approx(0.8)
    assert local_score(Score(accuracy=0.8, match=40.0)) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="no local score part"):
        local_score(Score())


def test_score_answers_routes_by_tags() -> None:
    predictions = ["B", "the light is red", "<c1,CAM_FRONT,1.5,2.5>", "keep going"]
    references = ["B", "the light is green", "<c1,CAM_FRONT,1.5,2.5>", "stop"]
    score = score_answers(predictions, references, [[0], [2], [3], [1]])
    assert score.accuracy == 1.0
    assert score.match == pytest.approx(100.0)
    assert score.language is not None
    assert dict(score.counts) == {
        "accuracy": 1,
        "language": 1,
        "match": 1,
        "gpt": 1,
        "untagged": 0,
        "by_answer": 0,
    }
    row = score.as_dict()
    assert row["score"] == pytest.approx(score.value)
    assert row["challenge_score"] is None
    assert {"Bleu_1", "ROUGE_L", "CIDEr", "n_gpt"} <= row.keys()
    text = score.describe()
    assert "0.4*GPT/100 + 0.2*language + 0.2*match/100 + 0.2*accuracy" in text
    assert "not available" in text


def test_score_answers_routes_untagged_items_by_reference() -> None:
    score = score_answers(
        ["A", "yes", "there is a car at <c1,CAM_FRONT,1.5,2.5>"],
        ["A", "Yes.", "There is a car at <c1,CAM_FRONT,1.5,2.5>."],
        accuracy_mode=EXTRACT,
    )
    assert dict(score.counts) == {
        "accuracy": 2,
        "language": 1,
        "match": 1,
        "gpt": 0,
        "untagged": 0,
        "by_answer": 3,
    }
    assert score.accuracy == 1.0
    assert score.rules == ScoringRules(EXTRACT, challenge_filter=False)
    # No item has tags (a training file, a plain questions file): the challenge's evaluation.py
    # cannot score them at all, so they go by their answers, and the breakdown says so.
    assert "3 item(s) with no tags routed by their answers" in score.describe()
    assert "NOT the challenge's" in score.describe()
    assert score_answers(["A"], ["A"], [[]]).counts["by_answer"] == 1


# An item with an empty tag list among tagged ones, as the challenge's evaluation.py sees it:
# ``forward(tag, ...)`` appends an answer only under the tags it has, so "[]" is scored nowhere.
MIXED_PREDICTIONS = ["B", "No.", "there is a car", "A"]
MIXED_REFERENCES = ["B", "Yes.", "there is a car", "A"]
MIXED_TAGS: list[list[int]] = [[0], [], [], [0]]


def test_items_with_no_tags_among_tagged_ones_are_not_scored_as_the_challenge() -> None:
    score = score_answers(MIXED_PREDICTIONS, MIXED_REFERENCES, MIXED_TAGS, tokenizer=REGEX)
    # Only the two tagged accuracy items: the wrong "No." and the language item are left out.
    assert score.accuracy == 1.0
    assert score.language is None
    assert (score.counts["accuracy"], score.counts["untagged"], score.counts["by_answer"]) == (
        2,
        2,
        0,
    )
    text = score.describe()
    assert (
        "2 item(s) with no tags are not scored, as the challenge's evaluation.py "
        "(--untagged-by-answer routes them by their answers)"
    ) in text
    assert score.as_dict()["untagged_rule"] == NOT_SCORED
    assert score.as_dict()["n_untagged"] == 2
    assert route(MIXED_REFERENCES, MIXED_TAGS)[TAG_LANGUAGE] == []


def test_routing_untagged_items_by_answer_is_a_named_option() -> None:
    score = score_answers(
        MIXED_PREDICTIONS, MIXED_REFERENCES, MIXED_TAGS, untagged=BY_ANSWER, tokenizer=REGEX
    )
    assert score.accuracy == pytest.approx(2 / 3)  # "No." for "Yes." now counts, wrongly
    assert score.language is not None
    assert (score.counts["untagged"], score.counts["by_answer"]) == (0, 2)
    assert score.rules.untagged == BY_ANSWER
    assert score.as_dict()["untagged_rule"] == BY_ANSWER
    assert "2 item(s) with no tags routed by their answers" in score.describe()
    rules = ScoringRules(untagged=BY_ANSWER)
    assert "routed by their answers (--untagged-by-answer), NOT the challenge's" in (
        rules.describe()
    )
    assert "not scored, as the challenge" in CHALLENGE_RULES.describe()
    with pytest.raises(ConfigError, match="without tags"):
        ScoringRules(untagged="guess")
    # score_questions applies the rule after the per-frame filter, as set by ``rules``.
    frames = ["f1"] * len(MIXED_REFERENCES)
    kept = score_questions(
        frames, MIXED_REFERENCES, MIXED_PREDICTIONS, MIXED_REFERENCES, MIXED_TAGS, rules=rules
    )
    assert kept.counts["by_answer"] == 2 and kept.rules == rules


def test_whether_any_item_has_tags_is_decided_before_the_per_frame_filter() -> None:
    # The tagged item is filtered out (it names an object the first answer did not find); the
    # untagged ones left are still in a tagged source, so they stay unscored.
    frames = ["f1", "f1", "f1"]
    questions = ["What is there?", "Where is <c1,CAM_FRONT,900.0,100.0>?", "Is it safe?"]
    references = ["nothing", "B", "No."]
    score = score_questions(frames, questions, references, references, [[], [0], []])
    assert score.counts["filtered"] == 1
    assert (score.counts["untagged"], score.counts["by_answer"]) == (2, 0)
    assert score.accuracy is None
    with pytest.raises(ValueError, match="no local score part"):
        _ = score.value


def test_score_answers_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="one prediction per reference"):
        score_answers(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="nothing to score"):
        score_answers([], [])
    with pytest.raises(ValueError, match="unknown tag"):
        score_answers(["a"], ["a"], [[7]])


def test_fidelity_identical_answers_is_one() -> None:
    answers = ["B", "The ego vehicle is going straight.", "No.", ""]
    assert fidelity(answers, answers) == pytest.approx(1.0)
    assert fidelity(["b"], ["B."]) == pytest.approx(1.0)


def test_fidelity_partial_agreement() -> None:
    # exact 0; ROUGE-L of "the car turns left" vs "the red car turns right" = 1.098 / 1.68
    assert fidelity(["the car turns left"], ["the red car turns right"]) == pytest.approx(
        0.5 * 1.098 / 1.68
    )
    assert fidelity(["yes"], ["no"]) == 0.0
