"""vln_eval's command line: how runs are labelled, what --speed a real backend accepts, the markdown tables that
docs/eval.md pastes, and `make eval`'s path through the openai backend against test/openai_server.py."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from openai_server import FakeOpenAIServer

from vln_ros.eval import metrics
from vln_ros.eval import run as eval_run
from vln_ros.eval.stack import EvalOptions

FORWARD = '{"env":"corridor ahead","act":"forward","wp":[[0.5,0,0,0.9],[0.5,0,0,0.8]]}'
ARRIVED = '{"env":"at the goal","act":"arrived","wp":[]}'


def test_the_oracle_is_labelled_by_its_latency_and_a_real_backend_by_its_model():
    assert eval_run.run_label(EvalOptions(latency_s=0.5)) == 'oracle 0.5s'
    assert eval_run.run_label(EvalOptions(latency_s=2.0, latency_compensation=False)) == 'oracle 2s no compensation'
    openai = EvalOptions(backend='openai', inference_params=('openai.served_model:=Qwen3-VL-8B',))
    assert eval_run.run_label(openai) == 'openai Qwen3-VL-8B'
    assert eval_run.run_label(openai, reported='InternVL3-2B') == 'openai InternVL3-2B'
    assert eval_run.run_label(EvalOptions(backend='openai')) == 'openai served model'
    lmdeploy = EvalOptions(backend='lmdeploy', model='/models/Qwen2.5-VL-7B/', controller='baseline')
    assert eval_run.run_label(lmdeploy) == 'lmdeploy Qwen2.5-VL-7B baseline'


def test_the_reported_model_is_the_one_most_plans_named():
    def record(*models: str) -> metrics.EpisodeRecord:
        plans = [metrics.Plan(0.0, 0.0, False, 'forward', 1, 't', model=m) for m in models]
        return metrics.EpisodeRecord(0, '', 'en', 'straight', 1.0, 1.0, [0, 0, 0], 0.0, 1.0, 'arrived', '', [], [],
                                     plans, 0, 1.0)
    assert eval_run.reported_model([record('a', 'b'), record('b', '')]) == 'b'
    assert eval_run.reported_model([record('', '')]) == ''


@pytest.mark.parametrize('backend', ['openai', 'lmdeploy'])
def test_a_real_backend_refuses_a_speed_other_than_1_and_says_why(backend, capsys):
    with pytest.raises(SystemExit) as exit_:
        eval_run.main(['--backend', backend, '--speed', '2', '--out', '/proc/never_written'])
    assert exit_.value.code == 2
    assert '--speed 2: a real backend runs at --speed 1 only (its latency is wall-clock' in capsys.readouterr().err


def test_the_tables_of_a_results_file_carry_date_machine_command_intervals_and_families(tmp_path):
    summary = {'episodes': 2, 'sr': 0.5, 'sr_ci95': (0.0945, 0.9055), 'os': 0.5, 'os_ci95': (0.0945, 0.9055)}
    results = {'seeds': [4, 5], 'wall_s': 61.0, 'runs': [
        {'label': 'oracle 0.5s', 'summary': summary, 'by_family': {
            'straight': {'episodes': 1, 'sr': 1.0, 'sr_ci95': (0.2065, 1.0)},
            'turns': {'episodes': 1, 'sr': 0.0, 'sr_ci95': (0.0, 0.7935)}}}],
        'made': {'date': '2026-12-04 01:00 UTC', 'machine': 'x86_64, 2 cores, load 9.0 at the start',
                 'command': 'vln_eval --episodes 2 --first-seed 4'}}
    path = tmp_path / 'results.json'
    path.write_text(json.dumps(results))
    printed = subprocess.run([sys.executable, '-m', 'vln_ros.eval.run', '--tables', str(path)],
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    text = printed.stdout
    assert text == eval_run.markdown(json.loads(path.read_text()))
    assert text.startswith('2026-12-04 01:00 UTC, x86_64, 2 cores, load 9.0 at the start: '
                           '`vln_eval --episodes 2 --first-seed 4`, 2 episodes per run (seeds 4-5), 61 s')
    assert '| oracle 0.5s | 2 | 50 % [9, 91] |' in text
    assert 'By instruction family (oracle 0.5s):' in text
    assert '| straight | 1 | 100 % [21, 100] |' in text and '| turns | 1 | 0 % [0, 79] |' in text


def test_the_tables_of_a_missing_results_file_are_one_line_and_exit_2(tmp_path):
    assert eval_run.main(['--tables', str(tmp_path / 'none.json')]) == 2


def test_make_eval_runs_through_the_openai_backend_is_labelled_by_the_served_model_and_scores_what_it_got(
        tmp_path):
    """The fake server walks forward for three plans, then says it has arrived: the episode ends on the model's
    word, every plan came from the served model, and the score is that of where the robot stopped."""
    server = FakeOpenAIServer([FORWARD] * 3 + [ARRIVED] * 20, model='Fake-VL-1B')
    try:
        done = subprocess.run(
            [sys.executable, '-m', 'vln_ros.eval.run', '--episodes', '1', '--backend', 'openai',
             '--param', f'openai.base_url:={server.base_url}', '--out', str(tmp_path)],
            capture_output=True, text=True, timeout=400)
    finally:
        server.close()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / 'results.json').read_text())
    (run,) = results['runs']
    assert run['label'] == 'openai Fake-VL-1B'
    assert results['made']['command'].startswith('vln_eval --episodes 1 --backend openai')
    (episode,) = run['episodes']
    record, score = episode['record'], episode['score']
    assert record['end_state'] == 'arrived', record['end_reason']
    # the node's own 'new_task' stop plan names the configured model (the server is asked only later)
    answered = [p for p in record['plans'] if p['action'] != 'new_task']
    assert answered and {p['model'] for p in answered} == {'Fake-VL-1B'}
    assert [p['action'] for p in answered] == ['forward'] * 3 + ['arrived']
    assert len(server.requests) >= 4    # three forward answers and the arrival were asked for
    # scored from where it stopped: success exactly when the stop was within 1 m along the geodesic
    assert math.isfinite(score['navigation_error_geodesic_m'])
    assert score['success'] == (score['navigation_error_geodesic_m'] <= 1.0)
    assert run['summary']['episodes'] == 1
    assert '| openai Fake-VL-1B | 1 |' in (tmp_path / 'tables.md').read_text()


def test_the_tables_of_a_safety_study_say_how_its_rows_were_seeded_and_carry_the_safety_table():
    """A safety study's rows each run their own number of episodes: its tables.md said '20 episodes per run
    (seeds 0-19)' over rows of 5 (the default seeds, never used), and left the safety table out."""
    summary = {'episodes': 5, 'sr': 1.0, 'sr_ci95': (0.566, 1.0)}
    safety_table = '| guard | world | model |\n|---|---|---|\n| on | people | oracle |'
    results = {'seeds': '0 onwards, as many as each row runs', 'wall_s': 681.0, 'safety_table': safety_table,
               'runs': [{'label': 'guard people oracle 0.5s', 'summary': summary, 'by_family': {}}],
               'made': {'date': '2026-12-04 06:04 UTC', 'machine': 'x86_64, 2 cores, load 0.6 at the start',
                        'command': 'vln_eval --study safety --safety-episodes 0.5:5'}}
    text = eval_run.markdown(results)
    assert '`vln_eval --study safety --safety-episodes 0.5:5`, seeds 0 onwards, as many as each row runs, 681 s' \
        in text, text
    assert 'episodes per run' not in text
    assert 'Safety:\n\n' + safety_table + '\n' in text, text
