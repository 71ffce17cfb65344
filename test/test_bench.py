"""`make bench` in its smoke mode (`bench/run.py --smoke`): every group runs to the end and prints its figures.

No figure is judged here (a timed unit test would be flaky, and smoke figures mean nothing): what fails is a
benchmark that no longer runs, hangs, or stops printing a figure the docs and issues name. Found that way:
the inference group stopped at once on a missing module, and the console group waited for ever.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vln_ros.harness import browser

REPO = Path(__file__).resolve().parents[1]

# Each group's figures that the docs (docs/benchmarks.md) and the issues quote.
FIGURES = {
    'keyframe': ['keyframe_decision_ms_p99_1080p', 'keyframe_spurious_flicker_30s', 'keyframe_spurious_exposure_ramp',
                 'camera_node_max_fps_1080p', 'keyframe_latency_ms_p99_1080p', 'keyframe_wait_ms_p50',
                 'keyframe_age_at_model_ms_p99'],
    'controller': ['controller_rate_hz', 'controller_period_jitter_ms_p99', 'plan_to_first_cmd_ms_p99',
                   'controller_period_ms_p99_under_flood', 'controller_plans_refused_under_flood'],
    'inference': ['parser_us_p99', 'stream_parse_16k_ms', 'answer_tokens_two_waypoints', 'inference_overhead_ms_p50',
                  'inference_stale_keyframe_age_ms_p99'],
    'console': ['console_first_image_s', 'console_image_latency_ms_p50', 'console_estop_to_zero_ms',
                'console_cpu_percent_0_viewers', 'console_cpu_percent_2_viewers', 'console_estop_state_ms_p99'],
    'safety': ['guard_step_us_p99', 'guard_step_cpu_us_p99', 'guard_scan_convert_us_p99',
               'guard_cloud_convert_us_p99', 'guard_reaction_ms_p99', 'guard_reaction_ms_p99_pointcloud',
               'guard_reaction_ms_p99_guard_node', 'eval_safety_collisions_guard',
               'eval_safety_collisions_no_guard', 'eval_safety_sr_people_0p5s'],
    'eval': ['eval_sr_0p5s', 'eval_spl_0p5s', 'eval_collisions_0p5s', 'sim_real_time_factor',
             'sim_real_time_factor_people', 'sim_max_speed_people'],
    'fleet': ['fleet_cmd_vel_rate_hz_min', 'fleet_cross_talk', 'fleet_sr_0p5s', 'fleet_robot_collisions',
              'fleet_stack_cpu_cores', 'fleet_engine_cmd_vel_rate_hz_min', 'fleet_engine_cross_talk',
              'fleet_engine_sr_0p5s', 'fleet_engine_stack_cpu_cores'],
}
SMOKE_TIMEOUT_S = 600   # a group's smoke run: node start-ups dominate (eval: one episode, about a minute)


def test_every_bench_group_is_checked_here():
    spec = importlib.util.spec_from_file_location('bench_run', REPO / 'bench' / 'run.py')
    assert spec is not None and spec.loader is not None
    bench_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_run)
    assert set(bench_run.BENCHES) == set(FIGURES)
    # every benchmark with a length or count has a short setting for --smoke
    sized = {b.__name__ for group in bench_run.BENCHES.values() for b in group
             if any(p.default is not p.empty for p in inspect.signature(b).parameters.values())}
    assert sized == set(bench_run.SMOKE)


@pytest.mark.parametrize('group', list(FIGURES))
def test_the_bench_group_runs_to_the_end_and_prints_its_figures(tmp_path, group):
    if group == 'console' and (why := browser.browser_unavailable()) and not os.environ.get('CI'):
        pytest.skip(f'no browser: {why}')
    result = subprocess.run([sys.executable, str(REPO / 'bench' / 'run.py'), group, '--smoke', '--out', str(tmp_path)],
                            capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
    for row in rows:
        assert set(row) == {'name', 'value', 'unit'} and isinstance(row['name'], str) and row['unit'], row
        assert math.isfinite(row['value']), row
    assert set(FIGURES[group]) <= {row['name'] for row in rows}, (FIGURES[group], [r['name'] for r in rows])
    written = [json.loads(line) for line in (tmp_path / 'results.jsonl').read_text().splitlines()]
    assert written == rows


def test_only_runs_the_named_benchmarks_and_refuses_an_unknown_one(tmp_path):
    run = [sys.executable, str(REPO / 'bench' / 'run.py'), 'inference', '--smoke', '--out', str(tmp_path)]
    result = subprocess.run([*run, '--only', 'bench_parser'], capture_output=True, text=True,
                            timeout=SMOKE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-4000:]
    names = {json.loads(line)['name'] for line in result.stdout.splitlines() if line.startswith('{')}
    assert 'parser_us_p99' in names and not names & {'stream_parse_16k_ms', 'inference_overhead_ms_p50'}, names
    refused = subprocess.run([*run, '--only', 'bench_guard'], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and '--only: no benchmark bench_guard in inference' in refused.stderr
