"""The simulator's 2D laser (vln_ros/sim/laser.py) and its sweeps in the ROS-free simulator (sim/service.py): what a
beam returns from walls and boxes, REP 103 angles, REP 117 non-returns, seeded bounded noise, the rate and stamps.
The expected ranges come from plane geometry worked out here, not from the laser's own code."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vln_ros.core.config import ParameterError, validate_params
from vln_ros.core.control import Pose2D
from vln_ros.sim.laser import NOISE_CUTOFF, Laser, scan_geometry
from vln_ros.sim.params import LaserMountParams, LaserParams, SimParams
from vln_ros.sim.scene import Landmark, Scene, Wall

GREY = (128, 128, 128)
ORIGIN = Pose2D(0.0, 0.0, 0.0)


def scene_of(walls: tuple[Wall, ...] = (), landmarks: tuple[Landmark, ...] = ()) -> Scene:
    return Scene(seed=0, walls=walls, doors=(), landmarks=landmarks, start=ORIGIN, goal=ORIGIN, route=((0, 0),),
                 instruction='', language='en', kind='test')


def laser(x_m: float = 0.0, noise_m: float = 0.0, **kw: float) -> Laser:
    return Laser(LaserParams(noise_m=noise_m, mount=LaserMountParams(x_m=x_m), **kw))


def beam(lidar: Laser, angle_deg: float) -> int:
    """The index of the beam at angle_deg."""
    index = round((math.radians(angle_deg) - lidar.geometry.angle_min) / lidar.geometry.angle_increment)
    assert lidar.geometry.angles[index] == pytest.approx(math.radians(angle_deg))
    return index


WALL_AHEAD = Wall(2.0, -20.0, 2.0, 20.0, GREY)     # across the way, 2 m ahead of the base origin


def test_a_beam_straight_at_a_wall_two_metres_ahead_returns_two_metres_less_the_mount_offset():
    lidar = laser(x_m=0.3)
    ranges = lidar.scan(scene_of((WALL_AHEAD,)), ORIGIN, np.random.default_rng(0))
    assert ranges[beam(lidar, 0.0)] == pytest.approx(1.7, abs=1e-6)
    assert ranges[beam(lidar, 45.0)] == pytest.approx(1.7 * math.sqrt(2), abs=1e-5)     # slanted: 1.7 / cos 45
    assert ranges[beam(lidar, -30.0)] == pytest.approx(1.7 / math.cos(math.radians(30)), abs=1e-5)


def test_beams_that_miss_or_reach_past_range_max_return_plus_inf():
    lidar = laser(x_m=0.3)
    ranges = lidar.scan(scene_of((WALL_AHEAD,)), ORIGIN, np.random.default_rng(0))
    assert np.isposinf(ranges[beam(lidar, 120.0)]) and np.isposinf(ranges[beam(lidar, -90.0)])   # away from the wall
    # 1.7 / cos(a) > 8 m beyond about 77.7 degrees: the wall is there, but out of range
    assert np.isposinf(ranges[beam(lidar, 80.0)]) and np.isfinite(ranges[beam(lidar, 77.0)])
    assert np.isposinf(laser().scan(scene_of(), ORIGIN, np.random.default_rng(0))).all()   # nothing at all


def test_a_landmark_box_is_seen_and_a_box_below_the_laser_plane_is_not():
    tall = Landmark(3.0, 1.0, 1.0, 0.6, 1.2, 'cabinet', GREY)    # near face at x = 2.5, from y = 0.7 to 1.3
    low = Landmark(3.0, -1.0, 1.0, 0.6, 0.1, 'mat', GREY)        # 0.1 m tall, under the laser at 0.2 m
    lidar = laser(x_m=0.5)
    ranges = lidar.scan(scene_of(landmarks=(tall, low)), ORIGIN, np.random.default_rng(0))
    toward_tall = math.degrees(math.atan2(1.0, 2.0))             # from the laser at (0.5, 0) to (2.5, 1)
    toward_low = math.degrees(math.atan2(-1.0, 2.0))
    k = beam(lidar, round(toward_tall * 2) / 2)
    assert ranges[k] == pytest.approx(2.0 / math.cos(lidar.geometry.angles[k]), abs=1e-5)
    assert np.isposinf(ranges[beam(lidar, round(toward_low * 2) / 2)])
    assert np.isposinf(ranges[beam(lidar, 0.0)])                     # between the two boxes


def test_angles_start_right_and_increase_counter_clockwise_as_rep_103_says():
    g = scan_geometry(270.0, 0.5)
    assert g.count == 541
    assert (g.angle_min, g.angle_max) == pytest.approx((-0.75 * math.pi, 0.75 * math.pi))
    assert np.all(np.diff(g.angles) > 0)
    left_wall = Wall(-20.0, 1.0, 20.0, 1.0, GREY)                # 1 m to the robot's left (+y)
    lidar = laser()
    ranges = lidar.scan(scene_of((left_wall,)), ORIGIN, np.random.default_rng(0))
    assert ranges[beam(lidar, 90.0)] == pytest.approx(1.0, abs=1e-6)
    assert np.isfinite(ranges[lidar.geometry.angles > math.radians(10)]).all()
    assert np.isposinf(ranges[lidar.geometry.angles < 0]).all()
    # the robot turned to face the wall: now the beam straight ahead hits it, the one at +90 degrees does not
    turned = lidar.scan(scene_of((left_wall,)), Pose2D(0.0, 0.0, math.pi / 2), np.random.default_rng(0))
    assert turned[beam(lidar, 0.0)] == pytest.approx(1.0, abs=1e-6) and np.isposinf(turned[beam(lidar, 95.0)])


def test_a_full_circle_does_not_repeat_its_first_beam():
    g = scan_geometry(360.0, 1.0)
    assert g.count == 360 and g.angle_max - g.angle_min == pytest.approx(math.radians(359))


def test_a_surface_nearer_than_range_min_is_minus_inf():
    lidar = laser(x_m=0.0)
    ranges = lidar.scan(scene_of((Wall(0.03, -1.0, 0.03, 1.0, GREY),)), ORIGIN, np.random.default_rng(0))
    assert np.isneginf(ranges[beam(lidar, 0.0)])


def test_noise_is_seeded_and_bounded():
    lidar = laser(x_m=0.3, noise_m=0.02)
    scene = scene_of((WALL_AHEAD,))
    truth = lidar.true_ranges(scene, ORIGIN)
    one = lidar.scan(scene, ORIGIN, np.random.default_rng(5))
    assert np.array_equal(one, lidar.scan(scene, ORIGIN, np.random.default_rng(5)))
    assert not np.array_equal(one, lidar.scan(scene, ORIGIN, np.random.default_rng(6)))
    seen = np.isfinite(one)
    error = one[seen] - truth[seen]
    assert seen.sum() > 300 and np.abs(error).max() <= NOISE_CUTOFF * 0.02 + 1e-6
    assert 0.01 < error.std() < 0.03                              # it is noise of about noise_m, not nothing
    assert (one[seen] >= 0.05).all() and (one[seen] <= 8.0).all()


def test_contradictory_ranges_fail_naming_both_parameters():
    with pytest.raises(ValueError, match=r'laser.range_min_m \(0.6\) must be smaller than laser.range_max_m \(0.5\)'):
        LaserParams(range_min_m=0.6, range_max_m=0.5)
    with pytest.raises(ParameterError, match=r'laser.step_deg \(6.0\) must not exceed laser.fov_deg \(5.0\)'):
        validate_params(SimParams, {'laser.fov_deg': 5.0, 'laser.step_deg': 6.0})


def test_the_simulator_sweeps_at_rate_hz_of_simulated_time_stamped_when_taken_from_the_true_pose():
    from vln_ros.sim.service import SimService

    service = SimService(SimParams(seed=1), lambda scene, pose, people, _robots: None)
    scans = []
    for _ in range(200):                                       # 2 s of simulated time at 100 Hz
        out = service.step()
        if out.scan is not None:
            assert out.scan[0] == pytest.approx(out.t_s)      # stamped with the time it was taken
            scans.append(out.scan)
    assert 29 <= len(scans) <= 31                              # 15 Hz
    truth = service.laser.true_ranges(service.world.scene, service.world.scene.start)
    stamp_s, ranges = scans[-1]
    assert len(ranges) == 541
    near = truth <= 8.0
    assert np.abs(ranges[near] - truth[near]).max() <= 0.03 + 1e-6 and np.isposinf(ranges[~near]).all()
    assert near.sum() > 100                                    # the start pose sees walls


def test_a_disabled_laser_sweeps_nothing():
    from vln_ros.sim.service import SimService

    service = SimService(SimParams.model_validate({'laser': {'enabled': False}}),
                         lambda scene, pose, people, _robots: None)
    assert all(service.step().scan is None for _ in range(50))
