"""Indoor scenes from a seed: corridors with left and right turns, junctions (dead-end stubs at corners and along
corridors), sometimes a room at the end; coloured doors on the walls and landmarks against them; a start, a goal,
the instruction that leads from one to the other (English or Chinese) and the reference route. No ROS.

Why built this way: an evaluation needs many different, reproducible episodes whose instruction is true of the
scene, so what an instruction claims is put there by construction rather than parsed back out: the colour it names
is given to the target door alone, the turns it names are the corridors' turns (with no opening on that side before
the corner), the doors it counts are the doors on that side of the first corridor, the landmark it names is the
only one of that name. The free space is a union of axis-aligned rectangles on a 0.1 m grid and the walls are the
boundary of that union, so the walls always close the free space: the robot can never leave the scene. The route
runs along the corridors' centre lines; every draw is verified (clearance, length) and, if it fails, drawn again
from the same generator, so one seed still gives one scene.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vln_ros.core.control import Pose2D
from vln_ros.sim.scene import BGR, Door, Landmark, Scene, Wall

CELLS_PER_M = 10             # the layout's grid: every rectangle corner lies on it (integers below are cells)
ROBOT_CLEARANCE_M = 0.55     # the route keeps this from every wall and landmark (a 0.3 m robot, and margin)
ROUTE_M = (6.0, 18.0)
DOOR_STANDOFF_M = 0.7        # the goal, in front of the target door's middle
LANDMARK_STANDOFF_M = 0.8    # the goal, in front of the target landmark's front face
ZH_SHARE = 0.25
FAMILIES = ('door_ahead', 'door_at_end', 'door_ordinal', 'turn_at_junction', 'multi_turn', 'past_landmark',
            'landmark_goal', 'room')

COLOURS: dict[str, BGR] = {
    'red': (40, 40, 200), 'blue': (190, 90, 30), 'green': (60, 150, 40),
    'yellow': (40, 200, 230), 'grey': (125, 125, 125), 'white': (245, 245, 240),
}
COLOURS_ZH = {'red': '红色', 'blue': '蓝色', 'green': '绿色', 'yellow': '黄色', 'grey': '灰色', 'white': '白色'}
# Most doors in a building are plain: distractors are grey or white more often than not.
_DISTRACTOR_WEIGHTS = {'red': 0.1, 'blue': 0.1, 'green': 0.1, 'yellow': 0.1, 'grey': 0.35, 'white': 0.25}
_CORRIDOR_WALLS: tuple[BGR, ...] = ((170, 200, 215), (200, 205, 200), (175, 195, 225), (210, 200, 185))
_ROOM_WALLS: tuple[BGR, ...] = ((215, 215, 205), (160, 200, 190), (190, 210, 230))


@dataclass(frozen=True)
class LandmarkKind:
    name: str
    zh: str
    length: float    # along the wall it stands against
    depth: float     # out from that wall
    height: float    # all above the camera (0.45 m): the renderer never needs a box's top face
    bgr: BGR


LANDMARK_KINDS = (
    LandmarkKind('plant', '盆栽', 0.40, 0.35, 1.10, (50, 140, 60)),
    LandmarkKind('cabinet', '柜子', 0.90, 0.45, 1.50, (60, 100, 140)),
    LandmarkKind('fire extinguisher', '灭火器', 0.25, 0.22, 0.65, (30, 30, 190)),
    LandmarkKind('bench', '长椅', 1.40, 0.42, 0.50, (40, 70, 110)),
    LandmarkKind('trash bin', '垃圾桶', 0.40, 0.35, 0.70, (80, 80, 80)),
    LandmarkKind('vending machine', '自动售货机', 0.90, 0.70, 1.80, (200, 200, 205)),
)
_KIND_BY_NAME = {k.name: k for k in LANDMARK_KINDS}

_TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ('door_ahead', 'en'): ('go down the corridor and stop at the {colour} door',
                           'walk straight ahead and stop in front of the {colour} door',
                           'find the {colour} door and stop there'),
    ('door_ahead', 'zh'): ('沿着走廊走，在{colour}的门前停下', '一直往前走，停在{colour}的门前'),
    ('door_at_end', 'en'): ('go to the end of the corridor and stop at the door',
                            'walk to the door at the end of the corridor and stop'),
    ('door_at_end', 'zh'): ('向前走，找到走廊尽头的门', '走到走廊尽头的门前停下'),
    ('door_ordinal', 'en'): ('turn {hand} at the {nth} door and stop', 'stop at the {nth} door on the {hand}',
                             'go to the {nth} door on your {hand} and stop'),
    ('door_ordinal', 'zh'): ('走到{hand}边第{nth}扇门前停下', '在{hand}手边第{nth}个门前停下'),
    ('turn_at_junction', 'en'): ('turn {turn} at the junction and stop at the {colour} door',
                                 'at the junction turn {turn}, then stop at the {colour} door'),
    ('turn_at_junction', 'zh'): ('在路口{turn}，停在{colour}的门前', '走到路口{turn}，在{colour}的门前停下'),
    ('multi_turn', 'en'): ('follow the corridor, turn {turns} and stop at the {colour} door',
                           'go down the corridor, turn {turns}, and stop in front of the {colour} door'),
    ('multi_turn', 'zh'): ('沿着走廊走，{turns}，在{colour}的门前停下', '顺着走廊{turns}，停在{colour}的门前'),
    ('past_landmark', 'en'): ('walk past the {landmark} and stop at the {colour} door',
                              'go past the {landmark}, then stop in front of the {colour} door'),
    ('past_landmark', 'zh'): ('走过{landmark}，在{colour}的门前停下', '经过{landmark}以后，停在{colour}的门前'),
    ('landmark_goal', 'en'): ('stop in front of the {landmark}', 'find the {landmark} and stop in front of it',
                              'go to the {landmark} and stop'),
    ('landmark_goal', 'zh'): ('在{landmark}前面停下', '找到{landmark}，在它前面停下'),
    ('room', 'en'): ('go into the room and stop at the {colour} door',
                     'follow the corridor into the room and stop in front of the {colour} door'),
    ('room', 'zh'): ('走进房间，停在{colour}的门前', '沿着走廊走进房间，在{colour}的门前停下'),
    ('room_landmark', 'en'): ('go into the room and stop in front of the {landmark}',),
    ('room_landmark', 'zh'): ('走进房间，在{landmark}前面停下',),
}
_NTH = {'en': ('first', 'second', 'third'), 'zh': ('一', '二', '三')}
_HAND = {'en': {1: 'left', -1: 'right'}, 'zh': {1: '左', -1: '右'}}
_TURN = {'en': {1: 'left', -1: 'right'}, 'zh': {1: '左转', -1: '右转'}}

_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))   # direction index k: yaw k * pi/2; a left turn is k + 1
_GAP = 10                    # cells between parts of the layout that do not join (walls never paper-thin)
_MAX_DRAWS = 500


@dataclass(frozen=True)
class _Rect:
    x0: int
    y0: int
    x1: int
    y1: int

    def gap_to(self, other: _Rect) -> int:
        """How far apart the two are along the axis that separates them most (negative: they overlap)."""
        return max(other.x0 - self.x1, self.x0 - other.x1, other.y0 - self.y1, self.y0 - other.y1)

    def contains(self, x: float, y: float) -> bool:
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1


@dataclass(frozen=True)
class _Leg:
    """A corridor leg: its centre line starts at (x, y) and runs `length` cells along direction k."""

    x: int
    y: int
    k: int
    length: int
    half: int

    def cell(self, a: int, c: int) -> tuple[int, int]:
        """The grid point `a` cells along the leg and `c` cells to its left."""
        (ax, ay), (lx, ly) = _DIRS[self.k], _DIRS[(self.k + 1) % 4]
        return self.x + a * ax + c * lx, self.y + a * ay + c * ly

    def point(self, a: int, c: int) -> tuple[float, float]:
        x, y = self.cell(a, c)
        return x / CELLS_PER_M, y / CELLS_PER_M

    def rect(self, a0: int, a1: int, c0: int, c1: int) -> _Rect:
        (x0, y0), (x1, y1) = self.cell(a0, c0), self.cell(a1, c1)
        return _Rect(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@dataclass(frozen=True)
class _Side:
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
class _Placed:
    """A door or landmark on a side, before it becomes a Door or Landmark."""

    side: int
    s: float
    length: float
    name: str    # door colour or landmark name


@dataclass
class _Layout:
    legs: list[_Leg]
    turns: list[int]             # +1 left, -1 right: the turn at the end of legs[i]
    route_legs: int
    rects: list[_Rect]
    room: _Rect | None
    room_local: tuple[int, int, int, int] | None   # (a0, a1, c0, c1) on the last leg


class _Grid:
    """The free space rasterised on the layout grid, and its boundary as merged wall runs."""

    def __init__(self, rects: list[_Rect]):
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


# -- geometry shared by the generator, describe() and the tests' own checks ---------------------------------------

def sample_polyline(points: tuple[tuple[float, float], ...] | list[tuple[float, float]], step_m: float) -> np.ndarray:
    """Points along the polyline no more than step_m apart, both ends included (N x 2)."""
    out = [np.asarray(points[:1], float)]
    for (ax, ay), (bx, by) in zip(points[:-1], points[1:], strict=True):
        n = max(1, math.ceil(math.hypot(bx - ax, by - ay) / step_m))
        t = np.arange(1, n + 1) / n
        out.append(np.stack([ax + t * (bx - ax), ay + t * (by - ay)], axis=1))
    return np.concatenate(out)


def distance_to_walls(points: np.ndarray, walls: tuple[Wall, ...] | list[Wall]) -> np.ndarray:
    """Each point's distance to the nearest wall segment."""
    seg = np.array([(w.x0, w.y0, w.x1, w.y1) for w in walls], float)
    p = points[:, None, :]
    a, d = seg[None, :, :2], (seg[:, 2:] - seg[:, :2])[None]
    t = np.clip(((p - a) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * d), axis=-1).min(axis=1)


def distance_to_landmarks(points: np.ndarray, landmarks: tuple[Landmark, ...] | list[Landmark]) -> np.ndarray:
    """Each point's distance to the nearest landmark box (inf without landmarks)."""
    if not landmarks:
        return np.full(len(points), np.inf)
    box = np.array([(m.x, m.y, m.size_x / 2, m.size_y / 2) for m in landmarks], float)
    gx = np.maximum(np.abs(points[:, None, 0] - box[None, :, 0]) - box[None, :, 2], 0.0)
    gy = np.maximum(np.abs(points[:, None, 1] - box[None, :, 1]) - box[None, :, 3], 0.0)
    return np.hypot(gx, gy).min(axis=1)


def target_of(scene: Scene) -> Door | Landmark:
    """The door or landmark the goal stands in front of."""
    gx, gy = scene.goal.x, scene.goal.y
    for d in scene.doors:
        if math.hypot(d.x + DOOR_STANDOFF_M * math.cos(d.facing) - gx,
                      d.y + DOOR_STANDOFF_M * math.sin(d.facing) - gy) < 1e-6:
            return d
    fx, fy = round(math.cos(scene.goal.yaw)), round(math.sin(scene.goal.yaw))   # axis-aligned: towards the target
    for m in scene.landmarks:
        face_x, face_y = m.x - fx * m.size_x / 2, m.y - fy * m.size_y / 2
        if math.hypot(gx + LANDMARK_STANDOFF_M * fx - face_x, gy + LANDMARK_STANDOFF_M * fy - face_y) < 1e-6:
            return m
    raise ValueError(f'scene {scene.seed}: the goal stands in front of nothing')


def route_turns(route: tuple[tuple[float, float], ...]) -> str:
    """'L'/'R' for each bend of the route sharper than 45 degrees, in order."""
    out = []
    for a, b, c in zip(route[:-2], route[1:-1], route[2:], strict=True):
        h0 = math.atan2(b[1] - a[1], b[0] - a[0])
        h1 = math.atan2(c[1] - b[1], c[0] - b[0])
        bend = math.atan2(math.sin(h1 - h0), math.cos(h1 - h0))
        if abs(bend) > math.radians(45):
            out.append('L' if bend > 0 else 'R')
    return ''.join(out)


def describe(scene: Scene) -> str:
    """One line for logs and tables: seed, family, language, route length, turns, target."""
    target = target_of(scene)
    what = f'{target.colour} door' if isinstance(target, Door) else target.name
    return (f'seed {scene.seed} {scene.kind}/{scene.language} route {scene.route_length_m:.1f} m '
            f'turns {route_turns(scene.route) or "-"} target {what}')


# -- the generator ------------------------------------------------------------------------------------------------

def generate(seed: int) -> Scene:
    """The scene for `seed`: the same seed gives an equal Scene in any process (numpy's PCG64 only)."""
    rng = np.random.default_rng(seed)
    kind = FAMILIES[int(rng.integers(len(FAMILIES)))]
    language = 'zh' if rng.random() < ZH_SHARE else 'en'
    for _ in range(_MAX_DRAWS):
        scene = _draw(seed, rng, kind, language)
        if scene is not None:
            return scene
    raise RuntimeError(f'seed {seed}: no valid {kind} scene in {_MAX_DRAWS} draws')


def _draw(seed: int, rng: np.random.Generator, kind: str, language: str) -> Scene | None:
    layout = _draw_layout(rng, kind)
    if layout is None:
        return None
    grid = _Grid(layout.rects)
    walls = _walls(rng, grid, layout)
    sides = _sides(layout)
    doors = _place_doors(rng, grid, sides, layout, kind)
    doorways = _doorways(sides, doors)
    legs = layout.legs
    start = legs[0].point(0, 0)
    prefix = [start] + [legs[i].point(legs[i].length, 0) for i in range(layout.route_legs - 1)]
    if layout.room is not None:
        prefix.append(legs[-1].point(legs[-1].length + 8, 0))    # 0.8 m into the room along the corridor's axis
    landmarks: list[_Placed] = []
    named: str | None = None          # the landmark the instruction names (no other may share its name)
    words: dict[str, str] = {}        # what fills the template's blanks, in `language`
    template_kind = kind

    if kind in ('landmark_goal', 'room') and (kind == 'landmark_goal' or rng.random() < 0.3):
        template_kind = 'landmark_goal' if kind == 'landmark_goal' else 'room_landmark'
        roles = ('room',) if kind == 'room' else ('leg',)
        chosen = _place_target_landmark(rng, grid, sides, doorways, prefix, layout.route_legs - 1, roles)
        if chosen is None:
            return None
        landmarks.append(chosen)
        goal = _landmark_goal(sides[chosen.side], chosen)
        named = chosen.name
    else:
        door = _choose_target_door(rng, sides, doors, prefix, layout, kind)
        if door is None:
            return None
        goal = _door_goal(sides[door.side], door)
        if kind == 'door_ordinal':
            same_side = sorted(d.s for d in doors if d.side == door.side)
            words['nth'] = _NTH[language][same_side.index(door.s)]
            words['hand'] = _HAND[language][sides[door.side].hand]
        elif kind != 'door_at_end':
            colour = str(rng.choice(list(COLOURS)))
            _give_unique_colour(rng, doors, door, colour)
            words['colour'] = COLOURS_ZH[colour] if language == 'zh' else colour
    route = tuple(prefix) + ((goal.x, goal.y),)
    length = _length(route)
    if not ROUTE_M[0] <= length <= ROUTE_M[1]:
        return None

    if kind == 'past_landmark':
        passed = _place_passed_landmark(rng, grid, sides, doorways, route, layout.route_legs)
        if passed is None:
            return None
        landmarks.append(passed)
        named = passed.name
    _place_distractor_landmarks(rng, grid, sides, doorways, landmarks, route, named)
    if named is not None:
        words['landmark'] = _KIND_BY_NAME[named].zh if language == 'zh' else named

    built_doors = tuple(_door(sides[d.side], d) for d in doors)
    built_landmarks = tuple(_landmark(sides[m.side], m) for m in landmarks)
    points = sample_polyline(route, 0.05)
    clearance = min(distance_to_walls(points, walls).min(), distance_to_landmarks(points, built_landmarks).min())
    if clearance < ROBOT_CLEARANCE_M + 0.02:
        return None
    start_yaw = legs[0].k * math.pi / 2
    return Scene(
        seed=seed, walls=walls, doors=built_doors, landmarks=built_landmarks,
        start=Pose2D(start[0], start[1], math.atan2(math.sin(start_yaw), math.cos(start_yaw))),
        goal=goal, route=route,
        instruction=_instruction(rng, template_kind, language, words, layout.turns[:layout.route_legs - 1]),
        language=language, kind=kind)


def _draw_layout(rng: np.random.Generator, kind: str) -> _Layout | None:
    """The corridor spine (route legs, maybe one leg beyond the goal), junction stubs and the room, or None when
    parts that do not join come closer than _GAP."""
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
        leg = _Leg(x, y, k, lengths[i], half)
        legs.append(leg)
        x, y = leg.cell(leg.length, 0)
        if i < n - 1:
            k = (k + turns[i]) % 4

    back = int(rng.integers(8, 13))
    rects: list[_Rect] = []
    attached: set[tuple[int, int]] = set()

    def add(rect: _Rect, *joins: int) -> int:
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
        lo = (15 if i == 0 else 2 * half + _GAP) + half
        hi = leg.length - 2 * half - _GAP
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
            if (i, j) not in attached and rects[i].gap_to(rects[j]) < _GAP:
                return None
    return _Layout(legs, turns, route_legs, rects, room, room_local)


def _walls(rng: np.random.Generator, grid: _Grid, layout: _Layout) -> tuple[Wall, ...]:
    corridor = _CORRIDOR_WALLS[int(rng.integers(len(_CORRIDOR_WALLS)))]
    room = _ROOM_WALLS[int(rng.integers(len(_ROOM_WALLS)))]
    walls = []
    for xa, ya, xb, yb, nx, ny in grid.wall_runs():
        # The free cell beside the run's middle says whose wall it is.
        mx, my = (xa + xb) / 2 + nx / 2, (ya + yb) / 2 + ny / 2
        bgr = room if layout.room is not None and layout.room.contains(mx, my) else corridor
        walls.append(Wall(xa / CELLS_PER_M, ya / CELLS_PER_M, xb / CELLS_PER_M, yb / CELLS_PER_M, bgr))
    return tuple(walls)


def _sides(layout: _Layout) -> list[_Side]:
    """Where doors and landmarks may go: both walls of every leg (clear of the corner squares), the room's walls,
    and the dead end's wall."""
    sides = []
    legs, n = layout.legs, len(layout.legs)
    for i, leg in enumerate(legs):
        half_m, length_m = leg.half / CELLS_PER_M, leg.length / CELLS_PER_M
        lo = 1.0 if i == 0 else half_m + 0.3
        hi = length_m - half_m - 0.3 if i < n - 1 else length_m - 0.3 if layout.room else length_m + half_m - 0.3
        along, left = _DIRS[leg.k], _DIRS[(leg.k + 1) % 4]
        for hand in (1, -1):
            ox, oy = leg.cell(0, hand * leg.half)
            sides.append(_Side(ox, oy, along, (-hand * left[0], -hand * left[1]), lo, hi, i, hand, 'leg'))
    last = legs[-1]
    along, left = _DIRS[last.k], _DIRS[(last.k + 1) % 4]
    back, right = (-along[0], -along[1]), (-left[0], -left[1])
    if layout.room_local is None:
        ox, oy = last.cell(last.length + last.half, -last.half)
        sides.append(_Side(ox, oy, left, back, 0.3, 2 * last.half / CELLS_PER_M - 0.3, -1, 0, 'end'))
    else:
        a0, a1, c0, c1 = layout.room_local
        width, depth = (c1 - c0) / CELLS_PER_M, (a1 - a0) / CELLS_PER_M
        sides += [_Side(*last.cell(a1, c0), left, back, 0.4, width - 0.4, -1, 0, 'room'),
                  _Side(*last.cell(a0, c1), along, right, 0.4, depth - 0.4, -1, 0, 'room'),
                  _Side(*last.cell(a0, c0), along, left, 0.4, depth - 0.4, -1, 0, 'room'),
                  _Side(*last.cell(a0, c0), left, along, 0.4, width - 0.4, -1, 0, 'room_near')]
    return sides


def _solid_behind(grid: _Grid, side: _Side, s0: float, s1: float) -> bool:
    """Whether the wall is unbroken from s0 to s1 (no opening, no corner): every cell just behind it is solid."""
    cells = np.arange(math.floor(s0 * CELLS_PER_M), math.ceil(s1 * CELLS_PER_M)) + 0.5
    x, y = side.at(0.0, -0.05)
    s = cells / CELLS_PER_M
    return not grid.is_free(x + s * side.along[0], y + s * side.along[1]).any()


def _colour(rng: np.random.Generator, exclude: str | None = None) -> str:
    names = [c for c in _DISTRACTOR_WEIGHTS if c != exclude]
    weights = np.array([_DISTRACTOR_WEIGHTS[c] for c in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _place_doors(rng: np.random.Generator, grid: _Grid, sides: list[_Side], layout: _Layout,
                 kind: str) -> list[_Placed]:
    """A few doors along every leg's walls and the room's, a gap between any two and a margin from every corner
    and opening; the dead end gets a door of its own only when it is the target."""
    doors = []
    for index, side in enumerate(sides):
        if side.role == 'end':
            if kind == 'door_at_end':
                doors.append(_Placed(index, layout.legs[-1].half / CELLS_PER_M, float(rng.choice((0.9, 1.0))),
                                     _colour(rng)))
            continue
        cursor = side.lo + rng.uniform(0.0, 1.2)
        while True:
            width = float(rng.choice((0.8, 0.9, 1.0)))
            middle = cursor + width / 2
            if middle + width / 2 > side.hi:
                break
            if _solid_behind(grid, side, middle - width / 2 - 0.3, middle + width / 2 + 0.3):
                doors.append(_Placed(index, middle, width, _colour(rng)))
                cursor = middle + width / 2 + rng.uniform(0.7, 2.6 if side.role == 'leg' else 2.0)
            else:
                cursor += 0.3
    return doors


def _door_goal(side: _Side, door: _Placed) -> Pose2D:
    x, y = side.at(door.s, DOOR_STANDOFF_M)
    return Pose2D(x, y, _wrap(side.facing + math.pi))


def _landmark_goal(side: _Side, landmark: _Placed) -> Pose2D:
    x, y = side.at(landmark.s, _KIND_BY_NAME[landmark.name].depth + LANDMARK_STANDOFF_M)
    return Pose2D(x, y, _wrap(side.facing + math.pi))


def _choose_target_door(rng: np.random.Generator, sides: list[_Side], doors: list[_Placed],
                        prefix: list[tuple[float, float]], layout: _Layout, kind: str) -> _Placed | None:
    """A door the family can name whose route length is in range."""
    last_leg = layout.route_legs - 1
    if kind == 'door_at_end':
        eligible = [d for d in doors if sides[d.side].role == 'end']
    elif kind == 'door_ordinal':
        hand = int(rng.choice((1, -1)))
        ordered = sorted((d for d in doors if sides[d.side].leg == 0 and sides[d.side].hand == hand),
                         key=lambda d: d.s)
        eligible = ordered[:len(_NTH['en'])]
    elif kind == 'room':
        eligible = [d for d in doors if sides[d.side].role == 'room']
    else:
        eligible = [d for d in doors if sides[d.side].role == 'leg' and sides[d.side].leg == last_leg]
    fitting = []
    for d in eligible:
        goal = _door_goal(sides[d.side], d)
        if ROUTE_M[0] <= _length((*prefix, (goal.x, goal.y))) <= ROUTE_M[1]:
            fitting.append(d)
    return fitting[int(rng.integers(len(fitting)))] if fitting else None


def _give_unique_colour(rng: np.random.Generator, doors: list[_Placed], target: _Placed, colour: str) -> None:
    target.name = colour
    for d in doors:
        if d is not target and d.name == colour:
            d.name = _colour(rng, exclude=colour)


def _doorways(sides: list[_Side], doors: list[_Placed]) -> np.ndarray:
    """Points on and up to 0.6 m in front of every door: no landmark may stand there (N x 2)."""
    points = [sides[d.side].at(d.s + across * d.length / 2, out)
              for d in doors for across in np.linspace(-1.0, 1.0, 7) for out in (0.0, 0.3, 0.6)]
    return np.array(points, float).reshape(-1, 2)


def _fits(grid: _Grid, sides: list[_Side], index: int, doorways: np.ndarray, landmarks: list[_Placed],
          kind: LandmarkKind, s: float) -> bool:
    """Whether a landmark of `kind` at s stands against unbroken wall, in front of no door, clear of the others."""
    side = sides[index]
    if s - kind.length / 2 < side.lo or s + kind.length / 2 > side.hi:
        return False
    if not _solid_behind(grid, side, s - kind.length / 2 - 0.1, s + kind.length / 2 + 0.1):
        return False
    box = _landmark(side, _Placed(index, s, kind.length, kind.name))
    if len(doorways) and distance_to_landmarks(doorways, [box]).min() < 0.15:
        return False
    others = [_landmark(sides[m.side], m) for m in landmarks]
    return not others or distance_to_landmarks(np.array([[box.x, box.y]]), others)[0] > \
        math.hypot(box.size_x, box.size_y) / 2 + 0.3


def _clear_of_route(route: tuple[tuple[float, float], ...] | list[tuple[float, float]], box: Landmark) -> bool:
    return distance_to_landmarks(sample_polyline(route, 0.05), [box]).min() >= ROBOT_CLEARANCE_M + 0.05


def _place_target_landmark(rng: np.random.Generator, grid: _Grid, sides: list[_Side], doorways: np.ndarray,
                           prefix: list[tuple[float, float]], last_leg: int, roles: tuple[str, ...]) -> _Placed | None:
    """A landmark on the last route leg (or in the room) whose route length is in range."""
    candidates = [i for i, sd in enumerate(sides) if sd.role in roles and (sd.role != 'leg' or sd.leg == last_leg)]
    for _ in range(20):
        index = candidates[int(rng.integers(len(candidates)))]
        kind = LANDMARK_KINDS[int(rng.integers(len(LANDMARK_KINDS)))]
        side = sides[index]
        s = float(rng.uniform(side.lo, side.hi))
        if not _fits(grid, sides, index, doorways, [], kind, s):
            continue
        placed = _Placed(index, s, kind.length, kind.name)
        goal = _landmark_goal(side, placed)
        if ROUTE_M[0] <= _length((*prefix, (goal.x, goal.y))) <= ROUTE_M[1]:
            return placed
    return None


def _place_passed_landmark(rng: np.random.Generator, grid: _Grid, sides: list[_Side], doorways: np.ndarray,
                           route: tuple[tuple[float, float], ...], route_legs: int) -> _Placed | None:
    """A landmark beside the route that the robot passes well before the goal."""
    candidates = [i for i, sd in enumerate(sides) if sd.role == 'leg' and sd.leg < route_legs]
    total = _length(route)
    for _ in range(30):
        index = candidates[int(rng.integers(len(candidates)))]
        kind = LANDMARK_KINDS[int(rng.integers(len(LANDMARK_KINDS)))]
        side = sides[index]
        s = float(rng.uniform(side.lo, side.hi))
        if not _fits(grid, sides, index, doorways, [], kind, s):
            continue
        placed = _Placed(index, s, kind.length, kind.name)
        box = _landmark(side, placed)
        if _clear_of_route(route, box) and 1.0 <= _arc_position(route, box.x, box.y) <= total - 1.5:
            return placed
    return None


def _place_distractor_landmarks(rng: np.random.Generator, grid: _Grid, sides: list[_Side], doorways: np.ndarray,
                                landmarks: list[_Placed], route: tuple[tuple[float, float], ...],
                                named: str | None) -> None:
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
                _clear_of_route(route, _landmark(side, _Placed(index, s, kind.length, kind.name))):
            landmarks.append(_Placed(index, s, kind.length, kind.name))


def _door(side: _Side, d: _Placed) -> Door:
    x, y = side.at(d.s)
    return Door(x, y, side.facing, d.length, d.name, COLOURS[d.name])


def _landmark(side: _Side, m: _Placed) -> Landmark:
    kind = _KIND_BY_NAME[m.name]
    x, y = side.at(m.s, kind.depth / 2)
    along_x = side.along[0] != 0
    return Landmark(x, y, kind.length if along_x else kind.depth, kind.depth if along_x else kind.length,
                    kind.height, kind.name, kind.bgr)


def _instruction(rng: np.random.Generator, template_kind: str, language: str, words: dict[str, str],
                 turns: list[int]) -> str:
    fill = dict(words)
    if turns:
        names = [_TURN[language][t] for t in turns]
        fill['turn'] = names[0]
        if language == 'zh':
            fill['turns'] = names[0] if len(names) == 1 else '先' + '，再'.join(names)
        else:
            fill['turns'] = names[0] if len(names) == 1 else ', then turn '.join(names)
    templates = _TEMPLATES[(template_kind, language)]
    return templates[int(rng.integers(len(templates)))].format(**fill)


def _arc_position(route: tuple[tuple[float, float], ...], x: float, y: float) -> float:
    """How far along the route the point nearest (x, y) lies."""
    best, best_arc, arc = math.inf, 0.0, 0.0
    for (ax, ay), (bx, by) in zip(route[:-1], route[1:], strict=True):
        length = math.hypot(bx - ax, by - ay)
        t = min(1.0, max(0.0, ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / max(length * length, 1e-12)))
        d = math.hypot(ax + t * (bx - ax) - x, ay + t * (by - ay) - y)
        if d < best:
            best, best_arc = d, arc + t * length
        arc += length
    return best_arc


def _length(route: tuple[tuple[float, float], ...] | list[tuple[float, float]]) -> float:
    return sum(math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(route[:-1], route[1:], strict=True))


def _wrap(a: float) -> float:
    return math.atan2(math.sin(a), math.cos(a))
