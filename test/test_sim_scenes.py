"""The simulator's scenes and camera (vln_ros/sim/scenes.py with the layout, placement, instructions and geometry
modules it composes; vln_ros/sim/render.py), no ROS: a seed gives one scene in any process; over 200 seeds every
route keeps a 0.3 m robot clear of walls and landmarks, starts at the start, ends at the goal and is 6-18 m long, the
walls close the free space, and the instruction is true of the scene (the colour it names is the target's alone, its
turns are the route's, its counted doors are the doors passed); the renderer draws doors in their colour, walls,
boxes, floor and ceiling where they are, deterministically.

The geometry here is the test's own (not the generator's helpers), so a generator bug cannot hide behind itself."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from vln_ros.core.control import Pose2D
from vln_ros.sim import instructions, placement, render, scenes
from vln_ros.sim.scene import Door, Landmark, Scene, Wall

SEEDS = range(200)
CLEARANCE_M = 0.55
COLOUR_WORDS = {**{c: c for c in placement.COLOURS}, **{zh: c for c, zh in instructions.COLOURS_ZH.items()}}
LANDMARK_WORDS = {**{k.name: k.name for k in placement.LANDMARK_KINDS},
                  **{zh: name for name, zh in instructions.LANDMARKS_ZH.items()}}
TURN_WORDS = re.compile(r'left|right|左转|右转')


@pytest.fixture(scope='module')
def all_scenes() -> list[Scene]:
    return [scenes.generate(seed) for seed in SEEDS]


def _along(route: tuple[tuple[float, float], ...], step_m: float) -> np.ndarray:
    points = [np.array(route[0], float)]
    for a, b in zip(route[:-1], route[1:], strict=True):
        a, b = np.array(a, float), np.array(b, float)
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step_m)))
        points += [a + (b - a) * k / n for k in range(1, n + 1)]
    return np.array(points)


def _wall_distance(points: np.ndarray, walls: tuple[Wall, ...]) -> np.ndarray:
    best = np.full(len(points), np.inf)
    for w in walls:
        a, b = np.array([w.x0, w.y0]), np.array([w.x1, w.y1])
        t = np.clip((points - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * (b - a)), axis=1))
    return best


def _box_distance(points: np.ndarray, m: Landmark) -> np.ndarray:
    gap_x = np.maximum(np.abs(points[:, 0] - m.x) - m.size_x / 2, 0)
    gap_y = np.maximum(np.abs(points[:, 1] - m.y) - m.size_y / 2, 0)
    return np.hypot(gap_x, gap_y)


def _door_in_front(scene: Scene) -> Door | None:
    """The door whose middle is 0.7 m straight ahead of the goal, facing the goal."""
    g = scene.goal
    for d in scene.doors:
        ahead = (d.x - g.x) * math.cos(g.yaw) + (d.y - g.y) * math.sin(g.yaw)
        aside = -(d.x - g.x) * math.sin(g.yaw) + (d.y - g.y) * math.cos(g.yaw)
        facing_goal = math.cos(d.facing - (g.yaw + math.pi)) > 0.9999
        if abs(ahead - 0.7) < 1e-6 and abs(aside) < 1e-6 and facing_goal:
            return d
    return None


def _landmark_in_front(scene: Scene) -> Landmark | None:
    """The landmark whose nearest face is 0.8 m straight ahead of the goal."""
    g = scene.goal
    ahead = np.array([[g.x + k * 0.01 * math.cos(g.yaw), g.y + k * 0.01 * math.sin(g.yaw)] for k in (79, 81)])
    for m in scene.landmarks:
        near, touch = _box_distance(ahead, m)
        if near > 0.005 and touch == 0.0:
            return m
    return None


def _named(instruction: str, words: dict[str, str]) -> list[str]:
    return [name for word, name in words.items() if word in instruction]


# -- scenes ---------------------------------------------------------------------------------------------------

def test_a_seed_gives_one_scene_in_any_process_and_seeds_differ():
    assert scenes.generate(11) == scenes.generate(11)
    assert scenes.generate(11) != scenes.generate(12)
    code = 'from vln_ros.sim import scenes; print(repr(scenes.generate(11)))'
    other = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, cwd=REPO,
                           env={**os.environ, 'PYTHONHASHSEED': '12345'})
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == repr(scenes.generate(11))


def test_routes_keep_a_robot_clear_of_walls_and_landmarks(all_scenes):
    for scene in all_scenes:
        points = _along(scene.route, 0.05)
        clearance = _wall_distance(points, scene.walls).min()
        for m in scene.landmarks:
            clearance = min(clearance, _box_distance(points, m).min())
        assert clearance >= CLEARANCE_M, f'seed {scene.seed}: the route comes {clearance:.2f} m from an obstacle'


def test_routes_run_from_start_to_goal_and_are_6_to_18_m(all_scenes):
    for scene in all_scenes:
        assert scene.route[0] == (scene.start.x, scene.start.y), scene.seed
        assert scene.route[-1] == (scene.goal.x, scene.goal.y), scene.seed
        assert 6.0 <= scene.route_length_m <= 18.0, (scene.seed, scene.route_length_m)
        ends = np.array([[scene.start.x, scene.start.y], [scene.goal.x, scene.goal.y]])
        assert _wall_distance(ends, scene.walls).min() >= 0.45, scene.seed


def test_the_walls_close_the_free_space(all_scenes):
    """From anywhere on the route every way out meets a wall within 50 m."""
    angles = np.arange(16) * math.pi / 8
    for scene in all_scenes:
        origins = _along(scene.route, 0.5)
        walls = np.array([(w.x0, w.y0, w.x1, w.y1) for w in scene.walls])
        a, e = walls[:, :2], walls[:, 2:] - walls[:, :2]
        for direction in np.stack([np.cos(angles), np.sin(angles)], axis=1):
            r = a[None] - origins[:, None]                       # (points, walls, 2)
            denom = direction[0] * e[:, 1] - direction[1] * e[:, 0]
            with np.errstate(divide='ignore', invalid='ignore'):
                t = (r[..., 0] * e[:, 1] - r[..., 1] * e[:, 0]) / denom
                u = (r[..., 0] * direction[1] - r[..., 1] * direction[0]) / denom
            hit = (t > 0) & (t <= 50.0) & (u >= -1e-9) & (u <= 1 + 1e-9)
            assert hit.any(axis=1).all(), f'seed {scene.seed}: a ray towards {direction} leaves the scene'


def test_the_goal_faces_its_target_door_or_landmark(all_scenes):
    for scene in all_scenes:
        door, landmark = _door_in_front(scene), _landmark_in_front(scene)
        assert (door is None) != (landmark is None), f'seed {scene.seed}: the goal faces no single target'
        assert scenes.target_of(scene) == (door or landmark), scene.seed


def test_a_named_colour_is_the_target_doors_alone(all_scenes):
    named_colour = 0
    for scene in all_scenes:
        colours = _named(scene.instruction, COLOUR_WORDS)
        if not colours:
            continue
        named_colour += 1
        assert len(colours) == 1, scene.instruction
        door = _door_in_front(scene)
        assert door is not None and door.colour == colours[0], (scene.seed, scene.instruction)
        assert [d.colour for d in scene.doors].count(colours[0]) == 1, (scene.seed, scene.instruction)
    assert named_colour > len(SEEDS) // 3


def test_a_named_landmark_is_the_only_one_of_its_name(all_scenes):
    for scene in all_scenes:
        for name in _named(scene.instruction, LANDMARK_WORDS):
            assert [m.name for m in scene.landmarks].count(name) == 1, (scene.seed, scene.instruction)


def test_a_landmark_to_walk_past_is_passed_well_before_the_goal(all_scenes):
    checked = 0
    for scene in (s for s in all_scenes if s.kind == 'past_landmark'):
        (name,) = _named(scene.instruction, LANDMARK_WORDS)
        (m,) = [m for m in scene.landmarks if m.name == name]
        points = _along(scene.route, 0.05)
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
        passed_at = arc[np.argmin(_box_distance(points, m))]
        assert 0.5 < passed_at < arc[-1] - 1.0, (scene.seed, passed_at, arc[-1])
        checked += 1
    assert checked


def test_named_turns_are_the_routes_turns(all_scenes):
    checked = 0
    for scene in (s for s in all_scenes if s.kind in ('turn_at_junction', 'multi_turn')):
        said = ['L' if w in ('left', '左转') else 'R' for w in TURN_WORDS.findall(scene.instruction)]
        taken = []
        for a, b, c in zip(scene.route[:-2], scene.route[1:-1], scene.route[2:], strict=True):
            cross = (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0])
            bend = math.asin(max(-1.0, min(1.0, cross / math.dist(a, b) / math.dist(b, c))))
            if abs(bend) > math.radians(45):
                taken.append('L' if bend > 0 else 'R')
        assert said and said == taken, (scene.seed, scene.instruction, taken)
        checked += 1
    assert checked


def test_a_counted_door_is_that_many_doors_along_that_side(all_scenes):
    """'the second door on the left': one door on the left wall before it, counting from the start."""
    checked = 0
    for scene in (s for s in all_scenes if s.kind == 'door_ordinal'):
        words = scene.instruction
        nth = next(i for i, w in enumerate(('first|一', 'second|二', 'third|三'), 1) if re.search(w, words))
        hand = 1 if re.search('left|左', words) else -1
        s = scene.start
        target = _door_in_front(scene)
        assert target is not None

        def ahead(d: Door, s: Pose2D = s) -> float:
            return (d.x - s.x) * math.cos(s.yaw) + (d.y - s.y) * math.sin(s.yaw)

        def aside(d: Door, s: Pose2D = s) -> float:
            return -(d.x - s.x) * math.sin(s.yaw) + (d.y - s.y) * math.cos(s.yaw)

        assert aside(target) * hand > 0, scene.seed
        # doors on that wall of the first corridor: beside the start's line, facing across it
        on_that_wall = [d for d in scene.doors if abs(aside(d) - aside(target)) < 1e-6 and ahead(d) > 0]
        assert sorted(ahead(d) for d in on_that_wall).index(ahead(target)) == nth - 1, (scene.seed, words)
        checked += 1
    assert checked


def test_doors_sit_on_walls_apart_from_each_other_and_from_corners(all_scenes):
    for scene in all_scenes:
        spans = []
        for d in scene.doors:
            ux, uy = -math.sin(d.facing), math.cos(d.facing)
            ends = [(d.x - ux * d.width / 2, d.y - uy * d.width / 2), (d.x + ux * d.width / 2, d.y + uy * d.width / 2)]
            on = [w for w in scene.walls if all(_wall_distance(np.array([p]), (w,))[0] < 1e-6 for p in ends)]
            assert on, f'seed {scene.seed}: a door is not on one wall'
            w = on[0]
            assert min(math.dist(p, q) for p in ends for q in ((w.x0, w.y0), (w.x1, w.y1))) >= 0.2, scene.seed
            spans.append((w, np.dot((d.x - w.x0, d.y - w.y0), (w.x1 - w.x0, w.y1 - w.y0)) / w.length, d.width))
        for i, (wall_i, s_i, width_i) in enumerate(spans):
            for wall_j, s_j, width_j in spans[i + 1:]:
                if wall_i is wall_j:
                    assert abs(s_i - s_j) >= (width_i + width_j) / 2 + 0.3, f'seed {scene.seed}: doors overlap'


def test_landmarks_stand_in_front_of_no_door(all_scenes):
    """Nothing stands on a door's span or within half a metre in front of it."""
    for scene in all_scenes:
        for d in scene.doors:
            across = np.array([-math.sin(d.facing), math.cos(d.facing)])
            out = np.array([math.cos(d.facing), math.sin(d.facing)])
            doorway = np.array([[d.x, d.y] + a * across + o * out
                                for a in np.linspace(-d.width / 2, d.width / 2, 9) for o in (0.0, 0.25, 0.5)])
            for m in scene.landmarks:
                assert _box_distance(doorway, m).min() > 0.0, f'seed {scene.seed}: the {m.name} blocks a door'


def test_every_family_and_both_languages_occur_and_describe_is_one_line(all_scenes):
    assert {s.kind for s in all_scenes} == set(instructions.FAMILIES)
    chinese = [s for s in all_scenes if s.language == 'zh']
    assert 0.15 * len(all_scenes) <= len(chinese) <= 0.35 * len(all_scenes)
    cjk = re.compile(r'[\u4e00-\u9fff]')
    assert all(bool(cjk.search(s.instruction)) == (s.language == 'zh') for s in all_scenes)
    assert any(s.kind == 'room' for s in all_scenes) and len({s.instruction for s in all_scenes}) > 100
    line = scenes.describe(all_scenes[0])
    assert '\n' not in line and all_scenes[0].kind in line and f'{all_scenes[0].route_length_m:.1f} m' in line


def test_every_colour_and_landmark_a_scene_can_hold_has_its_chinese_word():
    """The words (sim/instructions.py) and the things (sim/placement.py) live apart: neither may gain one alone."""
    assert set(instructions.COLOURS_ZH) == set(placement.COLOURS)
    assert set(instructions.LANDMARKS_ZH) == {k.name for k in placement.LANDMARK_KINDS}


# -- the camera -----------------------------------------------------------------------------------------------

WALL_BGR = (170, 200, 215)


def _box(doors: tuple[Door, ...] = (), landmarks: tuple[Landmark, ...] = ()) -> Scene:
    """A 10 m x 3 m room, x from -5 to 5; doors and landmarks as given."""
    corners = [(-5.0, -1.5), (5.0, -1.5), (5.0, 1.5), (-5.0, 1.5)]
    walls = tuple(Wall(*a, *b, WALL_BGR) for a, b in zip(corners, corners[1:] + corners[:1], strict=True))
    return Scene(seed=-1, walls=walls, doors=doors, landmarks=landmarks, start=Pose2D(), goal=Pose2D(1.0, 0.0, 0.0),
                 route=((0.0, 0.0), (1.0, 0.0)), instruction='test', language='en', kind='test')


RED_DOOR = Door(5.0, 0.0, math.pi, 0.9, 'red', placement.COLOURS['red'])


def test_the_picture_has_the_cameras_shape_and_is_deterministic():
    scene = scenes.generate(3)
    image = render.render(scene, scene.start, render.CameraSpec())
    assert image.shape == (336, 448, 3) and image.dtype == np.uint8
    assert np.array_equal(image, render.render(scene, scene.start, render.CameraSpec()))
    assert render.render(scene, scene.start, render.CameraSpec(width=160, height=120)).shape == (120, 160, 3)


def test_a_door_straight_ahead_shows_in_its_colour_in_the_middle():
    camera = render.CameraSpec()
    with_door = render.render(_box(doors=(RED_DOOR,)), Pose2D(3.5, 0.0, 0.0), camera).astype(int)
    middle = with_door[camera.height // 2 - 20:camera.height // 2 + 20, camera.width // 2 - 20:camera.width // 2 + 20]
    b, g, r = middle.reshape(-1, 3).T
    assert (r > 150).all() and (g < 90).all() and (b < 90).all()
    b, g, r = render.render(_box(), Pose2D(3.5, 0.0, 0.0), camera)[camera.height // 2, camera.width // 2].astype(int)
    assert not (r > 150 and g < 90), 'without the door the middle is not red'


def test_a_wall_right_in_front_fills_the_middle_columns_and_a_far_one_does_not():
    camera = render.CameraSpec()
    middle = slice(camera.width // 2 - 10, camera.width // 2 + 10)
    near = render.render(_box(), Pose2D(4.6, 0.0, 0.0), camera)[:, middle].reshape(-1, 3).astype(int)
    assert np.abs(near - near.mean(axis=0)).max() <= 3, 'one colour from top to bottom'
    assert np.abs(near.mean(axis=0) - WALL_BGR).max() < 25
    far = render.render(_box(), Pose2D(-4.0, 0.0, 0.0), camera)[:, middle].reshape(-1, 3).astype(int)
    assert np.abs(far - far.mean(axis=0)).max() > 30, 'floor and ceiling above and below a far wall'


def test_the_floor_is_below_the_horizon_and_the_ceiling_above():
    camera = render.CameraSpec()
    image = render.render(_box(), Pose2D(-4.0, 0.0, 0.0), camera).astype(int)
    bottom, top = image[-40:, camera.width // 2], image[:40, camera.width // 2]
    floor = np.array([render.FLOOR_A, render.FLOOR_B])
    assert (np.abs(bottom[:, None, :] - floor[None]).max(axis=2).min(axis=1) < 25).all(), 'floor checker at the bottom'
    ceiling = np.array([render.CEILING, render.LIGHT])
    assert (np.abs(top[:, None, :] - ceiling[None]).max(axis=2).min(axis=1) < 25).all(), 'ceiling at the top'
    assert top.mean() > bottom.mean() + 40


def test_a_box_hides_what_is_behind_up_to_its_top_only():
    camera = render.CameraSpec()
    crate = Landmark(4.0, 0.0, 0.4, 0.6, 0.6, 'crate', (200, 60, 60))
    image = render.render(_box(doors=(RED_DOOR,), landmarks=(crate,)), Pose2D(2.5, 0.0, 0.0), camera).astype(int)
    column = image[:, camera.width // 2]
    f = camera.width / 2 / math.tan(math.radians(camera.hfov_deg) / 2)

    def row(z: float, depth: float) -> int:
        return int(camera.height / 2 - (z - camera.height_m) * f / depth)

    low = column[row(0.3, 1.3)]         # the box's front face is 1.3 m ahead, the door 2.5 m
    high = column[row(1.5, 2.5)]        # that ray passes the box at a height of 1 m, well above its top
    assert low[0] > 150 and low[2] < 110, 'the box in front'
    assert high[2] > 150 and high[0] < 90, 'the red door behind it, above the box'


def test_the_picture_changes_when_the_robot_moves_or_turns():
    scene = scenes.generate(1)
    x, y = scene.route[0]
    pose = Pose2D(x, y, scene.start.yaw)
    here = render.render(scene, pose, render.CameraSpec()).astype(int)
    for moved in (Pose2D(x + 0.3 * math.cos(pose.yaw), y + 0.3 * math.sin(pose.yaw), pose.yaw),
                  Pose2D(x, y, pose.yaw + math.radians(10))):
        assert np.abs(render.render(scene, moved, render.CameraSpec()).astype(int) - here).mean() > 3


def test_the_map_marks_walls_start_and_goal():
    scene = scenes.generate(7)
    image, to_px = render.render_top_down(scene, px_per_m=40.0)
    w = scene.walls[0]
    assert image[to_px((w.x0 + w.x1) / 2, (w.y0 + w.y1) / 2)[::-1]].max() < 80, 'walls are dark'
    start, goal = to_px(scene.start.x, scene.start.y), to_px(scene.goal.x, scene.goal.y)
    assert image[start[::-1]][1] > 100 and image[start[::-1]][2] < 80, 'the start is green'
    assert image[goal[::-1]][2] > 150 and image[goal[::-1]][1] < 80, 'the goal is red'
    assert to_px(scene.start.x + 1.0, scene.start.y) == (start[0] + 40, start[1])
