"""The model hears about the collision guard: a hold longer than history_blocked_after_s becomes one history
step ("the way was blocked ..."), so the next prompt says so. ROS-free (core/tasks.py, core/prompts.py,
core/inference.py), then once on a real graph (inference_node hearing vln/guard_status)."""
from __future__ import annotations

import math
import time

import pytest
from conftest import wait_for
from rclpy.parameter import Parameter
from test_inference_node import Probe
from test_inference_pipeline import FORWARD, Harness, ScriptedBackend

from vln_ros import interface
from vln_ros.core.prompts import GUARD_HELD_ACTION, Step, bearing_text, blocked_step, user_prompt
from vln_ros.core.tasks import BlockedWatch, TaskManager
from vln_ros.msg import GuardStatus
from vln_ros.nodes.inference_node import InferenceNode

AHEAD_RAD = math.radians(10.0)


def hold(tasks: TaskManager, times_s: list[float], action: str = 'stop', nearest_m: float = 0.3) -> list[Step]:
    steps = [tasks.guard_status(action, nearest_m, AHEAD_RAD, t) for t in times_s]
    return [s for s in steps if s is not None]


def test_a_hold_longer_than_the_threshold_adds_one_blocked_step_with_time_distance_and_bearing():
    tasks = TaskManager(history_max=8, failure_threshold=3, blocked_after_s=2.0)
    tasks.start('go to the kitchen')
    steps = hold(tasks, [10.0, 11.0, 12.5, 13.5, 14.5])
    assert steps == [Step('the way was blocked for 2 s: obstacle 0.30 m away, 10 deg left', GUARD_HELD_ACTION)]
    assert tasks.history() == steps


def test_a_short_hold_a_slowdown_or_a_fault_stop_adds_nothing():
    tasks = TaskManager(history_max=8, failure_threshold=3, blocked_after_s=2.0)
    tasks.start('go')
    assert hold(tasks, [0.0, 1.0]) == []
    assert hold(tasks, [1.5], action='free') == []          # the hold ended before 2 s
    assert hold(tasks, [2.0, 3.0, 4.0, 5.0], action='slowdown') == []
    # A silent sensor stops the robot but says nothing about the way ahead (no distance).
    assert hold(tasks, [6.0, 7.0, 8.0, 9.0], nearest_m=math.nan) == []
    assert tasks.history() == []


def test_each_new_hold_is_told_once_and_a_new_task_starts_without_the_old_hold():
    tasks = TaskManager(history_max=8, failure_threshold=3, blocked_after_s=2.0)
    tasks.start('go')
    assert len(hold(tasks, [0.0, 2.0, 3.0])) == 1
    assert hold(tasks, [4.0], action='free') == []
    assert len(hold(tasks, [5.0, 7.5])) == 1                 # a second hold: told again
    assert hold(tasks, [8.0]) == []                          # the same hold goes on: not again
    tasks.start('go elsewhere')
    assert tasks.history() == []
    assert hold(tasks, [9.0]) == []                          # a new task: its hold starts now, not at 5.0
    assert len(hold(tasks, [11.0])) == 1


def test_no_task_no_step_and_zero_means_never():
    idle = TaskManager(history_max=8, failure_threshold=3, blocked_after_s=2.0)
    assert hold(idle, [0.0, 5.0]) == []
    never = TaskManager(history_max=8, failure_threshold=3, blocked_after_s=0.0)
    never.start('go')
    assert hold(never, [0.0, 5.0, 60.0]) == []
    with pytest.raises(ValueError, match='after_s must be >= 0, got -1'):
        BlockedWatch(-1.0)


@pytest.mark.parametrize('bearing_deg, text', [(0.0, 'ahead'), (4.0, 'ahead'), (30.0, '30 deg left'),
                                               (-90.0, '90 deg right'), (350.0, '10 deg right')])
def test_the_bearing_reads_as_a_direction_from_the_robot(bearing_deg, text):
    assert bearing_text(math.radians(bearing_deg)) == text


def test_the_blocked_step_reaches_the_prompt_text():
    step = blocked_step(3.2, 0.25, math.radians(-20))
    assert user_prompt('go', [Step('corridor', 'forward'), step]).splitlines() == [
        'Instruction: go', 'Earlier steps, oldest first:', '1. corridor -> forward',
        '2. the way was blocked for 3 s: obstacle 0.25 m away, 20 deg right -> held by the collision guard',
        'Now: the image.']


def test_the_pipeline_puts_a_long_hold_into_the_next_prompt_and_a_live_threshold_applies():
    backend = ScriptedBackend(FORWARD, FORWARD)
    h = Harness(backend, history_blocked_after_s=2.0)
    h.pipeline.set_task('go')
    for t in (100.0, 101.0, 102.0):
        h.pipeline.guard_status('stop', 0.3, 0.0, t)
    h.answer()
    assert 'the way was blocked for 2 s: obstacle 0.30 m away, ahead -> held by the collision guard' in \
        backend.requests[-1].prompt.user
    h.pipeline.set_params(h.params.model_copy(update={'history_blocked_after_s': 0.0}))
    h.pipeline.guard_status('free', math.inf, math.nan, 103.0)
    for t in (104.0, 110.0):
        assert h.pipeline.guard_status('stop', 0.3, 0.0, t) is None


def test_inference_node_hears_a_held_guard_status_and_the_next_prompt_says_the_way_is_blocked(graph):
    backend = ScriptedBackend(FORWARD)
    values = {'backend': 'openai', 'history_blocked_after_s': 0.5, 'diagnostics_period_s': 0.2}
    graph.add(InferenceNode(backend_factory=lambda _params: backend, context=graph.context,
                            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]))
    probe = Probe(graph)
    guard = probe.node.create_publisher(GuardStatus, interface.GUARD_STATUS, interface.GUARD_STATUS_QOS)
    assert probe.set_task('go through the door').accepted
    assert wait_for(lambda: guard.get_subscription_count() > 0, 5.0)
    for _ in range(4):   # the guard republishes a hold every second; here every 0.25 s
        guard.publish(GuardStatus(action='stop', nearest_m=0.4, bearing_rad=0.0, source='laser',
                                  reason='obstacle', scale=0.0))
        time.sleep(0.25)
    probe.send_keyframe()
    assert wait_for(lambda: len(backend.requests) == 1, 5.0)
    assert 'the way was blocked for' in backend.requests[0].prompt.user
    assert 'obstacle 0.40 m away, ahead -> held by the collision guard' in backend.requests[0].prompt.user

