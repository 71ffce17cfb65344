"""eval/merge.py: runs made in pieces (shards) merged into the run they would have been, and the pool that runs
the safety study's shards as child processes. Hand-made episodes scored for real; no ROS, no simulator."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from test_eval_metrics import LIMITS, corridor, record

from vln_ros.eval import merge, metrics, pictures, safety
from vln_ros.eval import run as eval_run
from vln_ros.eval.stack import EvalOptions

MADE = {'date': '2026-12-04 11:00 UTC', 'machine': 'x86_64, 16 cores, load 0.1 at the start', 'command': 'vln_eval'}


def episodes(seeds: list[int]) -> tuple[list[metrics.EpisodeRecord], list[dict]]:
    """Real records scored for real: odd seeds stop short of the goal, so the rates are not all 100 %."""
    records = [record(seed=s, kind='door_ahead' if s % 3 else 'turn', end_state='arrived' if s % 2 == 0 else 'stopped',
                      person_collisions=s % 2) for s in seeds]
    return records, [metrics.score(r, LIMITS, corridor(seed=r.seed)) for r in records]


def write_run(folder: Path, label: str, options: EvalOptions, seeds: list[int], **extra) -> Path:
    """A results.json as run.py's record_run writes it (run_entry, then json with default=str)."""
    records, scores = episodes(seeds)
    entry = eval_run.run_entry(label, eval_run.plain_options(options), records, scores, **extra)
    results = {'seeds': seeds, 'backend': 'oracle', 'made': MADE, 'runs': [entry], 'wall_s': 60.0 * len(seeds),
               'table': eval_run.table([(label, entry['summary'])]), 'table_note': eval_run.TABLE_NOTE}
    folder.mkdir(parents=True)
    (folder / 'results.json').write_text(json.dumps(results, indent=1, default=str))
    return folder


def test_a_record_survives_plain_json_and_back_with_its_plans_as_plan_objects():
    original = record(seed=7, guard_stops=[[1.0, 2.0, 3.0]], people_tracks=[[0.5, 0.0, 1.0, 2.0]],
                      faults={'fault': 'lose_odom', 'at_s': 3.0}, real_time_factor=0.9)   # nan != nan
    text = json.dumps(eval_run._plain(original), default=str)
    again = merge.record_from_plain(json.loads(text))
    assert again == original
    assert all(isinstance(p, metrics.Plan) for p in again.plans) and again.plans


def test_a_record_of_an_older_file_takes_the_defaults_of_the_fields_it_lacks():
    data = eval_run._plain(record(seed=3))
    del data['robot_collisions'], data['cross_talk']
    again = merge.record_from_plain(json.loads(json.dumps(data)))
    assert again.robot_collisions == 0 and again.cross_talk == 0 and again.seed == 3


def test_two_shards_merge_into_the_tables_of_one_run_over_all_their_seeds(tmp_path: Path):
    options = EvalOptions()
    label = eval_run.run_label(options)
    first = write_run(tmp_path / 'b', label, options, [3, 4, 5])
    second = write_run(tmp_path / 'a', label, options, [0, 1, 2])
    code = merge.merge_main(tmp_path / 'out', [first, second / 'results.json'], MADE, pictures=False)
    assert code == 0
    merged = json.loads((tmp_path / 'out' / 'results.json').read_text())
    records, scores = episodes(list(range(6)))
    whole = eval_run.run_entry(label, eval_run.plain_options(options), records, scores)
    (run,) = merged['runs']
    assert [e['record']['seed'] for e in run['episodes']] == list(range(6))
    assert run['family_table'] == whole['family_table']
    assert merged['table'] == eval_run.table([(label, whole['summary'])])
    assert merged['seeds'] == list(range(6)) and run['summary']['episodes'] == 6
    assert merged['made']['merged'] == [str(first / 'results.json'), str(second / 'results.json')]
    assert '6 episodes per run (seeds 0-5)' in (tmp_path / 'out' / 'tables.md').read_text()


def test_a_seed_in_two_shards_of_one_label_is_refused_by_seed_and_files(tmp_path: Path, capsys):
    options = EvalOptions()
    a = write_run(tmp_path / 'a', 'x', options, [0, 1, 2])
    b = write_run(tmp_path / 'b', 'x', options, [2, 3])
    assert merge.merge_main(tmp_path / 'out', [a, b], MADE, pictures=False) == 2
    err = capsys.readouterr().err
    assert "'x': seed 2 is in both" in err and str(a / 'results.json') in err and str(b / 'results.json') in err
    assert not (tmp_path / 'out' / 'results.json').exists()


def test_shards_of_one_label_with_different_options_are_refused_naming_the_option_and_files(tmp_path: Path):
    a = write_run(tmp_path / 'a', 'x', EvalOptions(speed=1.0), [0])
    b = write_run(tmp_path / 'b', 'x', EvalOptions(speed=2.0), [1])
    with pytest.raises(merge.MergeError, match=r"'x': .*a/results.json and .*b/results.json differ in option "
                                               r"'speed' \('1.0' vs '2.0'\)"):
        merge.merge([a, b], MADE)


def write_safety(folder: Path, rows: list[tuple[safety.Row, list[int]]]) -> Path:
    """A safety study's results.json as run.py writes it: record_run's entry with the row's 'safety' extra."""
    runs, results = [], []
    for row, seeds in rows:
        records, scores = episodes(seeds)
        result = safety.RowResult(row, records, scores)
        results.append(result)
        runs.append(eval_run.run_entry(row.label, eval_run.plain_options(safety.row_options(EvalOptions(), row)),
                                       records, scores, safety={**row.__dict__, **result.summary()}))
    data = {'seeds': '0 onwards, as many as each row runs', 'backend': 'oracle', 'made': MADE, 'runs': runs,
            'safety_table': safety.table(results), 'safety_figures': safety.figures(results), 'wall_s': 1.0}
    folder.mkdir(parents=True)
    (folder / 'results.json').write_text(json.dumps(data, indent=1, default=str))
    return folder


def test_safety_shards_merge_in_the_studys_row_order_with_the_figures_of_all_their_episodes(tmp_path: Path,
                                                                                              monkeypatch):
    videos = []
    monkeypatch.setattr(pictures, 'video', lambda rec, path, camera: videos.append(rec.seed) or 1)
    row = {(g, w, lat): safety.Row(g, w, 'oracle', lat, 2) for g in (True, False) for w in ('empty', 'people')
           for lat in (0.5, 2.0)}
    # shards arrive in no particular order, a row split over two of them
    s1 = write_safety(tmp_path / 's1', [(row[False, 'people', 0.5], [2, 3]), (row[True, 'empty', 2.0], [0, 1])])
    s2 = write_safety(tmp_path / 's2', [(row[True, 'people', 0.5], [0, 1]), (row[False, 'people', 0.5], [0, 1])])
    s3 = write_safety(tmp_path / 's3', [(row[True, 'empty', 0.5], [0, 1])])
    results, rows, _ = merge.merge([s1, s2, s3], MADE)
    assert [r['label'] for r in results['runs']] == [
        'guard empty oracle 0.5s', 'guard people oracle 0.5s', 'no guard people oracle 0.5s',
        'guard empty oracle 2s']
    canonical = safety.rows(['empty', 'people'], ['oracle'], ['on', 'off'], [(0.5, 2), (2.0, 2)])
    order = [r.label for r in canonical]
    labels = [r['label'] for r in results['runs']]
    assert labels == sorted(labels, key=order.index)
    unguarded = results['runs'][2]
    assert unguarded['safety']['episodes'] == 4 and unguarded['seeds'] == [0, 1, 2, 3]
    whole = [safety.RowResult(r.row, *episodes(sorted(s.seed for s in r.records))) for r in rows]
    assert results['safety_table'] == safety.table(whole)
    assert '| off | people | oracle | 0.5 | 4 |' in results['safety_table']
    # seeds 1 and 3 touched a person in the unguarded row; seed 1 in each guarded row of 2 episodes
    assert results['safety_figures']['collisions_no_guard'] == 2.0
    assert results['safety_figures']['collisions_guard'] == 3.0
    assert results['safety_figures']['sr_people_0p5s'] == 0.5
    assert results['seeds'].startswith('0-1 (guard empty oracle 0.5s') and '0-3 (no guard people oracle 0.5s)' in \
        results['seeds']
    written = merge.write(tmp_path / 'out', results, rows, [])
    assert [p.name for p in written] == ['safety_paths_guard.png', 'safety_paths_no_guard.png',
                                         'safety_video_seed_0.mp4']
    assert videos == [0]
    assert 'Safety:' in (tmp_path / 'out' / 'tables.md').read_text()


def test_a_latency_studys_runs_of_one_label_are_concatenated_and_the_plot_redrawn(tmp_path: Path, monkeypatch):
    drawn = []
    monkeypatch.setattr(pictures, 'study_plot', lambda path, rows, title: drawn.append((len(rows), title)))
    a = write_run(tmp_path / 'a', 'compensation 0.5s', EvalOptions(), [0], mode='compensation', latency_s=0.5)
    b = write_run(tmp_path / 'b', 'compensation 0.5s', EvalOptions(), [1], mode='compensation', latency_s=0.5)
    results, rows, pictured = merge.merge([a, b], MADE)
    assert results['runs'][0]['mode'] == 'compensation' and results['runs'][0]['summary']['episodes'] == 2
    merge.write(tmp_path / 'out', results, rows, pictured)
    assert drawn == [(1, '2 episodes per point, oracle model, simulated latency')]


def test_shards_split_each_row_into_even_contiguous_blocks_of_at_most_five_seeds():
    assert merge.seed_blocks(12, 10) == [(10, 4), (14, 4), (18, 4)]
    assert merge.seed_blocks(3, 0) == [(0, 3)] and merge.seed_blocks(11, 0) == [(0, 4), (4, 4), (8, 3)]
    row = safety.Row(True, 'people', 'oracle', 0.5, 12)
    got = merge.safety_shards([row, safety.Row(False, 'empty', 'drifting', 2.0, 3)], first_seed=10)
    assert [s.name for s in got] == [
        'guard_people_oracle_0.5s_seeds_10-13', 'guard_people_oracle_0.5s_seeds_14-17',
        'guard_people_oracle_0.5s_seeds_18-21', 'no_guard_empty_drifting_2s_seeds_10-12']
    assert got[0].args() == ['--study', 'safety', '--worlds', 'people', '--models', 'oracle', '--guard', 'on',
                             '--safety-episodes', '0.5:4', '--first-seed', '10']


def test_the_latency_and_faults_studies_split_into_one_point_or_row_per_shard_in_the_studys_order():
    got = merge.latency_shards([0.2, 8.0], ['compensation', 'baseline'], 7, 0)
    assert [s.name for s in got] == [
        'compensation_0.2s_seeds_0-3', 'compensation_0.2s_seeds_4-6', 'baseline_0.2s_seeds_0-3',
        'baseline_0.2s_seeds_4-6', 'compensation_8s_seeds_0-3', 'compensation_8s_seeds_4-6', 'baseline_8s_seeds_0-3',
        'baseline_8s_seeds_4-6']
    assert got[1].args() == ['--study', 'latency', '--latencies', '0.2', '--modes', 'compensation', '--episodes', '3',
                             '--first-seed', '4']
    faults = merge.fault_shards(['none', 'kill_inference'], 2, 5)
    assert [(s.name, s.args()) for s in faults] == [
        ('none_seeds_5-6', ['--study', 'faults', '--faults', 'none', '--episodes', '2', '--first-seed', '5']),
        ('kill_inference_seeds_5-6', ['--study', 'faults', '--faults', 'kill_inference', '--episodes', '2',
                                      '--first-seed', '5'])]
    # every shard's arguments are ones vln_eval accepts (the parser rejects an unknown mode or fault)
    assert set(eval_run.MODES) == {'compensation', 'no_compensation', 'baseline'}
    assert {'none', 'kill_inference'} <= set(eval_run.FAULTS)


FAKE_CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, {test_dir!r})
from test_eval_merge import write_safety
from vln_ros.eval import safety
args = sys.argv[1:]
get = lambda name: args[args.index(name) + 1]
if get('--worlds') == 'clutter' and get('--first-seed') == '0':
    sys.exit(3)   # a shard that fails
latency, n = get('--safety-episodes').split(':')
row = safety.Row(get('--guard') == 'on', get('--worlds'), get('--models'), float(latency), int(n))
first = int(get('--first-seed'))
write_safety(Path(get('--out')), [(row, list(range(first, first + int(n))))])
"""


def test_the_pool_runs_at_most_n_children_merges_them_and_reports_the_one_that_failed(tmp_path: Path, capsys):
    script = tmp_path / 'fake_child.py'
    script.write_text(FAKE_CHILD.format(test_dir=str(Path(__file__).parent)))
    study = safety.rows(['empty', 'clutter'], ['oracle'], ['on'], [(0.5, 7)])
    code = merge.jobs_main(tmp_path / 'out', merge.safety_shards(study, 0), 2,
                           lambda shard: [sys.executable, str(script), *shard.args()], MADE, pictures=False)
    assert code == 1
    out, err = capsys.readouterr()
    log = tmp_path / 'out' / 'shards' / 'guard_clutter_oracle_0.5s_seeds_0-3.log'
    assert f'shard guard_clutter_oracle_0.5s_seeds_0-3 failed (exit 3): {log}' in err
    assert '(3 running' not in out and '(2 running' in out   # never more than 2 at once
    merged = json.loads((tmp_path / 'out' / 'results.json').read_text())
    assert [(r['label'], r['seeds']) for r in merged['runs']] == [('guard empty oracle 0.5s', list(range(7))),
                                                                  ('guard clutter oracle 0.5s', [4, 5, 6])]
    assert merged['runs'][1]['safety']['episodes'] == 3   # what the clutter row has, truthfully
    assert '| on | clutter | oracle | 0.5 | 3 |' in merged['safety_table']


def test_the_pool_never_has_more_children_than_jobs_at_once(tmp_path: Path):
    commands = [(f'c{i}', [sys.executable, '-c', 'pass']) for i in range(5)]
    pool = merge.run_shards(commands, tmp_path, jobs=2, poll_s=0.01)
    assert pool.peak == 2 and len(pool.finished) == 5 and not pool.failed


def test_vln_eval_merge_needs_a_run_and_jobs_needs_a_study(capsys):
    with pytest.raises(SystemExit):
        eval_run.main(['--merge', 'out'])
    assert 'at least one run to merge' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_run.main(['--jobs', '4'])
    assert '--jobs 4: at least 1, and with a --study only' in capsys.readouterr().err


@pytest.mark.parametrize('argv, says', [
    (['--study', 'latency', '--modes', 'compensation,fast'], "--modes 'compensation,fast': fast not among "),
    (['--study', 'faults', '--faults', 'none,meteor'], "--faults 'none,meteor': meteor not among "),
    (['--study', 'latency', '--latencies', '0.5,-1'], "--latencies '0.5,-1': '-1' must be a positive number"),
    (['--study', 'latency', '--latencies', '0.5,nan'], "--latencies '0.5,nan': 'nan' must be a positive number"),
    (['--study', 'latency', '--latencies', 'soon'], "--latencies 'soon': 'soon' is not a number of seconds"),
])
def test_a_study_refuses_an_unknown_mode_fault_or_latency_before_it_starts_anything(argv, says, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        eval_run.main([*argv, '--jobs', '2', '--out', str(tmp_path / 'out')])
    assert exit_info.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


FAKE_LATENCY_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, {test_dir!r})
from test_eval_merge import write_run
from vln_ros.eval import run
from vln_ros.eval.stack import EvalOptions
args = sys.argv[1:]
get = lambda name: args[args.index(name) + 1]
latency, mode, first = float(get('--latencies')), get('--modes'), int(get('--first-seed'))
options = run.mode_options(EvalOptions(latency_s=latency), mode)
write_run(Path(get('--out')), f'{{mode}} {{latency:g}}s', options, list(range(first, first + int(get('--episodes')))),
          mode=mode, latency_s=latency)
"""


def test_the_latency_study_as_shards_merges_into_its_points_in_the_studys_order(tmp_path: Path, monkeypatch):
    drawn = []
    monkeypatch.setattr(pictures, 'study_plot', lambda path, rows, title: drawn.append(
        [(r['mode'], r['latency_s'], r['episodes']) for r in rows]))
    script = tmp_path / 'fake_child.py'
    script.write_text(FAKE_LATENCY_CHILD.format(test_dir=str(Path(__file__).parent)))
    todo = merge.latency_shards([0.5, 2.0], ['compensation', 'baseline'], 7, 0)
    code = merge.jobs_main(tmp_path / 'out', todo, 3, lambda shard: [sys.executable, str(script), *shard.args()],
                           MADE)
    assert code == 0
    merged = json.loads((tmp_path / 'out' / 'results.json').read_text())
    assert [(r['label'], r['seeds']) for r in merged['runs']] == [
        ('compensation 0.5s', list(range(7))), ('baseline 0.5s', list(range(7))),
        ('compensation 2s', list(range(7))), ('baseline 2s', list(range(7)))]
    assert merged['seeds'] == list(range(7))
    assert drawn == [[('compensation', 0.5, 7), ('baseline', 0.5, 7), ('compensation', 2.0, 7), ('baseline', 2.0, 7)]]


def test_nan_and_infinite_figures_survive_the_merge(tmp_path: Path):
    a = write_safety(tmp_path / 'a', [(safety.Row(True, 'empty', 'oracle', 0.5, 1), [0])])
    results, _, _ = merge.merge([a], MADE)
    assert math.isnan(results['safety_figures']['sr_people_0p5s'])
    assert results['runs'][0]['safety']['min_clearance_people_m'] == math.inf


def test_an_interrupted_pool_stops_every_child_it_started(tmp_path: Path, monkeypatch):
    """Ctrl-C (or SIGTERM, raised as KeyboardInterrupt) while children run: none is left behind."""
    started = []
    real_popen = merge.subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    real_sleep, ticks = merge.time.sleep, []

    def interrupt(seconds: float) -> None:   # the first sleep is the pool's; later ones are Popen.wait's
        ticks.append(seconds)
        if len(ticks) == 1:
            raise KeyboardInterrupt
        real_sleep(seconds)

    monkeypatch.setattr(merge.subprocess, 'Popen', popen)
    monkeypatch.setattr(merge.time, 'sleep', interrupt)   # the pool's first tick, with both children running
    forever = [sys.executable, '-c', 'import threading; threading.Event().wait()']
    with pytest.raises(KeyboardInterrupt):
        merge.run_shards([('a', forever), ('b', forever), ('c', forever)], tmp_path, jobs=2)
    assert len(started) == 2
    assert all(child.poll() is not None for child in started)


def test_faults_chooses_the_rows_of_the_faults_study_and_runs_them_in_the_order_given(tmp_path: Path, monkeypatch):
    """--faults picks rows by name: an answer fault runs with its oracle settings and inference parameters, a
    loop fault is injected by the harness; the order on the command line is the table's."""
    calls = []

    def run_set(options, seeds, out, label, fault=''):
        calls.append((label, fault, options.oracle, options.inference_params))
        records, scores = episodes(seeds)
        if fault:
            scores = [{**s, 'fault_outcome': {'fault': fault}} for s in scores]
        return records, scores

    monkeypatch.setattr(eval_run, 'run_set', run_set)
    monkeypatch.setattr(eval_run, 'begin_run', lambda program, *folders: [f.mkdir() for f in folders])   # no domain
    code = eval_run.main(['--study', 'faults', '--faults', 'lose_odom,premature_arrived_confirmed',
                          '--episodes', '2', '--out', str(tmp_path / 'out')])
    assert code == 0
    assert calls == [('lose_odom', 'lose_odom', (), ()),
                     ("premature 'arrived' 10 %, confirmed twice", '', ('fault_premature_arrived:=0.1',),
                      ('arrived_confirmations:=2',))]
    merged = json.loads((tmp_path / 'out' / 'results.json').read_text())
    assert [r['label'] for r in merged['runs']] == ['lose_odom', "premature 'arrived' 10 %, confirmed twice"]
    assert merged['runs'][0]['loop_faults'] == [{'fault': 'lose_odom'}] * 2


def test_rescore_scores_the_episodes_again_with_this_codes_metrics_and_keeps_the_harness_facts(tmp_path: Path):
    """A measure fixed after a run (time to goal read from an unconfirmed 'arrived'): --rescore recomputes it
    from the recorded episode in its seed's scene; an in-loop fault's outcome, which only the harness knew,
    stays."""
    from vln_ros.sim import scenes
    records = []
    for seed in (0, 2):
        goal = scenes.generate(seed).goal   # rescoring generates the seed's scene again: the walk ends at its goal
        walk = record(seed=seed)
        trajectory = [[t, x - 5.0 + goal.x, y + goal.y, *rest] for t, x, y, *rest in walk.trajectory]
        records.append(record(seed=seed, goal=[goal.x, goal.y, goal.yaw], trajectory=trajectory))
    scores = [{**metrics.score(r, LIMITS), 'time_to_goal_s': 0.5, 'fault_outcome': {'fault': 'lose_odom'}}
              for r in records]   # what an older metric wrote, and the harness' fact
    entry = eval_run.run_entry('lose_odom', eval_run.plain_options(EvalOptions()), records, scores)
    (tmp_path / 'a').mkdir()
    (tmp_path / 'a' / 'results.json').write_text(json.dumps({'runs': [entry], 'made': MADE}, default=str))
    kept, _, _ = merge.merge([tmp_path / 'a'], MADE)
    again, _, _ = merge.merge([tmp_path / 'a'], MADE, rescore=True)
    assert [e['score']['time_to_goal_s'] for e in kept['runs'][0]['episodes']] == [0.5, 0.5]
    fresh = [e['score'] for e in again['runs'][0]['episodes']]
    assert all(s['success'] for s in fresh), fresh
    assert [s['time_to_goal_s'] for s in fresh] == [pytest.approx(s['episode_time_s']) for s in fresh]
    assert again['runs'][0]['loop_faults'] == [{'fault': 'lose_odom'}] * 2
