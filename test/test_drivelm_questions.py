"""DriveLM on bags (``prune2drive drivelm-questions``): a DriveLM file -> a nuScenes bag's
questions file, whose questions land on their key frames and score as ``eval --drivelm`` does.

The DriveLM file is written in code for the tiny nuScenes dataset of :mod:`nuscenes_fixture`
(its two scenes, plus a key frame that is in no scene); the bag is its first scene, converted
with every 12 Hz frame so that the synchronizer has sweeps to mix up.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import quick_eval_flags
from nuscenes_fixture import NuScenesFixture, token, write_nuscenes

from prune2drive_ros.commands import cli
from prune2drive_ros.commands.cli import main
from prune2drive_ros.errors import BagError, ConfigError, QuestionError
from prune2drive_ros.sensors.bag import open_camera_bag
from prune2drive_ros.sensors.questions import QAItem, read_questions, write_questions
from prune2drive_ros.tuning.drivelm import load_drivelm
from prune2drive_ros.tuning.drivelm_bag import write_drivelm_questions
from prune2drive_ros.tuning.sources import bag_validation_set, decode_frame, drivelm_validation_set
from prune2drive_ros.views import VIEWS

pytest.importorskip("nuscenes")

SCENE = "scene-0061"  # the scene converted to a bag
ABSENT = token("sample", "not in nuScenes")  # a key frame of the DriveLM file only
QUESTIONS_PER_FRAME = 5


def _qa(frame: int, tagged: bool) -> dict[str, list[dict[str, Any]]]:
    """A key frame's questions, challenge-style: the first finds objects the later ones name."""
    x, y = 10.5 + frame, 20.5

    def qa(question: str, answer: str, tag: int) -> dict[str, Any]:
        record: dict[str, Any] = {"Q": question, "A": answer, "C": None, "con_up": None}
        if tagged:
            record["tag"] = [tag]
        return record

    return {
        "perception": [
            qa(
                "What are the important objects in the current scene?",
                f"There is a car to the front. Its ID is <c1,CAM_FRONT,{x},{y}>.",
                2,
            ),
            qa(
                f"What is the moving status of object <c1,CAM_FRONT,{x},{y}>? Please select the "
                "correct answer from the following options: A. Going ahead. B. Turn left. "
                "C. Back up. D. Stopped.",
                "D",
                0,
            ),
        ],
        "prediction": [qa("Would <c1,CAM_FRONT,1.5,2.5> be in the moving direction?", "No", 0)],
        "planning": [
            qa("What actions could the ego vehicle take?", "Keep going at the same speed.", 2)
        ],
        "behavior": [
            qa(
                "Predict the behavior of the ego vehicle. Please select the correct answer from "
                "the following options: A. The ego vehicle is going straight. B. The ego vehicle "
                "is turning left. C. The ego vehicle is slightly steering to the right. "
                "D. The ego vehicle is stopped.",
                "A",
                0,
            )
        ],
    }


def write_drivelm(
    dataset: NuScenesFixture,
    path: Path,
    *,
    tagged: bool = True,
    scenes: tuple[str, ...] | None = None,
    absent: bool = True,
) -> Path:
    """A DriveLM file for ``dataset``'s scenes (or those named): every key frame with
    :data:`QUESTIONS_PER_FRAME` questions and DriveLM-style image paths; with ``absent``, one
    more key frame that no scene has (its images are those of the scene's first key frame)."""
    data: dict[str, Any] = {}
    for scene in dataset.scenes:
        if scenes is not None and scene.name not in scenes:
            continue
        key_images = [image for image in scene.images if image.key_frame]
        frames = {}
        for k, (sample, _) in enumerate(scene.samples):
            images = {im.channel: im for im in key_images[6 * k : 6 * k + 6]}
            frames[sample] = {
                "key_object_infos": {},
                "QA": _qa(k, tagged),
                "image_paths": {v: f"../nuscenes/{images[v].filename}" for v in VIEWS},
            }
        if absent:
            first = next(iter(frames.values()))
            frames[ABSENT] = {**first, "QA": _qa(9, tagged)}
            absent = False
        data[scene.token] = {"scene_description": f"{scene.name}.", "key_frames": frames}
    path.write_text(json.dumps(data, indent=1))
    return path


def drivelm_questions(*argv: object) -> int:
    """``prune2drive drivelm-questions ARGV``."""
    return main(["drivelm-questions", *map(str, argv)])


@pytest.fixture(autouse=True)
def _command(monkeypatch: pytest.MonkeyPatch) -> None:
    """The subcommand, whether or not cli.COMMANDS lists it yet."""
    monkeypatch.setitem(
        cli.COMMANDS, "drivelm-questions", "prune2drive_ros.commands.drivelm_questions"
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> NuScenesFixture:
    """Two scenes of three samples each; read-only."""
    return write_nuscenes(tmp_path_factory.mktemp("nuscenes") / "nuscenes")


@pytest.fixture(scope="module")
def bag(dataset: NuScenesFixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:data:`SCENE` converted with every camera frame; its index lies beside it."""
    out = tmp_path_factory.mktemp("bags") / "bags"
    assert (
        main(["nuscenes2bag", str(dataset.root), str(out), "--scene", SCENE, "--no-progress"]) == 0
    )
    return out / SCENE


def _index(bag: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(bag.with_name(bag.name + ".keyframes.json").read_text())
    return result


def test_bag_questions_land_on_their_key_frames_six_images(dataset, bag, tmp_path, caplog):
    drivelm = write_drivelm(dataset, tmp_path / "drivelm.json")
    out = tmp_path / "q.jsonl"
    with caplog.at_level(logging.WARNING):
        assert drivelm_questions(drivelm, "--bag", bag, "--out", out) == 0
    # the other scene's three key frames and the one in no scene are skipped, counted
    assert "skipped 4 of 7 DriveLM key frames" in caplog.text
    assert f"e.g. scene {dataset.scene(SCENE).token} sample {ABSENT}" in caplog.text
    index = _index(bag)["samples"]
    wanted = [
        item for item in load_drivelm(drivelm, ".", check_images=False) if item.frame in index
    ]
    written = read_questions(out)
    assert len(written) == 3 * QUESTIONS_PER_FRAME
    assert [q.id for q in written] == [item.id for item in wanted]
    for q, item in zip(written, wanted, strict=True):
        assert (q.question, q.answer, q.tags, q.kind) == (
            item.question,
            item.answer,
            item.tags,
            item.category,
        )
        assert q.stamp_ns == index[item.frame]["frame_stamp_ns"]
    # The node's synchronizer, asked at the stamp, pairs exactly the key frame's six images.
    with open_camera_bag(bag) as camera_bag:
        for sample, entry in index.items():
            frame_set = camera_bag.nearest_frame_set(entry["frame_stamp_ns"], 0)
            assert frame_set.stamps == entry["stamps_ns"], sample
            for view in VIEWS:
                data = (dataset.root / entry["files"][view]).read_bytes()
                assert bytes(frame_set.messages[view].data) == data


def test_nuscenes_tables_give_the_same_stamps_as_the_index(dataset, bag, tmp_path, caplog):
    drivelm = write_drivelm(dataset, tmp_path / "drivelm.json")
    from_bag, from_tables = tmp_path / "bag.jsonl", tmp_path / "tables.jsonl"
    assert drivelm_questions(drivelm, "--bag", bag, "--out", from_bag) == 0
    with caplog.at_level(logging.WARNING):
        result = write_drivelm_questions(drivelm, from_tables, nuscenes=dataset.root)
    assert result.skipped == [(dataset.scene(SCENE).token, ABSENT)]
    assert "skipped 1 of 7" in caplog.text
    assert (result.frames, len(result.items)) == (6, 6 * QUESTIONS_PER_FRAME)
    on_bag = read_questions(from_bag)
    assert [q for q in read_questions(from_tables) if q.id in {b.id for b in on_bag}] == on_bag


def test_an_untagged_drivelm_file_is_routed_by_its_answers(dataset, bag, tmp_path):
    drivelm = write_drivelm(dataset, tmp_path / "train.json", tagged=False)
    out = tmp_path / "q.jsonl"
    assert drivelm_questions(drivelm, "--bag", bag, "--out", out) == 0
    assert "tag" not in out.read_text().splitlines()[0]
    assert all(q.tags == () and q.id for q in read_questions(out))
    with bag_validation_set(bag, out) as data:
        assert all(sample.tags == () for sample in data.samples)


def test_bad_input_is_one_line_with_the_remedy(dataset, bag, tmp_path, capsys):
    drivelm = write_drivelm(dataset, tmp_path / "drivelm.json")
    out = tmp_path / "q.jsonl"
    broken = tmp_path / "broken.json"
    broken.write_text('{"scene": ')
    assert drivelm_questions(broken, "--bag", bag, "--out", out) == 2
    assert "broken.json is not valid JSON" in capsys.readouterr().err
    with pytest.raises(QuestionError, match="not valid JSON"):
        write_drivelm_questions(broken, out, bag=bag)
    lone = tmp_path / "lone"
    lone.mkdir()
    with pytest.raises(BagError, match=r"no key-frame index .*prune2drive nuscenes2bag"):
        write_drivelm_questions(drivelm, out, bag=lone)
    other = write_drivelm(dataset, tmp_path / "other.json", scenes=("scene-0103",), absent=False)
    with pytest.raises(QuestionError, match="none of the 3 DriveLM key frames is in bag"):
        write_drivelm_questions(other, out, bag=bag)
    assert not out.exists()
    assert drivelm_questions(drivelm, "--bag", bag, "--out", out) == 0
    assert drivelm_questions(drivelm, "--bag", bag, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert "exists already; pass --force" in err and len(err.splitlines()) == 1
    assert drivelm_questions(drivelm, "--bag", bag, "--out", out, "--force") == 0
    with pytest.raises(ConfigError, match="either as a bag"):
        write_drivelm_questions(drivelm, out, force=True)


def test_image_files_of_another_release_are_an_error(dataset, bag, tmp_path):
    drivelm = write_drivelm(dataset, tmp_path / "drivelm.json", absent=False)
    data = json.loads(drivelm.read_text())
    frame = next(iter(data[dataset.scene(SCENE).token]["key_frames"].values()))
    frame["image_paths"]["CAM_BACK"] = "../nuscenes/samples/CAM_BACK/other.jpg"
    drivelm.write_text(json.dumps(data))
    with pytest.raises(QuestionError, match=r"names CAM_BACK image other\.jpg"):
        write_drivelm_questions(drivelm, tmp_path / "q.jsonl", bag=bag)


def _eval(*data: str, tmp_path: Path) -> list[str]:
    return ["eval", *data, "--uniform", "0.3", "--pruners", "tfps", *quick_eval_flags(tmp_path)]


def _last_json(text: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(("tagged", "samples"), [(True, 7), (False, 100)])
def test_eval_on_the_bag_scores_as_eval_on_the_drivelm_file(
    dataset, bag, tmp_path, capsys, tagged, samples
):
    """One scorer: the same questions (7: one key frame and two questions of another, drawn as
    whole frames), the same images, the same answers and the same score either way."""
    drivelm = write_drivelm(
        dataset, tmp_path / "d.json", tagged=tagged, scenes=(SCENE,), absent=False
    )
    questions = tmp_path / "q.jsonl"
    assert drivelm_questions(drivelm, "--bag", bag, "--out", questions) == 0
    # The frames the engine gets are the same bytes, decoded to the same pixels.
    with (
        bag_validation_set(bag, questions, samples=samples) as on_bag,
        drivelm_validation_set(drivelm, dataset.root, samples=samples) as on_files,
    ):
        ids = {f"{questions.name}:{n}": q.id for n, q in enumerate(read_questions(questions), 1)}
        assert [ids[s.id] for s in on_bag.samples] == [s.id for s in on_files.samples]
        assert [s.tags for s in on_bag.samples] == [s.tags for s in on_files.samples]
        assert len(on_bag.frames) == len(on_files.frames)
        for bag_frame, file_frame in zip(on_bag.frames, on_files.frames, strict=True):
            from_bag, from_files = bag_frame.read(), file_frame.read()
            for view in VIEWS:
                assert bytes(from_bag[view][1].data) == from_files[view][1].data
            size = (dataset.width, dataset.height)
            for a, b in zip(
                decode_frame(from_bag, size), decode_frame(from_files, size), strict=True
            ):
                np.testing.assert_array_equal(a, b)
    count = ["--samples", str(samples)]
    assert (
        main(_eval("--bag", str(bag), "--questions", str(questions), *count, tmp_path=tmp_path))
        == 0
    )
    by_bag = _last_json(capsys.readouterr().out)
    args = _eval(
        "--drivelm", str(drivelm), "--nuscenes-root", str(dataset.root), *count, tmp_path=tmp_path
    )
    assert main(args) == 0
    by_file = _last_json(capsys.readouterr().out)
    assert by_bag["reward"] == by_file["reward"] == "drivelm"
    assert by_bag["samples"] == by_file["samples"] == min(samples, 3 * QUESTIONS_PER_FRAME)
    for row_bag, row_file in zip(by_bag["rows"], by_file["rows"], strict=True):
        assert row_bag["method"] == row_file["method"]
        assert row_bag["score"] == row_file["score"]
        assert row_bag["parts"] == row_file["parts"]
        assert row_bag["filtered"] == row_file["filtered"]
        assert row_bag["answered"] == row_file["answered"]


def test_questions_files_carry_tags_and_ids(tmp_path):
    path = tmp_path / "q.jsonl"
    items = [
        QAItem(5, "Moving?", "D", kind="perception", tags=(0, 3), id="s_f_1"),
        QAItem(5, "Plain?", None),
    ]
    write_questions(path, items)
    assert read_questions(path) == items
    assert '"tag": [0, 3], "id": "s_f_1"' in path.read_text().splitlines()[0]
    for bad, field in (('"tag": [true]', "'tag'"), ('"tag": 0', "'tag'"), ('"id": ""', "'id'")):
        path.write_text('{"stamp": 1, "question": "Q?", ' + bad + "}\n")
        with pytest.raises(QuestionError, match=f"q.jsonl:1: {field} must be"):
            read_questions(path)
