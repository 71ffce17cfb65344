"""vln_ros/eval/metrics.py, the baseline rule and the sheet of paths (vln_ros/eval/pictures.py): scores of
hand-made episodes in hand-made scenes, no ROS graph."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from vln_ros.core.config import ControllerParams
from vln_ros.core.control import Pose2D
from vln_ros.eval import pictures
from vln_ros.eval.baseline import OUTPUT_FPS, baseline_twist
from vln_ros.eval.metrics import (
    EpisodeRecord,
    Plan,
    dtw,
    geodesic_to_goal_m,
    limit_violations,
    ndtw,
    resample,
    score,
    standstills,
    summarise,
    summarise_by,
    wilson,
)
from vln_ros.eval.run import table
from vln_ros.sim.scene import Scene, Wall

LIMITS = {'max_linear_x': 0.5, 'max_linear_y': 0.2, 'max_angular_z': 0.8}
GREY = (128, 128, 128)


def box(x0, y0, x1, y1):
    """The four walls of an axis-aligned rectangle."""
    return (Wall(x0, y0, x1, y0, GREY), Wall(x1, y0, x1, y1, GREY), Wall(x1, y1, x0, y1, GREY),
            Wall(x0, y1, x0, y0, GREY))


def corridor(goal_x=5.0, length_m=8.0, seed=1, instruction='go down the corridor and stop at the red door',
             language='en', kind='door_ahead'):
    """A straight corridor 2 m wide along +x from x = -1, the start at the origin, the goal on its axis."""
    return Scene(seed=seed, walls=box(-1.0, -1.0, length_m - 1.0, 1.0), doors=(), landmarks=(),
                 start=Pose2D(0.0, 0.0, 0.0), goal=Pose2D(goal_x, 0.0, 0.0), route=((0.0, 0.0), (goal_x, 0.0)),
                 instruction=instruction, language=language, kind=kind)


def s_bend(goal=(1.0, 2.2)):
    """Two parallel corridors 2.2 m apart (y = 0 and y = 2.2, 0 <= x <= 10), a wall between them along y = 1.1
    from x = 0 to 8.5, joined beyond it: the start at (1, 0), the goal in the other corridor."""
    walls = box(0.0, -1.1, 10.0, 3.3) + (Wall(0.0, 1.1, 8.5, 1.1, GREY),)
    route = ((1.0, 0.0), (9.25, 0.0), (9.25, 2.2), goal)
    return Scene(seed=7, walls=walls, doors=(), landmarks=(), start=Pose2D(1.0, 0.0, 0.0),
                 goal=Pose2D(goal[0], goal[1], math.pi), route=route, instruction='turn round the wall and stop',
                 language='en', kind='multi_turn')


def straight_walk(length_m=5.0, speed=0.5, wait_s=1.0, dt=0.05, settle_s=2.0):
    """Stand wait_s, walk length_m along +x at speed, stand settle_s: trajectory rows and commands."""
    rows, commands, t, x = [], [], 0.0, 0.0
    while t < wait_s:
        rows.append([t, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        t += dt
    while x < length_m - 1e-9:
        x = min(length_m, x + speed * dt)
        rows.append([t, x, 0.0, 0.0, speed, 0.0, 0.0])
        commands.append([t, speed, 0.0, 0.0])
        t += dt
    end = t
    while t < end + settle_s:
        rows.append([t, x, 0.0, 0.0, 0.0, 0.0, 0.0])
        t += dt
    return rows, commands, end


def rows_along(points, dt=0.05, speed=0.5):
    """Trajectory rows walking the polyline at speed, then standing 2 s."""
    dense = resample(points, speed * dt)
    rows = [[k * dt, float(x), float(y), 0.0, speed, 0.0, 0.0] for k, (x, y) in enumerate(dense)]
    t = rows[-1][0]
    rows += [[t + (k + 1) * dt, *rows[-1][1:3], 0.0, 0.0, 0.0, 0.0] for k in range(40)]
    rows[len(dense) - 1][4] = 0.0
    return rows, t


def record(**changes):
    rows, commands, end = straight_walk()
    plans = [Plan(0.5, 0.0, True, 'stop', 0, 'task'), Plan(1.0, 0.5, False, 'forward', 6, 'task'),
             Plan(end, end - 0.5, True, 'arrived', 0, 'task')]
    base = dict(seed=1, instruction='go down the corridor and stop at the red door', language='en', kind='door_ahead',
                route_length_m=5.0, shortest_path_m=5.0, goal=[5.0, 0.0, 0.0], task_started_s=0.0, task_ended_s=end,
                end_state='arrived',
                end_reason='goal reached (the model answered arrived)', trajectory=rows, commands=commands,
                plans=plans, collisions=0, min_clearance_m=0.4)
    base.update(changes)
    return EpisodeRecord(**base)


def test_a_straight_successful_episode_scores_as_computed_by_hand():
    s = score(record(), LIMITS, corridor())
    assert s['success'] and s['spl'] == pytest.approx(1.0, abs=0.01)
    assert s['navigation_error_m'] == pytest.approx(0.0, abs=1e-6) and s['heading_error_deg'] == 0.0
    assert s['path_length_m'] == pytest.approx(5.0, abs=0.03)
    assert s['waiting_ratio'] == pytest.approx(1.0 / s['episode_time_s'], abs=0.02)  # the first second
    assert s['stop_and_go'] == 0   # waiting at the start is not a stop-and-go
    later = score(record(task_started_s=0.01), LIMITS, corridor())   # the task began between two trajectory samples
    assert later['stop_and_go'] == 0, later
    assert s['time_to_goal_s'] == pytest.approx(s['episode_time_s'], abs=1e-6)


def test_the_time_to_goal_is_the_confirmed_arrived_not_an_earlier_unconfirmed_one():
    """With arrived_confirmations 2 a lone 'arrived' is a stop plan and the task goes on: the faults study's
    'confirmed twice' row gave times to goal of 0.5-3 s on 13 m routes, read from that first 'arrived'."""
    base = record()
    premature = Plan(2.0, 1.5, True, 'arrived', 0, 'task')
    s = score(record(plans=[*base.plans[:2], premature, base.plans[2]]), LIMITS, corridor())
    assert s['success'] and s['time_to_goal_s'] == pytest.approx(s['episode_time_s'], abs=1e-6)
    assert s['plan_age_s_p50'] > 0.5 and s['limit_violations'] == 0


def test_arrived_too_far_from_the_goal_or_not_arrived_is_no_success():
    far = score(record(goal=[6.2, 0.0, math.pi / 2]), LIMITS, corridor(goal_x=6.2))
    assert far['heading_error_deg'] == pytest.approx(90.0)
    assert not far['success'] and far['spl'] == 0.0 and far['navigation_error_m'] == pytest.approx(1.2, abs=1e-6)
    timeout = score(record(end_state='timeout'), LIMITS, corridor())
    assert not timeout['success'] and math.isnan(timeout['time_to_goal_s'])


def test_a_detour_lowers_spl():
    rows, commands, end = straight_walk(length_m=8.0)
    s = score(record(trajectory=rows, commands=commands, task_ended_s=end, goal=[8.0, 0.0, 0.0]), LIMITS,
              corridor(goal_x=8.0, length_m=10.0))
    assert s['success'] and s['spl'] == pytest.approx(5.0 / 8.0, abs=0.01)


def test_a_pause_in_the_middle_is_one_stop_and_go():
    rows, commands, end = straight_walk()
    paused = [r if not 2.0 <= r[0] < 3.0 else [r[0], *rows[39][1:4], 0.0, 0.0, 0.0] for r in rows]
    s = score(record(trajectory=paused, commands=commands, task_ended_s=end), LIMITS, corridor())
    assert s['stop_and_go'] == 1
    assert len(standstills(paused)) == 3   # start, the pause, the end


def test_commands_beyond_the_limits_and_non_finite_ones_are_violations():
    commands = [[0.0, 0.5, 0.0, 0.0], [0.1, 0.51, 0.0, 0.0], [0.2, 0.0, -0.3, 0.0], [0.3, 0.0, 0.0, math.nan]]
    assert limit_violations(commands, LIMITS) == 3


def test_summary_rates_and_pooled_counts():
    good, bad = score(record(), LIMITS, corridor()), score(record(end_state='timeout', collisions=2), LIMITS,
                                                           corridor())
    summary = summarise([good, good, good, bad])
    assert summary['sr'] == pytest.approx(0.75) and summary['collisions'] == 2 and summary['episodes'] == 4


def test_baseline_rule_is_the_mean_step_times_output_fps_clamped():
    params = ControllerParams()
    linear, angular = baseline_twist([(0.4, 0.0), (0.2, 0.4)], params)
    assert linear == pytest.approx(0.3 * OUTPUT_FPS) and angular == pytest.approx(0.2 * OUTPUT_FPS)
    assert baseline_twist([(5.0, 5.0)], params) == (params.max_linear_x, params.max_angular_z)
    assert baseline_twist([], params) == (0.0, 0.0)


def test_wilson_intervals_are_the_published_ones_and_stay_within_0_and_1():
    assert wilson(17, 20) == pytest.approx((0.6396, 0.9476), abs=5e-4)     # 85 %: [64, 95]
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-4)          # not empty at 0 successes
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=5e-4)
    assert all(math.isnan(v) for v in wilson(0, 0))
    with pytest.raises(ValueError, match='successes=3, n=2'):
        wilson(3, 2)


def test_the_summary_and_the_table_carry_each_rate_with_its_interval():
    good, bad = score(record(), LIMITS, corridor()), score(record(end_state='timeout', collisions=1), LIMITS,
                                                           corridor())
    summary = summarise([good] * 17 + [bad] * 3)
    assert summary['sr'] == pytest.approx(0.85) and summary['sr_ci95'] == pytest.approx([0.6396, 0.9476], abs=5e-4)
    assert summary['collision_rate'] == pytest.approx(0.15) and summary['os'] == pytest.approx(1.0)
    row = table([('oracle 0.5s', summary)]).splitlines()[2]
    assert '| 85 % [64, 95] |' in row and '| 100 % [84, 100] |' in row, row


def test_a_straight_walk_along_the_route_is_a_success_at_both_radii_with_ndtw_near_one():
    s = score(record(), LIMITS, corridor())
    assert s['success'] and s['success_3m'] and s['oracle_success']
    assert s['navigation_error_geodesic_m'] == pytest.approx(0.0, abs=1e-6)
    assert s['ndtw'] == pytest.approx(1.0, abs=0.01)


def test_a_robot_that_passed_the_goal_and_stopped_1_5_m_beyond_it_has_oracle_success_and_sr_3m_only():
    rows, end = rows_along([(0.0, 0.0), (6.5, 0.0)])
    s = score(record(trajectory=rows, task_ended_s=end), LIMITS, corridor())
    assert s['navigation_error_geodesic_m'] == pytest.approx(1.5, abs=0.01)
    assert not s['success'] and s['success_3m'] and s['oracle_success']


def test_a_robot_stopped_in_the_parallel_corridor_of_an_s_is_far_from_the_goal_along_the_geodesic():
    scene = s_bend()
    rows, end = rows_along([(1.0, 0.0), (3.0, 0.0)])
    s = score(record(trajectory=rows, task_ended_s=end, goal=[1.0, 2.2, math.pi], seed=7), LIMITS, scene)
    assert s['navigation_error_m'] == pytest.approx(math.hypot(2.0, 2.2), abs=0.01)   # under 3 m in a line
    # round the end of the wall at (8.5, 1.1), 0.3 m clear of it: about 5.9 m there and 7.9 m back
    by_hand = math.hypot(8.8 - 3.0, 1.1) + math.hypot(8.8 - 1.0, 1.1)
    assert s['navigation_error_geodesic_m'] == pytest.approx(by_hand, abs=0.3)
    assert not s['success_3m'] and not s['oracle_success'] and not s['success']


def test_a_robot_behind_a_wall_from_the_goal_never_came_within_reach_of_it():
    scene = s_bend(goal=(1.0, 1.7))
    rows, end = rows_along([(1.0, 0.0), (5.0, 0.0), (5.0, 0.75), (1.0, 0.75)])
    s = score(record(trajectory=rows, task_ended_s=end, goal=[1.0, 1.7, math.pi], seed=7), LIMITS, scene)
    assert s['navigation_error_m'] == pytest.approx(0.95, abs=0.01)     # within 1 m through the wall
    assert not s['success'] and not s['oracle_success'] and s['navigation_error_geodesic_m'] > 10.0
    assert geodesic_to_goal_m(scene, 1.0, 2.5) == pytest.approx(0.8)    # the goal's own corridor: a straight line


def test_a_record_whose_goal_is_not_its_scenes_is_refused():
    with pytest.raises(ValueError, match=r'goal at \(5.000, 0.000\), the record at \(6.200, 0.000\)'):
        score(record(goal=[6.2, 0.0, 0.0]), LIMITS, corridor())


def test_ndtw_is_one_on_the_reference_and_falls_to_exp_of_minus_the_offset_over_d_th_beside_it():
    reference = [(0.0, 0.0), (4.0, 0.0), (4.0, 3.0)]
    assert ndtw(reference, reference) == pytest.approx(1.0)
    beside = [(0.0, 1.0), (3.0, 1.0), (3.0, 3.0)]             # 1 m off, the same length along every leg ...
    shifted = [(0.0, 1.0), (4.0, 1.0)]
    assert ndtw(shifted, [(0.0, 0.0), (4.0, 0.0)]) == pytest.approx(math.exp(-1.0 / 3.0))
    assert ndtw(beside, reference) < ndtw(reference, reference)
    standing = [(0.0, 0.0)] * 50 + reference + [(4.0, 3.0)] * 50     # standing still adds nothing
    assert ndtw(standing, reference) == pytest.approx(1.0)
    assert len(resample(reference, 0.25)) == 29 and np.allclose(np.diff(resample(reference, 0.25)[:16, 0]), 0.25)


def test_dtw_is_the_least_alignment_cost_of_a_brute_force_recursion():
    rng = np.random.default_rng(3)

    def brute(a, b):
        memo = {}

        def d(i, j):    # cost of aligning a[:i + 1] with b[:j + 1], a[i] with b[j]
            if (i, j) not in memo:
                here = math.dist(a[i], b[j])
                before = [d(p, q) for p, q in ((i - 1, j), (i, j - 1), (i - 1, j - 1)) if p >= 0 and q >= 0]
                memo[i, j] = here + (min(before) if before else 0.0)
            return memo[i, j]
        return d(len(a) - 1, len(b) - 1)

    for n, m in itertools.product((1, 2, 5), (1, 3, 6)):
        a, b = rng.normal(size=(n, 2)), rng.normal(size=(m, 2))
        assert dtw(a, b) == pytest.approx(brute(a, b)), (n, m)


def test_results_per_instruction_family_are_in_the_families_order_with_their_own_rates():
    good = score(record(), LIMITS, corridor())
    bad = score(record(end_state='timeout'), LIMITS, corridor())
    scores = [{**good, 'kind': 'room'}, {**bad, 'kind': 'door_ahead'}, {**good, 'kind': 'door_ahead'},
              {**good, 'kind': 'room'}]
    by_family = summarise_by(scores)
    assert list(by_family) == ['door_ahead', 'room']
    assert by_family['door_ahead']['sr'] == 0.5 and by_family['room']['sr'] == 1.0
    assert by_family['room']['sr_ci95'] == pytest.approx(list(wilson(2, 2)))


LONG_ZH = ('沿着走廊一直往前走，经过灭火器和自动售货机以后，在走廊尽头左手边第二扇红色的门前停下，'
           '然后转身面向门口等待下一条指令')


def test_a_sheet_draws_a_chinese_instruction_wrapped_in_full_and_every_map_at_one_scale():
    wide = corridor(goal_x=15.0, length_m=20.0)                             # 21 m x 3 m with the margins
    tall = Scene(seed=2, walls=box(-1.0, -1.0, 1.0, 29.0), doors=(), landmarks=(), start=Pose2D(0.0, 0.0, 1.57),
                 goal=Pose2D(0.0, 25.0, 1.57), route=((0.0, 0.0), (0.0, 25.0)), instruction=LONG_ZH,
                 language='zh', kind='door_ordinal')                          # 3 m x 31 m
    records, results = [], []
    for scene in (wide, tall):
        rows, end = rows_along(scene.route)
        records.append(record(seed=scene.seed, instruction=scene.instruction, language=scene.language,
                              kind=scene.kind, goal=[scene.goal.x, scene.goal.y, scene.goal.yaw], trajectory=rows,
                              task_ended_s=end))
        results.append(score(records[-1], LIMITS, scene))
    sheet = pictures.paths_sheet(records, results, [wide, tall], columns=2, cell_px=300)
    (wx, wy, ww, wh), (tx, ty, tw, th) = sheet.maps
    # the same pixels per metre in both maps, measured from the pictures' sizes, and each map where it says
    assert ww / 21.0 == pytest.approx(th / 31.0, rel=0.02) == pytest.approx(wh / 3.0, rel=0.1)
    assert th > 8 * tw and sheet.image.shape[1] == tx + max(tw, pictures.MIN_PANEL_PX) <= 2 * 300 + pictures.GAP_PX
    for x, y, w, h in sheet.maps:
        assert tuple(sheet.image[y, x]) == tuple(sheet.image[y + h - 1, x + w - 1]) == (95, 95, 95)
    instruction_lines = sheet.captions[1][0]
    assert len(instruction_lines) >= 2 and ''.join(instruction_lines) == LONG_ZH    # wrapped, nothing clipped
    font, _ = pictures._font(pictures.CJK_FONT, pictures.TEXT_PX)
    panel_px = max(tw, pictures.MIN_PANEL_PX)
    assert all(font.getlength(line[:-1]) <= panel_px - 2 * pictures.PAD_PX for line in instruction_lines)


@pytest.mark.skipif(not pictures.CJK_FONT.exists(), reason='fonts-wqy-zenhei is not installed')
def test_chinese_is_drawn_as_its_own_glyphs_with_the_cjk_font():
    red, lines = pictures.caption(['红色的门'], 200)
    blue, _ = pictures.caption(['蓝色的门'], 200)
    assert lines == [['红色的门']] and (red < 128).any() and (red != blue).any()


def test_without_the_cjk_font_a_chinese_line_is_replaced_by_a_note_and_english_is_still_drawn(tmp_path: Path):
    missing = tmp_path / 'no-such-font.ttc'
    image, lines = pictures.caption([LONG_ZH, 'seed 2 door_ordinal: SUCCESS'], 300, font_path=missing)
    assert ' '.join(lines[0]) == pictures.NO_FONT_NOTE and lines[1] == ['seed 2 door_ordinal: SUCCESS']
    assert image.shape[1] == 300 and (image < 128).any()


def test_the_latency_study_plot_draws_each_success_rate_with_its_wilson_interval(tmp_path: Path):
    rows = [{'mode': 'compensation', 'latency_s': latency, 'time_to_goal_s': 20.0,
             **summarise([score(record(), LIMITS, corridor())] * hits
                         + [score(record(end_state='timeout'), LIMITS, corridor())] * (10 - hits))}
            for latency, hits in ((0.5, 10), (2.0, 7))]
    bars = pictures.rate_error_bars(rows)
    assert bars[:, 0] == pytest.approx([100 * (1 - wilson(10, 10)[0]), 0.0])    # 100 %: nothing above
    assert bars[:, 1] == pytest.approx([100 * (0.7 - wilson(7, 10)[0]), 100 * (wilson(7, 10)[1] - 0.7)])
    pictures.study_plot(tmp_path / 'study.png', rows, 'two points')
    assert (tmp_path / 'study.png').stat().st_size > 10_000
