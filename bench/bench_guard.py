"""The collision guard's hot paths (core/guard.py): one control step, and one message's conversion.

    python bench/bench_guard.py

One JSON object per line, {"name", "value", "unit"}: guard_step_us_p50/p99 (a control step with a 1,080-beam
scan and a 20,000-point cloud, commands in every direction, both sources fresh) and guard_scan_convert_us_p99,
guard_cloud_convert_us_p99, guard_depth_convert_us_p99 (a message to sorted base-frame points, including the
gap to the footprint and the merge per resolution cell). Each also as *_cpu_*: the calling thread's CPU time,
which a loaded machine does not inflate. Timings are this machine's as it is: compare runs side by side.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from types import SimpleNamespace

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


if __name__ == '__main__':
    bench_guard()
