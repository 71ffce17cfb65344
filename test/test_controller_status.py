"""vln/controller_status (msg/ControllerStatus.msg): the fields built from the controller's state and when they
are worth a message (core/controller_report.py, no graph), what the console's pages get of a message, and the
real controller_node's latched delivery to a subscriber that comes late."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for
from std_msgs.msg import Bool

from vln_ros import interface
from vln_ros.core.config import ControllerParams
from vln_ros.core.control import Controller, Plan, StopReason, Waypoint
from vln_ros.core.controller_report import Mode, ReportGate, report
from vln_ros.msg import ControllerStatus
from vln_ros.nodes.console_node import page_state

AHEAD = tuple(Waypoint(0.5, 0.0, 0.0, 1.0) for _ in range(10))


def following(params: ControllerParams | None = None) -> tuple[Controller, StopReason]:
    """A controller one step into a 5 m plan straight ahead (at t = 1 s), and that step's stop reason."""
    controller = Controller(params or ControllerParams())
    controller.set_plan(Plan(1.0, AHEAD), 1.0)
    return controller, controller.step(1.0, 0.02).reason


def test_the_messages_constants_are_the_modes_and_estop_reasons_the_core_reports():
    assert {ControllerStatus.MODE_FOLLOWING, ControllerStatus.MODE_STOPPED, ControllerStatus.MODE_FAULT,
            ControllerStatus.MODE_ESTOP} == {m.value for m in Mode}
    assert ControllerStatus.ESTOP_MESSAGE == StopReason.ESTOP.value
    assert ControllerStatus.ESTOP_DEADMAN == StopReason.ESTOP_DEADMAN.value


def test_a_fresh_controller_reports_stopped_for_want_of_a_plan_with_the_limits_in_force():
    params = ControllerParams(max_linear_x=0.4, max_linear_y=0.1, max_angular_z=0.7, estop_timeout_s=2.0)
    controller = Controller(params)
    state = report(controller, controller.step(0.0, 0.02).reason, 0.0, None)
    assert (state.mode, state.stop_reason, state.estop_engaged, state.estop_reason) == (Mode.STOPPED, 'no_plan',
                                                                                        False, '')
    assert math.isnan(state.plan_age_s)
    assert (state.max_linear_x, state.max_linear_y, state.max_angular_z, state.estop_timeout_s) == (0.4, 0.1, 0.7, 2.0)


def test_following_a_plan_is_reported_with_the_plans_age():
    controller, reason = following()
    state = report(controller, reason, 1.25, 1.0)
    assert (state.mode, state.stop_reason) == (Mode.FOLLOWING, 'following')
    assert state.plan_age_s == pytest.approx(0.25)


def test_an_estop_message_between_two_steps_is_reported_engaged_at_once():
    controller, reason = following()
    controller.estop_message(True, 1.01)
    state = report(controller, reason, 1.01, 1.0)   # the last step still said 'following'
    assert (state.mode, state.stop_reason, state.estop_engaged, state.estop_reason, state.estop_asserted) == (
        Mode.ESTOP, 'estop', True, 'estop', True)
    controller.estop_message(False, 1.2)   # a heartbeat: still latched, no longer asserted
    assert report(controller, reason, 1.2, 1.0).estop_asserted is False
    assert report(controller, reason, 1.2, 1.0).estop_engaged is True


def test_the_deadman_is_reported_as_the_estops_reason():
    controller = Controller(ControllerParams(estop_timeout_s=0.5))
    controller.step(0.0, 0.02)
    state = report(controller, controller.step(0.6, 0.02).reason, 0.6, None)
    assert (state.mode, state.estop_reason, state.stop_reason) == (Mode.ESTOP, 'estop_deadman', 'estop_deadman')


def test_after_a_release_before_the_next_step_the_report_says_stopped_waiting_for_a_plan():
    controller, _ = following()
    controller.estop_message(True, 1.01)
    reason = controller.step(1.02, 0.02).reason
    controller.estop_message(False, 1.03)
    assert controller.release_estop(1.03)[0]
    state = report(controller, reason, 1.03, 1.0)
    assert (state.mode, state.stop_reason, state.estop_engaged) == (Mode.STOPPED, 'no_plan', False)


def test_a_stop_for_something_wrong_is_reported_as_a_fault():
    controller, _ = following(ControllerParams(plan_timeout_s=1.0))
    state = report(controller, controller.step(2.5, 0.02).reason, 2.5, 1.0)
    assert (state.mode, state.stop_reason) == (Mode.FAULT, 'plan_stale')


def test_the_gate_passes_a_change_at_once_and_the_same_state_once_a_period():
    controller, reason = following()
    gate = ReportGate(period_s=1.0)
    assert gate.due(report(controller, reason, 1.0, 1.0), 1.0)          # the first one
    assert not gate.due(report(controller, reason, 1.5, 1.0), 1.5)      # only the plan's age moved
    controller.estop_message(True, 1.6)
    assert gate.due(report(controller, reason, 1.6, 1.0), 1.6)          # the e-stop: at once
    assert not gate.due(report(controller, reason, 2.5, 1.0), 2.5)
    assert gate.due(report(controller, reason, 2.6, 1.0), 2.6)          # a period later: again
    assert gate.due(report(controller, reason, 0.5, 1.0), 0.5)          # time went back: again


def test_a_gate_needs_a_positive_period():
    with pytest.raises(ValueError, match='period_s must be positive, got 0.0'):
        ReportGate(0.0)


def status_msg(**fields: object) -> ControllerStatus:
    msg = ControllerStatus(**fields)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 500_000_000
    return msg


def test_the_console_gives_the_pages_the_estop_as_before_and_every_field_under_controller_status():
    shown = page_state(status_msg(mode='estop', estop_engaged=True, estop_reason='estop_deadman', estop_asserted=False,
                                  stop_reason='estop_deadman', plan_age_s=math.nan, max_linear_x=0.5,
                                  max_linear_y=0.2, max_angular_z=0.8, estop_timeout_s=2.0))
    assert shown['estop'] == {'engaged': True, 'reason': 'estop_deadman', 'period_s': 1.0}
    status = shown['controller_status']
    assert math.isnan(status.pop('plan_age_s'))
    assert status == {'mode': 'estop', 'estop_engaged': True, 'estop_reason': 'estop_deadman',
                      'estop_asserted': False, 'stop_reason': 'estop_deadman', 'stamp_s': 12.5,
                      'limits': {'max_linear_x': 0.5, 'max_linear_y': pytest.approx(0.2),
                                 'max_angular_z': pytest.approx(0.8)}, 'estop_timeout_s': 2.0,
                      'period_s': 1.0}


def test_the_console_says_released_when_no_estop_is_latched():
    assert page_state(status_msg(mode='following', stop_reason='following'))['estop'] == {
        'engaged': False, 'reason': 'released', 'period_s': 1.0}


def test_a_subscriber_that_comes_late_gets_the_controllers_latched_status(graph):
    """On simulated time with no /clock the controller never steps, so the e-stop's status is the only one it
    publishes: a subscriber that comes after it still gets it (transient local), a second one too."""
    proc = subprocess.Popen([str(Path(sys.executable).parent / 'controller_node'), '--ros-args',
                             '-p', 'use_sim_time:=true'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        early = graph.node('early')
        heard: list[ControllerStatus] = []
        early.create_subscription(ControllerStatus, interface.CONTROLLER_STATUS, heard.append,
                                  interface.CONTROLLER_STATUS_QOS)
        estop = early.create_publisher(Bool, interface.ESTOP, interface.ESTOP_QOS)
        assert wait_for(lambda: estop.get_subscription_count() > 0
                        and early.count_publishers(interface.CONTROLLER_STATUS) > 0, 20.0)
        estop.publish(Bool(data=True))
        assert wait_for(lambda: heard, 10.0), 'the e-stop was not reported'
        assert [(m.mode, m.estop_reason) for m in heard] == [('estop', 'estop')]

        late = graph.node('late')
        got: list[ControllerStatus] = []
        late.create_subscription(ControllerStatus, interface.CONTROLLER_STATUS, got.append,
                                 interface.CONTROLLER_STATUS_QOS)
        assert wait_for(lambda: got, 10.0), 'a late subscriber got nothing: the status is not latched'
        assert (got[0].estop_engaged, got[0].estop_reason, got[0].header.stamp) == (True, 'estop',
                                                                                  heard[0].header.stamp)
        assert len(heard) == 1   # nothing was published again meanwhile: what the late one got was the latch
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_stop_for_something_wrong_is_counted_once_when_it_begins_and_a_normal_stop_not_at_all():
    from vln_ros.core.controller_report import stop_counter
    controller, reason = following(ControllerParams(plan_timeout_s=2.0))
    assert reason is StopReason.NONE
    steps = [controller.step(t, 0.02).reason for t in (3.5, 3.52, 3.54)]   # the plan of t = 1 s is now stale
    assert steps == [StopReason.PLAN_STALE] * 3
    counted = [stop_counter(a, b) for a, b in zip([reason, *steps], steps, strict=False)]
    assert counted == ['stops_plan_stale', None, None]
    assert stop_counter(StopReason.NONE, StopReason.PLAN_DONE) is None   # as planned: nothing wrong
    assert stop_counter(StopReason.PLAN_STALE, StopReason.INFERENCE_SILENT) == 'stops_inference_silent'
