"""sim/robot: the simulated base (lag, limits, command timeout, contacts, clearance) on sim_node's base parameters,
and its odometry. No ROS."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vln_ros.core.control import Pose2D, Twist2D, wrap_angle
from vln_ros.sim.params import BaseParams, OdomParams, SimParams
from vln_ros.sim.robot import MAX_ACCEL_ANGULAR, MAX_ACCEL_LINEAR, Base, Odometry, body_motion
from vln_ros.sim.scene import Landmark, Scene, Wall
from vln_ros.sim.world import SimWorld

DT = 0.005   # the simulator's 200 Hz
GREY = (128, 128, 128)
S = BaseParams()


def room(x0: float = -5.0, y0: float = -5.0, x1: float = 5.0, y1: float = 5.0,
         landmarks: tuple[Landmark, ...] = (), extra: tuple[Wall, ...] = ()) -> Scene:
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    walls = tuple(Wall(*a, *b, GREY) for a, b in zip(corners, corners[1:] + corners[:1], strict=True)) + extra
    return Scene(0, walls, (), landmarks, Pose2D(), Pose2D(1.0, 0.0, 0.0), ((0.0, 0.0), (1.0, 0.0)), 'go', 'en',
                 'test')


def drive(base: Base, t0: float, seconds: float, command: tuple[float, float, float] | None,
          each=None) -> float:
    """Step for `seconds`, sending `command` every step (None: no commands); each(base) after every step."""
    t = t0
    for _ in range(round(seconds / DT)):
        t += DT
        if command is not None:
            base.command(*command, t)
        base.step(DT, t)
        if each is not None:
            each(base)
    return t


def wiggle(s: float) -> tuple[float, float, float]:
    """A command that keeps changing, at time s."""
    return 0.4 + 0.3 * math.sin(s), 0.2 * math.cos(1.7 * s), 0.8 * math.sin(0.6 * s)


def test_tracks_the_command_with_a_first_order_lag():
    base = Base(room())
    t = drive(base, 0.0, S.lag_s, (0.2, 0.0, 0.3))   # small steps: the acceleration limits stay out of the way
    assert base.velocity.vx == pytest.approx(0.2 * (1 - math.exp(-1)), rel=0.02)
    assert base.velocity.wz == pytest.approx(0.3 * (1 - math.exp(-1)), rel=0.02)
    drive(base, t, 1.0, (0.2, 0.0, 0.3))
    assert base.velocity.vx == pytest.approx(0.2, rel=1e-2) and base.velocity.wz == pytest.approx(0.3, rel=1e-2)


def test_straight_motion_is_integrated_exactly():
    base = Base(room())
    drive(base, 0.0, 2.0, (0.4, 0.0, 0.0))
    # Discrete first-order lag from rest: x = v (T - lag (1 - exp(-T / lag))) up to the discretisation.
    expected = 0.4 * (2.0 - S.lag_s * (1 - math.exp(-2.0 / S.lag_s)))
    assert base.pose.x == pytest.approx(expected, abs=0.005)
    assert base.pose.y == 0.0 and base.distance_travelled_m == pytest.approx(base.pose.x)


def test_hardware_limits_on_speed_and_acceleration():
    base = Base(room(-50, -50, 50, 50))
    previous = [base.velocity]

    def within_limits(b: Base) -> None:
        v, p = b.velocity, previous[-1]
        assert abs(v.vx) <= S.max_linear_x + 1e-12 and abs(v.vy) <= S.max_linear_y + 1e-12
        assert abs(v.wz) <= S.max_angular_z + 1e-12
        assert math.hypot(v.vx - p.vx, v.vy - p.vy) <= MAX_ACCEL_LINEAR * DT + 1e-12
        assert abs(v.wz - p.wz) <= MAX_ACCEL_ANGULAR * DT + 1e-12
        previous.append(v)

    drive(base, 0.0, 2.0, (5.0, -3.0, 9.0), within_limits)
    assert (base.velocity.vx, base.velocity.vy, base.velocity.wz) == pytest.approx((1.0, -0.5, 1.5), abs=1e-3)
    # It was the acceleration limit that shaped the start: 2 m/s^2 on (vx, vy) for at least a few steps.
    first = previous[1]
    assert math.hypot(first.vx, first.vy) == pytest.approx(MAX_ACCEL_LINEAR * DT)


def test_the_simulated_world_drives_its_base_with_sim_nodes_base_parameters():
    params = SimParams(base=BaseParams(max_linear_x=0.2, max_angular_z=0.3, radius_m=0.35))
    world = SimWorld(params)
    for _ in range(2):                       # the first episode's base, and the next one's
        assert world.base.params is params.base
        for _ in range(150):
            world.command(1.0, 0.0, 1.0)
            world.step()
        assert (world.base.velocity.vx, world.base.velocity.wz) == pytest.approx((0.2, 0.3), abs=1e-3)
        world.reset(3)


def test_stops_by_itself_when_commands_stop():
    base = Base(room())
    t = drive(base, 0.0, 1.0, (0.5, 0.0, 0.0))
    t = drive(base, t, S.cmd_timeout_s - 0.05, None)
    assert base.velocity.vx == pytest.approx(0.5, abs=0.01)   # still the last command
    t = drive(base, t, 1.5, None)
    assert base.velocity.is_zero()
    standing = base.pose
    t = drive(base, t, 1.0, None)
    assert base.pose == standing
    drive(base, t, 1.0, (0.5, 0.0, 0.0))
    assert base.velocity.vx == pytest.approx(0.5, abs=0.01)   # a new command moves it again


def test_never_commanded_stands_still():
    base = Base(room())
    drive(base, 0.0, 1.0, None)
    assert base.pose == Pose2D() and base.velocity.is_zero()


def test_driven_into_a_wall_it_stops_outside_and_counts_one_contact():
    base = Base(room(x1=2.0))
    clearances = []
    t = drive(base, 0.0, 3.0, (1.0, 0.0, 0.0), lambda b: clearances.append(b.clearance_at(b.pose.x, b.pose.y)))
    assert min(clearances) >= 0.0 and base.min_clearance_m >= 0.0
    assert 2.0 - S.radius_m - 0.02 <= base.pose.x <= 2.0 - S.radius_m
    assert base.collisions == 1 and base.in_contact and base.velocity.is_zero()
    t = drive(base, t, 2.0, (1.0, 0.0, 0.0))   # still pressing (and creeping by the lag's tiny steps)
    assert base.collisions == 1 and base.pose.x <= 2.0 - S.radius_m
    t = drive(base, t, 1.0, (-0.5, 0.0, 0.0))  # backs off: the contact is over
    assert not base.in_contact and base.collisions == 1
    drive(base, t, 3.0, (1.0, 0.0, 0.0))        # and a second run into the wall is a second contact
    assert base.collisions == 2


def test_turning_on_the_spot_against_a_wall_is_allowed():
    base = Base(room(x1=2.0))
    t = drive(base, 0.0, 3.0, (1.0, 0.0, 0.0))
    drive(base, t, 1.0, (0.0, 0.0, 1.0))
    assert base.pose.yaw > 0.5 and base.collisions == 1


def test_min_clearance_to_a_landmark_box():
    plant = Landmark(2.0, 0.8, 0.4, 0.4, 1.0, 'plant', GREY)     # its near edge at y = 0.6
    base = Base(room(landmarks=(plant,)))
    assert base.min_clearance_m == pytest.approx(math.hypot(1.8, 0.6) - S.radius_m)
    drive(base, 0.0, 4.0, (1.0, 0.0, 0.0))
    assert base.pose.x > 2.5 and base.collisions == 0
    assert base.min_clearance_m == pytest.approx(0.6 - S.radius_m, abs=1e-9)


def test_clearance_matches_brute_force_geometry():
    slanted = Wall(-3.0, 2.0, 1.0, 4.0, GREY)
    crate = Landmark(-2.0, -2.0, 1.0, 0.6, 1.0, 'crate', GREY)
    base = Base(room(extra=(slanted,), landmarks=(crate,)))
    rng = np.random.default_rng(3)
    walls = room(extra=(slanted,)).walls
    along = np.linspace(0.0, 1.0, 4001)[:, None]
    samples = np.concatenate([(w.x0, w.y0) + along * (w.x1 - w.x0, w.y1 - w.y0) for w in walls])  # 2.5 mm apart
    for x, y in rng.uniform(-4.5, 4.5, size=(200, 2)):
        nearest_wall = np.hypot(samples[:, 0] - x, samples[:, 1] - y).min()
        dx, dy = abs(x + 2.0) - 0.5, abs(y + 2.0) - 0.3   # the crate: outside, the corner's distance; inside, -depth
        box = math.hypot(max(dx, 0.0), max(dy, 0.0)) if dx > 0 or dy > 0 else max(dx, dy)
        assert base.clearance_at(x, y) == pytest.approx(min(nearest_wall, box) - S.radius_m, abs=2e-3)


def test_a_pose_inside_an_obstacle_is_refused():
    base = Base(room(landmarks=(Landmark(2.0, 0.0, 1.0, 1.0, 1.0, 'cabinet', GREY),)))
    with pytest.raises(ValueError):
        base.reset(Pose2D(2.0, 0.6, 0.0))
    with pytest.raises(ValueError):
        base.reset(Pose2D(4.9, 0.0, 0.0))   # the circle overlaps the wall at x = 5


def test_non_finite_commands_become_zero_and_are_counted():
    base = Base(room())
    t = 0.0
    for _ in range(100):
        t += DT
        base.command(math.nan, 0.2, math.inf, t)
        base.step(DT, t)
    assert base.nonfinite_commands == 100 and base.pose.is_finite()
    assert base.velocity.vx == 0.0 and base.velocity.wz == 0.0 and base.velocity.vy > 0.1


def test_a_constant_twist_moves_along_the_exact_arc():
    quarter = body_motion(Twist2D(1.0, 0.0, math.pi / 2), 1.0)     # a quarter circle of radius 2 / pi
    assert (quarter.x, quarter.y, quarter.yaw) == pytest.approx((2 / math.pi, 2 / math.pi, math.pi / 2))
    sideways = body_motion(Twist2D(0.0, 1.0, math.pi / 2), 1.0)    # strafing left while turning left
    assert (sideways.x, sideways.y) == pytest.approx((-2 / math.pi, 2 / math.pi))
    straight = body_motion(Twist2D(0.3, -0.2, 0.0), 2.0)
    assert (straight.x, straight.y, straight.yaw) == pytest.approx((0.6, -0.4, 0.0))


def test_the_motion_hardly_depends_on_the_step_length():
    poses = []
    for dt in (0.001, 0.02):   # commands every 20 ms either way
        base, t = Base(room(-50, -50, 50, 50)), 0.0
        for k in range(250):
            base.command(*wiggle(k * 0.02), t)
            for _ in range(round(0.02 / dt)):
                t += dt
                base.step(dt, t)
        poses.append(base.pose)
    assert math.hypot(poses[0].x - poses[1].x, poses[0].y - poses[1].y) < 0.01
    assert abs(wrap_angle(poses[0].yaw - poses[1].yaw)) < 0.01


def test_a_long_step_is_split():
    one, many = Base(room()), Base(room())
    one.command(0.5, 0.0, 1.0, 0.0)
    many.command(0.5, 0.0, 1.0, 0.0)
    one.step(0.1, 0.1)
    for k in range(1, 6):
        many.step(0.02, 0.02 * k)
    assert (one.pose.x, one.pose.y, one.pose.yaw) == pytest.approx((many.pose.x, many.pose.y, many.pose.yaw), abs=1e-12)
    assert one.pose.x > 0.0


# -- odometry -------------------------------------------------------------------------------------------

def odometry(**errors: float) -> Odometry:
    """Odometry with the given errors and no others (sim_node's defaults have some)."""
    exact = {'scale_error': 0.0, 'yaw_drift_rad_per_m': 0.0, 'noise_m': 0.0}
    return Odometry(OdomParams(**{**exact, **errors}), np.random.default_rng(0))


def drive_with_odometry(base: Base, odom: Odometry, t0: float, seconds: float, command) -> tuple[float, Pose2D]:
    t, pose = t0, Pose2D()
    for k in range(round(seconds / DT)):
        t += DT
        base.command(*command(k * DT), t)
        base.step(DT, t)
        pose, _ = odom.update(DT, base.velocity)
    return t, pose


def test_odometry_without_errors_is_the_true_motion_from_where_it_started():
    scene = room(-50, -50, 50, 50)
    base, odom = Base(scene), odometry()
    base.reset(Pose2D(3.0, -2.0, 1.0))
    _, pose = drive_with_odometry(base, odom, 0.0, 8.0, wiggle)
    expected = Pose2D(3.0, -2.0, 1.0).inverse().compose(base.pose)
    assert base.distance_travelled_m > 2.0
    assert (pose.x, pose.y, pose.yaw) == pytest.approx((expected.x, expected.y, expected.yaw), abs=1e-9)


def test_odometry_scale_error_and_yaw_drift():
    base, odom = Base(room(-50, -50, 50, 50)), odometry(scale_error=0.05, yaw_drift_rad_per_m=0.1)
    _, pose = drive_with_odometry(base, odom, 0.0, 5.0, lambda s: (0.5, 0.0, 0.0))
    travelled = base.pose.x
    assert base.pose.y == 0.0 and base.pose.yaw == 0.0
    assert pose.yaw == pytest.approx(0.1 * travelled, rel=1e-6)
    # On the drifting arc, the distance along it is what is scaled.
    arc = 2 * math.sin(pose.yaw / 2) / pose.yaw
    assert math.hypot(pose.x, pose.y) == pytest.approx(1.05 * travelled * arc, rel=1e-4)


def test_odometry_does_not_jump_when_the_robot_is_teleported():
    scene = room(-50, -50, 50, 50)
    base, odom = Base(scene), odometry()
    t, before = drive_with_odometry(base, odom, 0.0, 3.0, wiggle)
    base.reset(Pose2D(-20.0, 30.0, -2.0))        # the next episode
    after, _ = odom.update(DT, base.velocity)
    assert after == before
    _, later = drive_with_odometry(base, odom, t, 2.0, lambda s: (0.5, 0.0, 0.0))
    moved = before.inverse().compose(later)
    assert math.hypot(moved.x, moved.y) == pytest.approx(base.distance_travelled_m, rel=1e-6)
    odom.reset()                                   # only a fresh simulator starts the odom frame again
    assert odom.update(DT, Twist2D())[0] == Pose2D()


def test_odometry_noise_is_white_and_deterministic():
    readings = []
    for _ in range(2):
        odom = Odometry(OdomParams(scale_error=0.0, yaw_drift_rad_per_m=0.0, noise_m=0.02), np.random.default_rng(7))
        readings.append([odom.update(DT, Twist2D(0.5, 0.0, 0.0))[0] for _ in range(2000)])
    assert readings[0] == readings[1]
    errors = np.array([(p.x - 0.5 * DT * (k + 1), p.y) for k, p in enumerate(readings[0])])
    assert errors.std(axis=0) == pytest.approx((0.02, 0.02), rel=0.1)
    assert np.abs(errors[-200:].mean(axis=0)).max() < 0.005    # no random walk: the error does not grow
