"""A small OpenAI-compatible server on loopback for the openai backend's tests: answers
/v1/chat/completions (streamed or not) from a list of recorded answers, and can be made slow, wrong or down.

It can also imitate a continuously batching server (lmdeploy's api_server): with `batching(base_s,
per_request_s)` each answer takes base_s + per_request_s * n seconds before its first token, n being the number
of requests in flight (received and not yet answered to the end, this one included). n is followed while the
request waits: its progress runs at 1 / (base_s + per_request_s * n) per second with the n of each moment,
so an answer alone takes base_s + per_request_s, one of four sent together base_s + 4 * per_request_s, and
one that outlives the others speeds up when they end. A streamed answer (the openai backend's) sends its
headers at once and waits before its first chunk, as lmdeploy's api_server does; a client hanging up then
(the backend's cancel) leaves the batch within HANG_UP_POLL_S, as lmdeploy aborts its request. A request that
is not streamed waits before anything is sent; a hang-up is noticed only when its answer is written.

From a shell, to run the api shape of a fleet here (docs/fleet.md):
    python test/openai_server.py --port 23333 --base-s 0.3 --per-request-s 0.05
answers every request with one plan (forward 0.5 m) until Ctrl-C."""
from __future__ import annotations

import argparse
import contextlib
import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HANG_UP_POLL_S = 0.05   # how often a batched streamed answer looks whether its client has hung up


def hung_up(sock):
    """The client closed its end (EOF waiting to be read, or the connection reset)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b''
    except OSError:
        return True


class FakeOpenAIServer:
    def __init__(self, answers: list[str], model: str = 'Qwen3-VL-8B-Instruct', port: int = 0) -> None:
        self.answers = list(answers)
        self.model = model
        self.delay_s = 0.0          # before the first byte of an answer
        self.token_delay_s = 0.0    # between streamed chunks
        self.status = 200           # anything else: an error response
        self.garbage = False        # a 200 with a body that is not the protocol
        self.requests: list[dict] = []
        self.repeat_last = False    # when the answers run out, give the last one again (not '')
        self.hang_up_after_chunks: int | None = None   # a streamed answer's connection dropped after n chunks
        self.base_s: float | None = None       # batching(): off while None
        self.per_request_s = 0.0
        self.in_flight = 0
        self.most_in_flight = 0     # the largest n any request saw
        self.batch_waits_s: list[float] = []   # each batched answer's wait, as the model worked it out
        self._flight = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code, body, content_type='application/json'):
                data = body.encode()
                self.send_response(code)
                self.send_header('Content-Type', content_type)
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, json.dumps({'object': 'list', 'data': [
                    {'id': server.model, 'object': 'model', 'created': 0, 'owned_by': 'test'}]}))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
                server.requests.append(body)
                with server._in_flight():
                    self._answer(body)

            def _answer(self, body):
                time.sleep(server.delay_s)
                # A streamed answer's headers go out at once and it waits in the batch before its first chunk, as
                # lmdeploy's api_server does: the client can hang up (cancel) meanwhile.
                batched_stream = (body.get('stream') and server.base_s is not None and server.status == 200
                                  and not server.garbage)
                if not batched_stream:
                    server._batch_wait()
                if server.status != 200:
                    self._send(server.status, json.dumps({'error': {'message': 'injected failure'}}))
                    return
                if server.garbage:
                    self._send(200, 'this is not JSON', 'text/plain')
                    return
                text = server._next_answer()
                if not body.get('stream'):
                    self._send(200, json.dumps(server.completion(text)))
                    return
                self.send_response(200)
                self.send_header('Content-Type', 'text/event-stream')
                self.send_header('Connection', 'close')
                self.end_headers()
                self.close_connection = True
                if batched_stream and not server._batch_wait(self.connection):
                    return  # the client hung up while its answer waited: it leaves the batch now
                try:
                    pieces = [text[i:i + 8] for i in range(0, len(text), 8)]
                    for i, piece in enumerate(pieces):
                        if i == server.hang_up_after_chunks:   # gone mid-answer, as a killed server is
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        last = i == len(pieces) - 1
                        self._event(server.chunk({'content': piece}, 'stop' if last else None))
                        time.sleep(server.token_delay_s)
                    self._event(server.chunk(None, None, usage={'prompt_tokens': 250,
                                                                'completion_tokens': len(pieces),
                                                                'total_tokens': 250 + len(pieces)}))
                    self.wfile.write(b'data: [DONE]\n\n')
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client hung up (cancel)
                    pass
                self.close_connection = True

            def _event(self, payload):
                self.wfile.write(b'data: ' + json.dumps(payload).encode() + b'\n\n')
                self.wfile.flush()

        self._httpd = ThreadingHTTPServer(('127.0.0.1', port), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f'http://127.0.0.1:{self._httpd.server_address[1]}/v1'
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def batching(self, base_s, per_request_s):
        """Imitate continuous batching from now on: see the module's docstring."""
        if base_s < 0.0 or per_request_s < 0.0:
            raise ValueError(f'batching: base_s {base_s} and per_request_s {per_request_s} must be >= 0')
        self.base_s, self.per_request_s = base_s, per_request_s

    @contextlib.contextmanager
    def _in_flight(self):
        with self._flight:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self._flight.notify_all()
        try:
            yield
        finally:
            with self._flight:
                self.in_flight -= 1
                self._flight.notify_all()

    def _batch_wait(self, sock=None):
        """Wait until this request's progress reaches 1 at 1 / (base_s + per_request_s * n) per second, n the
        requests in flight at each moment (woken whenever n changes); bounded: each step waits at most what is
        left at the current n. With the client's socket: False as soon as the client has hung up."""
        if self.base_s is None:
            return True
        progress, started = 0.0, time.monotonic()
        with self._flight:
            while progress < 1.0:
                answer_s = self.base_s + self.per_request_s * self.in_flight
                if answer_s <= 0.0:
                    break
                left_s = (1.0 - progress) * answer_s
                since = time.monotonic()
                self._flight.wait(timeout=left_s if sock is None else min(left_s, HANG_UP_POLL_S))
                progress += (time.monotonic() - since) / answer_s
                if sock is not None and hung_up(sock):
                    return False
            self.batch_waits_s.append(time.monotonic() - started)
        return True

    def _next_answer(self):
        if len(self.answers) == 1 and self.repeat_last:
            return self.answers[0]
        return self.answers.pop(0) if self.answers else ''

    def completion(self, text):
        return {'id': 'c', 'object': 'chat.completion', 'created': 0, 'model': self.model,
                'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': text},
                             'finish_reason': 'stop'}],
                'usage': {'prompt_tokens': 250, 'completion_tokens': 10, 'total_tokens': 260}}

    def chunk(self, delta, finish_reason, usage=None):
        choices = [] if delta is None else [{'index': 0, 'delta': delta, 'finish_reason': finish_reason}]
        return {'id': 'c', 'object': 'chat.completion.chunk', 'created': 0, 'model': self.model,
                'choices': choices, 'usage': usage}

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


FORWARD = '{"env": "a corridor", "act": "forward", "wp": [[0.5, 0.0, 0.0, 0.9]]}'


def main():
    parser = argparse.ArgumentParser(description='A fake OpenAI-compatible server imitating continuous batching '
                                                 '(see the module docstring).')
    parser.add_argument('--port', type=int, default=23333, help='TCP port on 127.0.0.1 (0 = any free one)')
    parser.add_argument('--base-s', type=float, default=0.3, help='seconds of every answer')
    parser.add_argument('--per-request-s', type=float, default=0.05,
                        help='seconds more per request in flight (this one included)')
    parser.add_argument('--answer', default=FORWARD, help='the text of every answer')
    args = parser.parse_args()
    server = FakeOpenAIServer([args.answer], port=args.port)
    server.repeat_last = True
    server.batching(args.base_s, args.per_request_s)
    print(f'serving {server.base_url} (each answer {args.base_s} s + {args.per_request_s} s per request in '
          'flight); Ctrl-C ends it', flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == '__main__':
    main()
