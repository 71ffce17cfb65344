"""The openai backend over real HTTP on loopback, against test/openai_server.py: what is sent, what comes
back, and a slow, failing, garbled or absent server."""
from __future__ import annotations

import base64
import dataclasses
import socket
import sys
import threading
import time

import pytest
from openai_server import FakeOpenAIServer
from test_inference_core import TYPICAL_ANSWER, request

from vln_ros.core.backends import make_backend
from vln_ros.core.backends.base import BackendError
from vln_ros.core.backends.lmdeploy_pipeline import mm_processor_kwargs
from vln_ros.core.backends.openai_server import OpenAIParams
from vln_ros.core.config import InferenceParams


@pytest.fixture
def server():
    s = FakeOpenAIServer([TYPICAL_ANSWER, TYPICAL_ANSWER])
    yield s
    s.close()


def backend_for(base_url, timeout_s=5.0, **openai):
    return make_backend(InferenceParams(backend='openai', inference_timeout_s=timeout_s,
                                        openai=OpenAIParams(base_url=base_url, **openai)))


def test_answer_tokens_and_what_is_sent(server):
    backend = backend_for(server.base_url)
    answer = backend.generate(request(guided=True))
    assert answer.text == TYPICAL_ANSWER
    assert answer.input_tokens == 250 and answer.output_tokens > 1 and answer.finish_reason == 'stop'
    assert 0 < answer.first_token_s <= answer.latency_s
    assert backend.model_name == 'Qwen3-VL-8B-Instruct'  # asked from /v1/models
    sent = server.requests[0]
    assert sent['model'] == 'Qwen3-VL-8B-Instruct' and sent['temperature'] == 0.0 and sent['max_tokens'] == 128
    assert sent['response_format']['type'] == 'json_schema'
    assert sent['response_format']['json_schema']['schema']['required'] == ['env', 'act', 'wp']
    system, user = sent['messages']
    assert system['role'] == 'system' and 'quadruped' in system['content']
    image, text = user['content']
    assert base64.b64decode(image['image_url']['url'].removeprefix('data:image/jpeg;base64,')) == b'\xff\xd8jpeg'
    assert text['text'].startswith('Instruction: go to the red door')
    # The lmdeploy backend's image budget, in the field lmdeploy's api_server reads (protocol.py, 0.18)
    assert sent['mm_processor_kwargs'] == {'image': {'min_pixels': 1024, 'max_pixels': 200_704}}
    assert 'ignore_eos' not in sent
    backend.generate(request(guided=False))
    assert 'response_format' not in server.requests[1]


def test_image_budget_and_ignore_eos_follow_the_request(server):
    backend = backend_for(server.base_url, served_model='m')
    small = dataclasses.replace(request(), image_max_pixels=512, ignore_eos=True)
    backend.generate(small)
    sent = server.requests[0]
    assert sent['mm_processor_kwargs'] == mm_processor_kwargs(small) == {'image': {'min_pixels': 512,
                                                                                    'max_pixels': 512}}
    assert sent['ignore_eos'] is True


@pytest.mark.parametrize(('setup', 'reason'), [
    (lambda s: setattr(s, 'status', 500), 'http_500'),
    (lambda s: setattr(s, 'status', 429), 'http_429'),
    (lambda s: setattr(s, 'garbage', True), 'bad_response'),
])
def test_server_failures_become_backend_errors(server, setup, reason):
    setup(server)
    with pytest.raises(BackendError) as failed:
        backend_for(server.base_url, served_model='m').generate(request())
    assert failed.value.reason == reason


def test_slow_server_times_out(server):
    server.delay_s = 3.0
    started = time.perf_counter()
    with pytest.raises(BackendError) as failed:
        backend_for(server.base_url, timeout_s=0.5, served_model='m').generate(request())
    assert failed.value.reason == 'timeout' and time.perf_counter() - started < 2.5


def test_server_down_is_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendError) as failed:
        backend_for(f'http://127.0.0.1:{port}/v1', served_model='m').generate(request())
    assert failed.value.reason == 'unavailable'


def test_cancel_mid_stream(server):
    server.answers = ['x' * 400]  # 50 chunks
    server.token_delay_s = 0.05   # 2.5 s in all
    backend = backend_for(server.base_url, served_model='m')
    threading.Timer(0.4, backend.cancel).start()
    started = time.perf_counter()
    with pytest.raises(BackendError) as cancelled:
        backend.generate(request())
    assert cancelled.value.reason == 'cancelled' and time.perf_counter() - started < 1.5


def test_the_fake_server_imitating_batching_answers_four_robots_asking_together_slower_than_one_alone(server):
    """test/openai_server.py's batching(base_s, per_request_s), for the api shape of a fleet here: each answer
    takes base_s + per_request_s * n, n the requests in flight. Alone: 0.1 + 0.5 = 0.6 s; four asking together
    (one backend each, as four robots' inference nodes): 0.1 + 4 * 0.5 = 2.1 s each, less a little for the
    first ones arriving alone for a moment. Lower bounds with a wide gap between them: a loaded machine only
    makes both longer."""
    server.repeat_last = True
    server.batching(0.1, 0.5)
    started = time.perf_counter()
    backend_for(server.base_url, served_model='m').generate(request())
    alone_s = time.perf_counter() - started
    assert alone_s >= 0.6 and server.most_in_flight == 1

    backends = [backend_for(server.base_url, served_model='m') for _ in range(4)]
    together = threading.Barrier(len(backends))
    took_s: list[float] = []

    def ask(backend) -> None:
        together.wait(10.0)
        sent = time.perf_counter()
        backend.generate(request())
        took_s.append(time.perf_counter() - sent)

    threads = [threading.Thread(target=ask, args=(b,)) for b in backends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20.0)
    assert len(took_s) == 4 and server.most_in_flight == 4
    assert min(took_s) >= 1.2 and min(took_s) > alone_s, (alone_s, took_s)
    with pytest.raises(ValueError, match='per_request_s -1 must be >= 0'):
        server.batching(0.1, -1)


def test_without_the_openai_package_the_backend_names_the_fix(monkeypatch):
    """openai is an extra ('.[openai]'): a robot or GPU server without it only fails if it chooses it."""
    from vln_ros.core.config import StartupError
    monkeypatch.setitem(sys.modules, 'openai', None)  # import openai now raises ImportError
    with pytest.raises(StartupError, match=r"backend 'openai' needs the openai package: pip install '\.\[openai\]'"):
        backend_for('http://127.0.0.1:9/v1')
