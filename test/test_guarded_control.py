"""The collision guard as the controller's last stage, without ROS: core/control (Controller.step with a
guard, regrow) and core/guard_report (when the status is published, the diagnostics counters)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vln_ros import interface
from vln_ros.core.config import ControllerParams
from vln_ros.core.control import Controller, Plan, StopReason, Waypoint, regrow
from vln_ros.core.guard import CollisionGuard, GuardAction, GuardParams, GuardState
from vln_ros.core.guard_report import StatusGate, reason_kind, rejection_counters
from vln_ros.core.guard_sources import DepthParams, LaserParams, PointCloudParams

DT = 0.02
GUARD = GuardParams(enabled=True)     # a laser, frame 'laser', 0.3 m circle, stop within 0.05 m
P = ControllerParams(guard=GUARD)


def scan(obstacle_ahead_m: float | None) -> SimpleNamespace:
    ranges = np.full(271, np.inf, np.float32)
    if obstacle_ahead_m is not None:
        ranges[132:139] = obstacle_ahead_m
    return SimpleNamespace(header=SimpleNamespace(frame_id='laser'), angle_min=-0.75 * math.pi,
                           angle_increment=1.5 * math.pi / 270, range_min=0.05, range_max=8.0, ranges=ranges)


def drive(c: Controller, guard: CollisionGuard, t: float, seconds: float, obstacle: float | None):
    """Step at 50 Hz with a scan every step; the commands and the time reached."""
    out = []
    for _ in range(round(seconds / DT)):
        t += DT
        guard.on_scan(scan(obstacle), t)
        out.append(c.step(t, DT, guard))
    return out, t


def ahead(stamp: float = 0.0) -> Plan:
    return Plan(stamp, tuple(Waypoint(0.5, 0.0, 0.0, 1.0) for _ in range(20)))


def test_the_guard_stops_a_followed_plan_at_once_and_the_zero_is_published():
    c, guard = Controller(P), CollisionGuard(GUARD)
    c.set_plan(ahead(), 0.0)
    moving, t = drive(c, guard, 0.0, 2.0, None)
    assert moving[-1].twist.vx == pytest.approx(P.max_linear_x)
    held, t = drive(c, guard, t, 3.0, 0.32)     # longer than zero_hold_s: still published, as zero
    assert all(cmd.twist.is_zero() and cmd.publish for cmd in held)
    assert all(cmd.reason is StopReason.NONE for cmd in held)   # the control law's reason is its own
    assert held[0].guard is not None and held[0].guard.action is GuardAction.STOP


def test_a_plan_held_back_by_the_guard_is_not_taken_as_followed_without_odometry():
    c, guard = Controller(P), CollisionGuard(GUARD)
    c.set_plan(ahead(), 0.0)
    _, t = drive(c, guard, 0.0, 5.0, 0.32)      # 2.5 m of the plan without the guard; held the whole time
    assert c.history.latest() is not None and c.history.latest().x == 0.0
    resumed, _ = drive(c, guard, t, 2.5, None)   # within inference_timeout_s of the plan's arrival
    assert resumed[-1].twist.vx == pytest.approx(P.max_linear_x)
    assert resumed[-1].reason is StopReason.NONE


def test_after_a_guard_stop_the_speed_grows_back_within_the_acceleration_limit():
    c, guard = Controller(P), CollisionGuard(GUARD)
    c.set_plan(ahead(), 0.0)
    _, t = drive(c, guard, 0.0, 2.0, 0.32)
    resumed, _ = drive(c, guard, t, 2.0, None)
    speeds = [0.0] + [cmd.twist.vx for cmd in resumed]
    steps = [b - a for a, b in zip(speeds, speeds[1:], strict=False)]
    assert max(steps) <= P.max_accel_x * DT + 1e-9
    assert speeds[-1] == pytest.approx(P.max_linear_x)


def test_the_controller_stops_on_its_own_and_goes_quiet_as_without_a_guard():
    c, guard = Controller(P), CollisionGuard(GUARD)
    out, _ = drive(c, guard, 0.0, P.zero_hold_s + 0.5, None)   # no plan: its own stop
    assert all(cmd.twist.is_zero() for cmd in out)
    assert out[0].publish and not out[-1].publish


@given(st.floats(-2.0, 2.0), st.floats(-2.0, 2.0), st.floats(0.0, 0.1), st.floats(0.0, 10.0))
def test_regrow_never_exceeds_the_guard_nor_changes_its_sign(previous, guarded, dt, accel):
    out = regrow(previous, guarded, dt, accel)
    assert abs(out) <= abs(guarded)
    assert out == 0.0 or (out > 0) == (guarded > 0)
    if abs(guarded) <= abs(previous) and (previous > 0) == (guarded > 0):
        assert out == guarded          # slowing down is never delayed


def state(action: GuardAction, reason: str, source: str = 'laser') -> GuardState:
    return GuardState(action, 0.0, 0.1, 0.0, source, reason)


def test_the_status_is_due_on_a_change_of_what_the_guard_does_not_of_its_numbers():
    gate = StatusGate(period_s=1.0)
    assert gate.due(state(GuardAction.STOP, 'laser: silent for 0.52 s (timeout_s 0.5)'), 0.0)
    assert not gate.due(state(GuardAction.STOP, 'laser: silent for 0.54 s (timeout_s 0.5)'), 0.02)
    assert gate.due(state(GuardAction.STOP, 'laser: last message rejected (wrong_frame)'), 0.04)
    assert gate.due(state(GuardAction.FREE, 'no obstacle in the zones or in the way', ''), 0.06)
    assert not gate.due(state(GuardAction.FREE, 'no obstacle in the zones or in the way', ''), 1.0)
    assert gate.due(state(GuardAction.FREE, 'no obstacle in the zones or in the way', ''), 1.07)  # 1 Hz
    assert gate.due(state(GuardAction.FREE, 'no obstacle in the zones or in the way', ''), 0.5)   # clock back


def test_reason_kind_drops_numbers_only():
    assert reason_kind('obstacle 0.23 m from the footprint at -12 deg: inside the stop zone (0.05 m)') == \
        reason_kind('obstacle 0.02 m from the footprint at 3 deg: inside the stop zone (0.05 m)')
    assert reason_kind('laser: no message received yet') == 'laser: no message received yet'


def test_rejections_become_diagnostics_counters():
    assert rejection_counters({'laser.wrong_frame': 2, 'camera_info.bad_camera_info': 1}) == {
        'guard_rejected_camera_info_bad_camera_info': 1, 'guard_rejected_laser_wrong_frame': 2}


def test_the_guard_parameters_nest_in_the_controller_and_default_off():
    assert ControllerParams().guard == GuardParams() and not ControllerParams().guard.enabled


def test_the_interface_names_the_guard_sources_default_topics():
    assert (interface.SCAN, interface.GUARD_POINTS, interface.GUARD_DEPTH, interface.GUARD_DEPTH_INFO) == (
        LaserParams().topic, PointCloudParams().topic, DepthParams().topic, DepthParams().camera_info_topic)
    assert not any(name.startswith('/') for name in (interface.SCAN, interface.GUARD_STATUS))
