"""The oracle model: what a perfect VLM would answer, worked out from the scene's ground truth instead of a
picture, with optional noise and faults (malformed text, a mirrored plan, a premature 'arrived', a plan drifting
into the nearest wall, 'forward' while the way ahead is blocked). No ROS.

It plans on the static map (walls, landmarks): people and clutter it does not see, like a model that misses
them, so that only the collision guard stands between them and the robot.

A plan is the reference route ahead, seen from the pose where the picture was taken: points every step_m
along the route up to horizon_m or the goal, the first step from the robot's actual pose towards the route,
each waypoint facing the direction of travel and the goal facing the goal's yaw. The text is in the answer
format of vln_ros/core/prompts.py and inside the parser's limits, derived from its parameter model
(core/config.ParserParams; its defaults unless told otherwise): long steps and sharp turns are split, and a robot
facing away turns on the spot first. Each written step aims at its true
waypoint from where the steps written before it end, so neither rounding (2 decimals, whole degrees) nor
noise accumulates along a plan.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from vln_ros.core.config import ParserParams
from vln_ros.core.control import Pose2D, wrap_angle
from vln_ros.core.prompts import ARRIVED_ACTION, ENV_MAX_CHARS
from vln_ros.sim.geometry import distance_to_walls
from vln_ros.sim.laser import scene_segments, true_ranges
from vln_ros.sim.scene import Scene

# The plans stay this far inside the parser's limits, so that writing them (2 decimals, whole degrees) never
# makes the parser clamp: an answer passes unchanged.
STEP_MARGIN_M = 0.05
TURN_MARGIN_DEG = 5
TURN_ACT_RAD = math.radians(30.0)   # a first step turning this much without going anywhere is a turn
# New faults go at the end: one draw per answer walks this order, so older faults keep their streams.
FAULTS = ('malformed', 'wrong_direction', 'premature_arrived', 'drift', 'forward_blocked')
DRIFT_PAST_WALL_M = 0.2     # a drifting plan ends this far beyond the nearest wall's line: into it
BLOCK_PLANE_Z_M = 0.3       # 'blocked' looks for walls and landmarks at this height, straight ahead

@dataclass(frozen=True)
class PlanLimits:
    """The most one of the oracle's plans holds: at most max_steps waypoints, each step at most max_step_m long and
    turning at most max_turn_rad."""

    max_steps: int
    max_step_m: float
    max_turn_rad: float

    @classmethod
    def inside(cls, parser: ParserParams) -> PlanLimits:
        """The parser's limits less the margins; the turn a whole number of degrees, as the oracle writes turns.
        ValueError when the parser's limits leave nothing inside the margins."""
        step_m = parser.max_step_m - STEP_MARGIN_M
        turn_deg = math.floor(math.degrees(parser.max_turn_rad)) - TURN_MARGIN_DEG
        if step_m <= 0.0 or turn_deg <= 0:
            raise ValueError(f'parser limits max_step_m={parser.max_step_m} m, max_turn_rad={parser.max_turn_rad} '
                             f'rad leave no room inside the margins ({STEP_MARGIN_M} m, {TURN_MARGIN_DEG} deg)')
        return cls(parser.max_waypoints, step_m, math.radians(turn_deg))


@dataclass(frozen=True)
class OracleSettings:
    horizon_m: float = 3.0            # how far along the route one plan reaches
    step_m: float = 0.5               # waypoint spacing along the route
    arrive_m: float = 0.5             # capture pose this close to the goal position: 'arrived' ...
    arrive_yaw_deg: float = 30.0      # ... once it also faces the goal's heading this closely (the door)
    confidence: float = 0.9
    noise_m: float = 0.0              # std dev of gaussian noise on each step's dx and dy
    noise_deg: float = 0.0            # ... and on its dtheta
    malformed: float = 0.0            # fault probabilities per answer (at most one fault per answer)
    wrong_direction: float = 0.0
    premature_arrived: float = 0.0
    drift: float = 0.0                # the plan bends towards the nearest wall, its last waypoint into it
    forward_blocked: float = 0.0      # 'forward' the whole horizon while a wall or landmark blocks the way
    parser: ParserParams = ParserParams()    # the parser its answers must pass unchanged: its limits are derived

    def __post_init__(self) -> None:
        rates = tuple(getattr(self, name) for name in FAULTS)
        if not all(0.0 <= r <= 1.0 for r in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError(f'fault rates {rates} must each be in [0, 1] and add up to at most 1')
        if not (self.step_m > 0.0 and self.horizon_m >= self.step_m):
            raise ValueError(f'need 0 < step_m <= horizon_m, not {self.step_m}, {self.horizon_m}')
        PlanLimits.inside(self.parser)   # ValueError now, not at the first answer, when the limits leave no room

    @property
    def limits(self) -> PlanLimits:
        return PlanLimits.inside(self.parser)


@dataclass(frozen=True)
class OracleAnswer:
    text: str       # the answer exactly as a model would write it (compact JSON, or the malformed text)
    fault: str      # '' or the name of the fault in it (one of FAULTS)


def answer(scene: Scene, pose: Pose2D, settings: OracleSettings, rng: np.random.Generator) -> OracleAnswer:
    """The answer to the picture taken at `pose` (world frame). Deterministic given the rng's state."""
    fault = _draw_fault(settings, rng)
    goal = scene.goal
    arrived = (math.hypot(goal.x - pose.x, goal.y - pose.y) <= settings.arrive_m
               and abs(wrap_angle(goal.yaw - pose.yaw)) <= math.radians(settings.arrive_yaw_deg))
    limits = settings.limits
    targets = [] if arrived else _split(pose, _route_ahead(scene, pose, settings), limits)
    if fault == 'forward_blocked' and targets:
        # where the way ahead is free, 'forward' is no fault: the oracle's plan stands
        targets = _straight_ahead(scene, pose, settings, limits) or targets
    elif fault == 'drift' and targets:
        targets = _drift_to_wall(scene, pose, targets)
    steps = _steps(pose, targets, settings, limits, rng) if targets else []
    if not steps:
        arrived = True    # already on the goal pose (arrive_m 0)
    if arrived and fault in ('wrong_direction', 'premature_arrived', 'drift', 'forward_blocked'):
        fault = ''        # nothing to mirror or bend, and 'arrived' is right
    if fault == 'forward_blocked' and not _blocked_ahead(scene, pose, settings):
        fault = ''
    if fault == 'wrong_direction':
        steps = [[dx, -dy + 0.0, -dtheta, confidence] for dx, dy, dtheta, confidence in steps]
    environment = _describe(scene, pose, arrived)
    reply: dict[str, object]
    if arrived or fault == 'premature_arrived':
        reply = {'env': environment, 'act': ARRIVED_ACTION, 'wp': []}
    else:
        reply = {'env': environment, 'act': _action(steps[0]), 'wp': steps}
    text = json.dumps(reply, separators=(',', ':'))
    if fault == 'malformed':
        text = text[:len('{"env":"') + 4]    # cut off inside the description: no action, no waypoint
    return OracleAnswer(text, fault)


def _draw_fault(settings: OracleSettings, rng: np.random.Generator) -> str:
    """One draw per answer whatever the rates, so the rng's stream does not depend on them."""
    draw = rng.random()
    for name in FAULTS:
        rate = getattr(settings, name)
        if draw < rate:
            return name
        draw -= rate
    return ''


def _straight_ahead(scene: Scene, pose: Pose2D, settings: OracleSettings, limits: PlanLimits) -> list[Pose2D]:
    """Steps straight ahead for the whole horizon when a wall or landmark lies ahead within it (through it:
    a model that says 'forward' at a blocked way); [] when the way ahead is free."""
    if not _blocked_ahead(scene, pose, settings):
        return []
    heading = np.array([[math.cos(pose.yaw), math.sin(pose.yaw)]])
    count = min(limits.max_steps, math.ceil(settings.horizon_m / limits.max_step_m - 1e-9))
    return [Pose2D(pose.x + heading[0, 0] * settings.horizon_m * k / count,
                   pose.y + heading[0, 1] * settings.horizon_m * k / count, pose.yaw) for k in range(1, count + 1)]


def _blocked_ahead(scene: Scene, pose: Pose2D, settings: OracleSettings) -> bool:
    """A wall or landmark straight ahead within the horizon (the static map: the oracle sees no people)."""
    heading = np.array([[math.cos(pose.yaw), math.sin(pose.yaw)]])
    return float(true_ranges(pose.x, pose.y, heading, scene_segments(scene, BLOCK_PLANE_Z_M))[0]) <= settings.horizon_m


def _drift_to_wall(scene: Scene, pose: Pose2D, targets: list[Pose2D]) -> list[Pose2D]:
    """The targets shifted towards the wall nearest to the robot, more with each one, the last
    DRIFT_PAST_WALL_M beyond the wall's line (a plan that slowly slides into the wall)."""
    if not scene.walls:
        return targets
    here = np.array([[pose.x, pose.y]])
    distance_m = float(distance_to_walls(here, scene.walls)[0])
    # the direction to the nearest wall: down the distance field (central differences, 1 cm)
    h = 0.01
    grad = np.array([
        distance_to_walls(np.array([[pose.x + h, pose.y], [pose.x - h, pose.y]]), scene.walls) @ (1.0, -1.0),
        distance_to_walls(np.array([[pose.x, pose.y + h], [pose.x, pose.y - h]]), scene.walls) @ (1.0, -1.0)])
    norm = float(np.hypot(*grad))
    if norm < 1e-9:
        return targets
    towards = -grad / norm
    # the last target moves all the way: from where it is, along that direction, to the wall and past it
    last = targets[-1]
    walls = np.array([(w.x0, w.y0, w.x1, w.y1) for w in scene.walls], float)
    reach_m = float(true_ranges(last.x, last.y, towards[None, :], walls)[0])
    shift_m = (reach_m if math.isfinite(reach_m) else distance_m) + DRIFT_PAST_WALL_M
    n = len(targets)
    return [Pose2D(t.x + towards[0] * shift_m * (k + 1) / n, t.y + towards[1] * shift_m * (k + 1) / n, t.yaw)
            for k, t in enumerate(targets)]


def _route_ahead(scene: Scene, pose: Pose2D, settings: OracleSettings) -> list[Pose2D]:
    """Points along the route from the pose's projection on it, each facing the direction of travel from
    the one before (the first from the robot); the goal, when within the horizon, with the goal's yaw."""
    points = np.asarray(scene.route, dtype=float)
    spans = points[1:] - points[:-1]
    lengths = np.hypot(spans[:, 0], spans[:, 1])
    arclengths = np.concatenate(([0.0], np.cumsum(lengths)))
    offsets = np.array((pose.x, pose.y)) - points[:-1]
    along = np.clip(np.einsum('ij,ij->i', offsets, spans) / np.maximum(lengths ** 2, 1e-12), 0.0, 1.0)
    gaps = offsets - along[:, None] * spans
    nearest = int(np.argmin(np.einsum('ij,ij->i', gaps, gaps)))
    here = arclengths[nearest] + along[nearest] * lengths[nearest]
    total = float(arclengths[-1])

    count = int(settings.horizon_m / settings.step_m + 1e-9)
    ahead = [here + k * settings.step_m for k in range(1, count + 1)]
    reaches_goal = total - here <= settings.horizon_m
    if reaches_goal:  # no sliver of a step just before the goal
        ahead = [s for s in ahead if s < total - settings.step_m / 2]
    xs = np.interp(ahead, arclengths, points[:, 0])
    ys = np.interp(ahead, arclengths, points[:, 1])
    targets, previous = [], pose
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        heading = math.atan2(y - previous.y, x - previous.x) if math.hypot(x - previous.x, y - previous.y) > 1e-6 \
            else previous.yaw
        previous = Pose2D(x, y, heading)
        targets.append(previous)
    if reaches_goal:
        targets.append(scene.goal)
    return targets


def _split(pose: Pose2D, targets: list[Pose2D], limits: PlanLimits) -> list[Pose2D]:
    """The targets with poses in between so that no step is longer than limits.max_step_m or turns more than
    limits.max_turn_rad; where the way to a target is more than that off the nose, a turn on the spot first.
    At most limits.max_steps poses."""
    poses: list[Pose2D] = []
    current = pose
    for target in targets:
        dx, dy = target.x - current.x, target.y - current.y
        bearing = wrap_angle(math.atan2(dy, dx) - current.yaw) if math.hypot(dx, dy) > 1e-6 else 0.0
        legs = [Pose2D(current.x, current.y, current.yaw + bearing)] if abs(bearing) > limits.max_turn_rad else []
        for leg in legs + [target]:
            turn = wrap_angle(leg.yaw - current.yaw)
            pieces = max(math.ceil(math.hypot(leg.x - current.x, leg.y - current.y) / limits.max_step_m),
                         math.ceil(abs(turn) / limits.max_turn_rad))
            poses.extend(Pose2D(current.x + (leg.x - current.x) * k / pieces,
                                current.y + (leg.y - current.y) * k / pieces,
                                current.yaw + turn * k / pieces) for k in range(1, pieces + 1))
            current = leg
        if len(poses) >= limits.max_steps:
            break
    return poses[:limits.max_steps]


def _steps(pose: Pose2D, waypoints: list[Pose2D], settings: OracleSettings, limits: PlanLimits,
           rng: np.random.Generator) -> list[list[float]]:
    """The written steps [dx m, dy m, dtheta deg, confidence], each from where the written ones end."""
    steps, written = [], pose
    for waypoint in waypoints:
        step = written.inverse().compose(waypoint)
        dx, dy, dtheta = step.x, step.y, step.yaw
        if settings.noise_m > 0.0 or settings.noise_deg > 0.0:
            noise_x, noise_y, noise_deg = (rng.normal(0.0, 1.0, 3) * (settings.noise_m, settings.noise_m,
                                                                       settings.noise_deg)).tolist()
            dx, dy, dtheta = dx + noise_x, dy + noise_y, dtheta + math.radians(noise_deg)
        length = math.hypot(dx, dy)
        if length > limits.max_step_m:
            dx, dy = dx * limits.max_step_m / length, dy * limits.max_step_m / length
        dtheta = max(-limits.max_turn_rad, min(limits.max_turn_rad, dtheta))
        # + 0.0: no '-0.0' in the text
        row = [round(dx, 2) + 0.0, round(dy, 2) + 0.0, round(math.degrees(dtheta)), settings.confidence]
        steps.append(row)
        written = written.compose(Pose2D(row[0], row[1], math.radians(row[2])))
    return steps


def _action(first: list[float]) -> str:
    dx, dy, dtheta_deg = first[0], first[1], first[2]
    if math.hypot(dx, dy) < 0.2 and abs(math.radians(dtheta_deg)) >= TURN_ACT_RAD:
        return 'turn_left' if dtheta_deg > 0 else 'turn_right'
    return 'forward'


def _describe(scene: Scene, pose: Pose2D, arrived: bool) -> str:
    """A short description: the door or landmark nearest to the goal, where it is from the robot."""
    goal = scene.goal
    things = [(f'the {d.colour} door', d.x, d.y) for d in scene.doors]
    things += [(f'the {m.name}', m.x, m.y) for m in scene.landmarks]
    if not things:
        return 'corridor'
    name, x, y = min(things, key=lambda thing: math.hypot(thing[1] - goal.x, thing[2] - goal.y))
    if arrived:
        return f'in front of {name}'[:ENV_MAX_CHARS]
    bearing = math.degrees(wrap_angle(math.atan2(y - pose.y, x - pose.x) - pose.yaw))
    side = 'left' if bearing > 0 else 'right'
    if abs(bearing) <= 20:
        where = 'ahead'
    elif abs(bearing) <= 70:
        where = f'ahead on the {side}'
    elif abs(bearing) <= 110:
        where = f'on the {side}'
    else:
        where = 'behind'
    distance = max(1, round(math.hypot(x - pose.x, y - pose.y)))
    return f'corridor, {name} {distance} m {where}'[:ENV_MAX_CHARS]
