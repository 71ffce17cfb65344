"""The demo's world: a corridor with a red door, a robot's walk down it, what its camera sees and what
a good model would answer at every moment. No ROS; numpy and OpenCV only.

Everything the demo bag and its scripted answers hold comes from here (vln_ros/demo/make_bag.py writes
them), so the answers match the pictures by construction: each one is the path the scripted walk takes
next, seen from where the picture was taken, in the answer format of vln_ros/core/prompts.py.

World frame (REP-103): x along the corridor, y to the left, z up, metres. The robot starts at the origin
facing +x, walks down the corridor, turns left to face the red door and stops in front of it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import cv2
import numpy as np

from vln_ros.core.control import Pose2D, wrap_angle

INSTRUCTION = 'go down the corridor and stop at the red door'
FPS = 10.0
WIDTH, HEIGHT = 384, 288            # a multiple of 32 both ways: keyframes keep the full picture
HFOV_RAD = math.radians(80.0)
CAMERA_HEIGHT_M = 0.45              # a quadruped's head
# Corridor: floor z=0, ceiling, side walls at y = +-HALF_WIDTH, end walls at x = X_BACK and X_END.
HALF_WIDTH_M, CEILING_M, X_BACK, X_END = 1.2, 2.6, -1.5, 14.0
DOOR_WIDTH_M, DOOR_HEIGHT_M = 0.9, 2.1

# The walk: (duration s, forward m/s, yaw rate rad/s) with 0.5 s ramps inside each segment, so that a
# segment of duration d/v + RAMP_S covers exactly d metres (or radians).
RAMP_S = 0.5
WALK_M, WALK_MPS = 9.45, 0.45
TURN_RAD, TURN_RPS = math.pi / 2, 0.6
APPROACH_M, APPROACH_MPS = 0.35, 0.25
SEGMENTS: tuple[tuple[float, float, float], ...] = (
    (2.0, 0.0, 0.0),                                         # standing; the instruction comes at 0.5 s
    (WALK_M / WALK_MPS + RAMP_S, WALK_MPS, 0.0),             # down the corridor
    (TURN_RAD / TURN_RPS + RAMP_S, 0.0, TURN_RPS),           # turn left to face the red door
    (APPROACH_M / APPROACH_MPS + RAMP_S, APPROACH_MPS, 0.0),  # step up to it
    (4.0, 0.0, 0.0),                                         # standing in front of it
)
INSTRUCTION_AT_S = 0.5
RED_DOOR_X = WALK_M                  # the turn happens in front of its middle
# Doors: (wall side +1 left / -1 right, x of the door's middle, BGR colour)
DOORS: tuple[tuple[int, float, tuple[int, int, int]], ...] = (
    (1, 2.4, (120, 120, 128)), (-1, 3.9, (105, 115, 125)), (1, 5.9, (120, 120, 128)),
    (-1, 7.6, (105, 115, 125)), (1, RED_DOOR_X, (40, 40, 200)), (-1, 11.4, (105, 115, 125)),
)

# Scripted answers: steps to the poses this far ahead on the walk (metres, plus radians x TURN_WEIGHT
# so that turning on the spot makes progress too), and where the walk counts as done.
LOOKAHEAD = (0.7, 1.4)
TURN_WEIGHT_M_PER_RAD = 0.5
ARRIVED_WITHIN = 0.12
SCRIPTED_LATENCY_S = 0.5    # about what Qwen3-VL-8B with guided JSON took on one H200 (docs/gpu_latency.md)
SCRIPTED_FIRST_TOKEN_S = 0.09


@dataclass(frozen=True)
class Walk:
    """The scripted walk sampled every millisecond: times, poses and progress along it."""

    t: np.ndarray         # [s]
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    progress: np.ndarray  # metres walked + TURN_WEIGHT x radians turned, non-decreasing

    @property
    def duration_s(self) -> float:
        return float(self.t[-1])

    def pose_at(self, t_s: float) -> Pose2D:
        i = int(np.clip(np.searchsorted(self.t, t_s), 0, len(self.t) - 1))
        return Pose2D(float(self.x[i]), float(self.y[i]), float(self.yaw[i]))

    def pose_at_progress(self, progress: float) -> Pose2D:
        i = int(np.clip(np.searchsorted(self.progress, progress), 0, len(self.t) - 1))
        return Pose2D(float(self.x[i]), float(self.y[i]), float(self.yaw[i]))

    def progress_at(self, t_s: float) -> float:
        return float(np.interp(t_s, self.t, self.progress))


def _ramp(t: np.ndarray, duration: float) -> np.ndarray:
    return np.clip(np.minimum(t, duration - t) / RAMP_S, 0.0, 1.0)


def walk(dt_s: float = 1e-3) -> Walk:
    ts, vs, ws = [], [], []
    start = 0.0
    for duration, speed, turn in SEGMENTS:
        local = np.arange(0.0, duration, dt_s)
        ramp = _ramp(local + dt_s / 2, duration)
        ts.append(start + local)
        vs.append(speed * ramp)
        ws.append(turn * ramp)
        start += duration
    t, v, w = np.concatenate(ts), np.concatenate(vs), np.concatenate(ws)
    yaw = np.concatenate([[0.0], np.cumsum(w[:-1] * dt_s)])
    mid_yaw = yaw + w * dt_s / 2
    x = np.concatenate([[0.0], np.cumsum(v[:-1] * np.cos(mid_yaw[:-1]) * dt_s)])
    y = np.concatenate([[0.0], np.cumsum(v[:-1] * np.sin(mid_yaw[:-1]) * dt_s)])
    progress = np.concatenate([[0.0], np.cumsum((np.abs(v) + TURN_WEIGHT_M_PER_RAD * np.abs(w))[:-1] * dt_s)])
    return Walk(t, x, y, yaw, progress)


def frame_times(w: Walk) -> np.ndarray:
    return np.arange(0.0, w.duration_s, 1.0 / FPS)


# -- what the camera sees ------------------------------------------------------------------------------

_FLOOR_A, _FLOOR_B = np.array([150, 155, 160.0]), np.array([118, 124, 130.0])
_WALL, _BASEBOARD = np.array([170, 200, 215.0]), np.array([70, 80, 90.0])
_CEILING, _LIGHT = np.array([225, 225, 225.0]), np.array([255, 255, 250.0])
_END_WALL, _WINDOW = np.array([190, 175, 160.0]), np.array([250, 235, 200.0])
_FRAME = np.array([60, 60, 60.0])
_FOG = np.array([200, 200, 200.0])


def render(pose: Pose2D, width: int = WIDTH, height: int = HEIGHT, supersample: int = 2) -> np.ndarray:
    """The camera picture (BGR uint8) from `pose`: one ray per (sub)pixel against floor, ceiling and walls."""
    sw, sh = width * supersample, height * supersample
    f = (sw / 2) / math.tan(HFOV_RAD / 2)
    a = (np.arange(sw) - sw / 2 + 0.5) / f                # right
    b = (np.arange(sh) - sh / 2 + 0.5) / f                # down
    a, b = np.meshgrid(a, b)
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    dx, dy, dz = c + s * a, s - c * a, -b                   # body (1, -a, -b) rotated by yaw
    ox, oy, oz = pose.x, pose.y, CAMERA_HEIGHT_M
    with np.errstate(divide='ignore', invalid='ignore'):
        hits = {
            'floor': np.where(dz < 0, -oz / dz, np.inf),
            'ceiling': np.where(dz > 0, (CEILING_M - oz) / dz, np.inf),
            'left': np.where(dy > 0, (HALF_WIDTH_M - oy) / dy, np.inf),
            'right': np.where(dy < 0, (-HALF_WIDTH_M - oy) / dy, np.inf),
            'end': np.where(dx > 0, (X_END - ox) / dx, np.inf),
            'back': np.where(dx < 0, (X_BACK - ox) / dx, np.inf),
        }
    names = list(hits)
    stack = np.stack([hits[n] for n in names])
    nearest = np.argmin(stack, axis=0)
    t = np.min(stack, axis=0)
    px, py, pz = ox + t * dx, oy + t * dy, oz + t * dz
    img = np.empty((sh, sw, 3))

    floor = nearest == names.index('floor')
    checker = ((np.floor(px / 0.6) + np.floor(py / 0.6)) % 2 == 0)
    img[floor] = np.where(checker[floor][:, None], _FLOOR_A, _FLOOR_B)

    ceiling = nearest == names.index('ceiling')
    light = (np.abs((px % 2.0) - 1.0) < 0.3) & (np.abs(py) < 0.35)
    img[ceiling] = np.where(light[ceiling][:, None], _LIGHT, _CEILING)

    for side, name in ((1, 'left'), (-1, 'right')):
        wall = nearest == names.index(name)
        colour = np.broadcast_to(_WALL, (int(wall.sum()), 3)).copy()
        wx, wz = px[wall], pz[wall]
        colour[wz < 0.12] = _BASEBOARD
        for door_side, door_x, door_colour in DOORS:
            if door_side != side:
                continue
            du = np.abs(wx - door_x)
            in_frame = (du < DOOR_WIDTH_M / 2 + 0.06) & (wz < DOOR_HEIGHT_M + 0.06)
            in_door = (du < DOOR_WIDTH_M / 2) & (wz < DOOR_HEIGHT_M)
            colour[in_frame] = _FRAME
            colour[in_door] = door_colour
            handle = in_door & (np.abs(wx - (door_x + side * 0.32)) < 0.04) & (np.abs(wz - 1.0) < 0.03)
            colour[handle] = (30, 30, 30)
        img[wall] = colour

    for name in ('end', 'back'):
        wall = nearest == names.index(name)
        window = (np.abs(py[wall]) < 0.6) & (np.abs(pz[wall] - 1.5) < 0.5)
        img[wall] = np.where(window[:, None], _WINDOW, _END_WALL)

    fog = (1.0 - np.exp(-t / 18.0))[..., None]
    img = img * (1.0 - fog) + _FOG * fog
    img *= (1.0 / (1.0 + 0.015 * t))[..., None]
    out = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.resize(out, (width, height), interpolation=cv2.INTER_AREA) if supersample > 1 else out


# -- what a good model would answer --------------------------------------------------------------------

def _relative(a: Pose2D, b: Pose2D) -> Pose2D:
    """b in a's body frame."""
    return a.inverse().compose(b)


def _environment(pose: Pose2D, turned_rad: float, arrived: bool) -> str:
    if arrived:
        return 'in front of the red door'
    if turned_rad > math.radians(60):
        return 'the red door is right in front'
    if turned_rad > math.radians(5):
        return 'the red door is on the left'
    ahead = RED_DOOR_X - pose.x
    if ahead > 4.0:
        return 'long corridor, grey doors on both sides, a red door far ahead on the left'
    return f'corridor, the red door is {ahead:.0f} m ahead on the left' if ahead >= 1.0 else \
        'corridor, the red door is on the left'


def answer(w: Walk, t_s: float) -> dict:
    """The answer (prompts.py's format, as a dict) for the picture taken at t_s."""
    here = w.pose_at(t_s)
    progress = w.progress_at(t_s)
    remaining = float(w.progress[-1]) - progress
    turned = wrap_angle(here.yaw)
    if remaining < ARRIVED_WITHIN:
        return {'env': _environment(here, turned, True), 'act': 'arrived', 'wp': []}
    steps, previous = [], here
    for ahead in LOOKAHEAD:
        target = w.pose_at_progress(progress + ahead)
        step = _relative(previous, target)
        if math.hypot(step.x, step.y) < 0.02 and abs(step.yaw) < math.radians(2):
            break
        confidence = 0.8 if abs(step.yaw) > math.radians(10) else 0.9
        steps.append([round(step.x, 2), round(step.y, 2), round(math.degrees(step.yaw)), confidence])
        previous = target
    first = steps[0]
    act = 'turn_left' if first[2] > 25 and first[0] < 0.2 else 'forward'
    return {'env': _environment(here, turned, False), 'act': act, 'wp': steps}


def answer_text(w: Walk, t_s: float) -> str:
    return json.dumps(answer(w, t_s), separators=(',', ':'))
