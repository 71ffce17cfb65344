"""make eval ROBOTS=N without a graph: the processes it starts (one sim_node with every robot, a stack per namespace
whose oracle asks for that robot) and how a robot of a fleet is scored (its own goal and route)."""
from __future__ import annotations

import math

import pytest

from vln_ros.eval import metrics
from vln_ros.eval.run import episode_table, markdown
from vln_ros.eval.stack import EvalOptions, EvalStack
from vln_ros.sim import fleet, scenes


def test_a_fleet_run_starts_one_simulator_with_every_robot_and_a_stack_per_namespace(tmp_path):
    commands = EvalStack(EvalOptions(robots=3), tmp_path).commands()
    assert sorted(commands) == sorted(['sim_node'] + [f'r{i}_{node}' for i in (1, 2, 3) for node in
                                                      ('camera_node', 'inference_node', 'controller_node')])
    assert 'robots:=[r1, r2, r3]' in commands['sim_node']
    for i in (1, 2, 3):
        for node in ('camera_node', 'inference_node', 'controller_node'):
            assert f'__ns:=/r{i}' in commands[f'r{i}_{node}']
        assert f'oracle.robot:=r{i}' in commands[f'r{i}_inference_node']
    # shape engine: ONE inference_node, in the root, serving the three namespaces
    engine = EvalStack(EvalOptions(robots=3, shape='engine'), tmp_path).commands()
    assert sorted(engine) == sorted(['sim_node', 'inference_node'] + [f'r{i}_{node}' for i in (1, 2, 3) for node in
                                                                      ('camera_node', 'controller_node')])
    assert 'robots:=[r1, r2, r3]' in engine['inference_node'] and '__ns:=/r1' not in engine['inference_node']
    single = EvalStack(EvalOptions(), tmp_path).commands()
    assert sorted(single) == ['camera_node', 'controller_node', 'inference_node', 'sim_node']
    assert not any('robots:=' in arg or 'oracle.robot' in arg for command in single.values() for arg in command)


def record(index: int, at: tuple[float, float]) -> metrics.EpisodeRecord:
    own = fleet.staggered(scenes.generate(0), 4)[index]
    x, y = at
    trajectory = [[0.0, own.start.x, own.start.y, own.start.yaw, 0, 0, 0], [5.0, x, y, own.goal.yaw, 0, 0, 0]]
    return metrics.EpisodeRecord(
        seed=0, instruction=own.instruction, language=own.language, kind=own.kind,
        route_length_m=own.route_length_m, shortest_path_m=own.route_length_m,
        goal=[own.goal.x, own.goal.y, own.goal.yaw], task_started_s=0.0, task_ended_s=5.0, end_state='arrived',
        end_reason='arrived', trajectory=trajectory, commands=[], plans=[], collisions=0, min_clearance_m=0.3,
        robot=f'r{index + 1}', robot_index=index, fleet_size=4, robot_collisions=1, cross_talk=index)


def test_a_follower_is_scored_against_its_own_goal_behind_the_leader_not_the_scenes():
    own = fleet.staggered(scenes.generate(0), 4)[2]
    at_own_goal = metrics.score(record(2, (own.goal.x, own.goal.y)), {})
    assert at_own_goal['success'] and at_own_goal['navigation_error_m'] == pytest.approx(0.0, abs=1e-9)
    assert at_own_goal['robot'] == 'r3' and at_own_goal['robot_collisions'] == 1
    scene_goal = scenes.generate(0).goal
    at_scene_goal = metrics.score(record(2, (scene_goal.x, scene_goal.y)), {})
    assert not at_scene_goal['success'] and at_scene_goal['navigation_error_m'] > 2 * fleet.MIN_SPACING_M - 1e-6
    summary = metrics.summarise([at_own_goal, at_scene_goal])
    assert summary['robot_collisions'] == 2 and summary['cross_talk'] == 4   # counted, never hidden
    table = episode_table([at_own_goal]).splitlines()
    assert table[0].startswith('| seed | robot |') and table[2].startswith('| 0 | r3 | success |')
    assert math.isfinite(at_own_goal['ndtw'])


def test_a_fleet_runs_the_first_seeds_whose_route_holds_its_queue_and_says_which_it_passed_over(tmp_path):
    """Seed 0's 6.2 m route holds 4 robots: make eval ROBOTS=5 started sim_node on seed 0 and never ran (and a
    refused reset ended the whole run). Now sim_node starts on a seed that holds the queue, and the run takes
    the first seeds from --first-seed that do, naming those passed over."""
    seeds, passed = fleet.seeds_that_fit(8, 0, 3)
    assert seeds == [1, 3, 9] and passed == [0, 2, 4, 5, 6, 7, 8]
    for seed in seeds:
        assert len(fleet.staggered(scenes.generate(seed), 8)) == 8
    for seed in passed:
        with pytest.raises(ValueError, match=f'seed {seed}: '):
            fleet.staggered(scenes.generate(seed), 8)
    assert fleet.seeds_that_fit(4, 0, 3) == ([0, 1, 2], [])
    assert 'seed:=1' in EvalStack(EvalOptions(robots=8), tmp_path).commands()['sim_node']
    assert 'seed:=0' in EvalStack(EvalOptions(robots=4), tmp_path).commands()['sim_node']
    head = markdown({'seeds': seeds, 'seeds_passed_over': passed, 'runs': [], 'made': {}}).splitlines()[0]
    assert '3 episodes per run (seeds 1, 3, 9) (passed over, routes too short for the robots: 0, 2, 4, 5, 6, 7, 8)' \
        in head
    assert '(seeds 0-2)' in markdown({'seeds': [0, 1, 2], 'runs': [], 'made': {}}).splitlines()[0]
