"""People and clutter for testing the collision guard: seeded walking scripts and static boxes and chairs placed
relative to a scene's reference route. No ROS.

Everything is placed from the scene (its seed and route) and the reset request, so an episode repeats exactly. The
scene itself is never changed: its reference route, describe() and the oracle's plans ignore people and clutter
(the oracle is a model that misses them), so only a guard stands between the robot and them.

Timing: each script is timed so that the person meets the robot where it will be if it follows the route at
NOMINAL_SPEED_MPS after START_DELAY_S (the first plan): the meeting point lies MEET_FRACTION of the way along the route.
- crossing: walks across the corridor, from wall to wall, through the meeting point, arriving there when the robot does,
  then on along the far wall CROSSING_ON_M back the way the robot comes (past it: a person who stopped against the wall
  would stand beside the robot's way for good, the stand-off the safety study met in a narrow corridor).
- towards: walks down the route from beyond the meeting point towards the robot, head on.
- doorway: stands in front of the door nearest the meeting point (or on the route there, if no door is near) until
  the robot is due, then steps STEP_OUT_M into the corridor and stays.
- overtaking: starts behind the robot beside the route, walks faster than the robot, passes it at OVERTAKE_OFFSET_M,
  cuts in onto the route ahead of it, walks on along it a while and steps off it.

The rule that keeps people honest: a person waits while a robot is in their way, that is, in the lane their body
sweeps (LANE_MARGIN_M wider each side) at most YIELD_M ahead of them, body to body, as people stop for a robot in
their way, moving or not (they once waited only for a robot at rest, and a person stepping out 1 m ahead walked into
the side of a robot braking for them). After PATIENCE_S they step SIDESTEP_M aside (to the side with more room) and
walk on round it; a person who has stepped aside once, or has no room to (less than MIN_SIDESTEP_M), and is still
held turns back: walks their way back to its start and stands there (in a corridor too narrow for both, one of the
two must go back, and the robot cannot). A person standing (their walk done) with a robot at rest within
GIVE_WAY_GAP_M for PATIENCE_S gives way: walks GIVE_WAY_WALK_M away from it, where there is most room (in a
corridor: along it; a robot waiting beside someone at a wall cannot pass them in a narrow one). So a person
never walks into a robot, and a contact with a person is one a moving robot made; the robot is not stopped by a
person's body: the contact is counted (person_collisions) and the robot goes on, as the shove it would be.
Several robots: every one counts alike (a person waits for any in their way, steps round the nearest, away from
it and the other robots at rest (slower than AT_REST_MPS) within OTHERS_NEAR_M, never sideways into any);
contacts are counted per robot.

Clutter: boxes and chairs, CLUTTER_SIZES_M, drawn, seen and hit like landmarks (they are landmarks of the physical
scene, counted in `collisions`), on the route or beside it, off the people's walks; an item is kept only while a robot
CLUTTER_MARGIN_M wider than the real one still has a way from the start to the goal (sim/geodesic.py), so the route
stays passable. Where the scene has no room for as many as asked, there are fewer (a reset tries a bounded number).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from vln_ros.sim import fleet, geodesic
from vln_ros.sim.geometry import distance_to_landmarks, distance_to_walls, sample_polyline
from vln_ros.sim.scene import Landmark, Scene

PERSON_RADIUS_M = 0.25
PERSON_HEIGHT_M = 1.7
WALK_MPS = (1.0, 1.3)                 # a person's walking speed is drawn from this range
NOMINAL_SPEED_MPS = 0.5               # the robot's nominal speed (the controller's default max_linear_x)
START_DELAY_S = 2.0                   # the robot's first plan takes about this long
MEET_FRACTION = (0.35, 0.65)          # where along the route a person meets the robot
YIELD_M = 0.5                         # a person pauses while the robot's body is this near, in their way
LANE_MARGIN_M = 0.05                  # their way: the lane their body sweeps, this much wider each side
AT_REST_MPS = 0.05                    # a robot slower than this is at rest: people wait for it (not for a moving one)
PATIENCE_S = 3.0                      # after waiting this long, a person steps aside to walk round the robot
CONTACT_MARGIN_M = 0.05               # a step aside that would end nearer the robot's body than this waits
OTHERS_NEAR_M = 2.0                   # other robots at rest this near count in which way to step (several robots)
SIDESTEP_M = 0.8                      # as far as that (less where a wall is nearer), then walks on beside their way
MIN_SIDESTEP_M = 0.1                  # with less room than that to step aside, a person held by a robot turns back
GIVE_WAY_GAP_M = 0.3                  # a robot at rest this near (body to body) a standing person waits for them:
GIVE_WAY_WALK_M = 3.0                 # after PATIENCE_S they walk this far away from it, where there is most room
START_CLEAR_M = 1.5                   # no crossing begins or ends this near the robot's start
CROSSING_EARLY_S = 1.0                # a crossing person is at the meeting point this long before the robot
CROSSING_ON_M = 3.0                   # a crossing person walks on this far along the far wall (less where it ends)
WALL_MARGIN_M = 0.1                   # a person's path keeps this off the walls, beyond their radius
STEP_OUT_M = 1.0
DOOR_NEAR_M = 2.5                     # a door this near the meeting point is the doorway a person stands in
OVERTAKE_OFFSET_M = 0.75              # centre to centre, beside the route
OVERTAKE_CUT_IN_M = 2.0               # ahead of the meeting point, the overtaker is back on the route
OVERTAKE_AHEAD_M = 3.0                # walks on along it this far (ending at least OVERTAKE_CLEAR_GOAL_M before the
OVERTAKE_CLEAR_GOAL_M = 1.5           # goal), then steps STEP_OUT_M off it and stands
CLUTTER_MARGIN_M = 0.1                # clutter leaves a way for a robot this much wider than the real one
CLUTTER_CLEAR_ENDS_M = 1.5            # and none of it this near the start or the goal (along the route)
CLUTTER_SPARE_CHECKS = 4              # path checks beyond one per item, for items refused for closing the way
CLUTTER_SIZES_M = {'box': (0.5, 0.5, 0.6), 'chair': (0.45, 0.45, 0.9)}   # size_x, size_y, height
CLUTTER_BGR = {'box': (60, 120, 170), 'chair': (50, 50, 110)}
CLUTTER_STREAM = 2401                 # the clutter's and people's random streams: (scene seed, this, ...)
PEOPLE_STREAM = 2402
SHIRTS_BGR = ((40, 40, 160), (150, 90, 30), (40, 130, 40), (30, 140, 200))


@dataclass(frozen=True)
class PersonScript:
    """One person: stands at path[0] until start_s, then walks the path at speed_mps, then stands at its end."""

    kind: str
    path: np.ndarray          # (N, 2) world x, y, points no more than 0.1 m apart
    start_s: float            # episode time (s since the reset) the walk starts
    speed_mps: float
    bgr: tuple[int, int, int]
    arc_m: np.ndarray = field(init=False, repr=False)   # (N,) each path point's distance along the path

    def __post_init__(self) -> None:
        steps = np.hypot(*np.diff(self.path, axis=0).T) if len(self.path) > 1 else np.zeros(0)
        object.__setattr__(self, 'arc_m', np.concatenate([[0.0], np.cumsum(steps)]))

    @property
    def length_m(self) -> float:
        return float(self.arc_m[-1])

    def at(self, arc_m: float) -> tuple[float, float, float]:
        """(x, y, heading) arc_m along the path (a path of one point: standing there, facing +x)."""
        arc = self.arc_m
        if len(arc) < 2:
            return float(self.path[0, 0]), float(self.path[0, 1]), 0.0
        s = min(max(arc_m, 0.0), float(arc[-1]))
        i = _index(arc, s, side='right') - 1
        i = max(0, min(i, len(arc) - 2))
        seg = self.path[i + 1] - self.path[i]
        length = float(np.hypot(*seg))
        f = (s - arc[i]) / length if length > 0 else 0.0
        p = self.path[i] + f * seg
        return float(p[0]), float(p[1]), math.atan2(float(seg[1]), float(seg[0]))


@dataclass(frozen=True)
class PeopleView:
    """The people at one instant, as the camera draws them: positions (P, 2) and shirt colours."""

    positions: np.ndarray
    bgr: tuple[tuple[int, int, int], ...]

    def __len__(self) -> int:
        return len(self.bgr)


NO_PEOPLE = PeopleView(np.zeros((0, 2)), ())


class Crowd:
    """The people of one episode, stepped with the robot: positions (P, 2), who walks, contacts and clearance.
    scene: where they walk (a person stepping aside keeps off its walls and boxes); None: open floor."""

    def __init__(self, scripts: Sequence[PersonScript], scene: Scene | None = None) -> None:
        self.scripts = tuple(scripts)
        self.scene = scene
        self.arc_m = np.zeros(len(self.scripts))
        self.positions = np.array([s.path[0] for s in self.scripts], float).reshape(-1, 2)
        self.collisions = 0
        self.min_clearance_m = math.inf
        self._contact = np.zeros((len(self.scripts), 0), bool)    # (P, R): who touches which robot now
        self.collisions_by_robot = np.zeros(0, int)                  # (R,): contacts each robot made
        self.min_clearance_by_robot_m = np.zeros(0)                  # (R,)
        self._waited_s = np.zeros(len(self.scripts))
        # How far each has stepped aside, as a fixed offset on the floor (x, y), and where the step ends. Fixed in
        # the world, not across their heading: at a corner of their walk an offset across the heading would swing
        # round with it (0.8 m left becomes 0.8 m right of the old line: a 1.1 m jump in one step).
        self._aside = np.zeros((len(self.scripts), 2))
        self._aside_goal = np.zeros((len(self.scripts), 2))
        self._back = np.zeros(len(self.scripts), bool)    # turned back: walking their way backwards to its start

    def __len__(self) -> int:
        return len(self.scripts)

    def view(self) -> PeopleView:
        return PeopleView(self.positions.copy(), tuple(s.bgr for s in self.scripts)) if self.scripts else NO_PEOPLE

    def step(self, dt_s: float, episode_s: float, robots_xy: ArrayLike, robot_radius_m: float,
             robot_speeds_mps: ArrayLike) -> None:
        """Walk each person dt_s (unless they wait for, step round or turn back from a robot in their way), then
        count contacts and clearance. robots_xy: one robot's (x, y) or every robot's (R, 2); robot_speeds_mps: its
        speed or theirs (R,). Every robot counts: a person waits for any in their way, steps round the nearest, and
        never steps sideways into any."""
        xy = np.asarray(robots_xy, float).reshape(-1, 2)
        speeds = np.asarray(robot_speeds_mps, float).reshape(-1)
        if len(speeds) != len(xy):
            raise ValueError(f'{len(speeds)} robot speeds for {len(xy)} robots')
        robots = [(float(x), float(y)) for x, y in xy]
        resting = [r for r, v in zip(robots, speeds.tolist(), strict=True) if v <= AT_REST_MPS]
        for i, s in enumerate(self.scripts):
            if episode_s < s.start_s:
                continue
            x, y, heading = self._where(i)
            todo = self._aside_goal[i] - self._aside[i]
            if todo.any():                                         # stepping aside
                left_m = float(np.hypot(todo[0], todo[1]))
                step = todo * min(1.0, s.speed_mps * dt_s / left_m)
                # Never sideways into a robot: they wait instead (a robot may have moved beside them).
                if any(_gap_m(x + step[0], y + step[1], rx, ry, robot_radius_m) < CONTACT_MARGIN_M
                       for rx, ry in robots):
                    continue
                self._aside[i] = self._aside_goal[i] if left_m <= s.speed_mps * dt_s else self._aside[i] + step
            elif (self.arc_m[i] <= 0.0) if self._back[i] else (self.arc_m[i] >= s.length_m):
                # At the end of their way (or back at its start) they stand, unless a robot waits beside them.
                near = [r for r in resting if _gap_m(x, y, r[0], r[1], robot_radius_m) <= GIVE_WAY_GAP_M]
                self._waited_s[i] = self._waited_s[i] + dt_s if near else 0.0
                if self._waited_s[i] >= PATIENCE_S:
                    self._waited_s[i] = 0.0
                    self._aside_goal[i] = self._aside[i] + self._room_away(x, y, _crowded_at(x, y, near[0], near))
                continue
            elif (blocking := _nearest_in_the_way(x, y, heading + math.pi * self._back[i], robots,
                                                  robot_radius_m)) is not None:
                self._waited_s[i] += dt_s      # a robot in their way: they wait, then step round it or turn back
                if self._waited_s[i] >= PATIENCE_S:
                    self._waited_s[i] = 0.0
                    centre = _crowded_at(x, y, blocking, resting)
                    aside = self._room_aside(x, y, heading, centre)
                    # A step with room, not towards the robot(s) (where the walls leave room only on their side).
                    room = float(np.hypot(*aside)) >= MIN_SIDESTEP_M and \
                        float(np.dot(aside, (centre[0] - x, centre[1] - y))) <= 0.0
                    if room and (self._back[i] or not self._aside[i].any()):
                        self._aside_goal[i] = self._aside[i] + aside
                    elif not self._back[i]:
                        self._back[i] = True   # stepping aside did not clear the way, or cannot: back they go
                continue
            else:
                self._waited_s[i] = 0.0
                step = -s.speed_mps * dt_s if self._back[i] else s.speed_mps * dt_s
                self.arc_m[i] = min(max(self.arc_m[i] + step, 0.0), s.length_m)
            self.positions[i] = self._where(i)[:2]
        self.observe(xy, robot_radius_m)

    def _where(self, i: int) -> tuple[float, float, float]:
        x, y, heading = self.scripts[i].at(self.arc_m[i])
        return x + float(self._aside[i, 0]), y + float(self._aside[i, 1]), heading

    def _room_aside(self, x: float, y: float, heading: float, robot_xy: tuple[float, float]) -> np.ndarray:
        """The step round a robot (x, y on the floor): SIDESTEP_M to the side away from the robot's centre, less
        where a wall is nearer; to the other side only where that has more than twice the room. Open floor: away
        from the robot (left when it is dead ahead)."""
        here = np.array([x, y])
        left = np.array([-math.sin(heading), math.cos(heading)])
        away = -1.0 if float(np.dot(np.asarray(robot_xy) - here, left)) > 0.0 else 1.0
        if self.scene is None:
            return away * SIDESTEP_M * left
        room_away = _free_along(self.scene, here, away * left, SIDESTEP_M)
        room_toward = _free_along(self.scene, here, -away * left, SIDESTEP_M)
        side, room = (away, room_away) if room_away * 2.0 >= room_toward else (-away, room_toward)
        return side * room * left

    def _room_away(self, x: float, y: float, robot_xy: tuple[float, float]) -> np.ndarray:
        """A standing person's walk away from a robot waiting beside them: of 16 directions pointing away from it,
        the one with the most room times how directly away it leads, GIVE_WAY_WALK_M at most (nothing where no
        direction has MIN_SIDESTEP_M of room). In a corridor that is along it, ahead of the robot."""
        away = np.array([x - robot_xy[0], y - robot_xy[1]])
        away = away / max(float(np.hypot(*away)), 1e-9)
        best, best_score = np.zeros(2), 0.0
        for angle in np.arange(16) * (math.pi / 8):
            d = np.array([math.cos(angle), math.sin(angle)])
            directness = float(np.dot(d, away))
            if directness <= 0.2:
                continue
            room = GIVE_WAY_WALK_M if self.scene is None else \
                _free_along(self.scene, np.array([x, y]), d, GIVE_WAY_WALK_M)
            if room >= MIN_SIDESTEP_M and room * directness > best_score:
                best, best_score = d * room, room * directness
        return best

    def observe(self, robots_xy: ArrayLike, robot_radius_m: float) -> None:
        """Count a contact when one begins, per person and robot (it ends once the bodies are 0.05 m apart), and
        keep the clearance, overall and per robot (robots_xy: one (x, y) or (R, 2))."""
        if not len(self.scripts):
            return
        xy = np.asarray(robots_xy, float).reshape(-1, 2)
        if self._contact.shape[1] != len(xy):    # the first call, or the number of robots changed
            self._contact = np.zeros((len(self.scripts), len(xy)), bool)
            self.collisions_by_robot = np.zeros(len(xy), int)
            self.min_clearance_by_robot_m = np.full(len(xy), math.inf)
        gaps = np.hypot(self.positions[:, 0, None] - xy[None, :, 0], self.positions[:, 1, None] - xy[None, :, 1]) \
            - robot_radius_m - PERSON_RADIUS_M                  # (P, R)
        self.min_clearance_by_robot_m = np.minimum(self.min_clearance_by_robot_m, gaps.min(axis=0))
        self.min_clearance_m = min(self.min_clearance_m, float(gaps.min()))
        touching = gaps < 0.0
        began = (touching & ~self._contact).sum(axis=0)
        self.collisions_by_robot += began
        self.collisions += int(began.sum())
        self._contact = np.where(self._contact, gaps < 0.05, touching)


def _index(arc: np.ndarray, s: float, side: Literal['left', 'right'] = 'left') -> int:
    """The index where s falls in the increasing arc, within [0, len(arc) - 1]."""
    return int(np.clip(np.searchsorted(arc, s, side=side), 0, len(arc) - 1))


def _gap_m(x: float, y: float, rx: float, ry: float, robot_radius_m: float) -> float:
    """Body to body, a person at (x, y) and the robot at (rx, ry)."""
    return math.hypot(x - rx, y - ry) - robot_radius_m - PERSON_RADIUS_M


def _nearest_in_the_way(x: float, y: float, heading: float, robots: Sequence[tuple[float, float]],
                        robot_radius_m: float) -> tuple[float, float] | None:
    """Of robots (x, y), the nearest in the way of a person at (x, y) walking along heading; None if none is."""
    blocking = [r for r in robots if _in_the_way(r[0] - x, r[1] - y, heading, robot_radius_m)]
    return min(blocking, key=lambda r: math.hypot(r[0] - x, r[1] - y)) if blocking else None


def _crowded_at(x: float, y: float, blocking: tuple[float, float],
                robots: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Where to step away from: the blocking robot, or the middle of it and the other robots at rest within
    OTHERS_NEAR_M of the person (away from the blocking one alone could be into the next one's way, and back)."""
    near = [r for r in robots if r != blocking and math.hypot(r[0] - x, r[1] - y) <= OTHERS_NEAR_M]
    if not near:
        return blocking
    near.append(blocking)
    return sum(r[0] for r in near) / len(near), sum(r[1] for r in near) / len(near)


def _in_the_way(dx: float, dy: float, heading: float, robot_radius_m: float) -> bool:
    """The robot's body, at (dx, dy) from a person walking along heading, is in the lane their body sweeps and
    within YIELD_M ahead of them (body to body): the person's next steps would walk into it."""
    forward = dx * math.cos(heading) + dy * math.sin(heading)
    across = abs(-dx * math.sin(heading) + dy * math.cos(heading))
    bodies = robot_radius_m + PERSON_RADIUS_M
    return across < bodies + LANE_MARGIN_M and 0.0 < forward <= bodies + YIELD_M


# -- placement --------------------------------------------------------------------------------------------------
def _route_samples(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points 0.1 m apart along the route, their arc length and unit direction."""
    pts = sample_polyline(scene.route, 0.1)
    seg = np.diff(pts, axis=0)
    length = np.hypot(seg[:, 0], seg[:, 1])
    keep = np.concatenate([[True], length > 1e-9])
    pts = pts[keep]
    seg = np.diff(pts, axis=0)
    length = np.hypot(seg[:, 0], seg[:, 1])
    arc = np.concatenate([[0.0], np.cumsum(length)])
    direction = np.concatenate([seg / length[:, None], seg[-1:] / length[-1]])
    return pts, arc, direction


def _free_along(scene: Scene, origin: np.ndarray, direction: np.ndarray, limit_m: float) -> float:
    """How far a person can go from origin along the unit direction before a wall or landmark (<= limit_m)."""
    # The laser's caster (imported here: the laser imports this module for the people's size).
    from vln_ros.sim.laser import scene_segments, true_ranges

    hit = float(true_ranges(float(origin[0]), float(origin[1]), direction[None, :],
                            scene_segments(scene, 0.0))[0])
    return max(0.0, min(limit_m, hit - PERSON_RADIUS_M - WALL_MARGIN_M))


def _crossing_half(scene: Scene, meet: np.ndarray, direction: np.ndarray) -> float:
    """How far a crossing reaches from the meeting point along direction: to the wall (6 m at most), but not within
    START_CLEAR_M of the robot's start. A meeting point at a corner crosses along the corridor the robot comes
    down, and one crossing (seed 16) began 0.2 m behind the robot, inside its body, and held it for good."""
    start = np.array([scene.start.x, scene.start.y])
    half = _free_along(scene, meet, direction, 6.0)
    while half > 0.0 and float(np.hypot(*(meet + direction * half - start))) < START_CLEAR_M:
        half -= 0.1
    return max(half, 0.0)


def _straight(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return sample_polyline([(float(a[0]), float(a[1])), (float(b[0]), float(b[1]))], 0.1)


def place_people(scene: Scene, kinds: Sequence[str]) -> list[PersonScript]:
    """One script per entry of kinds, seeded by the scene's seed and each entry's index and kind."""
    pts, arc, direction = _route_samples(scene)
    total = float(arc[-1])
    out = []
    for index, kind in enumerate(kinds):
        rng = np.random.default_rng((scene.seed, PEOPLE_STREAM, index, sum(map(ord, kind))))
        speed = float(rng.uniform(*WALK_MPS))
        meet_arc = float(rng.uniform(*MEET_FRACTION)) * total
        k = _index(arc, meet_arc)
        meet, along = pts[k], direction[k]
        left = np.array([-along[1], along[0]])
        meet_s = START_DELAY_S + arc[k] / NOMINAL_SPEED_MPS
        bgr = SHIRTS_BGR[index % len(SHIRTS_BGR)]
        if kind == 'crossing':
            side = 1.0 if rng.random() < 0.5 else -1.0
            a = meet + side * left * _crossing_half(scene, meet, side * left)
            b = meet - side * left * _crossing_half(scene, meet, -side * left)
            on = b - along * _free_along(scene, b, -along, CROSSING_ON_M)     # on along the far wall, past the robot
            path = np.concatenate([_straight(a, b), _straight(b, on)[1:]])
            lead_m = float(np.hypot(*(meet - a)))
            out.append(PersonScript(kind, path, max(0.0, meet_s - lead_m / speed - CROSSING_EARLY_S), speed, bgr))
        elif kind == 'towards':
            # Starts far enough down the route to walk towards the robot from the reset on, and meets it at meet_arc.
            start_arc = min(total, arc[k] + speed * meet_s)
            j = _index(arc, start_arc)
            path = pts[:j + 1][::-1].copy()
            lead_m = float(arc[j] - arc[k])
            out.append(PersonScript(kind, path, max(0.0, meet_s - lead_m / speed), speed, bgr))
        elif kind == 'doorway':
            door = min(scene.doors, key=lambda d: math.hypot(d.x - meet[0], d.y - meet[1]), default=None)
            if door is not None and math.hypot(door.x - meet[0], door.y - meet[1]) <= DOOR_NEAR_M:
                facing = np.array([math.cos(door.facing), math.sin(door.facing)])
                a = np.array([door.x, door.y]) + facing * (PERSON_RADIUS_M + WALL_MARGIN_M)
                out_dir = facing
            else:
                a = meet.copy()
                side = 1.0 if rng.random() < 0.5 else -1.0
                out_dir = side * left
            b = a + out_dir * _free_along(scene, a, out_dir, STEP_OUT_M)
            out.append(PersonScript(kind, _straight(a, b), max(0.0, meet_s - 1.0), speed, bgr))
        elif kind == 'overtaking':
            speed = max(speed, NOMINAL_SPEED_MPS + 0.5)
            cut = _index(arc, arc[k] + OVERTAKE_CUT_IN_M)
            side = 1.0 if rng.random() < 0.5 else -1.0
            normals = np.stack([-direction[:, 1], direction[:, 0]], axis=1) * side
            room = np.array([_free_along(scene, p, n, OVERTAKE_OFFSET_M) for p, n in zip(pts[:k + 1], normals[:k + 1],
                                                                                     strict=True)])
            beside = pts[:k + 1] + normals[:k + 1] * room[:, None]
            # ahead on the route for a while, then off it to the side with room (not standing on the goal)
            stop = max(cut, _index(arc, min(arc[cut] + OVERTAKE_AHEAD_M, total - OVERTAKE_CLEAR_GOAL_M)))
            off = np.array([-direction[stop][1], direction[stop][0]])
            left_m, right_m = (_free_along(scene, pts[stop], off, STEP_OUT_M),
                               _free_along(scene, pts[stop], -off, STEP_OUT_M))
            leave = pts[stop] + (off * left_m if left_m >= right_m else -off * right_m)
            path = np.concatenate([beside, _straight(beside[-1], pts[cut])[1:], pts[cut + 1:stop + 1],
                                   _straight(pts[stop], leave)[1:]])
            lead_m = float(arc[k])
            out.append(PersonScript(kind, path, max(0.0, meet_s - lead_m / speed), speed, bgr))
        else:
            raise ValueError(f'no person script {kind!r}; the scripts are crossing, towards, doorway, overtaking')
    return out


def with_clutter(scene: Scene, clutter: Sequence[Landmark]) -> Scene:
    """The physical scene: the same scene with the clutter as landmarks (what the robot, camera and laser meet)."""
    return dataclasses.replace(scene, landmarks=scene.landmarks + tuple(clutter)) if clutter else scene


def place_clutter(scene: Scene, count: int, robot_radius_m: float = 0.3,
                  walks: Sequence[PersonScript] = (), robots: int = 1) -> tuple[Landmark, ...]:
    """count boxes and chairs (fewer where the scene has no room for them) on or beside the route, seeded by the
    scene's seed, none within CLUTTER_CLEAR_ENDS_M of the start or the goal (of every robot's, when robots share
    the route as a queue: sim/fleet.py), none on the people's walks (a person walks round a robot, not through a
    box), and each kept only if a robot of robot_radius_m + CLUTTER_MARGIN_M still has a path from the start to the
    goal (sim/geodesic.py). ValueError when the route has no room for the robots' queue."""
    walked = np.concatenate([w.path for w in walks]) if walks else np.zeros((0, 2))
    if count <= 0:
        return ()
    # Several robots start and stop inside the route's ends: clutter there put a robot's goal in a box.
    # In a straight line from each (around a corner the route is longer than the gap).
    stops = np.array([[p.x, p.y] for arcs in fleet.queue_arcs(scene, robots)
                      for p in (fleet.point_at(scene.route, m) for m in arcs)]) if robots > 1 else np.zeros((0, 2))
    rng = np.random.default_rng((scene.seed, CLUTTER_STREAM))
    pts, arc, direction = _route_samples(scene)
    total = float(arc[-1])
    placed: list[Landmark] = []
    checks = 0
    for _ in range(20 * count):   # most draws fall on a wall, a box or a walk: cheap to refuse
        if len(placed) >= count or total < 2 * CLUTTER_CLEAR_ENDS_M:
            break
        name = 'box' if rng.random() < 0.5 else 'chair'
        size_x, size_y, height = CLUTTER_SIZES_M[name]
        s = float(rng.uniform(CLUTTER_CLEAR_ENDS_M, total - CLUTTER_CLEAR_ENDS_M))
        k = _index(arc, s)
        left = np.array([-direction[k][1], direction[k][0]])
        centre = pts[k] + left * float(rng.uniform(-0.9, 0.9))
        box = Landmark(float(centre[0]), float(centre[1]), size_x, size_y, height, name, CLUTTER_BGR[name])
        half = math.hypot(size_x, size_y) / 2
        point = centre[None, :]
        if len(stops) and float(np.hypot(*(stops - centre).T).min()) < CLUTTER_CLEAR_ENDS_M:
            continue   # at a robot's start or goal
        if float(distance_to_walls(point, scene.walls)[0]) < half or \
                float(distance_to_landmarks(point, list(scene.landmarks) + placed)[0]) < half:
            continue   # inside a wall or on another box
        if len(walked) and float(distance_to_landmarks(walked, [box]).min()) < PERSON_RADIUS_M + WALL_MARGIN_M:
            continue   # in someone's way
        if checks >= count + CLUTTER_SPARE_CHECKS:
            break      # each check plans a path (0.1-0.3 s): a reset stays within seconds
        checks += 1
        try:
            geodesic.shortest_path(with_clutter(scene, [*placed, box]), robot_radius_m + CLUTTER_MARGIN_M,
                                   corner_points=4)
        except ValueError:
            continue   # it would close the way
        placed.append(box)
    return tuple(placed)
