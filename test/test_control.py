"""core/control: the control law and every safety behaviour, without ROS."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vln_ros.core.config import ControllerParams
from vln_ros.core.control import (
    Controller,
    Plan,
    PlanRejected,
    Pose2D,
    PoseHistory,
    StopReason,
    Waypoint,
    limit_rate,
    plan_path,
)
from vln_ros.core.limits import VelocityLimits

DT = 0.02
P = ControllerParams()


def straight(n=4, step=0.5, stamp=0.0, confidence=1.0):
    return Plan(stamp, tuple(Waypoint(step, 0.0, 0.0, confidence) for _ in range(n)))


def run(c: Controller, t0: float, seconds: float, odom=None):
    """Step the controller; with odom=Pose2D-integrating robot, feed back the commanded motion."""
    out, t = [], t0
    pose = odom
    for _ in range(round(seconds / DT)):
        t += DT
        if pose is not None:
            c.set_odometry(t, pose)
        cmd = c.step(t, DT)
        out.append((t, cmd))
        if pose is not None:
            pose = pose.compose(Pose2D(cmd.twist.vx * DT, cmd.twist.vy * DT, cmd.twist.wz * DT))
    return out


def following(c, plan, now=0.0):
    c.set_plan(plan, now)
    return run(c, now, 1.0)


def test_waypoint_straight_ahead_drives_forward():
    cmds = following(Controller(P), Plan(0.0, (Waypoint(2.0, 0.0, 0.0, 1.0),)))
    assert all(cmd.twist.vx > 0 for _, cmd in cmds)
    assert all(cmd.twist.wz == 0 and cmd.twist.vy == 0 for _, cmd in cmds)


def test_waypoint_to_the_left_turns_counter_clockwise():
    cmds = following(Controller(P), Plan(0.0, (Waypoint(0.5, 1.0, 0.0, 1.0),)))
    assert all(cmd.twist.wz > 0 for _, cmd in cmds)
    cmds = following(Controller(P), Plan(0.0, (Waypoint(0.5, -1.0, 0.0, 1.0),)))
    assert all(cmd.twist.wz < 0 for _, cmd in cmds)


def test_ninety_degrees_is_never_a_yaw_rate_of_ninety():
    for plan in (Plan(0.0, (Waypoint(0.0, 1.0, 0.0, 1.0),)), Plan(0.0, (Waypoint(0.0, 0.0, math.pi / 2, 1.0),)),
                 Plan(0.0, (Waypoint(0.0, 0.0, 12.0, 1.0),))):  # 12 rad: near the plausible limit
        cmds = run(_with(Controller(P), plan), 0.0, 3.0)
        assert max(abs(cmd.twist.wz) for _, cmd in cmds) <= P.max_angular_z
        assert max(abs(cmd.twist.wz) for _, cmd in cmds) > 0.5 * P.max_angular_z  # it does turn


def _with(c, plan, now=0.0):
    c.set_plan(plan, now)
    return c


def test_a_plan_that_arrives_when_the_robot_is_half_way_continues_instead_of_restarting():
    c = Controller(P)
    c.set_odometry(0.0, Pose2D(0.0, 0.0, 0.0))     # pose at the keyframe's capture
    c.set_odometry(4.0, Pose2D(1.0, 0.0, 0.0))     # 4 s later it has done 1 m of the 2 m plan
    c.set_plan(straight(4, 0.5, stamp=0.0), 4.0)
    cmds = run(c, 4.0, 10.0, odom=Pose2D(1.0, 0.0, 0.0))
    assert all(cmd.twist.vx >= 0 and abs(cmd.twist.wz) < 1e-6 for _, cmd in cmds)  # never turns back
    travelled = sum(cmd.twist.vx * DT for _, cmd in cmds)
    assert 0.8 <= travelled <= 1.0  # the remaining metre (less the goal tolerance), not 2 m
    assert cmds[-1][1].reason is StopReason.PLAN_DONE


def test_a_plan_is_re_expressed_after_the_robot_turned():
    c = Controller(P)
    c.set_odometry(0.0, Pose2D())
    c.set_odometry(2.0, Pose2D(0.0, 0.0, math.pi / 2))  # turned left 90 degrees since the capture
    c.set_plan(Plan(0.0, (Waypoint(2.0, 0.0, 0.0, 1.0),)), 2.0)  # "ahead" as seen at capture
    cmds = run(c, 2.0, 0.5, odom=Pose2D(0.0, 0.0, math.pi / 2))
    assert all(cmd.twist.wz < 0 for _, cmd in cmds)  # so now it lies to the right


def test_without_latency_compensation_a_plan_starts_where_the_robot_stands_when_it_arrives():
    c = Controller(P.model_copy(update={'latency_compensation': False}))
    c.set_odometry(0.0, Pose2D())
    c.set_odometry(2.0, Pose2D(0.0, 0.0, math.pi / 2))  # turned left 90 degrees since the capture
    c.set_plan(Plan(0.0, (Waypoint(2.0, 0.0, 0.0, 1.0),)), 2.0)
    cmds = run(c, 2.0, 0.5, odom=Pose2D(0.0, 0.0, math.pi / 2))
    assert all(abs(cmd.twist.wz) < 1e-6 and cmd.twist.vx > 0 for _, cmd in cmds)  # straight on, as if no delay


def test_without_odometry_the_commands_sent_are_integrated():
    c = Controller(P)
    c.set_plan(straight(2, 0.5, stamp=0.0), 0.0)
    run(c, 0.0, 2.0)
    moved = c.history.latest()
    assert moved.x > 0.3 and abs(moved.y) < 1e-9
    # a second plan from a keyframe captured at t=0 is followed from where the robot is now
    c.set_plan(straight(2, 0.5, stamp=0.0), 2.0)
    travelled = sum(cmd.twist.vx * DT for _, cmd in run(c, 2.0, 8.0))
    assert 1.0 - moved.x - 0.15 < travelled < 1.0 - moved.x + 0.05  # the rest of the metre, not all of it


def test_confidence_scales_speed_and_low_confidence_stops():
    fast = max(cmd.twist.vx for _, cmd in run(_with(Controller(P), straight(8, 0.5, confidence=1.0)), 0, 3))
    slow = max(cmd.twist.vx for _, cmd in run(_with(Controller(P), straight(8, 0.5, confidence=0.5)), 0, 3))
    assert slow == pytest.approx(fast / 2, rel=0.05)
    cmds = run(_with(Controller(P), straight(8, 0.5, confidence=0.1)), 0, 1)
    assert all(cmd.twist.is_zero() and cmd.reason is StopReason.LOW_CONFIDENCE for _, cmd in cmds)


def moving(params=P, seconds=3.0):
    c = Controller(params)
    c.set_plan(straight(20, 0.5, stamp=0.0), 0.0)
    cmds = run(c, 0.0, seconds)
    assert cmds[-1][1].twist.vx == pytest.approx(params.max_linear_x)
    return c, seconds


def assert_ramps_to_zero(cmds, reason, params=P):
    """Zero within v/decel + one period, never growing on the way, with the given reason."""
    speeds = [cmd.twist.vx for _, cmd in cmds]
    bound = params.max_linear_x / params.max_decel_x + DT
    assert all(b <= a + 1e-12 for a, b in zip(speeds, speeds[1:], strict=False)), 'not a decelerating ramp'
    zero_at = next(t for t, cmd in cmds if cmd.twist.is_zero())
    assert zero_at - cmds[0][0] <= bound + 1e-9
    assert len(set(speeds[:5])) > 1, 'a step, not a ramp'
    assert all(cmd.reason is reason for _, cmd in cmds)


def test_stop_plan_decelerates_to_zero():
    c, t = moving()
    c.set_plan(Plan(t, (), stop=True), t)
    assert_ramps_to_zero(run(c, t, 1.0), StopReason.STOP_PLAN)


def test_stale_plan_decelerates_to_zero():
    params = ControllerParams(plan_timeout_s=3.5)
    c, t = moving(params)
    cmds = run(c, t, 1.5)
    stale = [(tt, cmd) for tt, cmd in cmds if tt > 3.5 + 1e-9]
    assert all(cmd.twist.vx > 0 for tt, cmd in cmds if tt <= 3.5)
    assert_ramps_to_zero(stale, StopReason.PLAN_STALE, params)


def test_silent_inference_node_decelerates_to_zero():
    params = ControllerParams(inference_timeout_s=3.2)
    c, t = moving(params)
    silent = [(tt, cmd) for tt, cmd in run(c, t, 1.5) if tt > 3.2 + 1e-9]
    assert_ramps_to_zero(silent, StopReason.INFERENCE_SILENT, params)


def test_plan_from_the_future_is_rejected_and_stops():
    c, t = moving()
    with pytest.raises(PlanRejected, match='future'):
        c.set_plan(straight(stamp=t + 5.0), t)
    assert_ramps_to_zero(run(c, t, 1.0), StopReason.PLAN_FROM_FUTURE)


@pytest.mark.parametrize('bad', [math.nan, math.inf, -math.inf])
def test_non_finite_plan_is_rejected_never_forwarded_and_stops(bad):
    c, t = moving()
    for plan in (Plan(t, (Waypoint(bad, 0, 0, 1),)), Plan(t, (Waypoint(1, 0, 0, bad),)),
                 Plan(bad, (Waypoint(1, 0, 0, 1),))):
        with pytest.raises(PlanRejected, match='nonfinite'):
            c.set_plan(plan, t)
    cmds = run(c, t, 1.0)
    assert all(math.isfinite(v) for _, cmd in cmds for v in (cmd.twist.vx, cmd.twist.vy, cmd.twist.wz))
    assert_ramps_to_zero(cmds, StopReason.PLAN_REJECTED)


def test_non_finite_odometry_is_rejected_and_stops_until_valid_again():
    c = Controller(P)
    c.set_odometry(0.0, Pose2D())
    c.set_plan(straight(20, 0.5, stamp=0.0), 0.0)
    cmds = run(c, 0.0, 3.0, odom=Pose2D())
    assert cmds[-1][1].twist.vx > 0
    assert c.set_odometry(3.0, Pose2D(math.nan, 0.0, 0.0)) is False
    stopping = [c.step(3.0 + k * DT, DT) for k in range(1, 40)]
    assert stopping[-1].twist.is_zero() and all(s.reason is StopReason.ODOM_INVALID for s in stopping)
    assert c.history.latest().is_finite()  # the NaN never entered the history
    c.set_odometry(3.8, Pose2D(1.0, 0.0, 0.0))
    assert c.step(3.82, DT).reason is StopReason.NONE


def test_stale_odometry_stops():
    c = Controller(P)
    c.set_odometry(0.0, Pose2D())
    c.set_plan(straight(stamp=0.0), 0.0)
    cmds = run(c, 0.0, 2.0)  # no more odometry after t=0
    stale = [(t, cmd) for t, cmd in cmds if t > P.odom_timeout_s]
    assert all(cmd.reason is StopReason.ODOM_STALE for _, cmd in stale)
    assert_ramps_to_zero(stale, StopReason.ODOM_STALE) if not stale[0][1].twist.is_zero() else None
    assert stale[-1][1].twist.is_zero()


def test_estop_stops_within_one_period_and_stays_latched_until_released():
    c, t = moving()
    c.estop_message(True, t)
    assert c.step(t + DT, DT).twist.is_zero()  # the very next period
    c.estop_message(False, t + 0.1)  # the button released: still latched
    with pytest.raises(PlanRejected, match='estop_engaged'):
        c.set_plan(straight(20, 0.5, stamp=t + 0.1), t + 0.1)  # and plans meanwhile are refused
    later = run(c, t + 0.1, 1.0)
    assert all(cmd.twist.is_zero() and cmd.reason is StopReason.ESTOP for _, cmd in later)
    assert all(cmd.publish for _, cmd in later)  # never quiet while e-stopped (no twist_mux take-over)
    ok, _ = c.release_estop(t + 1.2)
    assert ok and c.estop_engaged is None
    after_release = run(c, t + 1.2, 0.5)
    assert all(cmd.twist.is_zero() and cmd.reason is StopReason.NO_PLAN for _, cmd in after_release)
    c.set_plan(straight(20, 0.5, stamp=t + 1.7), t + 1.7)  # only a new plan moves it again
    resumed = run(c, t + 1.7, 0.5)
    assert resumed[-1][1].twist.vx > 0 and resumed[0][1].twist.vx <= P.max_accel_x * DT + 1e-9  # ramps up


def test_estop_release_is_refused_while_asserted():
    c = Controller(P)
    c.estop_message(True, 0.0)
    ok, message = c.release_estop(0.1)
    assert not ok and 'still asserted' in message


def test_deadman_engages_when_the_estop_publisher_is_silent_and_needs_release():
    params = ControllerParams(estop_timeout_s=0.5)
    c = Controller(params)
    c.set_plan(straight(20, 0.5, stamp=0.0), 0.0)
    for k in range(1, 21):
        c.estop_message(False, k * 0.1)  # heartbeat at 10 Hz
        c.step(k * 0.1, 0.1)
    assert c.step(2.05, 0.05).reason is StopReason.NONE
    cmds = run(c, 2.05, 1.0)  # heartbeat stops at t=2.0
    engaged = [(t, cmd) for t, cmd in cmds if cmd.reason is StopReason.ESTOP_DEADMAN]
    assert engaged and engaged[0][0] <= 2.0 + 0.5 + DT + 1e-9 and engaged[0][1].twist.is_zero()
    assert not c.release_estop(3.1)[0]  # still silent
    c.estop_message(False, 3.2)
    assert c.release_estop(3.2)[0]


def test_a_heartbeat_before_the_clock_started_does_not_latch_the_deadman_at_the_first_step():
    # On simulated time the console's heartbeats arrive stamped 0 until /clock comes; then time jumps forward.
    c = Controller(ControllerParams(estop_timeout_s=2.0))
    c.estop_message(False, 0.0)
    assert c.step(1.7e9, 0.02).reason is StopReason.NO_PLAN
    assert c.estop_engaged is None
    assert c.step(1.7e9 + 2.1, 0.02).reason is StopReason.ESTOP_DEADMAN   # silence since the start still counts


def test_safe_start_up_no_motion_before_the_first_valid_plan():
    c = Controller(P)
    cmds = run(c, 0.0, 2.0)
    assert all(cmd.twist.is_zero() and cmd.reason is StopReason.NO_PLAN for _, cmd in cmds)


def test_zero_is_held_then_quiet_or_forever():
    c = Controller(ControllerParams(zero_hold_s=0.5))
    cmds = run(c, 0.0, 1.0)
    assert all(cmd.publish for t, cmd in cmds if t < 0.5 - 1e-9)
    assert not any(cmd.publish for t, cmd in cmds if t > 0.52)
    c = Controller(ControllerParams(zero_hold_s=0.5, publish_zero_forever=True))
    assert all(cmd.publish for _, cmd in run(c, 0.0, 2.0))


def test_rate_limiter():
    assert limit_rate(0.0, 1.0, 0.1, 0.5, 1.0) == pytest.approx(0.05)
    assert limit_rate(0.5, 0.0, 0.1, 0.5, 1.0) == pytest.approx(0.4)
    assert limit_rate(0.05, -1.0, 0.1, 0.5, 1.0) == 0.0  # through zero: stop first
    assert limit_rate(-0.3, -0.1, 0.1, 0.5, 1.0) == pytest.approx(-0.2)


def test_plan_path_chains_relative_steps():
    path = plan_path(Plan(0.0, (Waypoint(1, 0, math.pi / 2, 1), Waypoint(1, 0, 0, 1))))
    assert path[1][0].x == pytest.approx(1.0) and path[1][0].y == pytest.approx(1.0)


def test_pose_history_interpolates_and_drops_out_of_order_samples():
    h = PoseHistory()
    h.add(0.0, Pose2D(0, 0, 0))
    h.add(1.0, Pose2D(1, 0, 1.0))
    assert h.at(0.5) == Pose2D(0.5, 0.0, 0.5)
    assert h.add(0.2, Pose2D(5, 5, 0)) is False
    assert h.at(0.2) == Pose2D(0.2, 0.0, 0.2) and h.latest() == Pose2D(1, 0, 1.0)


finite = st.floats(-5, 5, allow_nan=False)
waypoints = st.builds(Waypoint, finite, finite, st.floats(-4, 4, allow_nan=False), st.floats(0, 1))
events = st.lists(st.one_of(
    st.tuples(st.just('plan'), st.lists(waypoints, max_size=6), st.booleans(), st.floats(-20, 1)),
    st.tuples(st.just('estop'), st.booleans()),
    st.tuples(st.just('release')),
    st.tuples(st.just('odom'), st.floats(-1e300, 1e300), finite, finite, st.floats(-1.0, 0.1)),
    st.tuples(st.just('clock_back'), st.floats(0.01, 30.0)),
    st.tuples(st.just('wait'), st.floats(0.005, 0.5))), max_size=40)


@settings(max_examples=150, deadline=None)
@given(events=events, rate=st.sampled_from([10.0, 30.0, 50.0, 100.0]))
def test_limits_hold_on_every_sample_of_any_plan_sequence(events, rate):
    p = ControllerParams(rate_hz=rate)
    c, t, dt, previous = Controller(p), 100.0, 1.0 / rate, None
    for event in events:
        kind = event[0]
        if kind == 'plan':
            try:
                c.set_plan(Plan(t + event[3], tuple(event[1]), stop=event[2]), t)
            except PlanRejected:
                pass
        elif kind == 'estop':
            c.estop_message(event[1], t)
        elif kind == 'release':
            c.release_estop(t)
        elif kind == 'odom':
            c.set_odometry(t + event[4], Pose2D(*event[1:4]), now_s=t)
        elif kind == 'clock_back':
            t -= event[1]
        for _ in range(max(1, round((event[1] if kind == 'wait' else dt) / dt))):
            t += dt
            cmd = c.step(t, dt).twist
            for v in (cmd.vx, cmd.vy, cmd.wz):
                assert math.isfinite(v)
            assert abs(cmd.vx) <= p.max_linear_x and abs(cmd.vy) <= p.max_linear_y
            assert abs(cmd.wz) <= p.max_angular_z
            if previous is not None and c.estop_engaged is None:
                for a, b, acc, dec in ((previous.vx, cmd.vx, p.max_accel_x, p.max_decel_x),
                                       (previous.vy, cmd.vy, p.max_accel_y, p.max_decel_y),
                                       (previous.wz, cmd.wz, p.max_accel_z, p.max_decel_z)):
                    limit = (acc if abs(b) > abs(a) and (a == 0 or (a > 0) == (b > 0)) else dec) * dt
                    assert abs(b - a) <= limit + 1e-9
            previous = cmd


def test_ros_time_going_backwards_drops_the_plan_and_stops():
    c, t = moving()
    cmds = run(c, t - 30.0, 1.0)  # a bag loop: /clock jumps 30 s back
    assert_ramps_to_zero(cmds, StopReason.CLOCK_JUMP)
    # the old poses (the robot had done > 1 m) are gone: the history restarts at the jump
    assert c.history.at(-math.inf).x < P.max_linear_x * DT + 1e-9


def test_one_late_odometry_stamp_does_not_reset_the_history():
    c = Controller(P)
    c.set_plan(straight(4, 0.5, stamp=0.0), 0.0)
    pose, t = Pose2D(), 0.0
    c.set_odometry(t, pose)
    for k in range(400):
        t += DT
        if k == 200:
            assert c.set_odometry(t - 0.025, pose) is False  # late: dropped, not a reset
        c.set_odometry(t, pose)
        cmd = c.step(t, DT)
        pose = pose.compose(Pose2D(cmd.twist.vx * DT, cmd.twist.vy * DT, cmd.twist.wz * DT))
    assert 1.85 <= pose.x <= 2.0  # the 2 m plan, not more


def test_odometry_replaces_dead_reckoning_without_mixing_frames():
    c = Controller(P)
    run(c, 0.0, 1.0)  # dead reckoning while standing
    c.set_plan(Plan(0.9, (Waypoint(1.0, 0.0, 0.0, 1.0),)), 1.0)
    c.set_odometry(1.0, Pose2D(10.0, 0.0, 0.0))  # odometry frame: far from the dead-reckoning origin
    cmds = run(c, 1.0, 1.0, odom=Pose2D(10.0, 0.0, 0.0))
    assert all(cmd.twist.vx >= 0.0 and abs(cmd.twist.wz) < 1e-6 for _, cmd in cmds)
    assert cmds[-1][1].twist.vx > 0.2  # forward, as planned


@pytest.mark.parametrize('pose', [Pose2D(1.5e308, 1.5e308, math.pi / 4), Pose2D(0.0, 2e6, 0.0)])
def test_implausible_odometry_is_rejected(pose):
    c = Controller(P)
    c.set_odometry(0.0, Pose2D())
    c.set_plan(straight(stamp=0.0), 0.0)
    assert c.set_odometry(0.02, pose) is False
    assert c.step(0.04, DT).reason is StopReason.ODOM_INVALID


def test_odometry_liveness_is_judged_by_arrival_not_stamp():
    c = Controller(P)
    c.set_plan(straight(20, 0.5, stamp=0.0), 0.0)
    for k in range(1, 50):  # stamps 5 s behind the controller's clock (a slow source), arriving on time
        c.set_odometry(k * DT - 5.0, Pose2D(), now_s=k * DT)
        c.step(k * DT, DT)
        assert c.step(k * DT, DT).reason is StopReason.NONE
    cmds = run(c, 49 * DT, 2.0)  # then odometry stops
    assert cmds[-1][1].reason is StopReason.ODOM_STALE and cmds[-1][1].twist.is_zero()


def odometry_at(c: Controller, t: float, x: float = 0.0, stamp: float | None = None) -> bool:
    return c.set_odometry(t if stamp is None else stamp, Pose2D(x, 0.0, 0.0), now_s=t)


def test_one_odometry_message_stamped_far_ahead_stops_the_robot_until_the_next_valid_one():
    """Regression: one stamp an hour ahead made every later message 'out of order': odom_stale for good."""
    c = Controller(P)
    c.set_plan(straight(20, 0.5, stamp=0.0), 0.0)
    t = 0.0
    for _ in range(25):
        t += DT
        odometry_at(c, t)
        c.step(t, DT)
    assert c.step(t, 0.0).reason is StopReason.NONE
    t += DT
    assert odometry_at(c, t, stamp=t + 3600.0) is False    # fail safe ...
    assert c.step(t, DT).reason is StopReason.ODOM_INVALID
    t += DT
    assert odometry_at(c, t) is True                        # ... then recover with the next valid message
    assert c.step(t, DT).reason is StopReason.NONE
    for _ in range(50):
        t += DT
        assert odometry_at(c, t)
        assert c.step(t, DT).reason is StopReason.NONE


def test_odometry_whose_clock_restarted_is_taken_again_after_odom_timeout():
    c = Controller(P)
    t = 0.0
    for _ in range(10):
        t += DT
        odometry_at(c, t)
        c.step(t, DT)
    c.set_plan(straight(20, 0.5, stamp=t), t)
    t += DT
    assert odometry_at(c, t, stamp=t - 500.0) is False  # out of order: dropped while the old stream is alive
    reasons = []
    while t < 1.0:                                       # the source now stamps from a clock 500 s behind
        t += DT
        odometry_at(c, t, stamp=t - 500.0)
        reasons.append(c.step(t, DT).reason)
    reset = reasons.index(StopReason.ODOM_RESET)         # history restarted; the plan (old poses) dropped
    assert (reset + 2) * DT >= P.odom_timeout_s - 1e-9  # not before the old stream was silent that long
    assert set(reasons[:reset]) == {StopReason.NONE} and set(reasons[reset:]) == {StopReason.ODOM_RESET}
    c.set_plan(straight(20, 0.5, stamp=t), t)
    t += DT
    assert odometry_at(c, t, stamp=t - 500.0) and c.step(t, DT).reason is StopReason.NONE


@pytest.mark.parametrize(('change', 'reason'), [
    ({'frame_id': 'camera_link'}, 'wrong_frame'),
    ({'frame_id': ''}, 'wrong_frame'),
    ({'waypoints': (Waypoint(0.5, 0.0, 0.0, 1.5),)}, 'confidence_out_of_range'),
    ({'waypoints': (Waypoint(0.5, 0.0, 0.0, -0.1),)}, 'confidence_out_of_range'),
])
def test_plans_in_another_frame_or_with_confidence_outside_0_1_are_refused(change, reason):
    c = Controller(P)
    c.set_plan(straight(stamp=0.0), 0.0)
    assert c.step(0.2, DT).reason is StopReason.NONE
    plan = Plan(0.0, change.get('waypoints', straight().waypoints), frame_id=change.get('frame_id', 'base_link'))
    with pytest.raises(PlanRejected, match=reason) as info:
        c.set_plan(plan, 0.2)
    assert info.value.reason == reason
    assert c.step(0.22, DT).reason is StopReason.PLAN_REJECTED  # the old plan is not followed either
    c.set_plan(Plan(0.2, straight().waypoints, frame_id='base_link'), 0.24)  # the base frame is fine
    assert c.step(0.26, DT).reason is StopReason.NONE


def test_any_finite_yaw_composes_without_raising():
    """Regression: yaws of +-1e308 overflowed to inf in composition and step() raised."""
    a, b = Pose2D(0.0, 0.0, 1e308), Pose2D(1.0, 0.0, 1e308)
    assert math.isnan(a.compose(b).yaw) or math.isfinite(a.compose(b).yaw)
    c = Controller(P)
    c.set_odometry(0.0, Pose2D(0.0, 0.0, 1e308))
    c.set_plan(straight(stamp=0.0), 0.0)
    c.set_odometry(0.02, Pose2D(0.01, 0.0, -1e308))
    cmd = c.step(0.04, DT)
    assert cmd.twist.is_finite()


FINITE = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                   st.sampled_from([1e308, -1e308, 1.7976931348623157e308, 5e-324, 0.0]))  # the edges, often
SMALL = st.floats(-5.0, 5.0)
WAYPOINT = st.builds(Waypoint, st.one_of(SMALL, FINITE), SMALL, st.one_of(SMALL, FINITE), st.floats(0.0, 1.0))
OPERATION = st.one_of(
    st.tuples(st.just('odometry'), st.one_of(SMALL, FINITE), st.builds(Pose2D, SMALL, SMALL, FINITE)),
    st.tuples(st.just('plan'), st.one_of(SMALL, FINITE), st.lists(WAYPOINT, max_size=4), st.booleans()),
    st.tuples(st.just('estop'), st.booleans()),
    st.tuples(st.just('release')),
    st.tuples(st.just('step'), st.floats(0.0, 0.5)),   # time goes on
    st.tuples(st.just('jump'), FINITE),                 # or jumps anywhere
)


@settings(max_examples=500, deadline=None)
@given(ops=st.lists(OPERATION, max_size=40), start=FINITE)
def test_the_core_never_raises_on_finite_input_and_never_exceeds_its_limits(ops, start):
    c = Controller(P)
    now = start
    for op in ops:
        if op[0] == 'odometry':  # stamped relative to now (small) or anywhere (FINITE)
            c.set_odometry(now + op[1] if abs(op[1]) <= 5.0 else op[1], op[2], now_s=now)
        elif op[0] == 'plan':
            try:
                c.set_plan(Plan(now + op[1] if abs(op[1]) <= 5.0 else op[1], tuple(op[2]), stop=op[3]), now)
            except PlanRejected:  # the documented refusal, not a crash
                pass
        elif op[0] == 'estop':
            c.estop_message(op[1], now)
        elif op[0] == 'release':
            c.release_estop(now)
        else:
            dt = op[1] if op[0] == 'step' else DT
            now = now + op[1] if op[0] == 'step' else op[1]
            t = c.step(now, dt).twist
            assert t.is_finite()
            assert abs(t.vx) <= P.max_linear_x and abs(t.vy) <= P.max_linear_y and abs(t.wz) <= P.max_angular_z


@pytest.mark.parametrize(('waypoints', 'reason'), [
    ((Waypoint(0.1, 0.0, 0.0, 1.0),) * 257, 'too_many_waypoints'),
    ((Waypoint(0.0, 0.0, math.pi / 4, 1.0), Waypoint(1.7e30, 1.7e30, 0.0, 1.0)), 'implausible_plan'),
    ((Waypoint(0.5, 0.0, 100.0, 1.0),), 'implausible_plan'),
])
def test_oversized_plans_are_rejected(waypoints, reason):
    c = Controller(P)
    with pytest.raises(PlanRejected, match=reason):
        c.set_plan(Plan(0.0, waypoints), 0.0)
    assert c.step(0.02, DT).twist.is_zero()


def test_a_non_finite_target_never_becomes_a_command():
    from vln_ros.core import control
    assert control._clamp(math.nan, 0.5) == 0.0  # min/max alone would say +0.5
    c = Controller(P)
    c.history.add(0.0, Pose2D(-1e308, 0.0, 0.0))  # overflowing geometry, past the input checks
    c.history.add(0.01, Pose2D(1e308, 0.0, math.pi))
    c.set_plan(straight(stamp=0.0), 0.0)
    cmd = c.step(0.02, DT)
    assert cmd.twist.is_zero() and cmd.reason is StopReason.PLAN_REJECTED


# -- VelocityLimits: the limit names in one place ---------------------------------------------------------------
def test_velocity_limits_are_named_as_the_controllers_parameters_and_read_from_them():
    params = ControllerParams(max_linear_x=0.4, max_linear_y=0.1, max_angular_z=0.7)
    limits = VelocityLimits.of(params)
    assert VelocityLimits.names() == ('max_linear_x', 'max_linear_y', 'max_angular_z')
    assert all(name in ControllerParams.model_fields for name in VelocityLimits.names())
    assert limits.as_dict() == {'max_linear_x': 0.4, 'max_linear_y': 0.1, 'max_angular_z': 0.7}
    assert VelocityLimits.from_values([0.4, 0.1, 0.7]) == limits


@pytest.mark.parametrize('values', [[0.4, 0.1], [0.4, 0.1, 0.7, 1.0], [0.4, math.nan, 0.7], [0.4, 0.1, -0.7],
                                    [math.inf, 0.1, 0.7]])
def test_velocity_limits_from_a_wrong_count_or_a_non_finite_or_negative_value_are_refused(values):
    with pytest.raises(ValueError, match='velocity limit'):
        VelocityLimits.from_values(values)


def test_velocity_limits_allow_each_component_up_to_its_limit_and_nothing_non_finite():
    limits = VelocityLimits(0.5, 0.2, 0.8)
    assert limits.allows(0.5, -0.2, -0.8) and limits.allows(0.0, 0.0, 0.0)
    assert not limits.allows(0.51, 0.0, 0.0) and not limits.allows(0.0, 0.21, 0.0)
    assert not limits.allows(0.0, 0.0, -0.81) and not limits.allows(math.nan, 0.0, 0.0)
    assert limits.allows(0.5 + 1e-7, 0.0, 0.0, slack=1e-6)
