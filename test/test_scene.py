"""The synthetic scenes' facts, label masks and question mixes (what the scene model learns)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from prune2drive_ros.sensors.scene import (
    MASK_LABELS,
    QUESTION_KINDS,
    QUESTIONS_PER_FRAME,
    RoadScene,
    all_scene_questions,
    question_weights,
    scene_questions,
)
from prune2drive_ros.views import VIEWS


@pytest.fixture(scope="module")
def scenes():
    return RoadScene(4, 160, 90, segment_frames=1)


def test_every_kind_and_view_is_asked_once_a_frame(scenes):
    questions = all_scene_questions(scenes.facts(0))
    assert len(questions) == QUESTIONS_PER_FRAME == len({q.question for q in questions})
    assert {q.kind for q in questions} == set(QUESTION_KINDS)
    per_view = Counter(q.view for q in questions if q.view is not None)
    assert per_view == dict.fromkeys(VIEWS, 3)


def test_facts_are_consistent_over_views(scenes):
    for frame in range(40):
        facts = scenes.facts(frame)
        cars_seen = sum(view.cars for view in facts.views.values())
        # a car two cameras share counts once around, but at least once
        assert (cars_seen > 0) == (facts.cars_around > 0)
        assert facts.cars_around <= cars_seen
        anything = any(view.cars + view.buses for view in facts.views.values())
        assert (facts.nearest != "none") == anything


def test_masks_show_the_vehicles_the_facts_count(scenes):
    agree = 0
    for frame in range(20):
        facts, masks = scenes.facts(frame), scenes.masks(frame)
        for view in VIEWS:
            mask = masks[view]
            assert mask.shape == (90, 160) and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, *MASK_LABELS.values()}
            bus_pixels = bool((mask == MASK_LABELS["bus"]).any())
            agree += bus_pixels == (facts.views[view].buses > 0)
    assert agree >= 0.9 * 20 * len(VIEWS)


def test_densities_vary_between_scenes(scenes):
    around = [scenes.facts(frame).cars_around for frame in range(60)]
    assert min(around) <= 1 and max(around) >= 5


def _view_spread(scene: RoadScene, frames: int) -> float:
    """Mean over frames of (most - fewest) vehicles seen by one view."""
    spreads = []
    for frame in range(frames):
        counts = [v.cars + v.buses for v in scene.facts(frame).views.values()]
        spreads.append(max(counts) - min(counts))
    return float(np.mean(spreads))


def test_zone_densities_make_the_views_of_one_frame_differ_more(scenes):
    zoned = RoadScene(4, 160, 90, segment_frames=1, density="zone")
    assert _view_spread(zoned, 150) > _view_spread(scenes, 150) + 0.2
    with pytest.raises(ValueError, match="density must be one of scene, zone"):
        RoadScene(4, density="lane")


def test_mixes_weigh_kinds_and_views():
    questions = all_scene_questions(RoadScene(1, 64, 36).facts(0))
    default = question_weights(questions, "default")
    by_kind = Counter()
    for q, w in zip(questions, default, strict=True):
        by_kind[q.kind] += w
    assert all(abs(w - 1 / len(QUESTION_KINDS)) < 1e-9 for w in by_kind.values())
    front = question_weights(questions, "front")
    on_front = sum(w for q, w in zip(questions, front, strict=True) if q.view == "CAM_FRONT")
    assert abs(on_front - 0.75) < 1e-9
    with pytest.raises(ValueError, match="unknown question mix 'back'; expected one of"):
        question_weights(questions, "back")


def test_scene_questions_are_deterministic_and_distinct(scenes):
    facts = scenes.facts(7)
    first = scene_questions(facts, 7, count=5, seed=2)
    assert first == scene_questions(facts, 7, count=5, seed=2)
    assert len({q.question for q in first}) == 5
    with pytest.raises(ValueError, match="count must be 1 to 21"):
        scene_questions(facts, 7, count=22)
