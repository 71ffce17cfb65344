"""One or several simulated robots in one scene on simulated time: what sim_node steps, publishes and answers. No ROS.

`SimWorld.step()` advances the clock by one physics step and says what falls due (an odometry message, a
camera capture); the node renders, publishes and serves. Everything an evaluation scores comes from here:
the true trajectory, every velocity command the base received, collisions and clearance, and every answer
the oracle gave, each with its simulated time. Episodes follow each other on one clock that never goes
back (the stack's nodes keep running between them): `reset(seed)` changes the scene and places the robot
at its start, and the odometry keeps integrating, as a real robot carried to another place would.

Several robots (SimParams.robots) share the scene, the clock and the people, each with its own start, goal and
route (vln_ros/sim/fleet.py), base, odometry, camera times, faults and log. They are solid to each other: a step
into another robot is refused like one into a wall, and counted apart for the robot that made it (robot_collisions:
two closing head-on count one each). The people's scripts are
timed to meet the first robot, but they meet every robot alike: they wait for any at rest in their way, step round
it, never step into one, and each robot's contacts with them are its own (person_collisions). The first robot is
the default wherever one is named: `base`, `log` and the one-robot calls are its.
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
from vln_ros.sim import fleet, oracle, people, scenes
from vln_ros.sim.params import SimParams, robot_names
from vln_ros.sim.robot import Base, Odometry
from vln_ros.sim.scene import Scene

TRAJECTORY_PERIOD_S = 0.05     # the episode log keeps the true pose at 20 Hz
POSE_HISTORY_S = 120.0         # the oracle answers for keyframes captured up to this long ago
DUE_TOLERANCE_S = 1e-9         # a sensor due at a step's time is due then: summed periods drift by float error


def stagger_s(index: int, count: int, rate_hz: float) -> float:
    """When robot `index` of `count` first senses at rate_hz: evenly spread over one period, so that the robots'
    renders and scans fall in different physics steps."""
    return index / (count * rate_hz)


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


@dataclass
class SimRobot:
    """One robot of the world: its own scene (start, goal, route), body, odometry, camera times, faults and log."""

    name: str
    scene: Scene
    base: Base
    odometry: Odometry
    log: EpisodeLog
    oracle_rng: np.random.Generator
    history_t: deque[float] = field(default_factory=deque)
    history_pose: deque[Pose2D] = field(default_factory=deque)
    next_odom_s: float = 0.0
    next_frame_s: float = 0.0
    camera_frozen: bool = False
    odom_lost: bool = False


@dataclass
class RobotDue:
    """What falls due for one robot in a step: odometry, a camera capture (or None)."""

    odom: tuple[Pose2D, Twist2D] | None
    capture: Capture | None


@dataclass(frozen=True)
class Prepared:
    """An episode's scene, ready to start: as generated, with its clutter, and its people's scripts."""

    scene: Scene
    physical: Scene
    scripts: tuple[people.PersonScript, ...]

    @property
    def clutter(self) -> int:
        """How many boxes and chairs were placed (can be fewer than asked: sim/people.py)."""
        return len(self.physical.landmarks) - len(self.scene.landmarks)


class SimWorld:
    """Thread-safe: the node's physics loop steps it, its executor feeds commands, HTTP threads query it."""

    def __init__(self, params: SimParams) -> None:
        self.params = params
        self.dt_s = 1.0 / params.physics_rate_hz
        self.t_s = 0.0
        self.names: tuple[str, ...] = robot_names(params.robots) or ('',)
        self._lock = threading.Condition()
        # One odometry per robot for the simulator's life (never reset between episodes); the first robot's
        # stream is the seed's alone, as with one robot.
        self._odometries = [Odometry(params.odom, np.random.default_rng(params.seed if i == 0 else (params.seed, i)))
                            for i in range(len(self.names))]
        # (next odometry, next frame) carried across resets. Each robot's camera is a share of a period after the
        # one before: renders fall in different physics steps, so no step renders every robot's frame at once
        # (4 robots: 20 ms steps, a bursty /clock, controllers on it skipping periods).
        self._clocks = [(0.0, stagger_s(i, len(self.names), params.camera.rate_hz)) for i in range(len(self.names))]
        self.scene: Scene              # the scene as generated: the first robot's oracle and route know only this
        self.physical: Scene           # the scene with its clutter: what the robots, cameras and lasers meet
        self.crowd: people.Crowd
        self.robots: list[SimRobot] = []
        self.reset(params.seed)

    # -- the robots ------------------------------------------------------------------------------------
    def robot(self, name: str = '') -> SimRobot:
        """The robot of that name; '' is the first. LookupError naming the robots there are."""
        if name == '':
            return self.robots[0]
        for r in self.robots:
            if r.name == name:
                return r
        raise LookupError(f'no robot {name!r} in this simulator (robots: {", ".join(self.names)})')

    @property
    def base(self) -> Base:
        return self.robots[0].base

    @property
    def log(self) -> EpisodeLog:
        return self.robots[0].log

    @property
    def camera_frozen(self) -> bool:
        return self.robots[0].camera_frozen

    @camera_frozen.setter
    def camera_frozen(self, value: bool) -> None:
        self.robots[0].camera_frozen = value

    @property
    def odom_lost(self) -> bool:
        return self.robots[0].odom_lost

    @odom_lost.setter
    def odom_lost(self, value: bool) -> None:
        self.robots[0].odom_lost = value

    # -- episodes --------------------------------------------------------------------------------------
    def prepare(self, seed: int, walkers: tuple[str, ...] = (), clutter: int = 0) -> Prepared:
        """The scene of seed with its clutter and people placed: the slow part of a reset (placing clutter plans
        paths, about 0.1 s an item), thread-safe, so a caller can do it off the physics thread."""
        scene = scenes.generate(seed)
        scripts = tuple(people.place_people(scene, walkers))
        physical = people.with_clutter(scene, people.place_clutter(scene, clutter, self.params.base.radius_m, scripts,
                                                                   len(self.names)))
        return Prepared(scene, physical, scripts)

    def reset(self, seed: int, walkers: tuple[str, ...] = (), clutter: int = 0,
              prepared: Prepared | None = None) -> Scene:
        """The scene of seed, with the people on the scripts named in walkers and clutter static obstacles
        (vln_ros/sim/people.py); none of either leaves the scene exactly as generated. prepared: prepare()'s
        result for the same arguments, made earlier. Several robots: each at its place in the queue
        (vln_ros/sim/fleet.py); ValueError when the route has no room for them or a start overlaps clutter."""
        if prepared is None:
            prepared = self.prepare(seed, walkers, clutter)
        own = fleet.staggered(prepared.scene, len(self.names))
        with self._lock:
            bases = []
            for scene in own:
                base = Base(prepared.physical, self.params.base)
                base.reset(scene.start)
                bases.append(base)
            if self.robots:   # the sensors keep their pace across episodes; faults end with the episode
                self._clocks = [(r.next_odom_s, r.next_frame_s) for r in self.robots]
            self.scene, self.physical = prepared.scene, prepared.physical
            self.crowd = people.Crowd(prepared.scripts, prepared.physical)
            self.robots = [SimRobot(name, scene, base, self._odometries[i], EpisodeLog(seed, self.t_s),
                                    np.random.default_rng(seed if i == 0 else (seed, i)),
                                    next_odom_s=self._clocks[i][0], next_frame_s=self._clocks[i][1])
                           for i, (name, scene, base) in enumerate(zip(self.names, own, bases, strict=True))]
            for r in self.robots:
                self._remember(r, self.t_s, r.scene.start)
            self._place_neighbours()
            return self.scene

    def episode(self, robot: str = '') -> dict[str, Any]:
        """The episode so far of one robot, as plain data (the /episode reply)."""
        with self._lock:
            r = self.robot(robot)
            b = r.base
            return {'seed': r.log.seed, 'started_s': r.log.started_s, 'now_s': self.t_s,
                    'collisions': b.collisions, 'min_clearance_m': b.min_clearance_m,
                    'distance_travelled_m': b.distance_travelled_m, 'frames': r.log.frames,
                    'trajectory': list(r.log.trajectory), 'commands': list(r.log.commands),
                    'answers': list(r.log.answers), **self._people_figures(self.robots.index(r)),
                    'people_tracks': list(self.log.people_tracks), 'robot': r.name,
                    'robot_collisions': b.robot_collisions}

    def _people_figures(self, index: int) -> dict[str, Any]:
        """One robot's contacts with people and its clearance to them (none yet: 0 and inf)."""
        c = self.crowd
        if index >= len(c.collisions_by_robot):
            return {'person_collisions': 0, 'min_clearance_people_m': math.inf}
        return {'person_collisions': int(c.collisions_by_robot[index]),
                'min_clearance_people_m': float(c.min_clearance_by_robot_m[index])}

    def episode_counts(self) -> dict[str, Any]:
        """The episode's figures for /diagnostics (the first robot's; robot contacts of them all)."""
        with self._lock:
            counts = {'seed': self.log.seed, 'frames': self.log.frames, 'commands': len(self.log.commands),
                      'collisions': self.base.collisions, 'min_clearance_m': self.base.min_clearance_m,
                      'camera_frozen': self.camera_frozen, 'odom_lost': self.odom_lost}
            if len(self.robots) > 1:
                counts['robot_collisions'] = sum(r.base.robot_collisions for r in self.robots)
            return counts

    def people_view(self) -> people.PeopleView:
        """Where the people are now, for the camera."""
        with self._lock:
            return self.crowd.view()

    def others_of(self, robot: str = '') -> np.ndarray:
        """The other robots' centres (K, 2) as `robot` sees them now (for its camera and laser)."""
        with self._lock:
            me = self.robot(robot)
            return np.array([(r.base.pose.x, r.base.pose.y) for r in self.robots if r is not me], float).reshape(-1, 2)

    # -- the loop ------------------------------------------------------------------------------------
    def command(self, vx: float, vy: float, wz: float, robot: str = '') -> None:
        with self._lock:
            r = self.robot(robot)
            r.base.command(vx, vy, wz, self.t_s)
            r.log.commands.append([self.t_s, vx, vy, wz])

    def step(self) -> tuple[float, tuple[Pose2D, Twist2D] | None, Capture | None]:
        """Advance one physics step: (the new time, odometry due now or None, a camera capture due or None), of
        the first robot; step_all() has every robot's."""
        t, due = self.step_all()
        return t, due[0].odom, due[0].capture

    def step_all(self) -> tuple[float, list[RobotDue]]:
        """Advance one physics step: the new time and, per robot in order, what falls due."""
        with self._lock:
            t = self.t_s = self.t_s + self.dt_s
            for r in self.robots:      # in turn: each meets the others where they are now
                if len(self.robots) > 1:
                    r.base.neighbours = self.others_of(r.name)
                r.base.step(self.dt_s, t)
            if len(self.crowd):     # the people meet every robot (their scripts are timed to meet the first)
                self.crowd.step(self.dt_s, t - self.log.started_s,
                                [(r.base.pose.x, r.base.pose.y) for r in self.robots], self.params.base.radius_m,
                                [math.hypot(r.base.velocity.vx, r.base.velocity.vy) for r in self.robots])
            due = [self._after_step(r, t, first=i == 0) for i, r in enumerate(self.robots)]
            self._lock.notify_all()
            return t, due

    def _place_neighbours(self) -> None:
        if len(self.robots) > 1:
            for r in self.robots:
                r.base.neighbours = self.others_of(r.name)

    def _after_step(self, r: SimRobot, t: float, first: bool) -> RobotDue:
        twist = r.base.velocity
        odom_pose, odom_twist = r.odometry.update(self.dt_s, twist)
        pose = r.base.pose
        self._remember(r, t, pose)
        if not r.log.trajectory or t - r.log.trajectory[-1][0] >= TRAJECTORY_PERIOD_S - 1e-9:
            r.log.trajectory.append([t, pose.x, pose.y, pose.yaw, twist.vx, twist.vy, twist.wz])
            if first:
                for i, (x, y) in enumerate(self.crowd.positions.tolist()):
                    r.log.people_tracks.append([t, float(i), x, y])
        odom = None
        if t >= r.next_odom_s - DUE_TOLERANCE_S:
            r.next_odom_s = max(r.next_odom_s + 1.0 / self.params.odom.rate_hz, t)
            if not r.odom_lost:
                odom = (odom_pose, odom_twist)
        capture = None
        if t >= r.next_frame_s - DUE_TOLERANCE_S:
            r.next_frame_s = max(r.next_frame_s + 1.0 / self.params.camera.rate_hz, t)
            if not r.camera_frozen:
                capture = Capture(t, t + self.params.camera.latency_s, pose)
                r.log.frames += 1
        return RobotDue(odom, capture)

    @staticmethod
    def _remember(r: SimRobot, t: float, pose: Pose2D) -> None:
        r.history_t.append(t)
        r.history_pose.append(pose)
        while r.history_t and r.history_t[0] < t - POSE_HISTORY_S:
            r.history_t.popleft()
            r.history_pose.popleft()

    def pose_at(self, t: float, robot: str = '') -> Pose2D | None:
        """The true pose at simulated time t in this episode (the step at or just before it); None outside."""
        with self._lock:
            r = self.robot(robot)
            if not r.history_t or t < r.history_t[0] - 1e-6 or t > self.t_s + 1e-6:
                return None
            i = max(0, bisect.bisect_right(r.history_t, t + 1e-9) - 1)
            return r.history_pose[i]

    # -- the oracle ------------------------------------------------------------------------------------
    def oracle_answer(self, stamp_s: float, request: dict[str, float], timeout_s: float,
                      robot: str = '') -> dict[str, Any]:
        """What a perfect model answers about the frame `robot` captured at stamp_s, returned once
        request['latency_s'] of simulated time has passed since the request. LookupError: not a frame of this
        episode, or no such robot."""
        pose = self.pose_at(stamp_s, robot)
        r = self.robot(robot)
        if pose is None:
            raise LookupError(f'no ground truth for a keyframe captured at {stamp_s:.3f} s (this episode began at '
                              f'{r.log.started_s:.3f} s; now {self.t_s:.3f} s)')
        with self._lock:
            asked_s, seed = self.t_s, r.log.seed
            settings = oracle.OracleSettings(
                noise_m=request.get('noise_m', 0.0), noise_deg=request.get('noise_deg', 0.0),
                malformed=request.get('fault_malformed', 0.0),
                wrong_direction=request.get('fault_wrong_direction', 0.0),
                premature_arrived=request.get('fault_premature_arrived', 0.0),
                drift=request.get('fault_drift', 0.0), forward_blocked=request.get('fault_forward_blocked', 0.0))
            answer = oracle.answer(r.scene, pose, settings, r.oracle_rng)
            due_s = asked_s + max(0.0, request.get('latency_s', 0.0))
            if not self._lock.wait_for(lambda: self.t_s >= due_s or self.robot(robot).log.seed != seed
                                       or self.robot(robot) is not r, timeout=timeout_s):
                raise TimeoutError(f'simulated time stalled at {self.t_s:.3f} s')
            r.log.answers.append({'asked_s': asked_s, 'stamp_s': stamp_s, 'answered_s': self.t_s,
                                  'fault': answer.fault, 'text': answer.text,
                                  'pose': [pose.x, pose.y, pose.yaw]})
            return {'text': answer.text, 'fault': answer.fault}
