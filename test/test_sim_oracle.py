"""sim/oracle: the answers a perfect model would give, from ground truth, followed on a hand-built corridor; their
format and limits, 'arrived', and the injected faults. No ROS."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vln_ros.core.config import ParserParams
from vln_ros.core.control import Pose2D, wrap_angle
from vln_ros.core.parser import ParsedAnswer, parse_answer
from vln_ros.core.prompts import ACTIONS, ENV_MAX_CHARS
from vln_ros.sim.oracle import FAULTS, STEP_MARGIN_M, TURN_MARGIN_DEG, OracleSettings, PlanLimits, answer
from vln_ros.sim.scene import Door, Scene, Wall

LIMITS = ParserParams()
GREY, RED = (128, 128, 128), (40, 40, 200)
RADIUS_M = 0.3
# An L: a corridor 2 m wide along +x from x = -1 to 9, turning left into one along +y up to y = 9. The red
# door is on the second corridor's left wall (x = 7); the goal is on its centre line facing the door, so the
# robot arrives heading +y and must end turned 90 degrees left.
OUTLINE = [(-1.0, -1.0), (9.0, -1.0), (9.0, 9.0), (7.0, 9.0), (7.0, 1.0), (-1.0, 1.0)]
LEGS = ((-1.0, -1.0, 9.0, 1.0), (7.0, -1.0, 9.0, 9.0))   # the corridor as two rectangles x0, y0, x1, y1
GOAL = Pose2D(8.0, 7.0, math.pi)
L_SCENE = Scene(
    seed=0,
    walls=tuple(Wall(*a, *b, GREY) for a, b in zip(OUTLINE, OUTLINE[1:] + OUTLINE[:1], strict=True)),
    doors=(Door(7.0, 7.0, 0.0, 0.9, 'red', RED), Door(9.0, 3.0, math.pi, 0.9, 'grey', GREY)),
    landmarks=(), start=Pose2D(0.0, 0.0, 0.0), goal=GOAL, route=((0.0, 0.0), (8.0, 0.0), (8.0, 7.0)),
    instruction='go to the end of the corridor, turn left and stop facing the red door', language='en',
    kind='turn_at_junction')


def inside_corridor(x: float, y: float) -> bool:
    """The whole body (a circle) is inside one of the legs."""
    return any(x0 + RADIUS_M <= x <= x1 - RADIUS_M and y0 + RADIUS_M <= y <= y1 - RADIUS_M
               for x0, y0, x1, y1 in LEGS)


def parsed(text: str, limits: ParserParams = LIMITS) -> ParsedAnswer:
    result = parse_answer(text, limits)
    assert result.rejection is None and not result.adjustments, (text, result)
    return result


def plan_poses(pose: Pose2D, result: ParsedAnswer) -> list[Pose2D]:
    """The waypoints as world poses: the steps chained from the capture pose."""
    poses = [pose]
    for w in result.waypoints:
        poses.append(poses[-1].compose(Pose2D(w.dx, w.dy, w.dtheta)))
    return poses[1:]


def follow(start: Pose2D, settings: OracleSettings, seed: int = 0) -> tuple[Pose2D, Pose2D, list[Pose2D]]:
    """Ask, go 60 % of the plan's waypoints, ask again, until 'arrived'. Returns where the robot was when it
    was told 'arrived', where the last moving plan ended, and every pose it passed through."""
    rng = np.random.default_rng(seed)
    pose, trail, plan_end = start, [start], start
    for _ in range(80):
        result = parsed(answer(L_SCENE, pose, settings, rng).text, settings.parser)
        if result.arrived:
            return pose, plan_end, trail
        waypoints = plan_poses(pose, result)
        plan_end = waypoints[-1]
        for a, b in zip([pose] + waypoints[:-1], waypoints, strict=True):   # the straight lines between waypoints
            trail.extend(Pose2D(a.x + k * (b.x - a.x), a.y + k * (b.y - a.y), b.yaw) for k in np.linspace(0, 1, 6))
        pose = waypoints[math.ceil(0.6 * len(waypoints)) - 1]
    raise AssertionError(f'never arrived; last at {pose}')


@pytest.mark.parametrize('start', [Pose2D(0.0, 0.0, 0.0), Pose2D(0.5, 0.4, -0.5), Pose2D(2.0, -0.5, math.pi),
                                   Pose2D(7.6, 0.3, 2.5)], ids=['on_route', 'off_route', 'backwards', 'at_corner'])
def test_following_the_plans_reaches_the_goal_facing_the_door_inside_the_corridor(start):
    told, plan_end, trail = follow(start, OracleSettings(arrive_m=0.05))
    outside = [p for p in trail if not inside_corridor(p.x, p.y)]
    assert not outside, outside[:3]
    assert math.hypot(told.x - GOAL.x, told.y - GOAL.y) <= 0.3
    assert abs(math.degrees(wrap_angle(told.yaw - GOAL.yaw))) <= 10


def test_with_the_default_arrival_radius_the_last_plan_ends_at_the_goal_facing_the_door():
    settings = OracleSettings()
    told, plan_end, _ = follow(Pose2D(0.5, 0.4, -0.5), settings)
    assert math.hypot(told.x - GOAL.x, told.y - GOAL.y) <= settings.arrive_m
    # The controller is still following that plan when 'arrived' comes: it ends at the goal, facing the door.
    assert math.hypot(plan_end.x - GOAL.x, plan_end.y - GOAL.y) <= 0.3
    assert abs(math.degrees(wrap_angle(plan_end.yaw - GOAL.yaw))) <= 10


def test_every_answer_is_valid_compact_and_inside_the_parser_limits():
    rng = np.random.default_rng(1)
    settings = OracleSettings(noise_m=0.1, noise_deg=10.0)
    actions = set()
    for _ in range(400):
        x0, y0, x1, y1 = LEGS[rng.integers(2)]
        pose = Pose2D(rng.uniform(x0 + RADIUS_M, x1 - RADIUS_M), rng.uniform(y0 + RADIUS_M, y1 - RADIUS_M),
                      rng.uniform(-math.pi, math.pi))
        reply = answer(L_SCENE, pose, settings, rng)
        assert reply.fault == ''
        assert reply.text == json.dumps(json.loads(reply.text), separators=(',', ':'))
        obj = json.loads(reply.text)
        assert set(obj) == {'env', 'act', 'wp'} and obj['act'] in ACTIONS and 0 < len(obj['env']) <= ENV_MAX_CHARS
        assert all(len(step) == 4 and step[0] == round(step[0], 2) and step[1] == round(step[1], 2)
                   and isinstance(step[2], int) for step in obj['wp'])
        result = parsed(reply.text)
        actions.add(result.action)
        assert len(result.waypoints) <= LIMITS.max_waypoints
        assert all(math.hypot(w.dx, w.dy) <= LIMITS.max_step_m and abs(w.dtheta) <= LIMITS.max_turn_rad
                   and w.confidence == settings.confidence for w in result.waypoints)
        assert result.arrived == (not result.waypoints)
    assert {'forward', 'turn_left', 'turn_right', 'arrived'} <= actions


def test_the_plan_limits_are_the_parsers_defaults_less_a_margin_for_rounding():
    limits = OracleSettings().limits
    assert limits == PlanLimits.inside(LIMITS)
    assert limits.max_steps == LIMITS.max_waypoints
    # 2 decimals lengthen a step by up to 0.005 * sqrt(2) m and whole degrees add up to 0.5 degrees: both inside.
    assert 0.01 < LIMITS.max_step_m - limits.max_step_m <= STEP_MARGIN_M + 1e-9
    assert math.radians(0.5) < LIMITS.max_turn_rad - limits.max_turn_rad <= math.radians(TURN_MARGIN_DEG + 1)
    assert math.degrees(limits.max_turn_rad) == pytest.approx(round(math.degrees(limits.max_turn_rad)), abs=1e-9)
    assert limits == PlanLimits(8, 0.95, math.radians(85.0))    # what the oracle has always written


def test_under_a_configured_parser_the_plans_keep_its_limits_and_still_reach_the_goal():
    parser = ParserParams(max_waypoints=3, max_step_m=0.4, max_turn_rad=0.7)
    settings = OracleSettings(parser=parser, arrive_m=0.05)
    assert settings.limits == PlanLimits(3, 0.4 - STEP_MARGIN_M, math.radians(35.0))
    # Backwards: turns on the spot in 35-degree steps, then 0.35 m steps; follow() checks each answer passes the
    # configured parser with no adjustment (nothing clamped, nothing cut off).
    told, _, trail = follow(Pose2D(2.0, -0.5, math.pi), settings)
    assert all(inside_corridor(p.x, p.y) for p in trail)
    assert math.hypot(told.x - GOAL.x, told.y - GOAL.y) <= 0.3
    with pytest.raises(ValueError, match='max_step_m=0.05 m'):
        OracleSettings(parser=ParserParams(max_step_m=0.05))


def test_arrived_near_the_goal_facing_it_and_not_far_from_it_or_facing_away():
    settings, rng = OracleSettings(), np.random.default_rng(2)
    for bearing in np.linspace(-math.pi, math.pi, 12, endpoint=False):
        for distance, yaw_off_deg, arrived in ((0.0, 0.0, True), (0.45, 25.0, True), (0.55, 0.0, False),
                                               (2.0, 0.0, False), (0.2, 40.0, False), (0.0, -90.0, False)):
            pose = Pose2D(GOAL.x + distance * math.cos(bearing), GOAL.y + distance * math.sin(bearing),
                          GOAL.yaw + math.radians(yaw_off_deg))
            result = parsed(answer(L_SCENE, pose, settings, rng).text)
            assert result.arrived == arrived and bool(result.waypoints) != arrived, (pose, result)


@pytest.mark.parametrize(('yaw', 'action'), [(math.pi - 0.2, 'turn_right'), (-math.pi + 0.2, 'turn_left')])
def test_facing_backwards_the_plan_turns_on_the_spot_first_the_short_way(yaw, action):
    pose = Pose2D(3.0, 0.0, yaw)
    result = parsed(answer(L_SCENE, pose, OracleSettings(), np.random.default_rng(0)).text)
    assert result.action == action
    turns = []
    for w in result.waypoints:
        if w.dx or w.dy:
            break
        turns.append(w.dtheta)
    assert len(turns) >= 2 and all(math.copysign(1.0, t) == math.copysign(1.0, -yaw) for t in turns)
    assert math.degrees(wrap_angle(pose.yaw + sum(turns))) == pytest.approx(0.0, abs=1.0)   # then faces +x
    first_move = result.waypoints[len(turns)]
    assert first_move.dx > 0.3 and abs(first_move.dy) < 0.02


def test_a_robot_off_the_route_is_led_back_to_it():
    pose = Pose2D(3.0, 0.7, 0.0)
    result = parsed(answer(L_SCENE, pose, OracleSettings(), np.random.default_rng(0)).text)
    ends = plan_poses(pose, result)
    assert ends[0].y < pose.y and abs(ends[-1].y) < 0.02 and ends[-1].x == pytest.approx(6.0, abs=0.02)


def test_the_description_names_the_goal_door_where_it_is():
    rng = np.random.default_rng(0)
    assert json.loads(answer(L_SCENE, Pose2D(8.0, 5.0, math.pi / 2), OracleSettings(), rng).text)['env'] == \
        'corridor, the red door 2 m ahead on the left'
    assert json.loads(answer(L_SCENE, Pose2D(8.0, 6.8, math.pi), OracleSettings(), rng).text)['env'] == \
        'in front of the red door'


@pytest.mark.parametrize('fault', [f for f in FAULTS if f != 'forward_blocked'])   # that one needs a blocked way
def test_a_fault_at_rate_one_is_always_there(fault):
    rng = np.random.default_rng(3)
    for x in np.linspace(0.0, 6.0, 10):
        reply = answer(L_SCENE, Pose2D(x, 0.0, 0.0), OracleSettings(**{fault: 1.0}), rng)
        assert reply.fault == fault
        result = parse_answer(reply.text, LIMITS)
        if fault == 'malformed':
            with pytest.raises(json.JSONDecodeError):
                json.loads(reply.text)
            assert not any(action in reply.text for action in ACTIONS)
            assert result.rejection is not None and not result.waypoints and result.source != 'text'
        elif fault == 'premature_arrived':
            assert result.arrived and result.rejection is None


def test_wrong_direction_is_the_plan_mirrored():
    pose = Pose2D(7.0, 0.2, 0.3)   # before the left turn
    right = json.loads(answer(L_SCENE, pose, OracleSettings(), np.random.default_rng(4)).text)
    reply = answer(L_SCENE, pose, OracleSettings(wrong_direction=1.0), np.random.default_rng(4))
    wrong = json.loads(reply.text)
    assert reply.fault == 'wrong_direction'
    assert wrong['wp'] == [[dx, -dy + 0.0, -dtheta, c] for dx, dy, dtheta, c in right['wp']]
    assert sum(step[2] for step in right['wp']) > 45 and '-0.0' not in reply.text


def test_a_drifting_plan_slides_into_the_nearest_wall():
    pose = Pose2D(2.0, 0.5, 0.0)   # 0.5 m from the corridor's left wall (y = 1)
    settings = OracleSettings(drift=1.0)
    reply = answer(L_SCENE, pose, settings, np.random.default_rng(6))
    ends = plan_poses(pose, parsed(reply.text))
    right = plan_poses(pose, parsed(answer(L_SCENE, pose, OracleSettings(), np.random.default_rng(6)).text))
    assert reply.fault == 'drift'
    assert all(inside_corridor(p.x, p.y) for p in right)
    assert ends[-1].y > 1.0 and not inside_corridor(ends[-1].x, ends[-1].y)   # beyond the wall's line
    assert [p.y for p in ends] == sorted(p.y for p in ends)                   # more with each waypoint


def test_forward_while_blocked_goes_straight_into_the_wall_ahead():
    pose = Pose2D(7.0, -0.3, 0.0)   # the corridor's end wall (x = 9) 2 m ahead; the route turns left here
    reply = answer(L_SCENE, pose, OracleSettings(forward_blocked=1.0), np.random.default_rng(7))
    result = parsed(reply.text)
    assert reply.fault == 'forward_blocked' and result.action == 'forward'
    assert all(abs(w.dy) < 1e-6 and abs(w.dtheta) < 1e-6 for w in result.waypoints)
    assert plan_poses(pose, result)[-1].x > 9.0


def test_forward_while_blocked_is_no_fault_where_the_way_ahead_is_free():
    pose = Pose2D(2.0, 0.0, 0.0)   # 7 m of corridor ahead, more than the 3 m horizon
    faulty = answer(L_SCENE, pose, OracleSettings(forward_blocked=1.0), np.random.default_rng(8))
    right = answer(L_SCENE, pose, OracleSettings(), np.random.default_rng(8))
    assert (faulty.fault, faulty.text) == ('', right.text)


def test_faults_appear_at_their_rates_and_never_at_rate_zero():
    rates = {'malformed': 0.1, 'wrong_direction': 0.2, 'premature_arrived': 0.3, 'drift': 0.2}
    rng = np.random.default_rng(5)
    faults = [answer(L_SCENE, Pose2D(2.0, 0.0, 0.0), OracleSettings(**rates), rng).fault for _ in range(2000)]
    for name, rate in rates.items():
        assert faults.count(name) / len(faults) == pytest.approx(rate, abs=0.03)
    assert {answer(L_SCENE, Pose2D(2.0, 0.0, 0.0), OracleSettings(), rng).fault for _ in range(1000)} == {''}
    with pytest.raises(ValueError):
        OracleSettings(malformed=0.6, premature_arrived=0.6)


def test_same_seed_same_answers():
    settings = OracleSettings(noise_m=0.05, noise_deg=5.0, malformed=0.2, wrong_direction=0.2)
    poses = [Pose2D(x, 0.1, 0.2) for x in np.linspace(0.0, 7.0, 30)]

    def texts(seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        return [answer(L_SCENE, pose, settings, rng).text for pose in poses]

    assert texts(9) == texts(9)
    assert texts(9) != texts(10)


def test_noise_perturbs_the_steps_without_accumulating():
    pose, rng = Pose2D(0.0, 0.0, 0.0), np.random.default_rng(6)
    settings = OracleSettings(noise_m=0.05, noise_deg=3.0)
    ends = [plan_poses(pose, parsed(answer(L_SCENE, pose, settings, rng).text))[-1] for _ in range(300)]
    errors = np.array([(p.x - 3.0, p.y) for p in ends])
    assert 0.03 < errors[:, 1].std() < 0.08    # one step's noise at the end, not six steps' worth
    assert np.abs(errors.mean(axis=0)).max() < 0.02
