"""Feature cache: one encoder call per frame per model, stale and corrupt entries never used."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from prune2drive_ros.engine import Engine
from prune2drive_ros.tuning.features import FeatureCache, model_content_key, model_key
from prune2drive_ros.tuning.objective import Evaluator
from prune2drive_ros.tuning.sources import ValidationSet, bag_validation_set, decode_frame
from prune2drive_ros.vlm import DrivingVLM, load_vlm
from prune2drive_ros.vlm.tiny import cached_tiny


@pytest.fixture(scope="module")
def vlm() -> DrivingVLM:
    return load_vlm(cached_tiny("llava_onevision"), device="cpu")


@pytest.fixture
def data(small_bag) -> ValidationSet:
    with bag_validation_set(small_bag.path, small_bag.questions_path, samples=4) as opened:
        yield opened


def test_each_frame_is_encoded_once(vlm, data, tmp_path):
    cache = FeatureCache(vlm, tmp_path)
    cache.prepare(data.frames)
    assert cache.encoder_calls == len(data.frames) >= 2
    again = FeatureCache(vlm, tmp_path)
    again.prepare(data.frames)
    assert again.encoder_calls == 0
    frame = data.frames[0]
    direct = vlm.encode_views(vlm.preprocess(decode_frame(frame.read(), vlm.image_size)))
    assert torch.equal(again.visual(frame), direct)


def test_a_truncated_entry_is_recomputed_not_a_crash(vlm, data, tmp_path, caplog):
    cache = FeatureCache(vlm, tmp_path)
    frame = data.frames[0]
    expected = cache.visual(frame)
    path = cache.path(frame)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    fresh = FeatureCache(vlm, tmp_path)
    with caplog.at_level(logging.WARNING):
        assert torch.equal(fresh.visual(frame), expected)
    assert (fresh.recomputed, fresh.encoder_calls) == (1, 1)
    assert "cannot be used" in caplog.text
    assert torch.equal(FeatureCache(vlm, tmp_path).visual(frame), expected)  # rewritten whole


def test_an_entry_whose_tensor_bytes_changed_is_recomputed(vlm, data, tmp_path, caplog):
    # The header (names, shapes, offsets) stays valid: only the checksum can tell.
    cache = FeatureCache(vlm, tmp_path)
    frame = data.frames[0]
    expected = cache.visual(frame)
    path = cache.path(frame)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    fresh = FeatureCache(vlm, tmp_path)
    with caplog.at_level(logging.WARNING):
        assert torch.equal(fresh.visual(frame), expected)
    assert (fresh.recomputed, fresh.encoder_calls) == (1, 1)
    assert "do not match the checksum" in caplog.text
    again = FeatureCache(vlm, tmp_path)
    again.prepare([frame])
    assert (again.recomputed, again.encoder_calls) == (0, 0)  # rewritten whole


def test_an_entry_of_the_wrong_shape_is_recomputed(vlm, data, tmp_path):
    from safetensors.torch import save_file

    cache = FeatureCache(vlm, tmp_path)
    frame = data.frames[0]
    cache.path(frame).parent.mkdir(parents=True, exist_ok=True)
    save_file({"visual": torch.zeros(6, 3, 8)}, cache.path(frame))
    assert cache.visual(frame).shape[:2] == (6, vlm.tokens_per_view)
    assert cache.recomputed == 1


def test_the_model_key_follows_what_the_tokens_depend_on(vlm, monkeypatch):
    key = model_key(vlm)
    assert key == model_key(vlm)
    monkeypatch.setattr(vlm, "dtype", torch.bfloat16)
    assert model_key(vlm) != key
    monkeypatch.undo()
    monkeypatch.setattr(vlm.model.config.vision_config, "image_size", 336)
    assert model_key(vlm) != key
    monkeypatch.undo()
    monkeypatch.setattr(vlm, "name", "someone/else")
    assert model_key(vlm) != key
    monkeypatch.undo()
    monkeypatch.setattr(vlm, "image_resize", "fast")  # other pixels, other tokens
    assert model_key(vlm) != key


def test_the_study_names_the_model_by_content_and_the_cache_by_file_stamps(
    vlm, tmp_path, monkeypatch
):
    # A copy of the checkpoint elsewhere, touched, on another device: one study, but a cache
    # folder of its own. Another config or other weights: another study.
    copy = tmp_path / "copy"
    shutil.copytree(vlm.name, copy)
    for path in copy.iterdir():
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    copied = load_vlm(copy, device="cpu")
    assert model_content_key(copied) == model_content_key(vlm)
    assert model_key(copied) != model_key(vlm)
    cpu_keys = model_content_key(vlm), model_key(vlm)
    monkeypatch.setattr(vlm, "device", torch.device("cuda"))
    assert model_content_key(vlm) == cpu_keys[0]
    assert model_key(vlm) != cpu_keys[1]
    monkeypatch.undo()
    config = copy / "config.json"
    config.write_text(config.read_text().replace("}", ', "note": "retrained"}', 1))
    assert model_content_key(copied) != model_content_key(vlm)
    shutil.copy(Path(vlm.name) / "config.json", config)
    weights = copy / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    assert model_content_key(copied) != model_content_key(vlm)


def test_unpruned_answers_are_cached_and_a_bad_file_is_replaced(vlm, data, tmp_path):
    cache = FeatureCache(vlm, tmp_path)
    frame, group = data.by_frame()[0]
    questions = [s.question for s in group]
    engine = Engine(vlm, None, max_new_tokens=2)
    answers = cache.unpruned_answers(frame, questions, engine)
    assert len(answers) == len(questions)
    files = list(cache.folder.glob("*.unpruned-2.json"))
    assert len(files) == 1
    files[0].write_text("{not json")
    again = FeatureCache(vlm, tmp_path)
    assert again.unpruned_answers(frame, questions, engine) == answers
    assert again.recomputed == 1


def test_a_bad_frame_is_skipped_not_the_trial(vlm, data, tmp_path, caplog):
    cache = FeatureCache(vlm, tmp_path)
    cache.prepare(data.frames)
    broken = data.frames[0]
    cache.path(broken).write_bytes(b"garbage")
    object.__setattr__(broken, "read", lambda: {})  # and the frame cannot be read again
    evaluator = Evaluator(vlm, cache, data, reward="drivelm", lam=0.18, max_new_tokens=2)
    with caplog.at_level(logging.WARNING):
        evaluation = evaluator.evaluate(0.2)
    skipped = len(data.by_frame()[0][1])
    assert evaluation.skipped == skipped
    assert evaluation.answered == len(data.samples) - skipped
    assert "skipped" in caplog.text
    assert evaluation.tokens_per_view == dict.fromkeys(evaluation.tokens_per_view, 146)
