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
from vln_ros.sim.render import CameraSpec, depth_image, encode_depth
from vln_ros.sim.scene import Scene
from vln_ros.sim.world import Capture, Prepared, SimWorld

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
    """Implements api.Simulator. render_frame(scene, pose, people) draws a camera picture (sim/render.py's in sim_node);
    clock is wall time in seconds (for the real-time factor)."""

    def __init__(self, params: SimParams, render_frame: Callable[[Scene, Pose2D, PeopleView], Any],
                 log: Callable[[str], object] = lambda _: None, clock: Callable[[], float] = time.monotonic,
                 reset_wait_s: float = RESET_WAIT_S) -> None:
        self.params = params
        self.reset_wait_s = reset_wait_s
        self.world = SimWorld(params)
        self._render = render_frame
        self._log = log
        self._clock = clock
        self._pending: list[tuple[Capture, Any]] = []          # physics thread only
        self.laser = Laser(params.laser) if params.laser.enabled else None
        self._laser_rng = np.random.default_rng((params.seed, LASER_STREAM))   # physics thread only
        self._next_scan_s = 0.0                                # physics thread only
        d = params.depth
        self.depth_camera = CameraSpec(width=d.width, height=d.height, hfov_deg=d.hfov_deg, height_m=d.mount.z_m)
        self._next_depth_s = 0.0                               # physics thread only
        self._resets: queue.SimpleQueue[tuple[Prepared, Future[tuple[Scene, float]]]] = queue.SimpleQueue()
        self._rtf_lock = threading.Lock()
        self._rtf_window: list[tuple[float, float]] = []       # (wall, sim) samples of the last seconds

    # -- the physics thread --------------------------------------------------------------------------------
    def step(self) -> StepOut:
        """Apply the resets asked for, advance one physics step, render a capture, hand out what is due."""
        self._apply_resets()
        t, odom, capture = self.world.step()
        if capture is not None:  # rendered at capture, published once its latency has passed
            self._pending.append((capture, self._render(self.world.physical, capture.pose, self.world.people_view())))
        scan = None
        if self.laser is not None and t >= self._next_scan_s - 1e-9:   # no latency: published at its stamp
            self._next_scan_s = max(self._next_scan_s + 1.0 / self.params.laser.rate_hz, t)
            scan = (t, self.laser.scan(self.world.physical, self.world.base.pose, self._laser_rng,
                                       self.world.crowd.positions))
        depth = None
        if self.params.depth.enabled and t >= self._next_depth_s - 1e-9:   # no latency, like the laser
            self._next_depth_s = max(self._next_depth_s + 1.0 / self.params.depth.rate_hz, t)
            depth = (t, self.depth_frame())
        due = []
        while self._pending and self._pending[0][0].due_s <= t + 1e-9:
            taken, image = self._pending.pop(0)
            due.append((taken.stamp_s, image))
        now = self._clock()
        with self._rtf_lock:
            self._rtf_window.append((now, t))
            while len(self._rtf_window) > 2 and now - self._rtf_window[0][0] > RTF_WINDOW_S:
                self._rtf_window.pop(0)
        return StepOut(t, odom, due, scan, depth)

    def depth_frame(self) -> np.ndarray:
        """The depth camera's image now, encoded as params.depth.encoding says."""
        d, pose = self.params.depth, self.world.base.pose
        at = Pose2D(pose.x + d.mount.x_m * math.cos(pose.yaw), pose.y + d.mount.x_m * math.sin(pose.yaw), pose.yaw)
        metres = depth_image(self.world.physical, at, self.depth_camera, self.world.people_view())
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
            self._pending.clear()     # frames of the old episode are never published
            scene = self.world.reset(prepared.scene.seed, prepared=prepared)
            self._laser_rng = np.random.default_rng((scene.seed, LASER_STREAM))   # an episode's scans repeat
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
        self._resets.put((self.world.prepare(request.seed, tuple(request.people), request.clutter), done))
        try:
            scene, now_s = done.result(timeout=self.reset_wait_s)
        except TimeoutError:
            done.cancel()
            raise TimeoutError(f'the simulation did not take the reset in {self.reset_wait_s:g} s') from None
        self._log(f'episode: {scenes.describe(scene)}: "{scene.instruction}"')
        shortest = geodesic.path_length(geodesic.shortest_path(scene, self.params.base.radius_m))
        return api.ResetReply(seed=scene.seed, instruction=scene.instruction, language=scene.language,
                              kind=scene.kind, route_length_m=scene.route_length_m, shortest_path_m=shortest,
                              start=[scene.start.x, scene.start.y, scene.start.yaw],
                              goal=[scene.goal.x, scene.goal.y, scene.goal.yaw], now_s=now_s,
                              describe=scenes.describe(scene))

    def episode(self) -> api.EpisodeReply:
        return api.EpisodeReply.model_validate({**self.world.episode(), 'real_time_factor': self.real_time_factor()})

    def status(self) -> api.StatusReply:
        w = self.world
        v = w.base.velocity
        return api.StatusReply(now_s=w.t_s, real_time_factor=self.real_time_factor(), seed=w.log.seed,
                               speed_mps=math.hypot(v.vx, v.vy), yaw_rate=v.wz)

    def fault(self, request: api.FaultRequest) -> api.FaultReply:
        w = self.world
        if request.camera_frozen is not None:
            w.camera_frozen = request.camera_frozen
        if request.odom_lost is not None:
            w.odom_lost = request.odom_lost
        return api.FaultReply(camera_frozen=w.camera_frozen, odom_lost=w.odom_lost, now_s=w.t_s)

    def oracle(self, request: api.OracleRequest) -> api.OracleReply:
        """LookupError: not a frame of this episode; TimeoutError: simulated time stalled."""
        answer = self.world.oracle_answer(request.stamp_ns * 1e-9, request.model_dump(exclude={'stamp_ns'}),
                                          ORACLE_WAIT_S)
        return api.OracleReply.model_validate(answer)
