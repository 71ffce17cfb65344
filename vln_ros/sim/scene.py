"""What a simulated episode is made of: walls, doors, landmarks, where the robot starts, where it must stop,
the instruction that says so, and the reference route between them. No ROS.

World frame (REP-103): x, y on the floor, z up, metres; yaw CCW from +x. Walls are vertical segments from
the floor to the ceiling; doors and posters are drawn on walls (closed doors: the robot cannot pass them);
landmarks are free-standing boxes (a cabinet, a plant pot) that block the robot and the camera.
vln_ros/sim/scenes.py generates scenes from a seed; everything here is plain data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from vln_ros.core.control import Pose2D

BGR = tuple[int, int, int]
CEILING_M = 2.6
DOOR_HEIGHT_M = 2.1
SUCCESS_RADIUS_M = 1.0      # success: stopped within this of the goal (VLN-CE's 3 m is for whole buildings)


@dataclass(frozen=True)
class Wall:
    """A vertical wall segment from (x0, y0) to (x1, y1), floor to ceiling."""

    x0: float
    y0: float
    x1: float
    y1: float
    bgr: BGR

    @property
    def length(self) -> float:
        return math.hypot(self.x1 - self.x0, self.y1 - self.y0)


@dataclass(frozen=True)
class Door:
    """A closed door drawn on a wall: its middle at (x, y) on the wall line; `facing` is the yaw of the
    direction from the door into the corridor (a robot standing in front of it faces facing + pi)."""

    x: float
    y: float
    facing: float
    width: float
    colour: str          # its name in instructions: 'red', 'blue', 'green', 'yellow', 'grey', 'white'
    bgr: BGR


@dataclass(frozen=True)
class Landmark:
    """A free-standing box centred at (x, y), axis-aligned: size_x by size_y, height metres tall."""

    x: float
    y: float
    size_x: float
    size_y: float
    height: float
    name: str            # its name in instructions: 'plant', 'cabinet', 'fire extinguisher', ...
    bgr: BGR


@dataclass(frozen=True)
class Scene:
    seed: int
    walls: tuple[Wall, ...]
    doors: tuple[Door, ...]
    landmarks: tuple[Landmark, ...]
    start: Pose2D
    goal: Pose2D                          # where and facing what the robot should stop
    route: tuple[tuple[float, float], ...]  # shortest collision-free polyline start -> goal (x, y)
    instruction: str                      # what the operator says, in `language`
    language: str                         # 'en' or 'zh'
    kind: str                             # the instruction family, e.g. 'door_ahead', 'turn_at_junction'

    @property
    def route_length_m(self) -> float:
        """The shortest path's length (SPL's denominator)."""
        return sum(math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.route, self.route[1:], strict=False))
