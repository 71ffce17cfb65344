"""People and clutter in the simulator (vln_ros/sim/people.py) for testing the collision guard: seeded placement timed
to meet the robot, a way left open through the clutter, people seen by the laser, the camera and the depth image,
people who wait for a robot in their way, and contacts with people counted apart from walls."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from vln_ros.core.control import Pose2D
from vln_ros.sim import api, geodesic, people, render, scenes
from vln_ros.sim.geometry import distance_to_landmarks, distance_to_walls, sample_polyline
from vln_ros.sim.laser import Laser, circle_ranges, scene_segments, true_ranges
from vln_ros.sim.params import LaserMountParams, LaserParams, SimParams
from vln_ros.sim.people import NO_PEOPLE, PERSON_RADIUS_M, Crowd, PeopleView, PersonScript
from vln_ros.sim.render import CameraSpec, depth_image
from vln_ros.sim.scene import Scene, Wall
from vln_ros.sim.world import SimWorld

SCRIPTS = ('crossing', 'towards', 'doorway', 'overtaking')
RED_SHIRT = (40, 40, 160)
GREY = (128, 128, 128)


def standing(x: float, y: float) -> PersonScript:
    return PersonScript('test', np.array([[x, y]]), 0.0, 1.0, RED_SHIRT)


def corridor(half_width_m: float = 1.0) -> Scene:
    """A straight corridor along +x, twice half_width_m wide (2 m by default), 20 m long, the robot at its start
    facing down it."""
    w = half_width_m
    walls = (Wall(-1.0, -w, 19.0, -w, GREY), Wall(19.0, -w, 19.0, w, GREY),
             Wall(19.0, w, -1.0, w, GREY), Wall(-1.0, w, -1.0, -w, GREY))
    return Scene(seed=0, walls=walls, doors=(), landmarks=(), start=Pose2D(0.0, 0.0, 0.0), goal=Pose2D(18.0, 0.0, 0.0),
                 route=((0.0, 0.0), (18.0, 0.0)), instruction='', language='en', kind='test')


def route_distance(scene: Scene, x: float, y: float) -> float:
    dots = sample_polyline(scene.route, 0.05)
    return float(np.hypot(dots[:, 0] - x, dots[:, 1] - y).min())


# -- placement ----------------------------------------------------------------------------------------------------
def test_people_and_clutter_are_placed_the_same_from_the_same_seed_and_differently_from_another():
    a, b, c = scenes.generate(4), scenes.generate(4), scenes.generate(5)
    first, again, other = (people.place_people(s, SCRIPTS) for s in (a, b, c))
    assert [p.kind for p in first] == list(SCRIPTS)
    for x, y in zip(first, again, strict=True):
        assert np.array_equal(x.path, y.path) and x.start_s == y.start_s and x.speed_mps == y.speed_mps
    assert not all(np.array_equal(x.path, y.path) for x, y in zip(first, other, strict=True))
    assert people.place_clutter(a, 5) == people.place_clutter(b, 5) != people.place_clutter(c, 5)


@pytest.mark.parametrize('seed', [0, 3, 7])
def test_a_crossing_person_walks_through_the_route_and_reaches_it_when_the_robot_is_due(seed):
    scene = scenes.generate(seed)
    (person,) = people.place_people(scene, ['crossing'])
    assert people.WALK_MPS[0] <= person.speed_mps <= people.WALK_MPS[1]
    # the walk's point nearest the route, and when the person is there
    gaps = [route_distance(scene, *p) for p in person.path]
    k = int(np.argmin(gaps))
    assert gaps[k] < 0.1
    there_s = person.start_s + person.arc_m[k] / person.speed_mps
    meet = person.path[k]
    robot_due_s = people.START_DELAY_S + geodesic_arc(scene, meet) / people.NOMINAL_SPEED_MPS
    assert there_s == pytest.approx(robot_due_s - people.CROSSING_EARLY_S, abs=0.3)   # in its way when it comes
    # from wall to wall, never inside one
    assert distance_to_walls(person.path, scene.walls).min() >= PERSON_RADIUS_M


def geodesic_arc(scene: Scene, point: np.ndarray) -> float:
    """How far along the route the point lies (worked out here by dense sampling)."""
    dots = sample_polyline(scene.route, 0.01)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(dots, axis=0).T))])
    return float(arc[np.argmin(np.hypot(dots[:, 0] - point[0], dots[:, 1] - point[1]))])


@pytest.mark.parametrize('seed', [0, 5])
def test_a_robot_driving_the_route_at_nominal_speed_without_a_guard_runs_into_the_crossing_and_oncoming_person(seed):
    """The scripts are timed to meet the robot: one that drives on regardless (no guard) touches them."""
    scene = scenes.generate(seed)
    dots = sample_polyline(scene.route, 0.01)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(dots, axis=0).T))])
    for kind in ('crossing', 'towards'):
        crowd = Crowd(people.place_people(scene, [kind]), scene)
        for i in range(3000):                                   # 60 s, in 0.02 s steps
            t = i * 0.02
            along = max(0.0, t - people.START_DELAY_S) * people.NOMINAL_SPEED_MPS
            k = min(int(np.searchsorted(arc, along)), len(dots) - 1)
            crowd.step(0.02, t, tuple(dots[k]), 0.3, people.NOMINAL_SPEED_MPS if along < arc[-1] else 0.0)
        assert crowd.collisions >= 1, (kind, crowd.min_clearance_m)


def test_the_overtaker_leaves_the_route_before_the_goal():
    for seed in range(6):
        scene = scenes.generate(seed)
        (person,) = people.place_people(scene, ['overtaking'])
        end = person.path[-1]
        assert math.hypot(end[0] - scene.goal.x, end[1] - scene.goal.y) >= 1.0, seed
        assert route_distance(scene, *end) > 0.3, seed


def test_every_script_keeps_people_off_the_walls_and_the_unknown_one_is_refused_by_name():
    for seed in range(6):
        scene = scenes.generate(seed)
        for person in people.place_people(scene, SCRIPTS):
            assert distance_to_walls(person.path, scene.walls).min() >= PERSON_RADIUS_M, (seed, person.kind)
    with pytest.raises(ValueError, match="no person script 'running'"):
        people.place_people(scenes.generate(0), ['running'])


@pytest.mark.parametrize('seed', [0, 2, 5, 7])
def test_clutter_lies_on_or_beside_the_route_and_leaves_a_robot_a_way_to_the_goal(seed):
    scene = scenes.generate(seed)
    clutter = people.place_clutter(scene, 12)
    assert len(clutter) >= 1
    assert all(m.name in people.CLUTTER_SIZES_M for m in clutter)
    assert all(route_distance(scene, m.x, m.y) <= 1.0 for m in clutter)
    physical = people.with_clutter(scene, clutter)
    walks = people.place_people(scene, SCRIPTS)
    walked = np.concatenate([w.path for w in walks])
    for box in people.place_clutter(scene, 12, walks=walks):       # with people: none of it on their walks
        assert distance_to_landmarks(walked, [box]).min() >= PERSON_RADIUS_M, (seed, box)
    path = geodesic.shortest_path(physical, 0.3 + people.CLUTTER_MARGIN_M, corner_points=4)   # raises if closed
    assert geodesic.path_length(path) >= scene.route_length_m * 0.5


def test_no_people_and_no_clutter_leave_the_scene_and_its_pictures_as_they_were():
    scene = scenes.generate(3)
    assert people.with_clutter(scene, people.place_clutter(scene, 0)) is scene
    assert people.place_people(scene, []) == []
    assert np.array_equal(render.render(scene, scene.start), render.render(scene, scene.start, people=NO_PEOPLE))
    world = SimWorld(SimParams(seed=3))
    assert world.physical is world.scene and len(world.crowd) == 0
    episode = world.episode()
    assert episode['person_collisions'] == 0 and episode['min_clearance_people_m'] == math.inf
    assert episode['people_tracks'] == []


# -- sensing ------------------------------------------------------------------------------------------------------
def test_a_crossing_person_is_seen_in_the_scan_where_they_stand():
    scene = corridor()
    lidar = Laser(LaserParams(noise_m=0.0, mount=LaserMountParams(x_m=0.2)))
    ahead = int(np.argmin(np.abs(lidar.geometry.angles)))
    empty = lidar.true_ranges(scene, scene.start)
    assert empty[ahead] == pytest.approx(18.8)                      # the far wall, beyond range_max_m (8 m)
    assert np.isinf(lidar.scan(scene, scene.start, np.random.default_rng(0))[ahead])
    crossing = np.array([[3.0, 0.0]])
    seen = lidar.scan(scene, scene.start, np.random.default_rng(0), crossing)
    assert seen[ahead] == pytest.approx(3.0 - 0.2 - PERSON_RADIUS_M, abs=1e-5)
    # the beams that hit: those within asin(r / d) of the line to the person's centre (d from the laser)
    d = 3.0 - 0.2
    half_width = math.asin(PERSON_RADIUS_M / d)
    hit = seen < np.minimum(empty, 8.0) - 1e-3          # the beams the person cuts short
    angles = lidar.geometry.angles
    assert (np.abs(angles[hit]) <= half_width + 1e-9).all()
    assert hit.sum() == (np.abs(angles) < half_width).sum()
    # someone 0.6 m to the left is not in the beam straight ahead
    aside = lidar.scan(scene, scene.start, np.random.default_rng(0), np.array([[3.0, 0.6]]))
    assert np.isinf(aside[ahead]) and abs((aside < np.minimum(empty, 8.0) - 1e-3).sum() - hit.sum()) <= 1


def test_a_beam_from_inside_a_person_reads_zero_and_one_that_misses_reads_inf():
    directions = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert circle_ranges(0.0, 0.0, directions, np.array([[0.1, 0.0]]), 0.25).tolist() == [0.0, 0.0]
    assert np.isinf(circle_ranges(0.0, 0.0, directions, np.array([[-2.0, 0.0]]), 0.25)).all()


def test_a_crossing_person_is_drawn_in_the_frame_in_front_of_the_wall_and_hidden_behind_a_box():
    scene = corridor()
    camera = CameraSpec()
    person = PeopleView(np.array([[3.0, 0.0]]), (RED_SHIRT,))
    empty = render.render(scene, scene.start, camera)
    drawn = render.render(scene, scene.start, camera, person)
    changed = np.flatnonzero((drawn != empty).any(axis=(0, 2)))
    middle = camera.width // 2
    assert changed.min() < middle < changed.max()
    # the columns it covers: atan(r / d) either side of the axis, so width * r / (d * tan(hfov / 2)) pixels in all
    f = (camera.width / 2) / math.tan(math.radians(camera.hfov_deg) / 2)
    expected = 2 * f * PERSON_RADIUS_M / math.sqrt(3.0 ** 2 - PERSON_RADIUS_M ** 2)
    assert abs(len(changed) - expected) <= 3
    # the shirt (chest height, 1.2 m) is reddish: more red than blue in BGR
    row = int(camera.height / 2 + f * (camera.height_m - 1.2) / 3.0)
    b, _, r = drawn[row, middle].astype(int)
    assert r > b + 40
    # a person behind a wall is not drawn
    hidden = PeopleView(np.array([[3.0, 3.0]]), (RED_SHIRT,))
    assert np.array_equal(render.render(scene, scene.start, camera, hidden), empty)


def test_the_depth_image_agrees_with_the_laser_geometry_for_walls_boxes_and_people():
    scene = people.with_clutter(scenes.generate(2), people.place_clutter(scenes.generate(2), 4))
    pose = scene.start
    crowd = PeopleView(np.array([[pose.x + 1.0 * math.cos(pose.yaw), pose.y + 1.0 * math.sin(pose.yaw)]]),
                       (RED_SHIRT,))
    camera = CameraSpec(width=160, height=120, hfov_deg=87.0, height_m=0.3)
    depth = depth_image(scene, pose, camera, crowd)
    assert depth.shape == (120, 160) and depth.dtype == np.float32
    # the row at the laser's plane height (0.3 m, the horizon row) against rays cast in the plane by the laser's code
    f = (camera.width / 2) / math.tan(math.radians(camera.hfov_deg) / 2)
    a = (np.arange(camera.width) - camera.width / 2 + 0.5) / f          # rightward per unit forward
    world = pose.yaw - np.arctan(a)
    directions = np.stack([np.cos(world), np.sin(world)], axis=1)
    along_ray = np.minimum(true_ranges(pose.x, pose.y, directions, scene_segments(scene, 0.25)),
                           circle_ranges(pose.x, pose.y, directions, crowd.positions, PERSON_RADIUS_M))
    horizon = camera.height // 2    # row centre 0.5 px below the axis: z = 0.3 - 0.5 / f * depth, above the boxes' feet
    expected = along_ray / np.sqrt(1.0 + a * a)                          # depth is along the optical axis
    assert np.allclose(depth[horizon], np.minimum(expected, render.FAR_M), rtol=1e-4, atol=1e-4)
    assert depth[horizon, camera.width // 2] == pytest.approx(1.0 - PERSON_RADIUS_M, abs=0.01)
    # looking down, the floor: depth = height / (row's downward slope)
    bottom = camera.height - 1
    b = (bottom - camera.height / 2 + 0.5) / f
    assert depth[bottom, 0] == pytest.approx(min(0.3 / b, float(depth[bottom, 0])), abs=1e-5)
    assert depth[bottom].max() <= 0.3 / b + 1e-4


# -- walking, yielding and contacts ----------------------------------------------------------------------------------
def test_a_person_walking_towards_a_standing_robot_stops_short_of_it_waits_then_walks_round_it():
    person = PersonScript('towards', sample_polyline([(8.0, 0.0), (-3.0, 0.0)], 0.1), 0.0, 1.2, RED_SHIRT)
    crowd = Crowd([person], corridor())
    stop_s = (8.0 - 0.3 - PERSON_RADIUS_M - people.YIELD_M) / 1.2        # when they reach 0.5 m from the robot
    for i in range(round((stop_s + people.PATIENCE_S - 0.2) / 0.01)):
        crowd.step(0.01, i * 0.01, (0.0, 0.0), 0.3, 0.0)
    assert crowd.collisions == 0 and crowd.positions[0][1] == 0.0        # still waiting in their way
    assert people.YIELD_M - 0.02 <= crowd.min_clearance_m <= people.YIELD_M + 0.001
    for i in range(3000):                                                # then round the robot, to the end
        crowd.step(0.01, 10.0 + i * 0.01, (0.0, 0.0), 0.3, 0.0)
    assert crowd.collisions == 0 and crowd.min_clearance_m > 0.0
    assert crowd.positions[0][0] == pytest.approx(-3.0)
    # aside as far as the 2 m corridor lets them: 1 m to its wall, less their radius and the margin (< SIDESTEP_M)
    assert abs(crowd.positions[0][1]) == pytest.approx(1.0 - PERSON_RADIUS_M - people.WALL_MARGIN_M)


def test_a_person_steps_round_a_robot_on_the_side_away_from_it_and_never_sideways_into_it():
    """The safety study's contact with the guard on (2026-12-04): a person who had waited beside a robot at rest
    stepped aside TOWARDS it (the side was chosen by the walls alone, left where equal). They walk along -x; the
    robot stands 0.2 m to their left (y -0.2), the corridor leaves room either side: they step right (+y), and no
    step of theirs ever touches the robot."""
    person = PersonScript('towards', sample_polyline([(6.0, 0.0), (-3.0, 0.0)], 0.1), 0.0, 1.2, RED_SHIRT)
    wide = Scene(seed=0, walls=(Wall(-10.0, 2.0, 10.0, 2.0, GREY), Wall(-10.0, -2.0, 10.0, -2.0, GREY)), doors=(),
                 landmarks=(), start=Pose2D(-10.0, 0.0, 0.0), goal=Pose2D(10.0, 0.0, 0.0),
                 route=((-10.0, 0.0), (10.0, 0.0)), instruction='', language='en', kind='test')
    crowd = Crowd([person], wide)
    sides = []
    for i in range(1500):
        crowd.step(0.01, i * 0.01, (0.0, -0.2), 0.3, 0.0)  # robot at rest, 0.2 m to their left
        sides.append(float(crowd.positions[0][1]))
    assert crowd.collisions == 0 and crowd.min_clearance_m > 0.0
    assert min(sides) == 0.0 and max(sides) == pytest.approx(people.SIDESTEP_M)   # to their right, away from it
    assert crowd.positions[0][0] == pytest.approx(-3.0)


def test_a_person_who_stepped_aside_walks_round_a_corner_of_their_way_without_a_jump():
    """The study's other contact: 0.8 m aside across the heading swung to the other side at a corner of their
    walk (a 1.1 m jump in one 10 ms step, onto the robot). The offset is fixed on the floor: every step is at most
    their walking speed times dt."""
    person = PersonScript('towards', sample_polyline([(4.0, 0.0), (0.0, 0.0), (0.0, -6.0)], 0.1), 0.0, 1.0,
                          RED_SHIRT)
    crowd = Crowd([person])
    robot = (2.5, 0.0)                                     # at rest in their way on the first leg
    previous = crowd.positions[0].copy()
    biggest = 0.0
    for i in range(1500):
        crowd.step(0.01, i * 0.01, robot, 0.3, 0.0)
        biggest = max(biggest, float(np.hypot(*(crowd.positions[0] - previous))))
        previous = crowd.positions[0].copy()
    assert crowd.positions[0][1] < -3.0, crowd.positions[0]   # round the robot, then round the corner
    assert biggest <= 1.0 * 0.01 * math.sqrt(2) + 1e-6, biggest


def test_a_person_waits_for_a_moving_robot_too_so_a_contact_is_the_robot_driving_into_them():
    person = PersonScript('towards', sample_polyline([(4.0, 0.0), (-3.0, 0.0)], 0.1), 0.0, 1.2, RED_SHIRT)
    crowd = Crowd([person])
    stood = []
    for i in range(300):
        crowd.step(0.01, i * 0.01, (0.005 * i, 0.0), 0.3, 0.5)         # the robot drives at 0.5 m/s towards them
        stood.append(float(crowd.positions[0][0]))
    assert crowd.collisions == 1 and crowd.min_clearance_m < 0.0
    assert stood[-1] == stood[-60] > 0.0                               # they had stopped; the robot came on


def test_a_person_does_not_walk_into_the_side_of_a_slow_robot_crossing_their_way():
    """The safety study's one guarded contact (2026-12-04): a person crossing 1 m ahead of a robot that was braking
    for them (0.17 m/s) walked into its side; people then waited only for a robot at rest."""
    person = PersonScript('crossing', sample_polyline([(0.0, 1.2), (0.0, -2.0)], 0.1), 0.0, 1.2, RED_SHIRT)
    crowd = Crowd([person])
    for i in range(800):
        crowd.step(0.01, i * 0.01, (-0.6 + 0.17 * i * 0.01, 0.0), 0.3, 0.17)
    assert crowd.collisions == 0 and crowd.min_clearance_m > 0.0
    assert crowd.positions[0][1] == pytest.approx(-2.0)                # and then went on their way


def test_in_a_corridor_too_narrow_to_pass_a_person_held_by_a_robot_turns_back_to_where_they_came_from():
    """The safety study's stand-off (seed 11): a person walking towards the robot stepped aside as far as the
    corridor let them, still in its way, and both waited for ever. Here the corridor is 1.3 m wide: aside they are
    still in the robot's way, so they turn back and walk to the start of their way."""
    narrow = corridor(0.65)
    person = PersonScript('towards', sample_polyline([(8.0, 0.0), (-0.5, 0.0)], 0.1), 0.0, 1.2, RED_SHIRT)
    crowd = Crowd([person], narrow)
    for i in range(4000):                                              # 40 s, the robot at rest at (2, 0)
        crowd.step(0.01, i * 0.01, (2.0, 0.0), 0.3, 0.0)
    assert crowd.collisions == 0 and crowd.min_clearance_m > 0.0
    assert crowd.positions[0][0] == pytest.approx(8.0)                 # back at the start of their way
    assert abs(crowd.positions[0][1]) <= 0.65 - PERSON_RADIUS_M        # never through the wall


def test_a_person_standing_at_the_wall_beside_a_waiting_robot_gives_way_along_the_corridor():
    """The safety study's seed 11 once people turned back: the crossing person, back at the start of their walk
    against the wall of a 1.8 m corridor, stood 0.06 m from the body of the robot stopped beside them, and a robot
    on the centre line cannot pass anyone at a wall there. They now walk on along the corridor, away from it."""
    scene = corridor(0.9)
    wall_y = -0.9 + PERSON_RADIUS_M + people.WALL_MARGIN_M
    person = PersonScript('crossing', sample_polyline([(3.56, wall_y), (3.56, wall_y)], 0.1), 0.0, 1.2, RED_SHIRT)
    crowd = Crowd([person], scene)
    robot = (3.30, 0.0)                                                # at rest, 0.06 m from them
    for i in range(round((people.PATIENCE_S - 0.1) / 0.01)):
        crowd.step(0.01, i * 0.01, robot, 0.3, 0.0)
    assert crowd.positions[0] == pytest.approx([3.56, wall_y])        # they wait a while
    for i in range(600):
        crowd.step(0.01, 3.0 + i * 0.01, robot, 0.3, 0.0)
    assert crowd.collisions == 0 and crowd.min_clearance_m > 0.0
    assert crowd.positions[0][0] > 3.56 + 2.0                          # along the corridor, ahead of the robot
    assert crowd.positions[0][1] >= wall_y - 1e-9                      # never into the wall


def test_no_crossing_begins_at_the_robots_start():
    """Seed 16: the meeting point lay at a corner, so the crossing ran down the corridor the robot comes along and
    began 0.2 m behind it, inside its body; the guard held the robot for the whole episode."""
    for seed in range(40):
        scene = scenes.generate(seed)
        (person,) = people.place_people(scene, ['crossing'])
        start = np.hypot(person.path[0][0] - scene.start.x, person.path[0][1] - scene.start.y)
        assert start >= people.START_CLEAR_M - 1e-9, (seed, person.path[0])


@pytest.mark.parametrize('seed', [0, 8, 11])
def test_a_crossing_person_walks_on_along_the_far_wall_back_the_way_the_robot_comes(seed):
    """The safety study's other stand-off (seed 8): a crossing person stopped against the far wall, beside the
    robot's way in a narrow corridor, for good. Their walk now goes on along that wall, past the robot."""
    scene = scenes.generate(seed)
    (person,) = people.place_people(scene, ['crossing'])
    k = int(np.argmin([route_distance(scene, *p) for p in person.path]))     # where they cross the route
    assert geodesic_arc(scene, person.path[-1]) < geodesic_arc(scene, person.path[k]) - 1.0     # back the way
    assert distance_to_walls(person.path, scene.walls).min() >= PERSON_RADIUS_M


def test_a_person_beside_the_robot_walks_past_it():
    person = PersonScript('overtaking', sample_polyline([(-3.0, 0.75), (5.0, 0.75)], 0.1), 0.0, 1.2, RED_SHIRT)
    crowd = Crowd([person])
    for i in range(1000):
        crowd.step(0.01, i * 0.01, (0.0, 0.0), 0.3, 0.0)
    assert crowd.positions[0] == pytest.approx([5.0, 0.75]) and crowd.collisions == 0


def test_a_person_does_not_start_before_their_time():
    person = PersonScript('crossing', sample_polyline([(3.0, 0.9), (3.0, -0.9)], 0.1), 5.0, 1.0, RED_SHIRT)
    crowd = Crowd([person])
    for i in range(499):
        crowd.step(0.01, i * 0.01, (0.0, 0.0), 0.3, 0.0)
    assert crowd.positions[0] == pytest.approx([3.0, 0.9])
    for i in range(499, 600):                                 # 1 s of walking at 1 m/s
        crowd.step(0.01, i * 0.01, (0.0, 0.0), 0.3, 0.0)
    assert crowd.positions[0][1] == pytest.approx(0.9 - 1.0, abs=0.02)


def test_a_robot_driving_into_a_person_counts_a_person_collision_not_a_wall_one():
    world = SimWorld(SimParams(seed=0))
    world.reset(0, ('doorway',))
    start = world.scene.start
    ahead = (start.x + 1.2 * math.cos(start.yaw), start.y + 1.2 * math.sin(start.yaw))
    world.crowd = Crowd([standing(*ahead)])                  # someone standing 1.2 m in front of the robot
    for i in range(400):                                     # 4 s at 0.5 m/s: 2 m, through where they stand
        if i % 10 == 0:
            world.command(0.5, 0.0, 0.0)
        world.step()
    episode = world.episode()
    assert episode['person_collisions'] == 1 and episode['collisions'] == 0
    assert episode['min_clearance_people_m'] < 0.0
    tracks = np.array(episode['people_tracks'])
    assert tracks.shape[1] == 4 and (tracks[:, 1] == 0).all()
    assert np.allclose(tracks[:, 2:], ahead)
    assert len(tracks) == len(episode['trajectory'])


def test_a_reset_with_people_and_clutter_through_the_service_places_them_from_the_seed():
    from vln_ros.sim.service import SimService

    service = SimService(SimParams(seed=1), lambda scene, pose, view, _robots: (scene, len(view)))
    replies: list[api.ResetReply] = []
    request = api.ResetRequest(seed=6, people=['crossing', 'overtaking'], clutter=3)
    thread = threading.Thread(target=lambda: replies.append(service.reset(request)))
    thread.start()
    for _ in range(3000):
        service.step()
        if replies:
            break
    thread.join(10.0)
    assert replies and replies[0].seed == 6
    world = service.world
    scene = scenes.generate(6)
    walks = people.place_people(scene, ['crossing', 'overtaking'])
    clutter = people.place_clutter(scene, 3, walks=walks)     # fewer where the walks leave no room
    assert len(world.crowd) == 2 and len(clutter) >= 1
    assert world.physical.landmarks == scene.landmarks + clutter
    assert world.scene == scenes.generate(6)                   # the scene the oracle and the route know is untouched
    frames = []
    for _ in range(30):
        frames += service.step().frames
    assert frames and all(scene is world.physical and n == 2 for _, (scene, n) in frames)


@pytest.mark.parametrize(('asked', 'placed'), [(0, 0), (2, 2), (12, 6)])
def test_the_reset_reply_says_how_much_clutter_and_how_many_people_it_placed_fewer_where_the_scene_has_no_room(
        asked, placed):
    """Seed 0 has room for 6 items beside one crossing person's walk: a caller asking for 12 learns it got 6."""
    from vln_ros.sim.service import SimService

    service = SimService(SimParams(seed=1), lambda scene, pose, view, _robots: None)
    replies: list[api.ResetReply] = []
    request = api.ResetRequest(seed=0, people=['crossing'], clutter=asked)
    thread = threading.Thread(target=lambda: replies.append(service.reset(request)))
    thread.start()
    while thread.is_alive():      # bounded: placing takes seconds, then the reset raises after reset_wait_s untaken
        service.step()
    assert replies and (replies[0].clutter, replies[0].people) == (placed, 1)
    assert len(service.world.physical.landmarks) - len(service.world.scene.landmarks) == placed
    assert api.ResetReply.model_validate_json(replies[0].model_dump_json()).clutter == placed   # it travels


# -- the depth camera as the guard reads it ----------------------------------------------------------------------------
def guard_points(service, encoding: str) -> np.ndarray:
    """The guard's own depth source (core/guard_sources.py, its default depth settings) reading the simulator's
    depth frame: obstacle points in the base frame."""
    from types import SimpleNamespace

    from vln_ros.core.guard_sources import CameraModel, DepthParams, depth_to_points

    depth = service.depth_frame()
    assert depth.dtype == {'32FC1': np.float32, '16UC1': np.uint16}[encoding]
    header = SimpleNamespace(frame_id=service.params.depth.frame_id)
    fx, fy, cx, cy = render.intrinsics(service.depth_camera)
    info = SimpleNamespace(header=header, height=depth.shape[0], width=depth.shape[1],
                           k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0])
    image = SimpleNamespace(header=header, height=depth.shape[0], width=depth.shape[1], encoding=encoding,
                            is_bigendian=0, step=depth.shape[1] * depth.itemsize, data=depth.tobytes())
    return depth_to_points(image, CameraModel(info), DepthParams(enabled=True, stride_px=1))


@pytest.mark.parametrize('encoding', ['32FC1', '16UC1'])
def test_the_guard_reads_the_depth_image_as_points_on_the_walls_boxes_and_people_in_front(encoding):
    from vln_ros.sim.robot import _Obstacles
    from vln_ros.sim.service import SimService

    params = SimParams.model_validate({'seed': 2, 'depth': {'enabled': True, 'encoding': encoding}})
    service = SimService(params, lambda scene, pose, view, _robots: None)
    world = service.world
    start = world.scene.start
    ahead = (start.x + 1.5 * math.cos(start.yaw), start.y + 1.5 * math.sin(start.yaw))
    world.crowd = Crowd([standing(*ahead)])
    points = guard_points(service, encoding)
    assert len(points) > 500
    # base frame -> world frame (the robot stands at the start)
    c, s = math.cos(start.yaw), math.sin(start.yaw)
    wx, wy = start.x + c * points[:, 0] - s * points[:, 1], start.y + s * points[:, 0] + c * points[:, 1]
    obstacles = _Obstacles(world.physical)
    to_person = np.hypot(wx - ahead[0], wy - ahead[1]) - PERSON_RADIUS_M
    to_scene = np.array([obstacles.distance(x, y) for x, y in zip(wx, wy, strict=True)])
    tolerance = 0.002 if encoding == '32FC1' else 0.01    # 16UC1: millimetres, at a slant
    assert (np.minimum(np.abs(to_person), np.abs(to_scene)) < tolerance).all()
    assert (np.abs(to_person) < tolerance).sum() > 100      # the person is in it


def test_the_depth_camera_publishes_at_its_rate_only_when_enabled():
    from vln_ros.sim.service import SimService

    off = SimService(SimParams(seed=1), lambda scene, pose, view, _robots: None)
    assert all(off.step().depth is None for _ in range(50))
    on = SimService(SimParams.model_validate({'seed': 1, 'depth': {'enabled': True, 'rate_hz': 10.0}}),
                    lambda scene, pose, view, _robots: None)
    taken = [out.depth for out in (on.step() for _ in range(200)) if out.depth is not None]
    assert 19 <= len(taken) <= 21 and taken[-1][1].shape == (120, 160)


def test_depth_beyond_range_max_is_inf_in_metres_and_zero_in_millimetres():
    depth = np.array([[1.2345, 9.0, 70.0]], np.float32)
    assert render.encode_depth(depth, '32FC1', 8.0).tolist() == [[pytest.approx(1.2345), math.inf, math.inf]]
    assert render.encode_depth(depth, '16UC1', 80.0).tolist() == [[1234, 9000, 0]]   # 70 m does not fit in mm
    with pytest.raises(ValueError, match="depth encoding 'mono8'"):
        render.encode_depth(depth, 'mono8', 8.0)


# -- several robots --------------------------------------------------------------------------------------------------
def test_a_second_robot_at_rest_in_a_persons_lane_is_waited_for_stepped_round_and_never_walked_into():
    """People looked at the first robot only: one walking down the corridor went straight through the second."""
    person = PersonScript('towards', sample_polyline([(8.0, 0.0), (-3.0, 0.0)], 0.1), 0.0, 1.2, RED_SHIRT)
    crowd = Crowd([person], corridor())
    robots = [(14.0, 0.0), (2.0, 0.0)]                  # the first behind them, the second at rest in their lane
    track = []
    for i in range(2000):
        crowd.step(0.01, i * 0.01, robots, 0.3, [0.0, 0.0])
        track.append(crowd.positions[0].copy())
    gaps = np.hypot(*(np.array(track) - robots[1]).T) - 0.3 - PERSON_RADIUS_M
    assert gaps.min() > 0.0 and crowd.collisions == 0
    assert crowd.positions[0] == pytest.approx([-3.0, 1.0 - PERSON_RADIUS_M - people.WALL_MARGIN_M])   # round it
    assert list(crowd.collisions_by_robot) == [0, 0]
    assert crowd.min_clearance_by_robot_m[1] == pytest.approx(gaps.min())


def test_a_person_stepping_round_one_robot_never_steps_sideways_into_another():
    """They walk along -x into a robot at rest 0.1 m to their right and step left, away from it (-y), where a second
    robot stands, one under way (no one waits for a moving robot, so it does not choose their side): the step stops
    short of it."""
    person = PersonScript('towards', sample_polyline([(6.0, 0.0), (-3.0, 0.0)], 0.1), 0.0, 1.2, RED_SHIRT)
    crowd = Crowd([person])
    robots = [(0.0, 0.1), (1.05, -1.2)]
    for i in range(1500):
        crowd.step(0.01, i * 0.01, robots, 0.3, [0.0, 0.5])
    assert crowd.collisions == 0 and crowd.min_clearance_by_robot_m.min() >= people.CONTACT_MARGIN_M - 0.02
    assert crowd.positions[0][1] < -0.3                                    # they did step aside, part of the way


def test_in_a_world_of_two_robots_people_meet_both_and_each_robots_contacts_with_them_are_its_own():
    world = SimWorld(SimParams(seed=0, robots=('r1', 'r2')))
    r2 = world.robot('r2').base.pose
    across = np.array([-math.sin(r2.yaw), math.cos(r2.yaw)])
    a, b = np.array([r2.x, r2.y]) + 3.0 * across, np.array([r2.x, r2.y]) - 3.0 * across
    world.crowd = Crowd([PersonScript('crossing', sample_polyline([tuple(a), tuple(b)], 0.1), 0.0, 1.2, RED_SHIRT)])
    track = []
    for _ in range(1200):                                  # 12 s, both robots at rest
        world.step_all()
        track.append(world.crowd.positions[0].copy())
    gaps = np.hypot(*(np.array(track) - [r2.x, r2.y]).T) - 0.3 - PERSON_RADIUS_M
    assert gaps.min() > 0.0                                # waited for r2, stepped round it
    assert np.hypot(*(track[-1] - b)) < 1.0                # and walked on to (beside) the end of their way
    one, two = world.episode('r1'), world.episode('r2')
    assert one['person_collisions'] == two['person_collisions'] == 0
    assert two['min_clearance_people_m'] == pytest.approx(gaps.min())
    assert one['min_clearance_people_m'] > two['min_clearance_people_m']
