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
from conftest import wait_for
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


@pytest.mark.parametrize('chunks', [0, 2])
def test_a_server_gone_mid_answer_is_unavailable_not_a_bad_or_partial_answer(server, chunks):
    server.hang_up_after_chunks = chunks   # its connection closes before the answer's last chunk
    with pytest.raises(BackendError) as failed:
        backend_for(server.base_url, served_model='m').generate(request())
    assert failed.value.reason == 'unavailable' and 'mid-answer' in failed.value.detail


def test_slow_server_times_out_at_the_backends_own_bound(server):
    """The backend's own bound (its start-up timeout, or the request's timeout_s: the pipeline's
    inference_timeout_s as it is when the request is sent, which changes live)."""
    from vln_ros.core.backends.openai_server import OpenAIBackend

    server.delay_s = 3.0
    started = time.perf_counter()
    backend = OpenAIBackend(OpenAIParams(base_url=server.base_url, served_model='m'), 'm', timeout_s=0.5)
    with pytest.raises(BackendError) as failed:
        backend.generate(request())
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


@pytest.mark.parametrize('headers', ['at_once', 'with_the_answer'])
def test_cancel_before_the_first_chunk_ends_the_request_at_once(server, headers):
    """lmdeploy's api_server sends a streamed answer's headers at once and the first chunk only when the batch
    gets to it; a server or proxy may also hold the headers until the answer starts. A task switch in either
    wait must not hold the robot's next request until inference_timeout_s (found by the fleet work:
    generate() returned 8 s after the cancel, at the timeout)."""
    if headers == 'at_once':
        server.batching(5.0, 0.0)    # headers now, the answer after 5 s
    else:
        server.delay_s = 5.0         # nothing at all for 5 s
    backend = backend_for(server.base_url, timeout_s=8.0, served_model='m')
    threading.Timer(0.5, backend.cancel).start()
    started = time.perf_counter()
    with pytest.raises(BackendError) as cancelled:
        backend.generate(request())
    assert cancelled.value.reason == 'cancelled' and time.perf_counter() - started < 1.5, \
        time.perf_counter() - started


def test_the_fake_server_imitating_batching_answers_four_robots_asking_together_slower_than_one_alone(server):
    """test/openai_server.py's batching(base_s, per_request_s), for the api shape of a fleet here: each answer
    takes base_s + per_request_s * n, n the requests in flight. Alone: 0.1 + 0.5 = 0.6 s; four asking together
    (one backend each, as four robots' inference nodes): up to 0.1 + 4 * 0.5 = 2.1 s each, less for the first
    ones while they were alone. Compared as the server timed each wait (a client's own start-up, seconds on a
    loaded machine, is not in it); the wall clock only as a lower bound."""
    server.repeat_last = True
    backend_for(server.base_url, served_model='m').generate(request())   # the first request of the process
    server.batching(0.1, 0.5)
    started = time.perf_counter()
    backend_for(server.base_url, served_model='m').generate(request())
    assert time.perf_counter() - started >= 0.6 and server.most_in_flight == 1
    (alone_s,) = server.batch_waits_s

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
    assert len(took_s) == 4 and server.most_in_flight == 4 and min(took_s) >= 0.6
    waits_s = server.batch_waits_s[1:]
    assert len(waits_s) == 4 and min(waits_s) > alone_s + 0.3, (alone_s, waits_s)
    with pytest.raises(ValueError, match='per_request_s -1 must be >= 0'):
        server.batching(0.1, -1)


def test_a_client_hanging_up_while_its_answer_waits_in_the_fake_batch_leaves_it_at_once(server):
    """As lmdeploy aborts a request whose client hung up: a robot's cancelled request must not keep slowing the
    others down for the rest of an answer nobody wants (here 5.5 s; the hang-up is seen within HANG_UP_POLL_S).
    A streamed answer's headers come at once, before the wait, as from lmdeploy's api_server."""
    import json
    from urllib.parse import urlsplit

    server.batching(0.5, 5.0)
    url = urlsplit(server.base_url)
    body = json.dumps({'model': 'm', 'stream': True}).encode()
    client = socket.create_connection((url.hostname, url.port), timeout=5.0)
    client.sendall(f'POST {url.path}/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: '
                   f'application/json\r\nContent-Length: {len(body)}\r\n\r\n'.encode() + body)
    head = b''
    for _ in range(100):   # the headers, while the answer waits in the batch (each recv: 5 s at most)
        chunk = client.recv(4096)
        head += chunk
        if not chunk or b'\r\n\r\n' in head:
            break
    assert head.startswith(b'HTTP/1.1 200') and server.in_flight == 1
    client.shutdown(socket.SHUT_RDWR)   # what closing the stream does, from the server's side
    client.close()
    assert wait_for(lambda: server.in_flight == 0, 2.0), 'the request stayed in the batch after its client left'
    assert server.batch_waits_s == [], 'it never finished its wait'


def test_without_the_openai_package_the_backend_names_the_fix(monkeypatch):
    """openai is an extra ('.[openai]'): a robot or GPU server without it only fails if it chooses it."""
    from vln_ros.core.config import StartupError
    monkeypatch.setitem(sys.modules, 'openai', None)  # import openai now raises ImportError
    with pytest.raises(StartupError, match=r"backend 'openai' needs the openai package: pip install '\.\[openai\]'"):
        backend_for('http://127.0.0.1:9/v1')
