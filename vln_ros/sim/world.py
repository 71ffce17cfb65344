"""One simulated robot in one scene on simulated time: what sim_node steps, publishes and answers. No ROS.

`SimWorld.step()` advances the clock by one physics step and says what falls due (an odometry message, a
camera capture); the node renders, publishes and serves. Everything an evaluation scores comes from here:
the true trajectory, every velocity command the base received, collisions and clearance, and every answer
the oracle gave, each with its simulated time. Episodes follow each other on one clock that never goes
back (the stack's nodes keep running between them): `reset(seed)` changes the scene and places the robot
at its start, and the odometry keeps integrating, as a real robot carried to another place would.
"""
from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vln_ros.core.control import Pose2D, Twist2D
from vln_ros.sim import oracle, people, scenes
from vln_ros.sim.params import SimParams
from vln_ros.sim.robot import Base, Odometry
from vln_ros.sim.scene import Scene

TRAJECTORY_PERIOD_S = 0.05     # the episode log keeps the true pose at 20 Hz
POSE_HISTORY_S = 120.0         # the oracle answers for keyframes captured up to this long ago


@dataclass
class Capture:
    """A camera frame due for publication: captured at stamp_s from pose, published at due_s."""

    stamp_s: float
    due_s: float
    pose: Pose2D


@dataclass
class EpisodeLog:
    seed: int
    started_s: float
    trajectory: list[list[float]] = field(default_factory=list)   # [t, x, y, yaw, vx, vy, wz] (true, body twist)
    commands: list[list[float]] = field(default_factory=list)     # [t, vx, vy, wz] as received on cmd_vel
    answers: list[dict[str, Any]] = field(default_factory=list)   # the oracle's, with their times
    people_tracks: list[list[float]] = field(default_factory=list)  # [t, person_index, x, y] with the trajectory
    frames: int = 0


@dataclass(frozen=True)
class Prepared:
    """An episode's scene, ready to start: as generated, with its clutter, and its people's scripts."""

    scene: Scene
    physical: Scene
    scripts: tuple[people.PersonScript, ...]


class SimWorld:
    """Thread-safe: the node's physics loop steps it, its executor feeds commands, HTTP threads query it."""

    def __init__(self, params: SimParams) -> None:
        self.params = params
        self.dt_s = 1.0 / params.physics_rate_hz
        self.t_s = 0.0
        self._lock = threading.Condition()
        self._odometry = Odometry(params.odom, np.random.default_rng(params.seed))
        self._next_odom_s = 0.0
        self._next_frame_s = 0.0
        self.camera_frozen = False   # faults an evaluation injects
        self.odom_lost = False
        self.scene: Scene              # the scene as generated: the oracle and the reference route know only this
        self.physical: Scene           # the scene with its clutter: what the robot, camera and laser meet
        self.crowd: people.Crowd
        self.base: Base
        self.log: EpisodeLog
        self._history_t: deque[float] = deque()
        self._history_pose: deque[Pose2D] = deque()
        self.reset(params.seed)

    # -- episodes --------------------------------------------------------------------------------------
    def prepare(self, seed: int, walkers: tuple[str, ...] = (), clutter: int = 0) -> Prepared:
        """The scene of seed with its clutter and people placed: the slow part of a reset (placing clutter plans
        paths, about 0.1 s an item), thread-safe, so a caller can do it off the physics thread."""
        scene = scenes.generate(seed)
        scripts = tuple(people.place_people(scene, walkers))
        physical = people.with_clutter(scene, people.place_clutter(scene, clutter, self.params.base.radius_m, scripts))
        return Prepared(scene, physical, scripts)

    def reset(self, seed: int, walkers: tuple[str, ...] = (), clutter: int = 0,
              prepared: Prepared | None = None) -> Scene:
        """The scene of seed, with the people on the scripts named in walkers and clutter static obstacles
        (vln_ros/sim/people.py); none of either leaves the scene exactly as generated. prepared: prepare()'s
        result for the same arguments, made earlier."""
        if prepared is None:
            prepared = self.prepare(seed, walkers, clutter)
        with self._lock:
            self.scene, self.physical = prepared.scene, prepared.physical
            self.crowd = people.Crowd(prepared.scripts, prepared.physical)
            self.base = Base(self.physical, self.params.base)
            self.base.reset(self.scene.start)
            self._oracle_rng = np.random.default_rng(seed)
            self._history_t.clear()
            self._history_pose.clear()
            self._remember(self.t_s, self.scene.start)
            self.log = EpisodeLog(seed, self.t_s)
            self.camera_frozen = self.odom_lost = False
            return self.scene

    def episode(self) -> dict[str, Any]:
        """The episode so far, as plain data (the /episode reply)."""
        with self._lock:
            b = self.base
            return {'seed': self.log.seed, 'started_s': self.log.started_s, 'now_s': self.t_s,
                    'collisions': b.collisions, 'min_clearance_m': b.min_clearance_m,
                    'distance_travelled_m': b.distance_travelled_m, 'frames': self.log.frames,
                    'trajectory': list(self.log.trajectory), 'commands': list(self.log.commands),
                    'answers': list(self.log.answers), 'person_collisions': self.crowd.collisions,
                    'min_clearance_people_m': self.crowd.min_clearance_m,
                    'people_tracks': list(self.log.people_tracks)}

    def episode_counts(self) -> dict[str, Any]:
        """The episode's figures for /diagnostics."""
        with self._lock:
            return {'seed': self.log.seed, 'frames': self.log.frames, 'commands': len(self.log.commands),
                    'collisions': self.base.collisions, 'min_clearance_m': self.base.min_clearance_m,
                    'camera_frozen': self.camera_frozen, 'odom_lost': self.odom_lost}

    def people_view(self) -> people.PeopleView:
        """Where the people are now, for the camera."""
        with self._lock:
            return self.crowd.view()

    # -- the loop ------------------------------------------------------------------------------------
    def command(self, vx: float, vy: float, wz: float) -> None:
        with self._lock:
            self.base.command(vx, vy, wz, self.t_s)
            self.log.commands.append([self.t_s, vx, vy, wz])

    def step(self) -> tuple[float, tuple[Pose2D, Twist2D] | None, Capture | None]:
        """Advance one physics step: (the new time, odometry due now or None, a camera capture due or None)."""
        with self._lock:
            t = self.t_s = self.t_s + self.dt_s
            self.base.step(self.dt_s, t)
            if len(self.crowd):
                here, moving = self.base.pose, self.base.velocity
                self.crowd.step(self.dt_s, t - self.log.started_s, (here.x, here.y), self.params.base.radius_m,
                                math.hypot(moving.vx, moving.vy))
            twist = self.base.velocity
            odom_pose, odom_twist = self._odometry.update(self.dt_s, twist)
            pose = self.base.pose
            self._remember(t, pose)
            if not self.log.trajectory or t - self.log.trajectory[-1][0] >= TRAJECTORY_PERIOD_S - 1e-9:
                self.log.trajectory.append([t, pose.x, pose.y, pose.yaw, twist.vx, twist.vy, twist.wz])
                for i, (x, y) in enumerate(self.crowd.positions.tolist()):
                    self.log.people_tracks.append([t, float(i), x, y])
            odom = None
            if t >= self._next_odom_s:
                self._next_odom_s += 1.0 / self.params.odom.rate_hz
                self._next_odom_s = max(self._next_odom_s, t)
                if not self.odom_lost:
                    odom = (odom_pose, odom_twist)
            capture = None
            if t >= self._next_frame_s:
                self._next_frame_s = max(self._next_frame_s + 1.0 / self.params.camera.rate_hz, t)
                if not self.camera_frozen:
                    capture = Capture(t, t + self.params.camera.latency_s, pose)
                    self.log.frames += 1
            self._lock.notify_all()
            return t, odom, capture

    def _remember(self, t: float, pose: Pose2D) -> None:
        self._history_t.append(t)
        self._history_pose.append(pose)
        while self._history_t and self._history_t[0] < t - POSE_HISTORY_S:
            self._history_t.popleft()
            self._history_pose.popleft()

    def pose_at(self, t: float) -> Pose2D | None:
        """The true pose at simulated time t in this episode (the step at or just before it); None outside."""
        with self._lock:
            if not self._history_t or t < self._history_t[0] - 1e-6 or t > self.t_s + 1e-6:
                return None
            i = max(0, bisect.bisect_right(self._history_t, t + 1e-9) - 1)
            return self._history_pose[i]

    # -- the oracle ------------------------------------------------------------------------------------
    def oracle_answer(self, stamp_s: float, request: dict[str, float], timeout_s: float) -> dict[str, Any]:
        """What a perfect model answers about the frame captured at stamp_s, returned once request['latency_s']
        of simulated time has passed since the request. LookupError: not a frame of this episode."""
        pose = self.pose_at(stamp_s)
        if pose is None:
            raise LookupError(f'no ground truth for a keyframe captured at {stamp_s:.3f} s (this episode began at '
                              f'{self.log.started_s:.3f} s; now {self.t_s:.3f} s)')
        with self._lock:
            asked_s, seed = self.t_s, self.log.seed
            settings = oracle.OracleSettings(
                noise_m=request.get('noise_m', 0.0), noise_deg=request.get('noise_deg', 0.0),
                malformed=request.get('fault_malformed', 0.0),
                wrong_direction=request.get('fault_wrong_direction', 0.0),
                premature_arrived=request.get('fault_premature_arrived', 0.0),
                drift=request.get('fault_drift', 0.0), forward_blocked=request.get('fault_forward_blocked', 0.0))
            answer = oracle.answer(self.scene, pose, settings, self._oracle_rng)
            due_s = asked_s + max(0.0, request.get('latency_s', 0.0))
            if not self._lock.wait_for(lambda: self.t_s >= due_s or self.log.seed != seed, timeout=timeout_s):
                raise TimeoutError(f'simulated time stalled at {self.t_s:.3f} s')
            self.log.answers.append({'asked_s': asked_s, 'stamp_s': stamp_s, 'answered_s': self.t_s,
                                     'fault': answer.fault, 'text': answer.text,
                                     'pose': [pose.x, pose.y, pose.yaw]})
            return {'text': answer.text, 'fault': answer.fault}

