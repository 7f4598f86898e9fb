"""Synthetic nuScenes-like road scenes for the six cameras, with the facts questions are built on.

No nuScenes images are available here, so bags, demos and benchmarks draw their own: one small
3D world (a three-lane road, cars and buses) seen through six pinhole cameras with nuScenes'
intrinsics and mounting yaws. Projecting one world into all views keeps the views consistent
(a car behind appears in the back camera, mirrored left-right as a rear camera sees it), so the
reference answers (:class:`SceneFacts`) are true of the pixels. Vehicles move a little from
frame to frame; every ``segment_frames`` frames a new scene is drawn from the seed, so long bags
ask about varied scenes. Everything is deterministic from the seed.

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
    """Ground truth of one frame, the source of the reference answers."""

    ego_lane: int  # 0 = leftmost of LANES
    views: Mapping[str, ViewFacts]

    @property
    def ego_lane_name(self) -> str:
        """``"left"``, ``"middle"`` or ``"right"``."""
        return _LANE_NAMES[self.ego_lane]


@dataclass(frozen=True)
class QuestionTemplate:
    """A question about a frame and how its reference answer follows from the facts."""

    question: str
    answer: str


class RoadScene:
    """Deterministic six-view road scenes: ``render(frame)`` and ``facts(frame)``."""

    def __init__(
        self, seed: int, width: int = 1600, height: int = 900, segment_frames: int = 48
    ) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"image size must be at least 16 x 16, got {width} x {height}")
        self.seed, self.width, self.height = seed, width, height
        self.segment_frames = segment_frames
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
        for view in VIEWS:
            inside = [v.kind for v in vehicles if self._centre_visible(view, v)]
            views[view] = ViewFacts(cars=inside.count("car"), buses=inside.count("bus"))
        return SceneFacts(ego_lane=ego_lane, views=views)

    # --- world -------------------------------------------------------------------------------

    def _world(self, frame: int) -> tuple[int, list[Vehicle]]:
        """Ego lane and vehicles at ``frame``: a segment's layout, swaying a little in x."""
        segment, within = divmod(frame, self.segment_frames)
        rng = np.random.default_rng([self.seed, segment])
        ego_lane = int(rng.integers(LANES))
        vehicles = []
        for lane in range(LANES):
            y = (ego_lane - lane) * LANE_WIDTH_M
            zones = [(12.0, 40.0), (-40.0, -12.0)]
            if lane != ego_lane:
                zones += [(-1.5, 1.5)]
            for lo, hi in zones:
                if rng.random() >= 0.5:
                    continue
                bus = abs(lo) > 5 and rng.random() < 0.2
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
        depth_of = {id(v): self._project(view, np.array([[v.x, v.y, 0.0]]))[1][0] for v in vehicles}
        for vehicle in sorted(vehicles, key=lambda v: -depth_of[id(v)]):
            self._draw_vehicle(image, view, vehicle)
        return image

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

    def _draw_vehicle(self, image: np.ndarray, view: str, vehicle: Vehicle) -> None:
        """Body, glass band and wheels, each the hull of a projected box (skip if clipped)."""
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
            cv2.fillConvexPoly(image, hull, color, lineType=cv2.LINE_AA)


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


def scene_questions(facts: SceneFacts, frame: int) -> list[QuestionTemplate]:
    """Three questions about a frame, rotating over the views, with their reference answers.

    The answers are short canonical strings (a count, yes/no, a lane) so that accuracy can be
    scored by exact match as well as by language metrics.
    """
    car_view = VIEWS[frame % len(VIEWS)]
    bus_view = VIEWS[(frame + 3) % len(VIEWS)]
    bus_where = "behind" if bus_view == "CAM_BACK" else f"in the {VIEW_LABELS[bus_view]} camera"
    return [
        QuestionTemplate(
            f"How many cars are in the {VIEW_LABELS[car_view]} camera?",
            str(facts.views[car_view].cars),
        ),
        QuestionTemplate(
            f"Is there a bus {bus_where}?", "yes" if facts.views[bus_view].buses else "no"
        ),
        QuestionTemplate("Which lane is the ego car in?", f"the {facts.ego_lane_name} lane"),
    ]
