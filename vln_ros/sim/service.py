"""The simulator as sim_node runs it: the world, the camera frames in flight, the laser's sweeps (vln_ros/sim/laser.py,
taken on the physics thread at laser.rate_hz of simulated time, stamped when taken), the depth camera's images (the
same way, at depth.rate_hz, when depth.enabled), the real-time factor, and the side
channel's calls (vln_ros/sim/api.py's Simulator). No ROS: sim_node steps it and publishes what falls due.

Two threads share it: the physics thread calls step() (and idle() between steps), the side channel's threads
call the api methods. Everything that changes the episode or the frames in flight happens on the physics
thread: a reset is handed to it and applied between two steps, so no frame of the old episode (captured, or
rendered from the old scene) is published after a reset returns.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from vln_ros.core.control import Pose2D, Twist2D
from vln_ros.sim import api, geodesic, scenes
from vln_ros.sim.laser import Laser
from vln_ros.sim.params import SimParams
from vln_ros.sim.people import PeopleView
from vln_ros.sim.render import NO_ROBOTS, CameraSpec, RobotsView, depth_image, encode_depth
from vln_ros.sim.scene import Scene
from vln_ros.sim.world import DUE_TOLERANCE_S, Capture, Prepared, SimRobot, SimWorld, stagger_s

ORACLE_WAIT_S = 120.0     # an /oracle request waits at most this long (wall) for its simulated latency
RESET_WAIT_S = 10.0       # a reset waits at most this long (wall) for the physics thread to take it
RTF_WINDOW_S = 5.0        # the real-time factor is measured over this much wall time
LASER_STREAM = 117        # the laser's noise: its own random stream, seeded with (episode seed, this)


@dataclass
class StepOut:
    t_s: float                                   # simulated time after the step
    odom: tuple[Pose2D, Twist2D] | None          # odometry due now
    frames: list[tuple[float, Any]]              # (capture stamp_s, picture) due for publication now
    scan: tuple[float, np.ndarray] | None = None  # (stamp_s, ranges) of a laser sweep taken this step
    depth: tuple[float, np.ndarray] | None = None  # (stamp_s, encoded depth image) taken this step


class SimService:
    """Implements api.Simulator. render_frame(scene, pose, people, robots) draws a camera picture (sim/render.py's in
    sim_node; robots: the other robots, NO_ROBOTS with one); clock is wall time in seconds (for the real-time
    factor)."""

    def __init__(self, params: SimParams, render_frame: Callable[[Scene, Pose2D, PeopleView, RobotsView], Any],
                 log: Callable[[str], object] = lambda _: None, clock: Callable[[], float] = time.monotonic,
                 reset_wait_s: float = RESET_WAIT_S) -> None:
        self.params = params
        self.reset_wait_s = reset_wait_s
        self.world = SimWorld(params)
        self._render = render_frame
        self._log = log
        self._clock = clock
        names = self.world.names
        self._pending: list[list[tuple[Capture, Any]]] = [[] for _ in names]     # per robot; physics thread only
        self.laser = Laser(params.laser) if params.laser.enabled else None
        self._laser_rngs = [self._laser_stream(params.seed, i) for i in range(len(names))]   # physics thread only
        # per robot, staggered like the cameras (world.stagger_s); physics thread only
        self._next_scan_s = [stagger_s(i, len(names), params.laser.rate_hz) for i in range(len(names))]
        d = params.depth
        self.depth_camera = CameraSpec(width=d.width, height=d.height, hfov_deg=d.hfov_deg, height_m=d.mount.z_m)
        self._next_depth_s = [stagger_s(i, len(names), d.rate_hz) for i in range(len(names))]   # physics thread only
        self._resets: queue.SimpleQueue[tuple[Prepared, Future[tuple[Scene, float]]]] = queue.SimpleQueue()
        self._rtf_lock = threading.Lock()
        self._rtf_window: list[tuple[float, float]] = []       # (wall, sim) samples of the last seconds

    @staticmethod
    def _laser_stream(seed: int, robot: int) -> np.random.Generator:
        """The laser noise of one robot: the first robot's stream is what it was with one robot."""
        return np.random.default_rng((seed, LASER_STREAM) if robot == 0 else (seed, LASER_STREAM, robot))

    # -- the physics thread --------------------------------------------------------------------------------
    def step(self) -> StepOut:
        """Apply the resets asked for, advance one physics step, render a capture, hand out what is due (the first
        robot's; step_all() has every robot's)."""
        return self.step_all()[0]

    def step_all(self) -> list[StepOut]:
        """step() for every robot, in the order of world.names."""
        self._apply_resets()
        t, dues = self.world.step_all()
        outs = []
        for i, (robot, due_now) in enumerate(zip(self.world.robots, dues, strict=True)):
            # no latency: published then
            scan_due = self.laser is not None and t >= self._next_scan_s[i] - DUE_TOLERANCE_S
            if scan_due:
                self._next_scan_s[i] = max(self._next_scan_s[i] + 1.0 / self.params.laser.rate_hz, t)
            depth_due = self.params.depth.enabled and t >= self._next_depth_s[i] - DUE_TOLERANCE_S   # like the laser
            if depth_due:
                self._next_depth_s[i] = max(self._next_depth_s[i] + 1.0 / self.params.depth.rate_hz, t)
            others = self._others(robot)
            pending = self._pending[i]
            if due_now.capture is not None:  # rendered at capture, published once its latency has passed
                pending.append((due_now.capture, self._render(self.world.physical, due_now.capture.pose,
                                                              self.world.people_view(), others)))
            scan = None
            if scan_due and self.laser is not None:
                scan = (t, self.laser.scan(self.world.physical, robot.base.pose, self._laser_rngs[i],
                                           self.world.crowd.positions, others.positions, others.radius_m))
            depth = (t, self.depth_frame(robot)) if depth_due else None
            frames = []
            while pending and pending[0][0].due_s <= t + 1e-9:
                taken, image = pending.pop(0)
                frames.append((taken.stamp_s, image))
            outs.append(StepOut(t, due_now.odom, frames, scan, depth))
        self._note_rtf(t)
        return outs

    def _others(self, robot: SimRobot) -> RobotsView:
        """The other robots as `robot`'s camera, depth camera and laser see them (NO_ROBOTS with one robot)."""
        if len(self.world.robots) == 1:
            return NO_ROBOTS
        return RobotsView(self.world.others_of(robot.name), self.params.base.radius_m)

    def _note_rtf(self, t: float) -> None:
        now = self._clock()
        with self._rtf_lock:
            self._rtf_window.append((now, t))
            while len(self._rtf_window) > 2 and now - self._rtf_window[0][0] > RTF_WINDOW_S:
                self._rtf_window.pop(0)

    def depth_frame(self, robot: SimRobot | None = None) -> np.ndarray:
        """The depth camera's image now (of the first robot unless told), with the other robots in it, encoded as
        params.depth.encoding says."""
        r = robot or self.world.robots[0]
        d, pose = self.params.depth, r.base.pose
        others = self._others(r)
        at = Pose2D(pose.x + d.mount.x_m * math.cos(pose.yaw), pose.y + d.mount.x_m * math.sin(pose.yaw), pose.yaw)
        metres = depth_image(self.world.physical, at, self.depth_camera, self.world.people_view(), others)
        return encode_depth(metres, d.encoding, d.range_max_m)

    def idle(self, wait_s: float) -> None:
        """Wait wait_s (wall) before the next step, applying any reset asked for meanwhile."""
        deadline = self._clock() + wait_s
        while (left := deadline - self._clock()) > 0:
            try:
                prepared, done = self._resets.get(timeout=left)
            except queue.Empty:
                return
            self._apply_reset(prepared, done)

    def resets_waiting(self) -> bool:
        """A reset was asked for and the physics thread has not taken it yet."""
        return not self._resets.empty()

    def _apply_resets(self) -> None:
        while True:
            try:
                prepared, done = self._resets.get_nowait()
            except queue.Empty:
                return
            self._apply_reset(prepared, done)

    def _apply_reset(self, prepared: Prepared, done: Future[tuple[Scene, float]]) -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            for pending in self._pending:
                pending.clear()       # frames of the old episode are never published
            scene = self.world.reset(prepared.scene.seed, prepared=prepared)
            # an episode's scans repeat
            self._laser_rngs = [self._laser_stream(scene.seed, i) for i in range(len(self._pending))]
            done.set_result((scene, self.world.t_s))
        except Exception as exc:  # noqa: BLE001 - the caller gets it (a bad seed), the loop goes on
            done.set_exception(exc)

    def real_time_factor(self) -> float:
        """Simulated seconds per wall second over the last RTF_WINDOW_S; nan before two steps."""
        with self._rtf_lock:
            if len(self._rtf_window) < 2:
                return float('nan')
            (w0, s0), (w1, s1) = self._rtf_window[0], self._rtf_window[-1]
        return (s1 - s0) / (w1 - w0) if w1 > w0 else float('nan')

    # -- the side channel (api.Simulator; any thread) -----------------------------------------------------
    def reset(self, request: api.ResetRequest) -> api.ResetReply:
        done: Future[tuple[Scene, float]] = Future()
        # Placed here, on the caller's thread: clutter takes a while to place, and the clock must not stall.
        prepared = self.world.prepare(request.seed, tuple(request.people), request.clutter)
        self._resets.put((prepared, done))
        try:
            scene, now_s = done.result(timeout=self.reset_wait_s)
        except TimeoutError:
            done.cancel()
            raise TimeoutError(f'the simulation did not take the reset in {self.reset_wait_s:g} s') from None
        self._log(f'episode: {scenes.describe(scene)}: "{scene.instruction}"')
        shortest = geodesic.path_length(geodesic.shortest_path(scene, self.params.base.radius_m))
        robots = [api.RobotStart(robot=r.name, start=[r.scene.start.x, r.scene.start.y, r.scene.start.yaw],
                                 goal=[r.scene.goal.x, r.scene.goal.y, r.scene.goal.yaw],
                                 route_length_m=r.scene.route_length_m,
                                 shortest_path_m=shortest if r.scene is scene else
                                 geodesic.path_length(geodesic.shortest_path(r.scene, self.params.base.radius_m)))
                  for r in self.world.robots]
        first = self.world.robots[0].scene
        return api.ResetReply(seed=scene.seed, instruction=scene.instruction, language=scene.language,
                              kind=scene.kind, route_length_m=first.route_length_m,
                              shortest_path_m=robots[0].shortest_path_m,
                              start=[first.start.x, first.start.y, first.start.yaw],
                              goal=[first.goal.x, first.goal.y, first.goal.yaw], now_s=now_s,
                              describe=scenes.describe(scene), robots=robots, clutter=prepared.clutter,
                              people=len(prepared.scripts))

    def episode(self, robot: str = '') -> api.EpisodeReply:
        return api.EpisodeReply.model_validate({**self.world.episode(robot),
                                                'real_time_factor': self.real_time_factor()})

    def status(self, robot: str = '') -> api.StatusReply:
        w = self.world
        v = w.robot(robot).base.velocity
        return api.StatusReply(now_s=w.t_s, real_time_factor=self.real_time_factor(), seed=w.log.seed,
                               speed_mps=math.hypot(v.vx, v.vy), yaw_rate=v.wz)

    def fault(self, request: api.FaultRequest) -> api.FaultReply:
        r = self.world.robot(request.robot)
        if request.camera_frozen is not None:
            r.camera_frozen = request.camera_frozen
        if request.odom_lost is not None:
            r.odom_lost = request.odom_lost
        return api.FaultReply(camera_frozen=r.camera_frozen, odom_lost=r.odom_lost, now_s=self.world.t_s)

    def oracle(self, request: api.OracleRequest) -> api.OracleReply:
        """LookupError: not a frame of this episode; TimeoutError: simulated time stalled."""
        answer = self.world.oracle_answer(request.stamp_ns * 1e-9, request.model_dump(exclude={'stamp_ns', 'robot'}),
                                          ORACLE_WAIT_S, request.robot)
        return api.OracleReply.model_validate(answer)
