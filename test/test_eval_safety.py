"""eval/safety.py, the guard study's rows, options, figures, table and pictures, on hand-made episodes; and the
eval stack's guard stops. No ROS, no simulator."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import pytest
from test_eval_metrics import record

from vln_ros.eval import metrics, pictures, safety
from vln_ros.eval.stack import EvalOptions, guard_stops


def scored(r: metrics.EpisodeRecord, success: bool) -> dict:
    return {'seed': r.seed, 'success': success, 'success_3m': success, 'oracle_success': success, 'spl': 1.0,
            'navigation_error_m': 0.1, 'navigation_error_geodesic_m': 0.1, 'ndtw': 1.0, 'time_to_goal_s': 10.0,
            'collisions': r.collisions, 'min_clearance_m': r.min_clearance_m, 'waiting_ratio': 0.1,
            'stop_and_go': 0, 'plan_age_s_p50': 0.5, 'plan_age_s_p99': 1.0, 'keyframe_to_plan_s_p50': 0.5,
            'limit_violations': 0, 'real_time_factor': 1.0, 'end_state': r.end_state}


def result(guard: bool, world: str, contacts: tuple[tuple[int, int], ...], successes: int = 0,
           model: str = 'oracle', latency_s: float = 0.5) -> safety.RowResult:
    """A row whose episodes had these (wall, person) contacts, the first `successes` of them successful."""
    records = [record(seed=k, collisions=walls, person_collisions=people)
               for k, (walls, people) in enumerate(contacts)]
    return safety.RowResult(safety.Row(guard, world, model, latency_s, len(records)), records,
                            [scored(r, k < successes) for k, r in enumerate(records)])


def test_the_full_study_has_the_issues_rows_and_counts():
    rows = safety.rows()
    assert len(rows) == 2 * 3 * 3 * 2
    assert sum(r.episodes for r in rows) == 540
    assert {r.episodes for r in rows if r.latency_s == 0.5} == {20} and {r.episodes for r in rows
                                                                         if r.latency_s == 2.0} == {10}


def test_a_reduced_study_runs_only_the_rows_asked_for():
    rows = safety.rows(['people'], ['oracle'], ['on', 'off'], safety.parse_latency_episodes('0.5:3'))
    assert [r.label for r in rows] == ['guard people oracle 0.5s', 'no guard people oracle 0.5s']
    assert all(r.episodes == 3 for r in rows)


@pytest.mark.parametrize('kwargs, message', [
    ({'worlds': ['moon']}, "unknown world 'moon'"), ({'models': ['psychic']}, "unknown model 'psychic'"),
    ({'guards': ['maybe']}, "unknown guard 'maybe'"), ({'latency_episodes': [(0.5, 0)]}, 'at least 1, got 0')])
def test_unknown_rows_and_empty_counts_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        safety.rows(**kwargs)


def test_a_bad_latency_episodes_item_is_named():
    with pytest.raises(ValueError, match="'0.5-20': expected LATENCY_S:EPISODES"):
        safety.parse_latency_episodes('2:10,0.5-20')


def test_a_row_sets_the_guard_world_model_and_latency_and_keeps_the_rest():
    base = EvalOptions(oracle=('noise_m:=0.01',), controller_params=('guard.stop_margin_m:=0.1',))
    options = safety.row_options(base, safety.Row(False, 'people', 'drifting', 2.0, 10))
    assert options.controller_params == ('guard.stop_margin_m:=0.1', 'guard.enabled:=false')
    assert options.oracle == ('noise_m:=0.01', 'fault_drift:=0.6')
    assert options.people == ('crossing', 'towards') and options.clutter == 0
    assert options.latency_s == 2.0 and options.speed == safety.SLOW_SPEED
    guarded = safety.row_options(base, safety.Row(True, 'clutter', 'oracle', 0.5, 20))
    assert guarded.controller_params[-1] == 'guard.enabled:=true' and guarded.clutter == 4 and guarded.speed == 1.0


def test_the_figures_count_every_contact_by_guard_and_the_guarded_oracles_success_among_people():
    results = [result(True, 'people', ((0, 0),) * 4, successes=3),
               result(True, 'empty', ((0, 0), (0, 0))),
               result(False, 'people', ((0, 2), (1, 0), (0, 0))),
               result(True, 'people', ((0, 0),), successes=0, model='mirrored')]   # not the oracle: not in the SR
    figures = safety.figures(results)
    assert figures == {'collisions_guard': 0.0, 'collisions_no_guard': 3.0, 'sr_people_0p5s': 0.75}
    assert safety.figures([result(True, 'people', ((0, 1),), 1)])['collisions_guard'] == 1.0


def test_the_figures_are_nan_for_rows_the_study_did_not_run():
    figures = safety.figures([result(True, 'empty', ((0, 0),))])
    assert math.isnan(figures['collisions_no_guard']) and math.isnan(figures['sr_people_0p5s'])


def test_the_table_has_a_row_per_configuration_with_walls_and_people_apart():
    text = safety.table([result(False, 'people', ((1, 2), (0, 0)), successes=1)])
    row = text.splitlines()[2]
    assert row.startswith('| off | people | oracle | 0.5 | 2 | 50 [')
    assert '| 1 | 2 | 1 |' in row   # wall contacts, person contacts, episodes with a contact


def test_the_guards_stops_are_where_the_robot_was_when_it_began_to_stop():
    trajectory = [[t / 10, t / 10, 0.5, 0.0, 1.0, 0.0, 0.0] for t in range(50)]
    assert guard_stops([1.05, 3.0], trajectory) == [[1.05, 1.1, 0.5], [3.0, 3.0, 0.5]]
    assert guard_stops([1.0], []) == []


def test_the_path_map_draws_peoples_tracks_and_the_guards_stops():
    scene = safety_scene()
    x, y = scene.start.x, scene.start.y
    plain = record()
    marked = record(people_tracks=[[t / 10, 0, x + 1.0, y - 1.0 + t / 20] for t in range(40)],
                    guard_stops=[[3.0, x + 0.5, y]])
    before, after = pictures.path_map(scene, plain), pictures.path_map(scene, marked)
    changed = cv2.absdiff(before, after).any(axis=2)
    assert changed.sum() > 100
    magenta = (after == pictures._GUARD_STOP_BGR).all(axis=2)
    assert magenta.any()


def safety_scene():
    from vln_ros.sim import scenes
    return scenes.generate(1)


def test_the_study_pictures_are_written_for_guarded_and_unguarded_rows(tmp_path: Path, monkeypatch):
    frames = []
    monkeypatch.setattr(pictures, 'video', lambda rec, path, camera: frames.append((rec.seed, path)) or 1)
    written = safety.write_pictures(tmp_path, [result(True, 'people', ((0, 0),)), result(False, 'people', ((1, 0),)),
                                               result(True, 'empty', ((0, 0),))])
    assert [p.name for p in written] == ['safety_paths_guard.png', 'safety_paths_no_guard.png',
                                         'safety_video_seed_0.mp4']
    assert all((tmp_path / name).stat().st_size > 1000 for name in ('safety_paths_guard.png',
                                                                    'safety_paths_no_guard.png'))
    assert frames == [(0, tmp_path / 'safety_video_seed_0.mp4')]


def test_vln_eval_refuses_an_unknown_safety_world_before_starting_anything(capsys, tmp_path: Path):
    from vln_ros.eval import run
    with pytest.raises(SystemExit) as exit_info:
        run.main(['--study', 'safety', '--worlds', 'empty,moon', '--out', str(tmp_path / 'out')])
    assert exit_info.value.code == 2
    assert "unknown world 'moon'" in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_a_video_frame_has_the_people_where_their_tracks_put_them_at_that_time():
    r = record(people_tracks=[[0.0, 0, 1.0, 2.0], [0.5, 0, 1.5, 2.0], [0.5, 1, 4.0, 0.0], [1.0, 0, 2.0, 2.0]])
    assert pictures.people_at(r, -1.0) is pictures.NO_PEOPLE
    view = pictures.people_at(r, 0.7)
    assert view.positions.tolist() == [[1.5, 2.0], [4.0, 0.0]] and len(view) == 2


def test_the_clutter_world_is_drawn_with_its_boxes_and_chairs_where_the_simulator_placed_them():
    from vln_ros.sim import people, scenes
    from vln_ros.sim.params import SimParams
    from vln_ros.sim.world import SimWorld
    plain, physical = scenes.generate(1), safety.physical_scene(1, 'clutter')
    clutter = physical.landmarks[len(plain.landmarks):]
    assert clutter and {m.name for m in clutter} <= {'box', 'chair'}
    # The same boxes as the simulator's own reset of this world.
    prepared = SimWorld(SimParams()).prepare(1, (), safety.WORLDS['clutter']['clutter'])
    assert prepared.physical.landmarks == physical.landmarks
    assert safety.physical_scene(1, 'people') == plain
    drawn = pictures.path_map(physical, record(seed=1))
    colours = {tuple(int(c) for c in bgr) for bgr in people.CLUTTER_BGR.values()}
    assert any((drawn == bgr).all(axis=2).any() for bgr in colours)


def test_a_study_with_clutter_and_people_draws_the_clutter_world_on_sheets_of_its_own(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(pictures, 'video', lambda rec, path, camera: 1)
    written = safety.write_pictures(tmp_path, [result(True, 'people', ((0, 0),)), result(True, 'clutter', ((0, 0),))])
    assert [p.name for p in written] == ['safety_paths_guard.png', 'safety_paths_guard_clutter.png',
                                         'safety_video_seed_0.mp4']
    with_clutter = cv2.imread(str(tmp_path / 'safety_paths_guard_clutter.png'))
    without = cv2.imread(str(tmp_path / 'safety_paths_guard.png'))
    assert with_clutter.shape == without.shape and cv2.absdiff(with_clutter, without).any()
