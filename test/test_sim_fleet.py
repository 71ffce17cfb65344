"""Several robots in one simulated world (vln_ros/sim/fleet.py, world.py, service.py), without a graph: their places
in the queue, contacts between them counted apart, each one in the others' laser and camera, and the side channel
asking for one robot's data by name."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from vln_ros.sim import fleet, scenes
from vln_ros.sim.api import FaultRequest, OracleRequest, ResetRequest
from vln_ros.sim.params import SimParams, robot_names
from vln_ros.sim.render import RobotsView, depth_image, render
from vln_ros.sim.service import SimService
from vln_ros.sim.world import SimWorld

TWO = {'seed': 0, 'robots': ['r1', 'r2']}


def test_one_robot_keeps_the_scene_exactly_and_an_empty_robots_parameter_is_the_single_robot():
    scene = scenes.generate(3)
    assert fleet.staggered(scene, 1) == [scene]
    world = SimWorld(SimParams(seed=3))
    assert world.names == ('',) and world.robot().scene is world.scene


@pytest.mark.parametrize('seed', [0, 1, 2, 5, 8])
def test_four_robots_start_apart_on_the_route_free_of_walls_and_each_walks_as_far_to_a_goal_of_its_own(seed):
    scene = scenes.generate(seed)
    own = fleet.staggered(scene, 4)
    world = SimWorld(SimParams(seed=seed, robots=('r1', 'r2', 'r3', 'r4')))
    assert [r.scene for r in world.robots] == own and own[0].goal == scene.goal
    for i, a in enumerate(own):
        assert world.robots[i].base.clearance_at(a.start.x, a.start.y) >= 0.0
        assert fleet.MIN_WALK_M <= a.route_length_m <= scene.route_length_m - 3 * fleet.MIN_SPACING_M + 1e-6
        for b in own[i + 1:]:
            assert math.hypot(a.start.x - b.start.x, a.start.y - b.start.y) >= fleet.MIN_SPACING_M - 1e-6
            assert math.hypot(a.goal.x - b.goal.x, a.goal.y - b.goal.y) >= fleet.MIN_SPACING_M - 1e-6


def test_a_robot_driven_into_the_one_ahead_stops_at_its_body_and_the_contact_is_counted_apart_once():
    world = SimWorld(SimParams.model_validate(TWO))
    leader, follower = world.robots
    for _ in range(400):                            # 4 s at 1 m/s: far more than the gap between them
        world.command(1.0, 0.0, 0.0, 'r2')
        world.step_all()
    gap = math.hypot(leader.base.pose.x - follower.base.pose.x, leader.base.pose.y - follower.base.pose.y)
    assert gap >= 2 * 0.3 - 1e-9 and gap < 2 * 0.3 + 0.1
    assert follower.base.robot_collisions == 1 and follower.base.collisions == 0
    assert leader.base.robot_collisions == 0 and leader.base.distance_travelled_m == 0.0
    assert world.episode('r2')['robot_collisions'] == 1 and world.episode('r1')['robot_collisions'] == 0


def test_two_robots_closing_head_on_each_count_the_contact_they_made():
    """A contact counts for the robot that made the step (docs/eval.md): a follower into a standing leader is one,
    two robots driving into each other are one each, so the run's robot coll. is 2 for that meeting."""
    world = SimWorld(SimParams.model_validate(TWO))
    leader, follower = world.robots
    for _ in range(300):
        world.command(-0.5, 0.0, 0.0, 'r1')   # the leader backs into the follower driving up to it
        world.command(0.5, 0.0, 0.0, 'r2')
        world.step_all()
    gap = math.hypot(leader.base.pose.x - follower.base.pose.x, leader.base.pose.y - follower.base.pose.y)
    assert gap >= 2 * 0.3 - 1e-9
    assert world.episode('r1')['robot_collisions'] == 1 and world.episode('r2')['robot_collisions'] == 1
    assert world.episode_counts()['robot_collisions'] == 2


def test_each_robots_laser_sees_the_other_robot_ahead_at_its_true_distance():
    service = SimService(SimParams.model_validate(TWO), lambda scene, pose, people, _robots: None)
    first: list = [None, None]   # each robot's first scan (staggered: in different steps)
    while None in first:
        for i, out in enumerate(service.step_all()):
            first[i] = first[i] if first[i] is not None or out.scan is None else out
    outs = first
    leader, follower = service.world.robots
    ahead = int(np.argmin(np.abs(service.laser.geometry.angles)))       # the beam straight ahead
    gap = math.hypot(leader.base.pose.x - follower.base.pose.x, leader.base.pose.y - follower.base.pose.y)
    assert outs[1].scan[1][ahead] == pytest.approx(gap - 0.3, abs=0.04)
    alone = service.laser.true_ranges(service.world.physical, follower.base.pose)
    assert alone[ahead] > gap + 0.5                                     # without the leader the beam goes on
    behind = int(np.argmin(np.abs(np.abs(service.laser.geometry.angles) - math.radians(135))))
    assert np.isfinite(outs[0].scan[1]).any() and outs[0].scan[1][behind] > 0.0   # the leader's own sweep


def test_each_robots_camera_draws_the_other_robot_and_not_itself():
    world = SimWorld(SimParams.model_validate(TWO))
    leader, follower = world.robots
    others = RobotsView(world.others_of('r2'), 0.3)
    seen = render(world.physical, follower.base.pose, people=world.people_view(), robots=others)
    plain = render(world.physical, follower.base.pose, people=world.people_view())
    changed = np.any(seen != plain, axis=2)
    assert changed[:, seen.shape[1] // 2].any()                         # in the middle column: it is straight ahead
    assert not changed[:, :5].any() and not changed[:, -5:].any()       # and only there
    assert np.array_equal(world.others_of('r1'), [[follower.base.pose.x, follower.base.pose.y]])


def test_each_robots_depth_camera_measures_the_other_robot_ahead():
    params = SimParams.model_validate({**TWO, 'depth': {'enabled': True, 'encoding': '32FC1'}})
    service = SimService(params, lambda scene, pose, people, _robots: None)
    leader, follower = service.world.robots
    depth = service.depth_frame(follower)
    middle = depth[:, depth.shape[1] // 2]
    gap = math.hypot(leader.base.pose.x - follower.base.pose.x, leader.base.pose.y - follower.base.pose.y)
    low = middle[int(depth.shape[0] * 0.55)]       # just below the optical axis: the leader's body (0.55 m tall)
    assert low == pytest.approx(gap - 0.3, abs=0.05)
    pose = follower.base.pose
    alone = depth_image(service.world.physical, pose, service.depth_camera)[:, depth.shape[1] // 2]
    assert alone[int(depth.shape[0] * 0.55)] > gap + 0.5                # without the leader: the floor further on


def test_the_side_channel_answers_for_the_robot_it_names_and_refuses_one_it_does_not_have():
    service = SimService(SimParams.model_validate(TWO), lambda scene, pose, people, _robots: None)
    for _ in range(5):
        service.step_all()
    stamp_ns = round(service.world.t_s * 1e9)
    service.oracle(OracleRequest(stamp_ns=stamp_ns, robot='r2'))
    assert len(service.episode('r2').answers) == 1 and service.episode('r1').answers == []
    assert service.episode('r2').answers[0].pose[:2] == pytest.approx(
        [service.world.robots[1].scene.start.x, service.world.robots[1].scene.start.y], abs=1e-6)
    assert service.fault(FaultRequest(camera_frozen=True, robot='r2')).camera_frozen
    assert not service.world.robot('r1').camera_frozen
    with pytest.raises(LookupError, match="no robot 'r9' in this simulator \\(robots: r1, r2\\)"):
        service.oracle(OracleRequest(stamp_ns=stamp_ns, robot='r9'))
    physics = threading.Thread(target=service.idle, args=(3.0,), daemon=True)   # takes the reset, as sim_node's
    physics.start()
    reply = service.reset(ResetRequest(seed=2))
    assert [r.robot for r in reply.robots] == ['r1', 'r2'] and reply.goal == reply.robots[0].goal


@pytest.mark.parametrize(('robots', 'message'), [
    (('r1', 'r1'), "robots: 'r1' is listed twice"),
    (('r1', '2x'), "robots: '2x' is not a relative ROS namespace"),
    (('r1', '/r2'), "robots: '/r2' is not a relative ROS namespace"),
    (tuple(f'r{i}' for i in range(9)), 'robots: 9 robots; at most 8'),
])
def test_a_bad_robots_parameter_is_refused_naming_it(robots, message):
    with pytest.raises(ValueError, match=message.replace('(', '\\(')):
        robot_names(robots)


def test_the_oracle_backend_asks_for_the_ground_truth_of_its_own_robot_over_the_side_channel():
    from vln_ros.core.backends.base import Request
    from vln_ros.core.backends.oracle import OracleBackend, OracleParams
    from vln_ros.core.prompts import Prompt
    from vln_ros.sim.api import ApiServer, SimApiError, SimClient

    service = SimService(SimParams.model_validate(TWO), lambda scene, pose, people, _robots: None)
    for _ in range(5):
        service.step_all()
    server = ApiServer(service, port=0)
    client = SimClient.on_port(server.start(), timeout_s=5.0)
    try:
        stamp_ns = round(service.world.t_s * 1e9)
        backend = OracleBackend(OracleParams(url=client.url, latency_s=0.0, robot='r2'))
        backend.generate(Request(b'', stamp_ns, Prompt('system', 'user', {}), 64, False, 1))
        assert len(client.episode(robot='r2').answers) == 1 and client.episode(robot='r1').answers == []
        assert client.episode().robot == 'r1' and client.episode(robot='r2').robot == 'r2'
        with pytest.raises(SimApiError) as refused:
            client.episode(robot='r3')
        assert refused.value.status == 409 and "no robot 'r3'" in refused.value.error
    finally:
        server.stop()


def test_the_robots_cameras_and_lasers_take_turns_so_no_physics_step_renders_for_all_of_them():
    """Four robots rendering and scanning in the same step made it 20 ms long (the budget is 10): /clock came in
    bursts, and the controllers' 50 Hz timers on it skipped periods (fleet_cmd_vel_rate_hz_min 35-42 Hz, on 2 cores
    and on 16 alike). Each robot senses a share of a period after the one before."""
    four = {**TWO, 'robots': ['r1', 'r2', 'r3', 'r4']}
    service = SimService(SimParams.model_validate(four), lambda scene, pose, people, _robots: object())
    frames, scans = [], []
    for _ in range(200):   # 2 s: 20 frames and 30 scans a robot
        outs = service.step_all()
        frames.append(sum(len(o.frames) for o in outs))
        scans.append(sum(o.scan is not None for o in outs))
    assert max(frames) == 1 and max(scans) == 1
    assert 4 * 19 <= sum(frames) <= 4 * 21 and 4 * 30 <= sum(scans) <= 4 * 31   # each robot still at its rate


def test_every_robots_camera_and_odometry_keep_their_period_exactly_after_the_first():
    """Summed periods drift by float error, and a sensor due at a step's time was taken one step late: some
    robots' frames came 0.09 and 0.11 s apart at 10 Hz (odometry 0.01 and 0.03 s at 50 Hz)."""
    world = SimWorld(SimParams(robots=('r1', 'r2', 'r3', 'r4'), seed=3))
    frames: list[list[float]] = [[] for _ in range(4)]
    odometry: list[list[float]] = [[] for _ in range(4)]
    for _ in range(3000):   # 30 simulated seconds
        t, due = world.step_all()
        for i, d in enumerate(due):
            if d.capture:
                frames[i].append(d.capture.stamp_s)
            if d.odom:
                odometry[i].append(t)
    for times, period in [(f, 0.1) for f in frames] + [(o, 0.02) for o in odometry]:
        gaps = np.diff(times[1:])   # the first sample comes at the first step, whatever the phase
        assert len(gaps) > 200 and np.allclose(gaps, period, atol=1e-6), sorted(set(np.round(gaps, 4)))


@pytest.mark.parametrize('sensor', ['camera', 'laser', 'depth', 'odom'])
def test_a_sensor_faster_than_the_physics_is_refused_naming_both_rates(sensor):
    """A 60 Hz camera on 50 Hz physics gave 50 frames a second, and said nothing."""
    on = {'enabled': True} if sensor in ('laser', 'depth') else {}
    with pytest.raises(ValueError, match=f'{sensor}.rate_hz 45 is above physics_rate_hz 40: a sensor samples at '
                                         'most once a physics step'):
        SimParams.model_validate({'physics_rate_hz': 45.0 - 5.0, 'odom': {'rate_hz': 40.0},
                                  sensor: {'rate_hz': 45.0, **on}})
    if on:   # a sensor that is off is not checked
        SimParams.model_validate({'physics_rate_hz': 40.0, 'odom': {'rate_hz': 40.0},
                                  sensor: {'rate_hz': 45.0, 'enabled': False}})


def test_clutter_in_a_world_of_several_robots_keeps_clear_of_every_robots_start_and_goal():
    """Clutter was kept clear of the route's two ends only: with four robots it refused most seeds (a box on a
    robot's start) and put some robots' goals inside a box (seed 7: r3's), a goal never reached."""
    world = SimWorld(SimParams(seed=1, robots=('r1', 'r2', 'r3', 'r4')))
    placed = 0
    for seed in range(20):
        world.reset(seed, clutter=3)   # no robot's start on a box: ValueError if one were
        placed += len(world.physical.landmarks) - len(world.scene.landmarks)
        for robot in world.robots:
            for pose in (robot.scene.start, robot.scene.goal):
                assert robot.base.clearance_at(pose.x, pose.y) > 0.0, (seed, robot.name, pose)
    assert placed > 10   # still clutter where the route has room for it
