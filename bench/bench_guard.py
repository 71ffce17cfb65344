"""The collision guard's hot paths (core/guard.py): one control step, and one message's conversion; and its
reaction on a real graph (controller_node with the guard).

    python bench/bench_guard.py [core|reaction|all]     (default all)

One JSON object per line, {"name", "value", "unit"}: guard_step_us_p50/p99 (a control step with a 1,080-beam
scan and a 20,000-point cloud, commands in every direction, both sources fresh) and guard_scan_convert_us_p99,
guard_cloud_convert_us_p99, guard_depth_convert_us_p99 (a message to sorted base-frame points, including the
gap to the footprint and the merge per resolution cell). Each also as *_cpu_*: the calling thread's CPU time,
which a loaded machine does not inflate. guard_reaction_ms_p50/p99 (reaction): the real controller_node
process with the guard and a LaserScan at 20 Hz, following a plan straight ahead; an obstacle enters the stop
zone in one scan -> the first zero cmd_vel, both times taken in this process (publish, receive), on a private
ROS domain. The same with a 20 Hz PointCloud2 (guard_reaction_ms_p50/p99_pointcloud) and through the
standalone guard_node passing a 20 Hz teleop command (guard_reaction_ms_p50/p99_guard_node, first zero on
cmd_vel_out). Timings are this machine's as it is: compare runs side by side.
"""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from vln_ros.core.guard import CollisionGuard, FootprintParams, GuardParams
from vln_ros.core.guard_sources import FLOAT32, DepthParams, LaserParams, PointCloudParams

Emit = Callable[[str, float, str], None]


def _print(name: str, value: float, unit: str) -> None:
    print(json.dumps({'name': name, 'value': round(float(value), 3), 'unit': unit}), flush=True)


def corridor_scan(beams: int = 1080) -> SimpleNamespace:
    """A 270 deg scan in a 1.8 m corridor with a box 1.5 m ahead, a few NaN and +inf beams."""
    angles = -0.75 * math.pi + np.arange(beams) * (1.5 * math.pi / beams)
    with np.errstate(divide='ignore'):
        to_wall = np.where(np.sin(angles) != 0.0, 0.9 / np.abs(np.sin(angles)), np.inf)
        to_box = np.where(np.abs(np.tan(angles)) * 1.5 <= 0.3, 1.5 / np.cos(angles), np.inf)
    ranges = np.minimum(to_wall, to_box).astype(np.float32)
    ranges[ranges > 8.0] = np.inf
    ranges[::97] = np.nan
    return SimpleNamespace(header=SimpleNamespace(frame_id='laser'), angle_min=float(angles[0]),
                           angle_increment=1.5 * math.pi / beams, range_min=0.05, range_max=8.0, ranges=ranges)


def corridor_cloud(points: int = 20_000, seed: int = 0) -> SimpleNamespace:
    """A lidar's view of the same corridor: walls, a box, the floor (filtered by the height band), NaNs;
    x, y, z float32 among other fields (intensity, ring, time) as real drivers send them."""
    rng = np.random.default_rng(seed)
    n_wall, n_box = points * 5 // 10, points * 2 // 10
    n_floor = points - n_wall - n_box
    wall = np.c_[rng.uniform(-3.0, 6.0, n_wall), rng.choice([-0.9, 0.9], n_wall), rng.uniform(0.0, 1.2, n_wall)]
    box = np.c_[rng.uniform(1.5, 1.8, n_box), rng.uniform(-0.3, 0.3, n_box), rng.uniform(0.0, 0.5, n_box)]
    floor = np.c_[rng.uniform(-3.0, 6.0, n_floor), rng.uniform(-0.9, 0.9, n_floor), rng.normal(0.0, 0.01, n_floor)]
    xyz = np.r_[wall, box, floor][rng.permutation(points)]
    xyz[::211] = np.nan
    dtype = np.dtype({'names': ['x', 'y', 'z', 'intensity', 'ring', 'time'],
                      'formats': ['<f4', '<f4', '<f4', '<f4', '<u2', '<f4'],
                      'offsets': [0, 4, 8, 16, 20, 24], 'itemsize': 32})
    cloud = np.zeros(points, dtype)
    cloud['x'], cloud['y'], cloud['z'] = xyz.T
    fields = [SimpleNamespace(name=n, offset=o, datatype=FLOAT32, count=1) for n, o in
              (('x', 0), ('y', 4), ('z', 8), ('intensity', 16), ('time', 24))]
    return SimpleNamespace(header=SimpleNamespace(frame_id='lidar'), height=1, width=points, fields=fields,
                           is_bigendian=False, point_step=32, row_step=32 * points, data=cloud.tobytes())


def wall_depth(width: int = 640, height: int = 480) -> tuple[SimpleNamespace, SimpleNamespace]:
    """A 16UC1 depth image of a wall 1.2 m ahead (and its CameraInfo), some pixels without depth."""
    depth = np.full((height, width), 1200, np.uint16)
    depth[:, ::13] = 0
    header = SimpleNamespace(frame_id='camera_depth_optical_frame')
    image = SimpleNamespace(header=header, height=height, width=width, encoding='16UC1', is_bigendian=0,
                            step=width * 2, data=depth.tobytes())
    info = SimpleNamespace(header=header, height=height, width=width,
                           k=[525.0, 0.0, width / 2, 0.0, 525.0, height / 2, 0.0, 0.0, 1.0])
    return image, info


def params() -> GuardParams:
    return GuardParams(enabled=True, footprint=FootprintParams(polygon='0.4, 0.2, -0.4, 0.2, -0.4, -0.2, 0.4, -0.2'),
                       stop_margin_m=0.05, slowdown_margin_m=0.2, time_before_collision_s=2.0,
                       laser=LaserParams(enabled=True, timeout_s=10.0),
                       pointcloud=PointCloudParams(enabled=True, timeout_s=10.0),
                       depth=DepthParams(enabled=True, optional=True, timeout_s=10.0))


def _p(times_s: list[float], q: float) -> float:
    return float(np.percentile(np.array(times_s) * 1e6, q))


def bench_guard(emit: Emit = _print, steps: int = 3000, messages: int = 200) -> None:
    guard = CollisionGuard(params())
    scan, cloud = corridor_scan(), corridor_cloud()
    image, info = wall_depth()
    guard.on_camera_info(info)

    def timed(fn: Callable[[], object], reps: int) -> tuple[list[float], list[float]]:
        fn()  # warm-up: caches (beam directions, pixel rays), allocator
        wall, cpu = [], []
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.thread_time()
            fn()
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - t0)
        return wall, cpu

    for name, fn in (('scan', lambda: guard.on_scan(scan, 0.0)), ('cloud', lambda: guard.on_cloud(cloud, 0.0)),
                     ('depth', lambda: guard.on_depth(image, 0.0))):
        wall, cpu = timed(fn, messages)
        emit(f'guard_{name}_convert_us_p99', _p(wall, 99), 'us')
        emit(f'guard_{name}_convert_cpu_us_p99', _p(cpu, 99), 'us')
    if guard.rejections:
        raise RuntimeError(f'the bench messages were rejected: {dict(guard.rejections)}')

    # Commands in every direction and mix, as a controller and a teleop send them; the box ahead and the
    # walls keep the approach computation busy (no early exit on an empty horizon).
    rng = np.random.default_rng(1)
    cmds = [(float(vx), float(vy), float(wz)) for vx, vy, wz in
            zip(rng.uniform(-0.3, 0.8, 64), rng.uniform(-0.3, 0.3, 64), rng.uniform(-1.0, 1.0, 64), strict=True)]
    cmds[:4] = [(0.6, 0.0, 0.0), (0.0, 0.3, 0.0), (0.0, 0.0, 0.8), (-0.3, 0.0, 0.0)]
    actions: dict[str, int] = {}
    wall, cpu = [], []
    for i in range(steps):
        cmd = cmds[i % len(cmds)]
        t0, c0 = time.perf_counter(), time.thread_time()
        _, state = guard.step(1.0, cmd)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - t0)
        actions[state.action.value] = actions.get(state.action.value, 0) + 1
    if 'stop' in actions or 'approach' not in actions:
        raise RuntimeError(f'the bench scene should slow the robot down, never stop it: {actions}')
    emit('guard_step_us_p50', _p(wall[100:], 50), 'us')
    emit('guard_step_us_p99', _p(wall[100:], 99), 'us')
    # CPU time of the calling thread: the work itself, without the time this process waited for a core
    # (the figure to read on a loaded machine).
    emit('guard_step_cpu_us_p99', _p(cpu[100:], 99), 'us')


# The reaction variants: (figure suffix, sensor, node). The laser through controller_node keeps the figure's
# first name (guard_reaction_ms_p99); the bound (<= 60 ms) holds for each.
REACTION_VARIANTS = (('', 'laser', 'controller_node'), ('_pointcloud', 'pointcloud', 'controller_node'),
                     ('_guard_node', 'laser', 'guard_node'))


def bench_guard_reaction(emit: Emit = _print, trials: int = 40) -> None:
    """guard_reaction_ms_p50/p99 on a real graph (module docstring), for each of REACTION_VARIANTS. Call after a
    private ROS domain is claimed (main does): rclpy is imported here."""
    for suffix, source, node in REACTION_VARIANTS:
        reactions = _reaction_s(source, node, trials)
        ms = np.array(reactions) * 1e3
        emit(f'guard_reaction_ms_p50{suffix}', float(np.percentile(ms, 50)), 'ms')
        emit(f'guard_reaction_ms_p99{suffix}', float(np.percentile(ms, 99)), 'ms')


def _cloud_msg(points_xyz: list[tuple[float, float, float]]) -> Any:
    """A PointCloud2 of x, y, z float32 in frame 'lidar' (mounted at the base origin by default)."""
    from sensor_msgs.msg import PointCloud2, PointField
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate('xyz')]
    data = np.array(points_xyz, np.float32).tobytes()
    msg = PointCloud2(height=1, width=len(points_xyz), fields=fields, is_bigendian=False, point_step=12,
                      row_step=12 * len(points_xyz), is_dense=True)
    msg.data = data
    msg.header.frame_id = 'lidar'
    return msg


def _reaction_s(source: str, node: str, trials: int) -> list[float]:
    """Seconds from the first sensor message with an obstacle in the stop zone to the first zero command, per
    trial: `node` (controller_node following a plan ahead, or guard_node passing a 20 Hz forward command)
    with the guard watching `source` (laser or pointcloud) at 20 Hz."""
    from geometry_msgs.msg import Twist
    from sensor_msgs.msg import LaserScan, PointCloud2

    from vln_ros import interface
    from vln_ros.harness.observer import Observer
    from vln_ros.harness.processes import executable, stop_process
    from vln_ros.msg import Waypoint, WaypointArray

    beams, increment = 271, 1.5 * math.pi / 270
    laser_free = [math.inf] * beams
    laser_blocked = list(laser_free)
    laser_blocked[beams // 2 - 3:beams // 2 + 4] = [0.32] * 7     # 0.02 m from the 0.3 m footprint: stop
    cloud_free = [(5.0, float(y), 0.3) for y in np.linspace(-1.0, 1.0, 50)]
    cloud_blocked = [*cloud_free, *((0.32, float(y), 0.3) for y in np.linspace(-0.05, 0.05, 7))]

    def sensor_msg(obstacle: bool) -> LaserScan | PointCloud2:
        if source == 'pointcloud':
            return _cloud_msg(cloud_blocked if obstacle else cloud_free)
        msg = LaserScan(angle_min=-0.75 * math.pi, angle_increment=increment, range_min=0.05, range_max=8.0,
                        ranges=laser_blocked if obstacle else laser_free)
        msg.header.frame_id = 'laser'
        return msg

    args = ['--ros-args', '-p', 'guard.enabled:=true', '-p', 'rate_hz:=50.0', '-p', 'diagnostics_period_s:=0.5']
    if source == 'pointcloud':
        args += ['-p', 'guard.laser.enabled:=false', '-p', 'guard.pointcloud.enabled:=true']
    proc = subprocess.Popen([executable(node), *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    probe = Observer('bench_guard_probe')
    lock = threading.Lock()
    state: dict[str, object] = {'obstacle': False, 'first_sent': None}
    cmds: list[tuple[float, float]] = []      # (receive time, |command|)
    guard_node = node == 'guard_node'

    def sensor_tick() -> None:
        with lock:
            msg = sensor_msg(bool(state['obstacle']))
            msg.header.stamp = probe.node.get_clock().now().to_msg()
            sensor.publish(msg)
            if state['first_sent'] is None:
                state['first_sent'] = time.perf_counter()

    def teleop_tick() -> None:
        twist = Twist()
        twist.linear.x = 0.4
        commands_in.publish(twist)

    def on_cmd(msg: Twist) -> None:
        speed = abs(msg.linear.x) + abs(msg.linear.y) + abs(msg.angular.z)
        with lock:
            cmds.append((time.perf_counter(), speed))

    def plan() -> WaypointArray:
        msg = WaypointArray(task_id='bench', waypoints=[Waypoint(dx=0.5, confidence=1.0)] * 20)
        msg.header.stamp = probe.node.get_clock().now().to_msg()
        msg.header.frame_id = 'base_link'
        return msg

    def wait(condition: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            with lock:
                if condition():
                    return True
            time.sleep(0.001)
        return False

    if source == 'pointcloud':
        sensor = probe.node.create_publisher(PointCloud2, interface.GUARD_POINTS, interface.SENSOR_QOS)
    else:
        sensor = probe.node.create_publisher(LaserScan, interface.SCAN, interface.SENSOR_QOS)
    plans = probe.node.create_publisher(WaypointArray, interface.WAYPOINTS, interface.PLAN_QOS)
    commands_in = probe.node.create_publisher(Twist, interface.CMD_VEL_IN, interface.CMD_QOS)
    probe.node.create_subscription(Twist, interface.CMD_VEL_OUT if guard_node else interface.CMD_VEL, on_cmd, 100)
    probe.node.create_timer(0.05, sensor_tick)      # 20 Hz
    if guard_node:
        probe.node.create_timer(0.05, teleop_tick)  # a teleop at 20 Hz
    inputs = commands_in if guard_node else plans
    reactions: list[float] = []
    try:
        if not wait(lambda: proc.poll() is None and inputs.get_subscription_count() > 0
                    and sensor.get_subscription_count() > 0, 30.0):
            raise RuntimeError(f'{node} did not come up (or did not subscribe to its {source} and its input)')
        rng = random.Random(1)
        for _ in range(trials):
            with lock:
                state['obstacle'], state['first_sent'] = False, None
            if not guard_node:
                plans.publish(plan())
            if not wait(lambda: bool(cmds) and cmds[-1][1] > 0.1, 10.0):
                raise RuntimeError(f'{node} did not move the robot with a free {source} and a command ahead')
            time.sleep(rng.uniform(0.05, 0.3))    # any phase of the sensor and control periods
            with lock:
                state['obstacle'], state['first_sent'] = True, None
            if not wait(lambda: state['first_sent'] is not None and any(
                    t >= state['first_sent'] and v == 0.0 for t, v in cmds[-50:]), 2.0):  # type: ignore[operator]
                raise RuntimeError(f'{node}: no zero command within 2 s of an obstacle in the stop zone')
            with lock:
                sent = float(state['first_sent'])  # type: ignore[arg-type]
                reactions.append(next(t for t, v in cmds if t >= sent and v == 0.0) - sent)
    finally:
        stop_process(proc)
        probe.close()
    return reactions


def main(argv: list[str]) -> int:
    what = argv[0] if argv else 'all'
    if what not in ('core', 'reaction', 'all'):
        print(f'usage: bench_guard.py [core|reaction|all], not {what!r}', file=sys.stderr)
        return 2
    if what in ('core', 'all'):
        bench_guard()
    if what in ('reaction', 'all'):
        from vln_ros.harness.run_setup import claim_private_run
        if claim_private_run('bench_guard') is None:    # before rclpy: this cmd_vel must not reach a robot
            return 2
        bench_guard_reaction()
    return 0


if __name__ == '__main__':
    raise SystemExit(main(sys.argv[1:]))
