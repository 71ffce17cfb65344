"""The free space of a generated scene: a corridor spine on a 0.1 m grid with left and right turns, junction stubs,
side branches, sometimes a room at the end; the walls that bound it; and the straight stretches of wall that doors
and landmarks may stand on. No ROS.

The free space is a union of axis-aligned rectangles whose corners lie on the grid, and the walls are the boundary
of that union, so the walls always close the free space: the robot can never leave the scene. Parts that do not
join are kept at least GAP cells apart, so no wall is paper-thin. Every draw comes from the caller's generator, in
a fixed order: one seed, one layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vln_ros.sim.scene import BGR, Wall

CELLS_PER_M = 10             # the layout's grid: every rectangle corner lies on it (integers below are cells)
DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))   # direction index k: yaw k * pi/2; a left turn is k + 1
GAP = 10                     # cells between parts of the layout that do not join (walls never paper-thin)
_CORRIDOR_WALLS: tuple[BGR, ...] = ((170, 200, 215), (200, 205, 200), (175, 195, 225), (210, 200, 185))
_ROOM_WALLS: tuple[BGR, ...] = ((215, 215, 205), (160, 200, 190), (190, 210, 230))


@dataclass(frozen=True)
class Rect:
    x0: int
    y0: int
    x1: int
    y1: int

    def gap_to(self, other: Rect) -> int:
        """How far apart the two are along the axis that separates them most (negative: they overlap)."""
        return max(other.x0 - self.x1, self.x0 - other.x1, other.y0 - self.y1, self.y0 - other.y1)

    def contains(self, x: float, y: float) -> bool:
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1


@dataclass(frozen=True)
class Leg:
    """A corridor leg: its centre line starts at (x, y) and runs `length` cells along direction k."""

    x: int
    y: int
    k: int
    length: int
    half: int

    def cell(self, a: int, c: int) -> tuple[int, int]:
        """The grid point `a` cells along the leg and `c` cells to its left."""
        (ax, ay), (lx, ly) = DIRS[self.k], DIRS[(self.k + 1) % 4]
        return self.x + a * ax + c * lx, self.y + a * ay + c * ly

    def point(self, a: int, c: int) -> tuple[float, float]:
        x, y = self.cell(a, c)
        return x / CELLS_PER_M, y / CELLS_PER_M

    def rect(self, a0: int, a1: int, c0: int, c1: int) -> Rect:
        (x0, y0), (x1, y1) = self.cell(a0, c0), self.cell(a1, c1)
        return Rect(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@dataclass(frozen=True)
class Side:
    """A straight stretch of wall that doors and landmarks may stand on: the points origin + s * along (metres)
    for s in [lo, hi], the free space towards `inward`."""

    ox: int
    oy: int
    along: tuple[int, int]
    inward: tuple[int, int]
    lo: float
    hi: float
    leg: int      # the corridor leg it flanks; -1 for the room's and the dead end's walls
    hand: int     # +1 on the leg's left, -1 on its right, 0 across it
    role: str     # 'leg', 'end', 'room', 'room_near'

    def at(self, s: float, out: float = 0.0) -> tuple[float, float]:
        """The point s along the wall and `out` metres from it into the free space."""
        return (self.ox / CELLS_PER_M + s * self.along[0] + out * self.inward[0],
                self.oy / CELLS_PER_M + s * self.along[1] + out * self.inward[1])

    @property
    def facing(self) -> float:
        return math.atan2(self.inward[1], self.inward[0])


@dataclass
class Layout:
    legs: list[Leg]
    turns: list[int]             # +1 left, -1 right: the turn at the end of legs[i]
    route_legs: int
    rects: list[Rect]
    room: Rect | None
    room_local: tuple[int, int, int, int] | None   # (a0, a1, c0, c1) on the last leg


class Grid:
    """The free space rasterised on the layout grid, and its boundary as merged wall runs."""

    def __init__(self, rects: list[Rect]):
        self.x0 = min(r.x0 for r in rects) - 1
        self.y0 = min(r.y0 for r in rects) - 1
        self.free = np.zeros((max(r.x1 for r in rects) - self.x0 + 1, max(r.y1 for r in rects) - self.y0 + 1), bool)
        for r in rects:
            self.free[r.x0 - self.x0:r.x1 - self.x0, r.y0 - self.y0:r.y1 - self.y0] = True

    def is_free(self, x_m: np.ndarray, y_m: np.ndarray) -> np.ndarray:
        i = np.floor(np.asarray(x_m) * CELLS_PER_M).astype(int) - self.x0
        j = np.floor(np.asarray(y_m) * CELLS_PER_M).astype(int) - self.y0
        inside = (i >= 0) & (i < self.free.shape[0]) & (j >= 0) & (j < self.free.shape[1])
        return inside & self.free[np.clip(i, 0, self.free.shape[0] - 1), np.clip(j, 0, self.free.shape[1] - 1)]

    def wall_runs(self) -> list[tuple[int, int, int, int, int, int]]:
        """(xa, ya, xb, yb, nx, ny): maximal straight runs of boundary between free and solid cells, with the unit
        normal towards the free side."""
        f = np.pad(self.free, 1).astype(np.int8)
        runs = []
        for axis in (0, 1):
            step = np.diff(f, axis=axis)    # +1: free on the positive side of the grid line, -1: negative side
            lines = step if axis == 0 else step.T
            for i in np.flatnonzero(lines.any(axis=1)).tolist():
                line = lines[i]
                cuts = np.concatenate(([0], np.flatnonzero(np.diff(line)) + 1, [len(line)]))
                for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
                    if line[a] == 0:
                        continue
                    # line i lies between padded cells i and i+1, i.e. at grid coordinate origin + i;
                    # padded cell j is grid cell origin + j - 1.
                    if axis == 0:
                        x = self.x0 + i
                        runs.append((x, self.y0 + a - 1, x, self.y0 + b - 1, int(line[a]), 0))
                    else:
                        y = self.y0 + i
                        runs.append((self.x0 + a - 1, y, self.x0 + b - 1, y, 0, int(line[a])))
        return runs

    def solid_behind(self, side: Side, s0: float, s1: float) -> bool:
        """Whether the wall is unbroken from s0 to s1 (no opening, no corner): every cell just behind it is solid."""
        cells = np.arange(math.floor(s0 * CELLS_PER_M), math.ceil(s1 * CELLS_PER_M)) + 0.5
        x, y = side.at(0.0, -0.05)
        s = cells / CELLS_PER_M
        return not self.is_free(x + s * side.along[0], y + s * side.along[1]).any()


def draw_layout(rng: np.random.Generator, kind: str) -> Layout | None:
    """The corridor spine (route legs, maybe one leg beyond the goal), junction stubs and the room, or None when
    parts that do not join come closer than GAP."""
    # Landmarks along the route need room beside the centre line: wider corridors for the landmark families.
    half = int(rng.choice((10, 11, 12) if kind in ('past_landmark', 'landmark_goal') else (9, 10, 11, 12)))
    route_legs = {'turn_at_junction': 2, 'multi_turn': int(rng.integers(2, 4)),
                  'past_landmark': int(rng.integers(1, 3)), 'landmark_goal': int(rng.integers(1, 4)),
                  'room': int(rng.integers(1, 3))}.get(kind, 1)
    has_room = kind == 'room'
    beyond = 0 if kind in ('door_at_end', 'room') or rng.random() < 0.5 else 1
    n = route_legs + beyond
    lengths = []
    for i in range(n):
        if i >= route_legs:
            lengths.append(int(rng.integers(30, 61)))
        elif route_legs == 1:
            lengths.append(int(rng.integers(40, 91) if has_room else rng.integers(60, 131)))
        elif i == 0:
            lengths.append(int(rng.integers(35, 76)))
        elif i < route_legs - 1:
            lengths.append(int(rng.integers(30, 61)))
        else:
            lengths.append(int(rng.integers(30, 71) if has_room else rng.integers(40, 91)))
    turns = [int(rng.choice((1, -1))) for _ in range(n - 1)]
    k, x, y = int(rng.integers(4)), 0, 0
    legs = []
    for i in range(n):
        leg = Leg(x, y, k, lengths[i], half)
        legs.append(leg)
        x, y = leg.cell(leg.length, 0)
        if i < n - 1:
            k = (k + turns[i]) % 4

    back = int(rng.integers(8, 13))
    rects: list[Rect] = []
    attached: set[tuple[int, int]] = set()

    def add(rect: Rect, *joins: int) -> int:
        rects.append(rect)
        attached.update((j, len(rects) - 1) for j in joins)
        return len(rects) - 1

    for i, leg in enumerate(legs):
        a0 = -back if i == 0 else -half
        a1 = leg.length if (has_room and i == n - 1) else leg.length + half
        add(leg.rect(a0, a1, -half, half), *([i - 1] if i else []))
    for i in range(n - 1):      # a stub at a corner makes it a junction: straight on, or the other way
        if (kind == 'turn_at_junction' and i == 0) or rng.random() < 0.35:
            stub = int(rng.integers(15, 31))
            if rng.random() < 0.5:
                add(legs[i].rect(legs[i].length + half, legs[i].length + half + stub, -half, half), i, i + 1)
            else:
                add(legs[i + 1].rect(-half - stub, -half, -half, half), i, i + 1)
    for i, leg in enumerate(legs):  # a side branch along a leg: another way the robot could go
        if rng.random() >= 0.3 or (kind == 'turn_at_junction' and i == 0):
            continue
        # Before a turn the instruction names, no opening on that side: the turn stays the first one possible.
        hand = -turns[i] if kind == 'multi_turn' and i < route_legs - 1 else int(rng.choice((1, -1)))
        lo = (15 if i == 0 else 2 * half + GAP) + half
        hi = leg.length - 2 * half - GAP
        if lo > hi:
            continue
        p, stub = int(rng.integers(lo, hi + 1)), int(rng.integers(15, 31))
        add(leg.rect(p - half, p + half, hand * half, hand * (half + stub)), i)
    room = room_local = None
    if has_room:
        depth, width = int(rng.integers(40, 56)), int(rng.integers(40, 61))
        slack = width // 2 - half - 5
        c0 = -(width // 2) + int(rng.integers(-slack, slack + 1))
        room_local = (legs[-1].length, legs[-1].length + depth, c0, c0 + width)
        room = rects[add(legs[-1].rect(*room_local), n - 1)]
    for i in range(len(rects)):
        for j in range(i + 1, len(rects)):
            if (i, j) not in attached and rects[i].gap_to(rects[j]) < GAP:
                return None
    return Layout(legs, turns, route_legs, rects, room, room_local)


def draw_walls(rng: np.random.Generator, grid: Grid, layout: Layout) -> tuple[Wall, ...]:
    """The free space's boundary as walls: one colour drawn for the corridors, one for the room."""
    corridor = _CORRIDOR_WALLS[int(rng.integers(len(_CORRIDOR_WALLS)))]
    room = _ROOM_WALLS[int(rng.integers(len(_ROOM_WALLS)))]
    walls = []
    for xa, ya, xb, yb, nx, ny in grid.wall_runs():
        # The free cell beside the run's middle says whose wall it is.
        mx, my = (xa + xb) / 2 + nx / 2, (ya + yb) / 2 + ny / 2
        bgr = room if layout.room is not None and layout.room.contains(mx, my) else corridor
        walls.append(Wall(xa / CELLS_PER_M, ya / CELLS_PER_M, xb / CELLS_PER_M, yb / CELLS_PER_M, bgr))
    return tuple(walls)


def sides_of(layout: Layout) -> list[Side]:
    """Where doors and landmarks may go: both walls of every leg (clear of the corner squares), the room's walls,
    and the dead end's wall."""
    sides = []
    legs, n = layout.legs, len(layout.legs)
    for i, leg in enumerate(legs):
        half_m, length_m = leg.half / CELLS_PER_M, leg.length / CELLS_PER_M
        lo = 1.0 if i == 0 else half_m + 0.3
        hi = length_m - half_m - 0.3 if i < n - 1 else length_m - 0.3 if layout.room else length_m + half_m - 0.3
        along, left = DIRS[leg.k], DIRS[(leg.k + 1) % 4]
        for hand in (1, -1):
            ox, oy = leg.cell(0, hand * leg.half)
            sides.append(Side(ox, oy, along, (-hand * left[0], -hand * left[1]), lo, hi, i, hand, 'leg'))
    last = legs[-1]
    along, left = DIRS[last.k], DIRS[(last.k + 1) % 4]
    back, right = (-along[0], -along[1]), (-left[0], -left[1])
    if layout.room_local is None:
        ox, oy = last.cell(last.length + last.half, -last.half)
        sides.append(Side(ox, oy, left, back, 0.3, 2 * last.half / CELLS_PER_M - 0.3, -1, 0, 'end'))
    else:
        a0, a1, c0, c1 = layout.room_local
        width, depth = (c1 - c0) / CELLS_PER_M, (a1 - a0) / CELLS_PER_M
        sides += [Side(*last.cell(a1, c0), left, back, 0.4, width - 0.4, -1, 0, 'room'),
                  Side(*last.cell(a0, c1), along, right, 0.4, depth - 0.4, -1, 0, 'room'),
                  Side(*last.cell(a0, c0), along, left, 0.4, depth - 0.4, -1, 0, 'room'),
                  Side(*last.cell(a0, c0), left, along, 0.4, width - 0.4, -1, 0, 'room_near')]
    return sides


