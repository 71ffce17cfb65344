"""`lmdeploy serve proxy`, the real one, in front of two imitation api_servers: does it spread a fleet's requests
over its servers, and does a cancel reach the server the request went to?

The servers are test/openai_server.py imitating lmdeploy's api_server under continuous batching (headers at once,
the first token after base + per-request x in-flight seconds, a client that hangs up leaves the batch), so this
runs where lmdeploy is installed, with or without a GPU: the lent machines after `make gpu-bench-setup`
(lmdeploy imports torch). A cancel here is what inference_node's openai backend does on a task switch: it closes
the streamed response. Prints one JSON object per line:
- proxy_share_min_pct: the least-used server's share of the requests of 8 robots asking 5 times each (50 = even);
- proxy_cancel_reaches_server_s: the client closes its stream while the request waits in the batch -> the
  server it went to drops it (nan: it did not within 5 s, the request ran to its end there);
- proxy_added_ms_p50: a streamed request's time to its end through the proxy minus straight to a server.

    PYTHONPATH=.gpu_site:. python3 bench/gpu_proxy.py [--port 8000]
"""
from __future__ import annotations

import argparse
import json
import math
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'test'))   # the imitation api_server lives beside the tests that use it
from openai_server import FORWARD, FakeOpenAIServer  # noqa: E402

ROBOTS, ASKS = 8, 5
CANCEL_WAIT_S = 5.0


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({'name': name, 'value': round(value, 3) if math.isfinite(value) else value, 'unit': unit}),
          flush=True)


def ask(client: httpx.Client, base_url: str, model: str) -> float:
    """One streamed chat completion to its end: seconds."""
    started = time.perf_counter()
    body = {'model': model, 'stream': True, 'messages': [{'role': 'user', 'content': 'where now?'}]}
    with client.stream('POST', f'{base_url}/chat/completions', json=body) as response:
        response.raise_for_status()
        for _ in response.iter_lines():
            pass
    return time.perf_counter() - started


def wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--port', type=int, default=8000, help="the proxy's port on 127.0.0.1")
    args = parser.parse_args()
    servers = [FakeOpenAIServer([FORWARD]) for _ in range(2)]
    for server in servers:
        server.repeat_last = True
        server.batching(0.3, 0.05)
    proxy_url = f'http://127.0.0.1:{args.port}'
    proxy = subprocess.Popen([sys.executable, '-m', 'lmdeploy', 'serve', 'proxy', '--server-name', '127.0.0.1',
                              '--server-port', str(args.port), '--routing-strategy', 'min_expected_latency',
                              '--disable-cache-status'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(timeout=30.0) as client:
            def up() -> bool:
                try:
                    return client.get(f'{proxy_url}/nodes/status').status_code == 200
                except httpx.HTTPError:
                    return proxy.poll() is not None
            if not wait_until(up, 60.0) or proxy.poll() is not None:
                print(f'gpu_proxy: the proxy did not come up:\n{proxy.stdout.read() if proxy.stdout else ""}',
                      file=sys.stderr)
                return 2
            for server in servers:
                reply = client.post(f'{proxy_url}/nodes/add', json={'url': server.base_url.removesuffix('/v1')})
                reply.raise_for_status()
            print(f"proxy nodes: {client.get(f'{proxy_url}/nodes/status').text}", file=sys.stderr)
            model = servers[0].model

            # -- the spread: 8 robots, each asking again as soon as it is answered
            through: list[float] = []
            def robot() -> None:
                with httpx.Client(timeout=30.0) as own:
                    for _ in range(ASKS):
                        through.append(ask(own, f'{proxy_url}/v1', model))
            threads = [threading.Thread(target=robot) for _ in range(ROBOTS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            counts = [len(s.requests) for s in servers]
            print(f'requests per server: {counts}', file=sys.stderr)
            emit('proxy_share_min_pct', 100.0 * min(counts) / max(1, sum(counts)), '%')

            # -- the proxy's own cost: one request at a time, straight and through
            straight = [ask(client, servers[0].base_url, model) for _ in range(10)]
            alone = [ask(client, f'{proxy_url}/v1', model) for _ in range(10)]
            emit('proxy_added_ms_p50', 1000 * (statistics.median(alone) - statistics.median(straight)), 'ms')

            # -- a cancel: the stream closed while the request waits in the batch (5 s before its first token)
            for server in servers:
                server.batching(5.0, 0.0)
            # A raw socket: closed whether or not the proxy has sent its response's headers yet.
            payload = json.dumps({'model': model, 'stream': True,
                                  'messages': [{'role': 'user', 'content': 'where now?'}]}).encode()
            sock = socket.create_connection(('127.0.0.1', args.port))
            sock.sendall(b'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
                         b'Content-Length: %d\r\n\r\n' % len(payload) + payload)
            waiting = wait_until(lambda: sum(s.in_flight for s in servers) == 1, 5.0)
            closed = time.perf_counter()
            sock.close()
            if not waiting:
                print('gpu_proxy: the request never reached a server', file=sys.stderr)
                emit('proxy_cancel_reaches_server_s', math.nan, 's')
            else:
                dropped = wait_until(lambda: sum(s.in_flight for s in servers) == 0, CANCEL_WAIT_S)
                emit('proxy_cancel_reaches_server_s', time.perf_counter() - closed if dropped else math.nan, 's')
    finally:
        proxy.terminate()
        try:
            proxy.wait(10.0)
        except subprocess.TimeoutExpired:
            proxy.kill()
        for server in servers:
            server.close()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
