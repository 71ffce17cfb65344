"""`bench/gpu.py fleet` without a GPU: its statistics, fairness, the closed loop of N robots, the api_server
command it starts, and one point through the openai backend against test/openai_server.py. Nothing here is
timed: the figures a GPU produces are judged on the GPU (docs/gpu_latency.md)."""
from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from openai_server import FakeOpenAIServer
from test_inference_core import TYPICAL_ANSWER, request

from vln_ros.core.backends import make_backend
from vln_ros.core.backends.base import BackendError
from vln_ros.core.config import InferenceParams

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'bench'))
import gpu  # noqa: E402  (bench/gpu.py)
from gpu_fleet import (  # noqa: E402
    Exchange,
    HostSampler,
    Levers,
    against_targets,
    api_server_command,
    closed_loop,
    fairness,
    percentile,
    summarize,
    table,
)


def test_percentile_interpolates_like_numpy_and_is_nan_without_values():
    values = [0.3, 0.1, 0.4, 0.2, 1.5]
    assert percentile(values, 50) == pytest.approx(float(np.percentile(values, 50)))
    assert percentile(values, 99) == pytest.approx(float(np.percentile(values, 99)))
    assert np.isnan(percentile([], 50))


def test_fairness_is_the_worst_robot_rate_against_the_mean():
    fair = fairness([2.0, 2.2, 1.8, 2.0])
    assert fair['mean_hz'] == 2.0 and fair['worst_deviation'] == 0.1 and fair['within'] is True
    unfair = fairness([1.0, 3.0])
    assert unfair['min_ratio'] == 0.5 and unfair['max_ratio'] == 1.5 and unfair['within'] is False
    starved = fairness([0.0, 0.0])
    assert starved['within'] is False
    with pytest.raises(ValueError, match=r'fairness of no robots: rates \[\]'):
        fairness([])


def test_summary_counts_only_answers_inside_the_window_per_robot_and_together():
    exchanges = [
        Exchange(0, 0.0, 0.5, 0.1),           # ends in the warm-up: not counted
        Exchange(0, 0.5, 1.5, 0.2), Exchange(0, 1.5, 2.5, 0.2),
        Exchange(1, 0.0, 2.0, 0.4),
        Exchange(1, 2.0, 2.2, None, 'timeout'),
        Exchange(1, 2.2, 3.5, 0.3),           # ends after the window: not counted
    ]
    row = summarize(exchanges, 2, (1.0, 3.0))
    assert row['answers'] == 3 and row['answers_per_s'] == 1.5 and row['errors'] == {'timeout': 1}
    robot0, robot1 = row['per_robot']
    assert (robot0['answers'], robot0['rate_hz'], robot0['p50_s']) == (2, 1.0, 1.0)
    assert (robot1['answers'], robot1['rate_hz'], robot1['p50_s']) == (1, 0.5, 2.0)
    assert row['p50_s'] == 1.0 and row['first_token_p50_s'] == 0.2
    assert row['fairness']['worst_deviation'] == pytest.approx(1 / 3, abs=1e-3)
    with pytest.raises(ValueError, match='a window of positive length'):
        summarize(exchanges, 2, (3.0, 3.0))


def test_targets_of_the_issue_apply_at_16_and_32_robots_only():
    row16 = summarize([Exchange(r, 0.0, 0.4, 0.1) for r in range(16)], 16, (0.0, 0.4))
    assert row16['answers_per_s'] == 40.0
    assert against_targets(row16) == {'p50<=0.45s': True, 'p99<=0.8s': True, '>=35/s': True, 'fair+-15%': True}
    slow = summarize([Exchange(r, 0.0, 0.9, 0.1) for r in range(32)], 32, (0.0, 1.0))
    assert against_targets(slow) == {'p50<=0.7s': False}
    assert against_targets(summarize([Exchange(0, 0.0, 0.3)], 1, (0.0, 1.0))) == {}


def test_the_api_server_gets_the_in_process_engine_settings():
    levers = Levers(max_batch_size=32, cache_max_entry_count=0.5, max_prefill_token_num=4096)
    command = api_server_command('python3', '/m', levers, fp8=False, port=23999)
    assert command[:6] == ['python3', '-m', 'lmdeploy', 'serve', 'api_server', '/m']
    flags = dict(zip(command[6::2], command[7::2], strict=False))
    assert flags['--max-batch-size'] == '32' and flags['--cache-max-entry-count'] == '0.5'
    assert flags['--max-prefill-token-num'] == '4096' and flags['--session-len'] == '8192'
    assert flags['--server-port'] == '23999' and flags['--backend'] == 'pytorch'
    assert '--model-format' not in command and '--disable-metrics' not in command
    fp8 = api_server_command('python3', '/m', dataclasses.replace(levers, metrics=False), fp8=True, port=1, tp=2)
    assert fp8[fp8.index('--model-format') + 1] == 'fp8' and '--disable-metrics' in fp8
    assert fp8[fp8.index('--distributed-executor-backend') + 1] == 'mp'
    assert levers.engine_extra() == {'max_prefill_token_num': 4096, 'prefill_interval': 16, 'enable_metrics': True}
    assert dataclasses.replace(levers, mp_engine=True).engine_extra()['enable_mp_engine'] is True
    # the levers below the API reach both paths, under each one's name
    low = dataclasses.replace(levers, cudagraph_batch_sizes=(8, 16, 24), block_size=128)
    assert low.engine_extra()['cudagraph_capture_batch_sizes'] == [8, 16, 24]
    assert low.engine_extra()['block_size'] == 128
    server = api_server_command('python3', '/m', low, fp8=False, port=1)
    assert server[server.index('--cudagraph-capture-batch-sizes') + 1:][:3] == ['8', '16', '24']
    assert server[server.index('--cache-block-seq-len') + 1] == '128'


def test_closed_loop_every_robot_asks_and_failures_are_counted_by_reason():
    def call(robot: int, number: int) -> float | None:
        if robot == 1:
            raise BackendError('unavailable', 'robot 1 never gets an answer')
        return 0.001

    exchanges, window = closed_loop(call, 3, warmup_s=0.0, measure_s=0.2,
                                    error_reason=lambda exc: getattr(exc, 'reason', 'other'))
    assert window == (0.0, 0.2)
    assert {e.robot for e in exchanges} == {0, 1, 2}
    row = summarize(exchanges, 3, (0.0, max(e.done_s for e in exchanges)))
    assert row['per_robot'][1]['answers'] == 0 and row['errors']['unavailable'] >= 1
    assert row['per_robot'][0]['answers'] >= 1 and row['per_robot'][2]['answers'] >= 1
    assert row['fairness']['within'] is False  # robot 1 starved
    with pytest.raises(ValueError, match='robots >= 1'):
        closed_loop(call, 0, 0.0, 1.0)


def test_a_fleet_point_through_the_openai_backend_gives_per_robot_rows_and_fairness():
    """gpu.py's own point with 4 robots against the fake server: the api_server path without a GPU."""
    server = FakeOpenAIServer([TYPICAL_ANSWER] * 10_000)
    try:
        args = SimpleNamespace(size=64, answer_tokens=gpu.ANSWER_TOKENS)

        def client():
            return make_backend(InferenceParams.model_validate({
                'backend': 'openai', 'inference_timeout_s': 10.0,
                'openai': {'base_url': server.base_url, 'served_model': 'm'}}))
        row = gpu.fleet_point(client, HostSampler(), 4, True, 0.1, 0.5, args)
    finally:
        server.close()
    assert row['robots'] == 4 and [r['robot'] for r in row['per_robot']] == [0, 1, 2, 3]
    assert sum(r['answers'] for r in row['per_robot']) == row['answers']
    assert set(row['fairness']) >= {'mean_hz', 'worst_deviation', 'within'} and row['targets'] == {}
    assert row['host']['process_cpu_cores'] >= 0 and row['host']['busiest_threads']
    sent = server.requests
    assert len(sent) >= 4 and all(r['response_format']['type'] == 'json_schema' for r in sent)
    assert all(r['ignore_eos'] is True and r['max_tokens'] == gpu.ANSWER_TOKENS for r in sent)
    # Every robot sends its own keyframes: no two robots share an image
    images = {base64.b64decode(r['messages'][1]['content'][0]['image_url']['url'].split(',')[1]) for r in sent}
    assert len(images) >= 4
    lines = table([dict(row, path='server', weights='bf16', guided=True)]).splitlines()
    assert len(lines) == 3 and lines[2].startswith(f'server | bf16 | yes | 4 | {row["p50_s"]} |')


# -- the in-process engine shared by several robots (LmdeployBackend.client) ---------------------------------

class FakePipe:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.sessions: list[SimpleNamespace] = []
        self.closed = 0

    def session(self) -> SimpleNamespace:
        session = SimpleNamespace(aborted=False)
        session.abort = lambda: setattr(session, 'aborted', True)
        self.sessions.append(session)
        return session

    def stream_infer(self, messages, sessions, gen_config, mm_processor_kwargs):
        for n, piece in enumerate(('{"act":', '"stop"', '}'), 1):
            yield SimpleNamespace(text=piece, input_token_len=9, generate_token_len=n,
                                  finish_reason='abort' if sessions.aborted else ('stop' if n == 3 else None))

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def fake_lmdeploy(monkeypatch):
    module = types.ModuleType('lmdeploy')
    module.__version__ = '0.18.0'
    module.PytorchEngineConfig = lambda **kwargs: kwargs
    module.TurbomindEngineConfig = lambda **kwargs: kwargs
    module.GenerationConfig = lambda **kwargs: kwargs
    pipes: list[FakePipe] = []
    module.pipeline = lambda model, backend_config, log_level: pipes.append(FakePipe(backend_config)) or pipes[-1]
    monkeypatch.setitem(sys.modules, 'lmdeploy', module)
    return pipes


def test_robots_share_one_engine_and_a_cancel_aborts_only_that_robots_request(fake_lmdeploy):
    from vln_ros.core.backends.lmdeploy_pipeline import LmdeployBackend, LmdeployParams
    section = LmdeployParams(tp=1, max_batch_size=64)
    backend = LmdeployBackend(section, InferenceParams.model_validate(
        {'backend': 'lmdeploy', 'model': 'Qwen/Qwen3-VL-8B-Instruct', 'lmdeploy': section}),
        engine_extra={'max_prefill_token_num': 4096})
    (pipe,) = fake_lmdeploy
    assert pipe.config['max_batch_size'] == 64 and pipe.config['max_prefill_token_num'] == 4096
    robot_a, robot_b = backend.client(), backend.client()
    keyframe = cv2.imencode('.jpg', np.zeros((32, 32, 3), np.uint8))[1].tobytes()
    base = dataclasses.replace(request(), image_jpeg=keyframe)
    # While robot a's request streams, robot b's task is cancelled: a's answer still comes.
    answer = robot_a.generate(dataclasses.replace(base, on_chunk=lambda _t, _n: robot_b.cancel()))
    assert answer.text == '{"act":"stop"}' and not pipe.sessions[-1].aborted
    with pytest.raises(BackendError) as cancelled:
        robot_b.generate(dataclasses.replace(base, on_chunk=lambda _t, _n: robot_b.cancel()))
    assert cancelled.value.reason == 'cancelled' and pipe.sessions[-1].aborted
    robot_a.close()
    assert pipe.closed == 0 and robot_b.generate(base).text == '{"act":"stop"}'  # the engine outlives a client
    backend.close()
    assert pipe.closed == 1


def test_the_fleet_command_sweeps_loads_once_and_skips_what_the_budget_cannot_hold(tmp_path, monkeypatch):
    """`bench/gpu.py fleet` from its command line, with the engine replaced by the fake server: one load per
    (path, weights), a row per point, the table; with too small a budget the load is skipped, said why."""
    import contextlib
    import json

    from vln_ros.core.model_shapes import SHAPES
    shape = SHAPES['8b']
    model = tmp_path / 'Qwen3-VL-8b-random'
    model.mkdir()
    (model / 'config.json').write_text(json.dumps({'text_config': {
        'hidden_size': shape.hidden, 'num_hidden_layers': shape.layers, 'intermediate_size': shape.intermediate}}))
    server = FakeOpenAIServer([TYPICAL_ANSWER] * 10_000)
    loads: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def engine(path, weights, levers, args):
        loads.append((path, weights))
        yield (lambda: make_backend(InferenceParams.model_validate({
            'backend': 'openai', 'openai': {'base_url': server.base_url, 'served_model': 'm'}}))), HostSampler()

    monkeypatch.setattr(gpu, 'fleet_engine', engine)
    out = tmp_path / 'out'
    common = ['gpu.py', 'fleet', '--model', str(model), '--paths', 'server', '--weights', 'bf16', '--guided', 'no',
              '--point-s', '0.3', '--warmup-s', '0.1', '--out', str(out)]
    try:
        monkeypatch.setattr(sys, 'argv', [*common, '--robots', '1,2', '--budget-s', '400'])
        assert gpu.main() == 0
        monkeypatch.setattr(sys, 'argv', [*common, '--robots', '1', '--budget-s', '100'])
        assert gpu.main() == 0
    finally:
        server.close()
    rows = [json.loads(line) for line in (out / 'results.jsonl').read_text().splitlines()]
    assert loads == [('server', 'bf16')]
    points = [r for r in rows if r['name'] == 'gpu_fleet' and 'skipped' not in r]
    assert [(p['robots'], p['guided'], p['shape'], p['path']) for p in points] == [(1, False, '8b', 'server'),
                                                                                 (2, False, '8b', 'server')]
    assert [r['name'] for r in rows].count('gpu_fleet_load_s') == 1 and any(r['name'] == 'gpu_close_s' for r in rows)
    skipped = [r for r in rows if 'skipped' in r]
    assert len(skipped) == 1 and 'a load takes' in skipped[0]['skipped']
    assert (out / 'fleet_table.md').read_text().count('\n') == 3  # head, rule, the skipped load
    with pytest.raises(SystemExit, match="--paths 'gpu': each of inprocess, server"):
        monkeypatch.setattr(sys, 'argv', [*common[:4], '--paths', 'gpu'])
        gpu.main()


FAKE_API_SERVER = '''
import sys, time
sys.path.insert(0, {test_dir!r})
from http.server import ThreadingHTTPServer
from openai_server import FakeOpenAIServer
args = sys.argv[1:]
print('api_server', args, flush=True)
port = int(args[args.index('--server-port') + 1])
bind = ThreadingHTTPServer.__init__
ThreadingHTTPServer.__init__ = lambda self, _address, handler: bind(self, ('127.0.0.1', port), handler)
time.sleep(0.5)  # a start-up: the bench waits until /v1/models answers
server = FakeOpenAIServer([{answer!r}] * 10_000)
try:
    while True:
        time.sleep(0.1)
except KeyboardInterrupt:
    print('stopped by SIGINT', flush=True)
'''


def test_the_server_path_starts_lmdeploys_api_server_waits_for_it_and_stops_it(tmp_path, monkeypatch):
    """`--paths server` with a stand-in `python -m lmdeploy` on PYTHONPATH: the command line, the wait for
    /v1/models, a point through it, and SIGINT at the end."""
    import json
    import os
    import socket

    from vln_ros.core.model_shapes import SHAPES
    fake = tmp_path / 'site' / 'lmdeploy'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text('')
    (fake / '__main__.py').write_text(FAKE_API_SERVER.format(test_dir=str(Path(__file__).parent),
                                                             answer=TYPICAL_ANSWER))
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([str(fake.parent), os.environ.get('PYTHONPATH', '')]))
    shape = SHAPES['8b']
    model = tmp_path / 'model'
    model.mkdir()
    (model / 'config.json').write_text(json.dumps({'text_config': {
        'hidden_size': shape.hidden, 'num_hidden_layers': shape.layers, 'intermediate_size': shape.intermediate}}))
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = tmp_path / 'out'
    monkeypatch.setattr(sys, 'argv', ['gpu.py', 'fleet', '--model', str(model), '--paths', 'server', '--weights', 'fp8',
                                      '--guided', 'yes', '--robots', '2', '--point-s', '0.3', '--warmup-s', '0.1',
                                      '--port', str(port), '--server-start-s', '60', '--out', str(out)])
    assert gpu.main() == 0
    rows = [json.loads(line) for line in (out / 'results.jsonl').read_text().splitlines()]
    (point,) = [r for r in rows if r['name'] == 'gpu_fleet']
    assert 'skipped' not in point and point['robots'] == 2 and point['weights'] == 'fp8' and point['guided'] is True
    assert point['answers'] == sum(r['answers'] for r in point['per_robot'])
    log = (out / 'api_server_fp8.log').read_text()
    assert f"'--server-port', '{port}'" in log and "'--model-format', 'fp8'" in log
    assert 'stopped by SIGINT' in log
    assert point['host']['busiest_threads'] and point['host']['children_cpu_cores'] >= 0  # the server's own threads


def test_fleet_node_drives_the_real_node_with_three_robots_through_the_openai_backend(tmp_path):
    """`bench/gpu.py fleet-node` end to end without a GPU (it otherwise first runs on a lent one): the real
    inference_node serving r1..r3 against the fake server, over a graph of its own; every robot's plans, no
    cross-talk, and r1's task switch checked by the script itself."""
    server = FakeOpenAIServer([TYPICAL_ANSWER] * 10_000)
    server.batching(0.1, 0.02)
    try:
        done = subprocess.run(
            [sys.executable, str(Path(gpu.__file__)), 'fleet-node', '--model', str(tmp_path), '--node-backend',
             'openai', '--url', server.base_url, '--node-robots', '3', '--warmup-s', '1', '--point-s', '3',
             '--out', str(tmp_path / 'out')], capture_output=True, text=True, timeout=180)
    finally:
        server.close()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / 'out' / 'results.jsonl').read_text().splitlines()]
    row = next(r['row'] for r in rows if r.get('name') == 'fleet_node_keyframe_to_plan_s_p50')
    assert (row['robots'], row['backend'], row['weights'], row['cross_talk']) == (3, 'openai', 'auto', 0)
    assert [r['robot'] for r in row['per_robot']] == ['r1', 'r2', 'r3'] and all(r['plans'] for r in row['per_robot'])
    assert row['stop_plans'] < sum(r['plans'] for r in row['per_robot'])   # the fake's answers parse into plans
    assert rows[-1] == {'check': 'gpu-fleet-node', 'ok': True, 'failures': []}
