"""What stands on a layout's walls: coloured doors, landmarks (plant, cabinet, ...) against them, and the goal in
front of the one an instruction names. No ROS.

Why built this way: what an instruction claims is put there by construction rather than checked afterwards. The
colour it names is given to the target door alone, the doors it counts are the doors on that side of the first
corridor, the landmark it names is the only one of that name, and distractor landmarks keep clear of the route.
Doors keep a gap between them and a margin from every corner and opening; no landmark stands in front of a door.
Every draw comes from the caller's generator, in a fixed order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vln_ros.core.control import Pose2D
from vln_ros.sim.geometry import Polyline, arc_position_m, distance_to_landmarks, polyline_length_m, sample_polyline
from vln_ros.sim.instructions import MAX_ORDINAL
from vln_ros.sim.layout import CELLS_PER_M, Grid, Layout, Side
from vln_ros.sim.scene import BGR, Door, Landmark

ROBOT_CLEARANCE_M = 0.55     # the route keeps this from every wall and landmark (a 0.3 m robot, and margin)
ROUTE_M = (6.0, 18.0)
DOOR_STANDOFF_M = 0.7        # the goal, in front of the target door's middle
LANDMARK_STANDOFF_M = 0.8    # the goal, in front of the target landmark's front face

COLOURS: dict[str, BGR] = {
    'red': (40, 40, 200), 'blue': (190, 90, 30), 'green': (60, 150, 40),
    'yellow': (40, 200, 230), 'grey': (125, 125, 125), 'white': (245, 245, 240),
}
# Most doors in a building are plain: distractors are grey or white more often than not.
_DISTRACTOR_WEIGHTS = {'red': 0.1, 'blue': 0.1, 'green': 0.1, 'yellow': 0.1, 'grey': 0.35, 'white': 0.25}


@dataclass(frozen=True)
class LandmarkKind:
    name: str
    length: float    # along the wall it stands against
    depth: float     # out from that wall
    height: float    # all above the camera (0.45 m): the renderer never needs a box's top face
    bgr: BGR


LANDMARK_KINDS = (
    LandmarkKind('plant', 0.40, 0.35, 1.10, (50, 140, 60)),
    LandmarkKind('cabinet', 0.90, 0.45, 1.50, (60, 100, 140)),
    LandmarkKind('fire extinguisher', 0.25, 0.22, 0.65, (30, 30, 190)),
    LandmarkKind('bench', 1.40, 0.42, 0.50, (40, 70, 110)),
    LandmarkKind('trash bin', 0.40, 0.35, 0.70, (80, 80, 80)),
    LandmarkKind('vending machine', 0.90, 0.70, 1.80, (200, 200, 205)),
)
_KIND_BY_NAME = {k.name: k for k in LANDMARK_KINDS}


@dataclass
class Placed:
    """A door or landmark on a side, before it becomes a Door or Landmark."""

    side: int
    s: float
    length: float
    name: str    # door colour or landmark name


def _colour(rng: np.random.Generator, exclude: str | None = None) -> str:
    names = [c for c in _DISTRACTOR_WEIGHTS if c != exclude]
    weights = np.array([_DISTRACTOR_WEIGHTS[c] for c in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def place_doors(rng: np.random.Generator, grid: Grid, sides: list[Side], layout: Layout, kind: str) -> list[Placed]:
    """A few doors along every leg's walls and the room's, a gap between any two and a margin from every corner
    and opening; the dead end gets a door of its own only when it is the target."""
    doors = []
    for index, side in enumerate(sides):
        if side.role == 'end':
            if kind == 'door_at_end':
                doors.append(Placed(index, layout.legs[-1].half / CELLS_PER_M, float(rng.choice((0.9, 1.0))),
                                    _colour(rng)))
            continue
        cursor = side.lo + rng.uniform(0.0, 1.2)
        while True:
            width = float(rng.choice((0.8, 0.9, 1.0)))
            middle = cursor + width / 2
            if middle + width / 2 > side.hi:
                break
            if grid.solid_behind(side, middle - width / 2 - 0.3, middle + width / 2 + 0.3):
                doors.append(Placed(index, middle, width, _colour(rng)))
                cursor = middle + width / 2 + rng.uniform(0.7, 2.6 if side.role == 'leg' else 2.0)
            else:
                cursor += 0.3
    return doors


def door_goal(side: Side, door: Placed) -> Pose2D:
    x, y = side.at(door.s, DOOR_STANDOFF_M)
    return Pose2D(x, y, _wrap(side.facing + math.pi))


def landmark_goal(side: Side, landmark: Placed) -> Pose2D:
    x, y = side.at(landmark.s, _KIND_BY_NAME[landmark.name].depth + LANDMARK_STANDOFF_M)
    return Pose2D(x, y, _wrap(side.facing + math.pi))


def choose_target_door(rng: np.random.Generator, sides: list[Side], doors: list[Placed],
                       prefix: Polyline, layout: Layout, kind: str) -> Placed | None:
    """A door the family can name whose route length is in range."""
    last_leg = layout.route_legs - 1
    if kind == 'door_at_end':
        eligible = [d for d in doors if sides[d.side].role == 'end']
    elif kind == 'door_ordinal':
        hand = int(rng.choice((1, -1)))
        ordered = sorted((d for d in doors if sides[d.side].leg == 0 and sides[d.side].hand == hand),
                         key=lambda d: d.s)
        eligible = ordered[:MAX_ORDINAL]
    elif kind == 'room':
        eligible = [d for d in doors if sides[d.side].role == 'room']
    else:
        eligible = [d for d in doors if sides[d.side].role == 'leg' and sides[d.side].leg == last_leg]
    fitting = []
    for d in eligible:
        goal = door_goal(sides[d.side], d)
        if ROUTE_M[0] <= polyline_length_m((*prefix, (goal.x, goal.y))) <= ROUTE_M[1]:
            fitting.append(d)
    return fitting[int(rng.integers(len(fitting)))] if fitting else None


def give_unique_colour(rng: np.random.Generator, doors: list[Placed], target: Placed, colour: str) -> None:
    target.name = colour
    for d in doors:
        if d is not target and d.name == colour:
            d.name = _colour(rng, exclude=colour)


def doorways_of(sides: list[Side], doors: list[Placed]) -> np.ndarray:
    """Points on and up to 0.6 m in front of every door: no landmark may stand there (N x 2)."""
    points = [sides[d.side].at(d.s + across * d.length / 2, out)
              for d in doors for across in np.linspace(-1.0, 1.0, 7) for out in (0.0, 0.3, 0.6)]
    return np.array(points, float).reshape(-1, 2)


def _fits(grid: Grid, sides: list[Side], index: int, doorways: np.ndarray, landmarks: list[Placed],
          kind: LandmarkKind, s: float) -> bool:
    """Whether a landmark of `kind` at s stands against unbroken wall, in front of no door, clear of the others."""
    side = sides[index]
    if s - kind.length / 2 < side.lo or s + kind.length / 2 > side.hi:
        return False
    if not grid.solid_behind(side, s - kind.length / 2 - 0.1, s + kind.length / 2 + 0.1):
        return False
    box = build_landmark(side, Placed(index, s, kind.length, kind.name))
    if len(doorways) and distance_to_landmarks(doorways, [box]).min() < 0.15:
        return False
    others = [build_landmark(sides[m.side], m) for m in landmarks]
    return not others or distance_to_landmarks(np.array([[box.x, box.y]]), others)[0] > \
        math.hypot(box.size_x, box.size_y) / 2 + 0.3


def _clear_of_route(route: Polyline, box: Landmark) -> bool:
    return distance_to_landmarks(sample_polyline(route, 0.05), [box]).min() >= ROBOT_CLEARANCE_M + 0.05


def place_target_landmark(rng: np.random.Generator, grid: Grid, sides: list[Side], doorways: np.ndarray,
                          prefix: Polyline, last_leg: int, roles: tuple[str, ...]) -> Placed | None:
    """A landmark on the last route leg (or in the room) whose route length is in range."""
    candidates = [i for i, sd in enumerate(sides) if sd.role in roles and (sd.role != 'leg' or sd.leg == last_leg)]
    for _ in range(20):
        index = candidates[int(rng.integers(len(candidates)))]
        kind = LANDMARK_KINDS[int(rng.integers(len(LANDMARK_KINDS)))]
        side = sides[index]
        s = float(rng.uniform(side.lo, side.hi))
        if not _fits(grid, sides, index, doorways, [], kind, s):
            continue
        placed = Placed(index, s, kind.length, kind.name)
        goal = landmark_goal(side, placed)
        if ROUTE_M[0] <= polyline_length_m((*prefix, (goal.x, goal.y))) <= ROUTE_M[1]:
            return placed
    return None


def place_passed_landmark(rng: np.random.Generator, grid: Grid, sides: list[Side], doorways: np.ndarray,
                          route: Polyline, route_legs: int) -> Placed | None:
    """A landmark beside the route that the robot passes well before the goal."""
    candidates = [i for i, sd in enumerate(sides) if sd.role == 'leg' and sd.leg < route_legs]
    total = polyline_length_m(route)
    for _ in range(30):
        index = candidates[int(rng.integers(len(candidates)))]
        kind = LANDMARK_KINDS[int(rng.integers(len(LANDMARK_KINDS)))]
        side = sides[index]
        s = float(rng.uniform(side.lo, side.hi))
        if not _fits(grid, sides, index, doorways, [], kind, s):
            continue
        placed = Placed(index, s, kind.length, kind.name)
        box = build_landmark(side, placed)
        if _clear_of_route(route, box) and 1.0 <= arc_position_m(route, box.x, box.y) <= total - 1.5:
            return placed
    return None


def place_distractor_landmarks(rng: np.random.Generator, grid: Grid, sides: list[Side], doorways: np.ndarray,
                               landmarks: list[Placed], route: Polyline, named: str | None) -> None:
    """A few more landmarks anywhere they fit, clear of the route; none shares the instruction's landmark's name."""
    kinds = [k for k in LANDMARK_KINDS if k.name != named]
    wanted = len(landmarks) + int(rng.integers(1, 5))
    for _ in range(25):
        if len(landmarks) >= wanted:
            return
        index = int(rng.integers(len(sides)))
        kind = kinds[int(rng.integers(len(kinds)))]
        side = sides[index]
        s = float(rng.uniform(side.lo, side.hi))
        if _fits(grid, sides, index, doorways, landmarks, kind, s) and \
                _clear_of_route(route, build_landmark(side, Placed(index, s, kind.length, kind.name))):
            landmarks.append(Placed(index, s, kind.length, kind.name))


def build_door(side: Side, d: Placed) -> Door:
    x, y = side.at(d.s)
    return Door(x, y, side.facing, d.length, d.name, COLOURS[d.name])


def build_landmark(side: Side, m: Placed) -> Landmark:
    kind = _KIND_BY_NAME[m.name]
    x, y = side.at(m.s, kind.depth / 2)
    along_x = side.along[0] != 0
    return Landmark(x, y, kind.length if along_x else kind.depth, kind.depth if along_x else kind.length,
                    kind.height, kind.name, kind.bgr)


def _wrap(a: float) -> float:
    return math.atan2(math.sin(a), math.cos(a))
