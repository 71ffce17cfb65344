"""Indoor scenes from a seed: corridors with left and right turns, junctions (dead-end stubs at corners and along
corridors), sometimes a room at the end; coloured doors on the walls and landmarks against them; a start, a goal,
the instruction that leads from one to the other (English or Chinese) and the reference route. No ROS.

Why built this way: an evaluation needs many different, reproducible episodes whose instruction is true of the
scene, so what an instruction claims is put there by construction rather than parsed back out: the colour it names
is given to the target door alone, the turns it names are the corridors' turns (with no opening on that side before
the corner), the doors it counts are the doors on that side of the first corridor, the landmark it names is the
only one of that name. The route runs along the corridors' centre lines; every draw is verified (clearance,
length) and, if it fails, drawn again from the same generator, so one seed still gives one scene.

This module composes the parts: the free space and its walls (vln_ros/sim/layout.py), the doors, landmarks and
goal on them (vln_ros/sim/placement.py), the words (vln_ros/sim/instructions.py) and the geometry they share
(vln_ros/sim/geometry.py). The order of the draws from the one generator is the contract that keeps a seed's
scene the same: a change to it changes every scene.
"""
from __future__ import annotations

import math

import numpy as np

from vln_ros.core.control import Pose2D
from vln_ros.sim import instructions, placement
from vln_ros.sim.geometry import (
    distance_to_landmarks,
    distance_to_walls,
    polyline_length_m,
    route_turns,
    sample_polyline,
)
from vln_ros.sim.layout import Grid, draw_layout, draw_walls, sides_of
from vln_ros.sim.placement import DOOR_STANDOFF_M, LANDMARK_STANDOFF_M, ROBOT_CLEARANCE_M, ROUTE_M, Placed
from vln_ros.sim.scene import Door, Landmark, Scene

_MAX_DRAWS = 500


def generate(seed: int) -> Scene:
    """The scene for `seed`: the same seed gives an equal Scene in any process (numpy's PCG64 only)."""
    rng = np.random.default_rng(seed)
    kind = instructions.FAMILIES[int(rng.integers(len(instructions.FAMILIES)))]
    language = 'zh' if rng.random() < instructions.ZH_SHARE else 'en'
    for _ in range(_MAX_DRAWS):
        scene = _draw(seed, rng, kind, language)
        if scene is not None:
            return scene
    raise RuntimeError(f'seed {seed}: no valid {kind} scene in {_MAX_DRAWS} draws')


def target_of(scene: Scene) -> Door | Landmark:
    """The door or landmark the goal stands in front of."""
    gx, gy = scene.goal.x, scene.goal.y
    for d in scene.doors:
        if math.hypot(d.x + DOOR_STANDOFF_M * math.cos(d.facing) - gx,
                      d.y + DOOR_STANDOFF_M * math.sin(d.facing) - gy) < 1e-6:
            return d
    fx, fy = round(math.cos(scene.goal.yaw)), round(math.sin(scene.goal.yaw))   # axis-aligned: towards the target
    for m in scene.landmarks:
        face_x, face_y = m.x - fx * m.size_x / 2, m.y - fy * m.size_y / 2
        if math.hypot(gx + LANDMARK_STANDOFF_M * fx - face_x, gy + LANDMARK_STANDOFF_M * fy - face_y) < 1e-6:
            return m
    raise ValueError(f'scene {scene.seed}: the goal stands in front of nothing')


def describe(scene: Scene) -> str:
    """One line for logs and tables: seed, family, language, route length, turns, target."""
    target = target_of(scene)
    what = f'{target.colour} door' if isinstance(target, Door) else target.name
    return (f'seed {scene.seed} {scene.kind}/{scene.language} route {scene.route_length_m:.1f} m '
            f'turns {route_turns(scene.route) or "-"} target {what}')


def _draw(seed: int, rng: np.random.Generator, kind: str, language: str) -> Scene | None:
    layout = draw_layout(rng, kind)
    if layout is None:
        return None
    grid = Grid(layout.rects)
    walls = draw_walls(rng, grid, layout)
    sides = sides_of(layout)
    doors = placement.place_doors(rng, grid, sides, layout, kind)
    doorways = placement.doorways_of(sides, doors)
    legs = layout.legs
    start = legs[0].point(0, 0)
    prefix = [start] + [legs[i].point(legs[i].length, 0) for i in range(layout.route_legs - 1)]
    if layout.room is not None:
        prefix.append(legs[-1].point(legs[-1].length + 8, 0))    # 0.8 m into the room along the corridor's axis
    landmarks: list[Placed] = []
    named: str | None = None          # the landmark the instruction names (no other may share its name)
    words: dict[str, str] = {}        # what fills the template's blanks, in `language`
    template_kind = kind

    if kind in ('landmark_goal', 'room') and (kind == 'landmark_goal' or rng.random() < 0.3):
        template_kind = 'landmark_goal' if kind == 'landmark_goal' else 'room_landmark'
        roles = ('room',) if kind == 'room' else ('leg',)
        chosen = placement.place_target_landmark(rng, grid, sides, doorways, prefix, layout.route_legs - 1, roles)
        if chosen is None:
            return None
        landmarks.append(chosen)
        goal = placement.landmark_goal(sides[chosen.side], chosen)
        named = chosen.name
    else:
        door = placement.choose_target_door(rng, sides, doors, prefix, layout, kind)
        if door is None:
            return None
        goal = placement.door_goal(sides[door.side], door)
        if kind == 'door_ordinal':
            same_side = sorted(d.s for d in doors if d.side == door.side)
            words['nth'] = instructions.ordinal_word(same_side.index(door.s), language)
            words['hand'] = instructions.hand_word(sides[door.side].hand, language)
        elif kind != 'door_at_end':
            colour = str(rng.choice(list(placement.COLOURS)))
            placement.give_unique_colour(rng, doors, door, colour)
            words['colour'] = instructions.colour_word(colour, language)
    route = tuple(prefix) + ((goal.x, goal.y),)
    length = polyline_length_m(route)
    if not ROUTE_M[0] <= length <= ROUTE_M[1]:
        return None

    if kind == 'past_landmark':
        passed = placement.place_passed_landmark(rng, grid, sides, doorways, route, layout.route_legs)
        if passed is None:
            return None
        landmarks.append(passed)
        named = passed.name
    placement.place_distractor_landmarks(rng, grid, sides, doorways, landmarks, route, named)
    if named is not None:
        words['landmark'] = instructions.landmark_word(named, language)

    built_doors = tuple(placement.build_door(sides[d.side], d) for d in doors)
    built_landmarks = tuple(placement.build_landmark(sides[m.side], m) for m in landmarks)
    points = sample_polyline(route, 0.05)
    clearance = min(distance_to_walls(points, walls).min(), distance_to_landmarks(points, built_landmarks).min())
    if clearance < ROBOT_CLEARANCE_M + 0.02:
        return None
    start_yaw = legs[0].k * math.pi / 2
    return Scene(
        seed=seed, walls=walls, doors=built_doors, landmarks=built_landmarks,
        start=Pose2D(start[0], start[1], math.atan2(math.sin(start_yaw), math.cos(start_yaw))),
        goal=goal, route=route,
        instruction=instructions.write(rng, template_kind, language, words, layout.turns[:layout.route_legs - 1]),
        language=language, kind=kind)

