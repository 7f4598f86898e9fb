"""DriveLM-nuScenes parsing on a fixture in the real file format."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from prune2drive_ros.errors import ConfigError, QuestionError
from prune2drive_ros.tuning.drivelm import (
    CATEGORIES,
    Prediction,
    load_drivelm,
    match_predictions,
    read_predictions,
    resolve_image,
    score_drivelm,
    write_predictions,
)
from prune2drive_ros.tuning.ptb import REGEX
from prune2drive_ros.tuning.scoring import BY_ANSWER, EXTRACT, ScoringRules
from prune2drive_ros.views import VIEWS

FIXTURE = Path(__file__).parent / "fixtures" / "drivelm_small.json"
SCENE_TAGGED = "c5224b03a1c6483b8ee1a4fd7e3de6a2"
FRAME_FIRST = "3e8750f331d7499e9b5123e9eb70f2e2"
SCENE_UNTAGGED = "0ac05652a4c44374998be876ba5cd6fd"


def _fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


@pytest.fixture
def nuscenes(tmp_path: Path) -> Path:
    """A nuScenes root holding an (empty) file for every image the fixture names."""
    root = tmp_path / "nuscenes"
    for scene in _fixture().values():
        for frame in scene["key_frames"].values():
            for raw in frame["image_paths"].values():
                image = resolve_image(raw, root)
                image.parent.mkdir(parents=True, exist_ok=True)
                image.touch()
    return root


def test_loads_every_question_in_challenge_order(nuscenes: Path) -> None:
    items = load_drivelm(FIXTURE, nuscenes)
    assert len(items) == 14  # 6 + 3 questions in the tagged scene's frames, 5 in the other
    first = [item for item in items if item.frame == FRAME_FIRST]
    assert [item.index for item in first] == list(range(6))
    assert [item.category for item in first] == [
        "perception",
        "perception",
        "prediction",
        "prediction",
        "planning",
        "behavior",
    ]
    assert first[0].id == f"{SCENE_TAGGED}_{FRAME_FIRST}_0"
    assert first[1].answer == "D"
    assert first[1].tags == (0,)
    assert first[1].is_multiple_choice
    assert not first[0].is_multiple_choice


def test_images_resolve_under_the_root_in_view_order(nuscenes: Path) -> None:
    item = load_drivelm(FIXTURE, nuscenes)[0]
    assert len(item.images) == len(VIEWS)
    for view, image in zip(VIEWS, item.images, strict=True):
        assert image.is_file()
        assert image.parent == nuscenes / "samples" / view
        assert item.image(view) == image
    with pytest.raises(ValueError, match="unknown camera view"):
        item.image("CAM_TOP")


def test_resolve_image_accepts_both_drivelm_path_styles(tmp_path: Path) -> None:
    expected = tmp_path / "samples" / "CAM_FRONT" / "x.jpg"
    assert resolve_image("../nuscenes/samples/CAM_FRONT/x.jpg", tmp_path) == expected
    assert resolve_image("data/nuscenes/samples/CAM_FRONT/x.jpg", tmp_path) == expected
    with pytest.raises(QuestionError, match="no samples/ or sweeps/"):
        resolve_image("images/x.jpg", tmp_path)


def test_training_style_scene_has_description_and_no_tags(nuscenes: Path) -> None:
    items = [i for i in load_drivelm(FIXTURE, nuscenes) if i.scene == SCENE_UNTAGGED]
    assert len(items) == 5
    assert all(item.tags == () for item in items)
    assert items[0].scene_description.startswith("The ego vehicle waits")


def test_categories_filter_keeps_indices(nuscenes: Path) -> None:
    items = load_drivelm(FIXTURE, nuscenes, categories=["behavior"])
    assert {item.category for item in items} == {"behavior"}
    assert [item.index for item in items if item.frame == FRAME_FIRST] == [5]
    with pytest.raises(ConfigError, match="choose from perception"):
        load_drivelm(FIXTURE, nuscenes, categories=["control"])


def test_limit_draws_a_seeded_sample_in_file_order(nuscenes: Path) -> None:
    every = [item.id for item in load_drivelm(FIXTURE, nuscenes)]
    first = [item.id for item in load_drivelm(FIXTURE, nuscenes, limit=5, seed=3)]
    again = [item.id for item in load_drivelm(FIXTURE, nuscenes, limit=5, seed=3)]
    assert first == again
    assert len(first) == 5
    assert first == [item_id for item_id in every if item_id in first]
    assert len(load_drivelm(FIXTURE, nuscenes, limit=100)) == len(every)
    with pytest.raises(ConfigError, match="limit must be at least 1"):
        load_drivelm(FIXTURE, nuscenes, limit=0)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limit", [1, 4, 7, 10])
def test_limit_draws_whole_frames_the_last_cut_to_its_first_questions(
    nuscenes: Path, seed: int, limit: int
) -> None:
    every = load_drivelm(FIXTURE, nuscenes)
    drawn = load_drivelm(FIXTURE, nuscenes, limit=limit, seed=seed)
    assert len(drawn) == limit
    frames: dict[str, list[int]] = {}
    for item in drawn:
        frames.setdefault(item.frame, []).append(item.index)
    sizes = {item.frame: 1 + item.index for item in every}
    # Every drawn frame starts at its first question (which the challenge's filter needs) and
    # all but at most one are whole.
    assert all(indices == list(range(len(indices))) for indices in frames.values())
    assert sum(len(indices) < sizes[frame] for frame, indices in frames.items()) <= 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(QuestionError, match="does not exist"):
        load_drivelm(tmp_path / "nope.json", tmp_path)


def test_bad_json_reports_the_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "scene": {\n    "key_frames": [,]\n}')
    with pytest.raises(QuestionError, match=r"not valid JSON: .* line 3, column 20"):
        load_drivelm(path, tmp_path)


def test_not_drivelm_format(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(QuestionError, match="the top level is list"):
        load_drivelm(path, tmp_path)


def _write_variant(tmp_path: Path, change: Any) -> Path:
    data = _fixture()
    change(data[SCENE_TAGGED]["key_frames"][FRAME_FIRST])
    path = tmp_path / "variant.json"
    path.write_text(json.dumps(data))
    return path


def test_missing_view_is_named(tmp_path: Path, nuscenes: Path) -> None:
    path = _write_variant(tmp_path, lambda frame: frame["image_paths"].pop("CAM_BACK_LEFT"))
    with pytest.raises(QuestionError, match=rf"frame {FRAME_FIRST} .*CAM_BACK_LEFT"):
        load_drivelm(path, nuscenes)


def test_question_without_text_is_located(tmp_path: Path, nuscenes: Path) -> None:
    path = _write_variant(tmp_path, lambda frame: frame["QA"]["prediction"][1].pop("Q"))
    with pytest.raises(QuestionError, match='prediction question 3 has no text "Q"'):
        load_drivelm(path, nuscenes)


def test_bad_tag_is_reported(tmp_path: Path, nuscenes: Path) -> None:
    path = _write_variant(tmp_path, lambda frame: frame["QA"]["behavior"][0].update(tag="0"))
    with pytest.raises(QuestionError, match='"tag"'):
        load_drivelm(path, nuscenes)


def test_an_empty_tag_list_is_not_scored_unless_asked_and_the_load_says_so(
    tmp_path: Path, nuscenes: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def untag(frame: dict[str, Any]) -> None:
        frame["QA"]["prediction"][1]["tag"] = []  # "No.": tag [0] until now

    only_tagged = [i for i in load_drivelm(FIXTURE, nuscenes) if i.scene == SCENE_TAGGED]
    with caplog.at_level(logging.WARNING):
        items = load_drivelm(_write_variant(tmp_path, untag), nuscenes)
    # This one and the five of the scene without tags.
    assert "6 of 14 question(s) have no tags" in caplog.text
    assert "not scored, as the challenge's evaluation.py" in caplog.text
    items = [i for i in items if i.scene == SCENE_TAGGED]
    wrong = [item.answer or "" for item in items]
    wrong[3] = "Yes."  # the answer to the question whose tag list is now empty
    before = score_drivelm(only_tagged, wrong, tokenizer=REGEX)
    after = score_drivelm(items, wrong, tokenizer=REGEX)
    assert before.accuracy == pytest.approx(3 / 4)
    assert after.accuracy == 1.0 and after.counts["untagged"] == 1
    routed = score_drivelm(items, wrong, rules=ScoringRules(untagged=BY_ANSWER), tokenizer=REGEX)
    assert routed.accuracy == pytest.approx(3 / 4) and routed.counts["by_answer"] == 1


def test_a_file_without_any_tags_is_scored_by_its_answers(
    tmp_path: Path, nuscenes: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _fixture()
    del data[SCENE_TAGGED]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.INFO, logger="prune2drive_ros.tuning.drivelm"):
        items = load_drivelm(path, nuscenes)
    assert "no question has DriveLM tags" in caplog.text
    score = score_drivelm(items, [item.answer or "" for item in items], tokenizer=REGEX)
    assert (score.counts["by_answer"], score.counts["untagged"]) == (5, 0)
    assert score.accuracy == 1.0
    assert "routed by their answers" in score.describe()


def test_question_only_file_loads_without_answers(tmp_path: Path, nuscenes: Path) -> None:
    def drop_answers(frame: dict[str, Any]) -> None:
        for category in CATEGORIES:
            for qa in frame["QA"][category]:
                qa.pop("A")

    items = load_drivelm(_write_variant(tmp_path, drop_answers), nuscenes)
    unanswered = [item for item in items if item.answer is None]
    assert len(unanswered) == 6
    assert unanswered[1].is_multiple_choice  # known from the options in the question
    with pytest.raises(QuestionError, match=r"no reference answer .*question-only file"):
        score_drivelm(items, ["x"] * len(items))


def test_empty_answers_of_the_challenge_question_file_are_no_references(
    tmp_path: Path, nuscenes: Path
) -> None:
    def blank_answers(frame: dict[str, Any]) -> None:
        for category in CATEGORIES:
            for qa in frame["QA"][category]:
                qa["A"] = ""
        frame["QA"]["behavior"][0]["A"] = "  "

    items = load_drivelm(_write_variant(tmp_path, blank_answers), nuscenes)
    blank = [item for item in items if item.frame == FRAME_FIRST]
    assert [item.answer for item in blank] == [None] * 6
    with pytest.raises(QuestionError, match="6 of 14 question"):
        score_drivelm(items, ["x"] * len(items))


def test_missing_images_name_file_view_and_root(nuscenes: Path) -> None:
    shutil.rmtree(nuscenes / "samples" / "CAM_BACK")
    with pytest.raises(ConfigError) as caught:
        load_drivelm(FIXTURE, nuscenes)
    message = str(caught.value)
    assert "3 of 18 image files are missing" in message
    assert f"nuScenes root {nuscenes}," in message
    assert f"{nuscenes / 'samples' / 'CAM_BACK'}/n008-" in message
    assert f"(CAM_BACK of frame {FRAME_FIRST})" in message
    assert len(load_drivelm(FIXTURE, nuscenes, check_images=False)) == 14


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        load_drivelm(FIXTURE, tmp_path / "nowhere")


def test_reference_answers_score_perfectly(nuscenes: Path) -> None:
    items = load_drivelm(FIXTURE, nuscenes)
    score = score_drivelm(items, [item.answer or "" for item in items], tokenizer=REGEX)
    assert score.accuracy == 1.0
    assert score.match == pytest.approx(100.0)
    assert score.language is not None
    assert score.language.rouge_l == pytest.approx(1.0)
    # Tagged frames by their tags: accuracy 3 + 1, language 1 + 1, match 1 + 1, GPT 1. The
    # answers find every object: the filter leaves nothing out. The five questions of the
    # scene without tags are scored nowhere, as the challenge's evaluation.py scores a
    # question only under the tags it has.
    assert dict(score.counts) == {
        "accuracy": 4,
        "language": 2,
        "match": 2,
        "gpt": 1,
        "untagged": 5,
        "by_answer": 0,
        "filtered": 0,
    }
    assert "5 item(s) with no tags are not scored, as the challenge's evaluation.py" in (
        score.describe()
    )
    # Routed by their answers on request: "No." -> accuracy; the object list -> language and
    # match; "Going ahead.", the safe actions and the behaviour sentence -> language.
    by_answer = score_drivelm(
        items,
        [item.answer or "" for item in items],
        rules=ScoringRules(untagged=BY_ANSWER),
        tokenizer=REGEX,
    )
    assert dict(by_answer.counts) == {
        "accuracy": 5,
        "language": 6,
        "match": 3,
        "gpt": 1,
        "untagged": 0,
        "by_answer": 5,
        "filtered": 0,
    }
    assert "5 item(s) with no tags routed by their answers" in by_answer.describe()


def test_accuracy_is_exact_unless_extraction_is_asked_for(nuscenes: Path) -> None:
    items = load_drivelm(FIXTURE, nuscenes)
    # "D" -> "D.", "B" -> "Final Answer: B": wrong for the challenge, right when extracted.
    predictions = [item.answer or "" for item in items]
    predictions[1] = "D."
    predictions[5] = "Reasoning Steps: not moving, so not A. Final Answer: B"
    exact = score_drivelm(items, predictions, tokenizer=REGEX)
    extracted = score_drivelm(items, predictions, rules=ScoringRules(EXTRACT), tokenizer=REGEX)
    assert exact.accuracy == pytest.approx(2 / 4)  # "No." and "C" (the untagged scene: unscored)
    assert extracted.accuracy == 1.0
    assert "accuracy (exact: " in exact.describe()
    assert "accuracy (extract: " in extracted.describe()


def test_challenge_filter_drops_questions_about_missed_objects(nuscenes: Path) -> None:
    items = load_drivelm(FIXTURE, nuscenes)
    predictions = [item.answer or "" for item in items]
    # The first answer of the first frame now finds no object: every later question of that
    # frame that mentions an object is no longer scored.
    first = next(i for i, item in enumerate(items) if item.frame == FRAME_FIRST)
    predictions[first] = "There is nothing important."
    filtered = score_drivelm(items, predictions, tokenizer=REGEX)
    unfiltered = score_drivelm(
        items, predictions, rules=ScoringRules(challenge_filter=False), tokenizer=REGEX
    )
    # Left out in that frame: the three questions whose text names an object (1, 3 and 4);
    # kept: the first, question 2 (its answer names objects, its question none) and the
    # behaviour question.
    assert filtered.counts["filtered"] == 3
    assert unfiltered.counts["filtered"] == 0
    assert filtered.counts["gpt"] == 0  # its only GPT question mentions <c1,...>
    assert filtered.counts["accuracy"] == unfiltered.counts["accuracy"] - 2


def test_odd_coordinates_are_warned_about(
    tmp_path: Path, nuscenes: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def odd(frame: dict[str, Any]) -> None:
        frame["QA"]["prediction"][0]["A"] += " It is 12.5 m away."

    with caplog.at_level(logging.WARNING):
        load_drivelm(_write_variant(tmp_path, odd), nuscenes)
    assert "1 reference answer(s) hold an odd count of coordinates" in caplog.text
    assert f"{SCENE_TAGGED}_{FRAME_FIRST}_2" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_drivelm(FIXTURE, nuscenes)
    assert "odd count" not in caplog.text


def test_predictions_file_round_trip_in_the_challenge_format(
    tmp_path: Path, nuscenes: Path
) -> None:
    items = load_drivelm(FIXTURE, nuscenes)
    path = tmp_path / "output.json"
    written = [Prediction(item.id, item.question, f"answer {item.index}") for item in items]
    assert write_predictions(path, written) == len(items)
    records = json.loads(path.read_text())
    # The challenge's output.json: a list of {id, question, answer}, ids scene_frame_index.
    assert isinstance(records, list) and len(records) == len(items)
    assert set(records[0]) == {"id", "question", "answer"}
    assert records[0]["id"] == f"{SCENE_TAGGED}_{FRAME_FIRST}_0"
    assert records[5]["id"] == f"{SCENE_TAGGED}_{FRAME_FIRST}_5"
    assert read_predictions(path) == {p.id: p for p in written}
    # A submission.json holds the same list under "results".
    submission = tmp_path / "submission.json"
    submission.write_text(json.dumps({"method": "m", "team": "t", "results": records}))
    assert read_predictions(submission) == read_predictions(path)


def test_predictions_are_matched_to_questions_by_id(nuscenes: Path) -> None:
    items = load_drivelm(FIXTURE, nuscenes)
    answers = {item.id: Prediction(item.id, item.question, item.answer or "") for item in items[1:]}
    answers["elsewhere_0"] = Prediction("elsewhere_0", "?", "B")
    coverage = match_predictions(items, answers)
    assert coverage.items == items[1:]
    assert coverage.predictions == [item.answer for item in items[1:]]
    assert coverage.missing == [items[0].id]
    assert coverage.unknown == ["elsewhere_0"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ('{"id": "x"}', "expected a JSON list"),
        ('[{"id": "x"}]', 'entry 0 has no text "answer"'),
        ('[{"answer": "B"}]', 'entry 0 has no text "id"'),
        ("[3]", "entry 0 is int"),
    ],
)
def test_bad_predictions_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "output.json"
    path.write_text(text)
    with pytest.raises(QuestionError, match=message):
        read_predictions(path)
    with pytest.raises(QuestionError, match="does not exist"):
        read_predictions(tmp_path / "none.json")


def test_a_repeated_id_keeps_its_last_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "output.json"
    path.write_text(json.dumps([{"id": "a", "answer": "B"}, {"id": "a", "answer": "C"}]))
    with caplog.at_level(logging.WARNING):
        assert read_predictions(path)["a"].answer == "C"
    assert "more than once (first: a)" in caplog.text
