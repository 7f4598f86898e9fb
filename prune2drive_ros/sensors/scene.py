"""Synthetic nuScenes-like road scenes for the six cameras, with the facts questions are built on.

No nuScenes images are available here, so bags, demos and benchmarks draw their own: one small
3D world (a three-lane road, cars and buses) seen through six pinhole cameras with nuScenes'
intrinsics and mounting yaws. Projecting one world into all views keeps the views consistent
(a car behind appears in the back camera, mirrored left-right as a rear camera sees it), so the
reference answers (:class:`SceneFacts`) are true of the pixels. Vehicles move a little from
frame to frame; every ``segment_frames`` frames a new scene is drawn from the seed, so long bags
ask about varied scenes: each segment draws its own traffic density (near-empty, sparse or busy
roads), small distant cars up to 40 m out and large uniform buses. Everything is deterministic
from the seed.

The questions (:func:`all_scene_questions`) are the kinds a trained model can be checked on by
exact match, each needing the pixels of particular views: cars and buses per camera, "is there
a bus ...", the ego lane, where the nearest vehicle is, and the cars around (all six views).

A static per-camera noise texture gives the JPEGs a realistic size (~0.2-0.3 MB at quality 90,
like nuScenes' 1600 x 900 frames), so decode benchmarks on them mean something.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from ..views import VIEW_LABELS, VIEWS

#: nuScenes camera resolution (width, height).
NUSCENES_SIZE: tuple[int, int] = (1600, 900)
LANE_WIDTH_M = 3.5
LANES = 3
CAMERA_HEIGHT_M = 1.5
_LANE_NAMES = ("left", "middle", "right")
#: Chance that a vehicle slot is taken, drawn per segment: near-empty, sparse and busy roads.
_DENSITIES = (0.15, 0.5, 0.85)
#: How densities are drawn: one per segment (``scene``, what the scene models train on), or
#: one per zone (``zone``: ahead, behind, beside), so that in one frame set the front cameras
#: may see an empty road and the back ones a queue: views whose content differs.
DENSITY_MODES: tuple[str, ...] = ("scene", "zone")
#: Chance that a vehicle ahead or behind is a bus (beside the ego car there are cars only).
_BUS_SHARE = 0.3
#: ego speed along the road; only the lane dashes show it
_EGO_SPEED_MPS = 8.0


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics at :data:`NUSCENES_SIZE` and the yaw of the optical axis (deg, left +)."""

    fx: float
    cx: float
    cy: float
    yaw_deg: float

    def scaled(self, width: int, height: int) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) for images of ``width`` x ``height`` (square pixels at 1600 x 900)."""
        sx, sy = width / NUSCENES_SIZE[0], height / NUSCENES_SIZE[1]
        return self.fx * sx, self.fx * sy, self.cx * sx, self.cy * sy


#: Rectified intrinsics and mounting yaws close to nuScenes' (the back camera is the wide one).
CAMERAS: Mapping[str, Camera] = {
    "CAM_FRONT": Camera(1266.4, 816.3, 491.5, 0.0),
    "CAM_FRONT_LEFT": Camera(1272.6, 826.6, 479.8, 55.0),
    "CAM_FRONT_RIGHT": Camera(1260.8, 808.0, 495.3, -55.0),
    "CAM_BACK": Camera(809.2, 829.2, 481.8, 180.0),
    "CAM_BACK_LEFT": Camera(1256.7, 792.1, 492.8, 110.0),
    "CAM_BACK_RIGHT": Camera(1259.5, 807.3, 501.2, -110.0),
}


@dataclass(frozen=True)
class Vehicle:
    """A box on the road: centre (x forward, y left, metres from the ego car), size, colour."""

    kind: str  # "car" or "bus"
    x: float
    y: float
    length: float
    width: float
    height: float
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ViewFacts:
    """What one camera shows: vehicles whose centre projects into its image."""

    cars: int
    buses: int


@dataclass(frozen=True)
class SceneFacts:
    """Ground truth of one frame, the source of the reference answers.

    Attributes:
        ego_lane: 0 = leftmost of :data:`LANES`.
        views: what each camera shows.
        nearest: where the nearest visible vehicle is (``front``, ``back``, ``left``,
            ``right``), or ``none`` when no camera shows one.
        cars_around: cars visible in at least one camera (a car two cameras share counts once).
    """

    ego_lane: int
    views: Mapping[str, ViewFacts]
    nearest: str = "none"
    cars_around: int = 0

    @property
    def ego_lane_name(self) -> str:
        """``"left"``, ``"middle"`` or ``"right"``."""
        return _LANE_NAMES[self.ego_lane]


@dataclass(frozen=True)
class QuestionTemplate:
    """A question about a frame, its reference answer (from the facts), its kind and the view it
    is about (None for questions over all views)."""

    question: str
    answer: str
    kind: str = ""
    view: str | None = None


class RoadScene:
    """Deterministic six-view road scenes: ``render(frame)`` and ``facts(frame)``."""

    def __init__(
        self,
        seed: int,
        width: int = 1600,
        height: int = 900,
        segment_frames: int = 48,
        density: str = "scene",
    ) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"image size must be at least 16 x 16, got {width} x {height}")
        if density not in DENSITY_MODES:
            raise ValueError(f"density must be one of {', '.join(DENSITY_MODES)}, got {density!r}")
        self.seed, self.width, self.height = seed, width, height
        self.segment_frames = segment_frames
        self.density = density
        self._backgrounds = {v: self._background(i, v) for i, v in enumerate(VIEWS)}

    def render(self, frame: int) -> dict[str, np.ndarray]:
        """The six RGB uint8 images of ``frame``, in :data:`VIEWS` order."""
        ego_lane, vehicles = self._world(frame)
        dash_phase = (frame * _EGO_SPEED_MPS / 12.0) % 6.0
        return {view: self._render_view(view, ego_lane, vehicles, dash_phase) for view in VIEWS}

    def facts(self, frame: int) -> SceneFacts:
        """The ground truth of ``frame``: ego lane and vehicles per view."""
        ego_lane, vehicles = self._world(frame)
        views = {}
        seen: dict[int, Vehicle] = {}
        for view in VIEWS:
            inside = [v for v in vehicles if self._centre_visible(view, v)]
            seen.update((id(v), v) for v in inside)
            kinds = [v.kind for v in inside]
            views[view] = ViewFacts(cars=kinds.count("car"), buses=kinds.count("bus"))
        visible = list(seen.values())
        nearest = min(visible, key=lambda v: math.hypot(v.x, v.y), default=None)
        return SceneFacts(
            ego_lane=ego_lane,
            views=views,
            nearest="none" if nearest is None else _direction(nearest.x, nearest.y),
            cars_around=sum(v.kind == "car" for v in visible),
        )

    def masks(self, frame: int) -> dict[str, np.ndarray]:
        """Per view, which vehicle kind each pixel shows (uint8 ``H x W``: 0 none, 1 car, 2 bus),
        drawn as :meth:`render` draws, so occlusion matches the image: a dense label map for
        training a vision tower (:mod:`prune2drive_ros.training`)."""
        _, vehicles = self._world(frame)
        masks = {}
        for view in VIEWS:
            mask = np.zeros((self.height, self.width), np.uint8)
            for vehicle in self._far_to_near(view, vehicles):
                self._draw_vehicle(mask, view, vehicle, label=MASK_LABELS[vehicle.kind])
            masks[view] = mask
        return masks

    def centres(self, frame: int) -> dict[str, list[tuple[str, float, float]]]:
        """Per view, ``(kind, u, v)`` of each vehicle the view's facts count: where its centre
        projects, as fractions of the image width and height."""
        _, vehicles = self._world(frame)
        found: dict[str, list[tuple[str, float, float]]] = {}
        for view in VIEWS:
            found[view] = []
            for vehicle in vehicles:
                if self._centre_visible(view, vehicle):
                    centre = np.array([[vehicle.x, vehicle.y, vehicle.height / 2]])
                    u, v = self._project(view, centre)[0][0]
                    found[view].append((vehicle.kind, u / self.width, v / self.height))
        return found

    # --- world -------------------------------------------------------------------------------

    def _world(self, frame: int) -> tuple[int, list[Vehicle]]:
        """Ego lane and vehicles at ``frame``: a segment's layout, swaying a little in x."""
        segment, within = divmod(frame, self.segment_frames)
        rng = np.random.default_rng([self.seed, segment])
        ego_lane = int(rng.integers(LANES))
        density = _DENSITIES[rng.integers(len(_DENSITIES))]
        # zone mode: ahead, behind and beside each their own (drawn after the scene's one, so
        # the scene mode's worlds stay what the scene models were trained on)
        zone_density = (
            [_DENSITIES[i] for i in rng.integers(len(_DENSITIES), size=3)]
            if self.density == "zone"
            else [density] * 3
        )
        vehicles = []
        for lane in range(LANES):
            y = (ego_lane - lane) * LANE_WIDTH_M
            zones = [(12.0, 40.0, zone_density[0]), (-40.0, -12.0, zone_density[1])]
            if lane != ego_lane:
                zones += [(-1.5, 1.5, zone_density[2])]
            for lo, hi, chance in zones:
                if rng.random() >= chance:
                    continue
                bus = abs(lo) > 5 and rng.random() < _BUS_SHARE
                sway = 1.0 * math.sin(2 * math.pi * within / 36.0 + rng.uniform(0, 2 * math.pi))
                vehicles.append(
                    Vehicle(
                        kind="bus" if bus else "car",
                        x=float(rng.uniform(lo, hi)) + sway,
                        y=y + float(rng.uniform(-0.3, 0.3)),
                        length=12.0 if bus else 4.5,
                        width=2.5 if bus else 1.8,
                        height=3.2 if bus else 1.5,
                        color=_BUS_COLORS[rng.integers(len(_BUS_COLORS))]
                        if bus
                        else _CAR_COLORS[rng.integers(len(_CAR_COLORS))],
                    )
                )
        return ego_lane, vehicles

    # --- projection --------------------------------------------------------------------------

    def _project(self, view: str, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3: x forward, y left, z up from the road) -> pixels (N, 2), depth."""
        cam = CAMERAS[view]
        fx, fy, cx, cy = cam.scaled(self.width, self.height)
        yaw = math.radians(cam.yaw_deg)
        c, s = math.cos(yaw), math.sin(yaw)
        depth = points[:, 0] * c + points[:, 1] * s
        right = points[:, 0] * s - points[:, 1] * c
        down = CAMERA_HEIGHT_M - points[:, 2]
        safe = np.maximum(depth, 1e-6)
        return np.stack([cx + fx * right / safe, cy + fy * down / safe], axis=1), depth

    def _centre_visible(self, view: str, vehicle: Vehicle) -> bool:
        centre = np.array([[vehicle.x, vehicle.y, vehicle.height / 2]])
        pixel, depth = self._project(view, centre)
        u, v = pixel[0]
        return bool(depth[0] > 1.0 and 0 <= u < self.width and 0 <= v < self.height)

    # --- drawing -----------------------------------------------------------------------------

    def _background(self, index: int, view: str) -> np.ndarray:
        """Sky gradient over grass, plus a static noise texture (realistic JPEG entropy)."""
        rng = np.random.default_rng([self.seed, 1_000 + index])
        horizon = int(CAMERAS[view].scaled(self.width, self.height)[3])
        rows = np.arange(self.height, dtype=np.float32)[:, None]
        sky_t = np.clip(rows / max(horizon, 1), 0, 1)
        sky = (1 - sky_t) * np.array([70, 120, 200]) + sky_t * np.array([190, 210, 230])
        ground = np.array([86, 110, 70]) + 0 * rows
        column = np.where(rows < horizon, sky, ground).astype(np.float32)
        image = np.repeat(column[:, None, :], self.width, axis=1)
        image += 5.0 * rng.standard_normal(size=image.shape, dtype=np.float32)
        return np.clip(image, 0, 255).astype(np.uint8)

    def _render_view(
        self, view: str, ego_lane: int, vehicles: list[Vehicle], dash_phase: float
    ) -> np.ndarray:
        image = self._backgrounds[view].copy()
        left_edge = ego_lane * LANE_WIDTH_M + LANE_WIDTH_M / 2
        right_edge = left_edge - LANES * LANE_WIDTH_M
        xs = np.concatenate([-np.geomspace(200, 0.5, 40), np.geomspace(0.5, 200, 40)])
        self._fill_ground(image, view, xs, left_edge, right_edge, (88, 88, 92))
        for edge in (left_edge, right_edge):  # solid road edges
            self._fill_ground(image, view, xs, edge + 0.1, edge - 0.1, (235, 235, 235))
        for lane in range(1, LANES):  # dashed lane lines, 3 m paint every 6 m
            y = left_edge - lane * LANE_WIDTH_M
            for start in np.arange(-60.0, 60.0, 6.0) - dash_phase:
                dash = np.array([start, start + 3.0])
                self._fill_ground(image, view, dash, y + 0.08, y - 0.08, (230, 230, 230))
        for vehicle in self._far_to_near(view, vehicles):
            self._draw_vehicle(image, view, vehicle)
        return image

    def _far_to_near(self, view: str, vehicles: list[Vehicle]) -> list[Vehicle]:
        """The painter's order: farthest from ``view``'s camera first."""
        depth = {id(v): self._project(view, np.array([[v.x, v.y, 0.0]]))[1][0] for v in vehicles}
        return sorted(vehicles, key=lambda v: -depth[id(v)])

    def _fill_ground(
        self,
        image: np.ndarray,
        view: str,
        xs: np.ndarray,
        y_left: float,
        y_right: float,
        color: tuple[int, int, int],
    ) -> None:
        """Fill the road strip between ``y_left`` and ``y_right`` over ``xs`` (near-clipped)."""
        left = np.stack([xs, np.full_like(xs, y_left), np.zeros_like(xs)], axis=1)
        right = np.stack([xs[::-1], np.full_like(xs, y_right), np.zeros_like(xs)], axis=1)
        pixels, depth = self._project(view, np.concatenate([left, right]))
        keep = depth > 0.5
        if keep.sum() >= 3:
            polygon = np.clip(pixels[keep], -1e5, 1e5).round().astype(np.int32)
            cv2.fillPoly(image, [polygon], color, lineType=cv2.LINE_AA)

    def _draw_vehicle(
        self, image: np.ndarray, view: str, vehicle: Vehicle, *, label: int | None = None
    ) -> None:
        """Body, glass band and wheels, each the hull of a projected box (skip if clipped); with
        ``label``, every part in that one value (a label mask) instead of its colour."""
        half_l, half_w = vehicle.length / 2, vehicle.width / 2
        body = _box(vehicle.x, vehicle.y, half_l, half_w, 0.3, vehicle.height)
        glass = _box(
            vehicle.x,
            vehicle.y,
            half_l * 0.8,
            half_w * 1.01,
            vehicle.height * 0.55,
            vehicle.height * 0.9,
        )
        wheels = [
            _box(vehicle.x + dx * half_l * 0.65, vehicle.y + dy * half_w, 0.35, 0.15, 0.0, 0.7)
            for dx in (-1, 1)
            for dy in (-1, 1)
        ]
        parts = [(w, (20, 20, 20)) for w in wheels]
        parts += [(body, vehicle.color), (glass, (40, 55, 70))]
        for corners, color in parts:
            pixels, depth = self._project(view, corners)
            if depth.min() <= 0.5:
                return
            hull = cv2.convexHull(np.clip(pixels, -1e5, 1e5).round().astype(np.int32))
            if label is None:
                cv2.fillConvexPoly(image, hull, color, lineType=cv2.LINE_AA)
            else:
                cv2.fillConvexPoly(image, hull, label)


#: The values of :meth:`RoadScene.masks`.
MASK_LABELS: Mapping[str, int] = {"car": 1, "bus": 2}


def _direction(x: float, y: float) -> str:
    """``front``, ``back``, ``left`` or ``right``: the quadrant (split at 45 degrees) of a point
    ``x`` ahead and ``y`` to the left of the ego car."""
    if abs(x) >= abs(y):
        return "front" if x > 0 else "back"
    return "left" if y > 0 else "right"


def _box(x: float, y: float, half_l: float, half_w: float, z0: float, z1: float) -> np.ndarray:
    """The 8 corners of an axis-aligned box on the road."""
    return np.array(
        [
            [x + sx * half_l, y + sy * half_w, z]
            for sx in (-1, 1)
            for sy in (-1, 1)
            for z in (z0, z1)
        ]
    )


_CAR_COLORS: tuple[tuple[int, int, int], ...] = (
    (200, 30, 30),
    (30, 60, 160),
    (230, 230, 230),
    (20, 20, 25),
    (150, 150, 155),
    (60, 120, 60),
)
_BUS_COLORS: tuple[tuple[int, int, int], ...] = ((240, 190, 20), (200, 40, 40), (235, 235, 240))


#: The question kinds, in the order :func:`all_scene_questions` asks them.
QUESTION_KINDS: tuple[str, ...] = ("cars", "buses", "bus_present", "lane", "nearest", "cars_around")
#: Different questions :func:`all_scene_questions` asks about one frame.
QUESTIONS_PER_FRAME = 3 * len(VIEWS) + 3


def _where(view: str) -> str:
    """How a question names a camera: "ahead" and "behind" for the two on the axis."""
    if view == "CAM_FRONT":
        return "ahead"
    if view == "CAM_BACK":
        return "behind"
    return f"in the {VIEW_LABELS[view]} camera"


def all_scene_questions(facts: SceneFacts) -> list[QuestionTemplate]:
    """Every question about a frame, with its reference answer: per view the cars, the buses
    and whether there is a bus; then the ego lane, the nearest vehicle and the cars around.

    Answers are short canonical strings (a count, yes/no, a lane, a direction) so accuracy is
    an exact match; kinds are :data:`QUESTION_KINDS`.
    """
    questions = []
    for view in VIEWS:
        seen = facts.views[view]
        label = VIEW_LABELS[view]
        questions += [
            QuestionTemplate(
                f"How many cars are in the {label} camera?", str(seen.cars), "cars", view
            ),
            QuestionTemplate(
                f"How many buses are in the {label} camera?", str(seen.buses), "buses", view
            ),
            QuestionTemplate(
                f"Is there a bus {_where(view)}?",
                "yes" if seen.buses else "no",
                "bus_present",
                view,
            ),
        ]
    return [
        *questions,
        QuestionTemplate(
            "Which lane is the ego car in?", f"the {facts.ego_lane_name} lane", "lane"
        ),
        QuestionTemplate(
            "Where is the nearest vehicle: front, back, left or right?", facts.nearest, "nearest"
        ),
        QuestionTemplate("How many cars are around us?", str(facts.cars_around), "cars_around"),
    ]


#: Question mixes: a mix weighs each question of :func:`all_scene_questions` by kind and view.
#: ``default`` asks every kind equally often and every view equally often within a kind;
#: ``front`` asks mostly about CAM_FRONT (three in four questions), as a planner that looks
#: ahead would, to check that tuned per-view rates follow the questions.
QUESTION_MIXES: tuple[str, ...] = ("default", "front")
_FRONT_SHARE = 0.75


def question_weights(questions: list[QuestionTemplate], mix: str) -> np.ndarray:
    """The probability of asking each of ``questions`` (one frame's, all kinds) under ``mix``."""
    if mix not in QUESTION_MIXES:
        raise ValueError(
            f"unknown question mix {mix!r}; expected one of {', '.join(QUESTION_MIXES)}"
        )
    per_kind = {kind: sum(q.kind == kind for q in questions) for kind in QUESTION_KINDS}
    weights = np.array([1.0 / (len(QUESTION_KINDS) * per_kind[q.kind]) for q in questions])
    if mix == "front":
        front = np.array([q.view == "CAM_FRONT" for q in questions])
        weights = np.where(
            front,
            _FRONT_SHARE * weights / weights[front].sum(),
            (1 - _FRONT_SHARE) * weights / weights[~front].sum(),
        )
    return weights / weights.sum()


def scene_questions(
    facts: SceneFacts, frame: int, *, count: int = 3, mix: str = "default", seed: int = 0
) -> list[QuestionTemplate]:
    """``count`` different questions about ``frame``, drawn under ``mix`` (deterministic from
    ``seed`` and ``frame``), with their reference answers."""
    if not 1 <= count <= QUESTIONS_PER_FRAME:
        raise ValueError(f"count must be 1 to {QUESTIONS_PER_FRAME} questions a frame, got {count}")
    questions = all_scene_questions(facts)
    rng = np.random.default_rng([seed, frame, 5])
    picks = rng.choice(len(questions), count, replace=False, p=question_weights(questions, mix))
    return [questions[i] for i in sorted(picks)]
