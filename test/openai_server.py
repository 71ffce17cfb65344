"""A small OpenAI-compatible server on loopback for the openai backend's tests: answers
/v1/chat/completions (streamed or not) from a list of recorded answers, and can be made slow, wrong or down."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAIServer:
    def __init__(self, answers: list[str], model: str = 'Qwen3-VL-8B-Instruct') -> None:
        self.answers = list(answers)
        self.model = model
        self.delay_s = 0.0          # before the first byte of an answer
        self.token_delay_s = 0.0    # between streamed chunks
        self.status = 200           # anything else: an error response
        self.garbage = False        # a 200 with a body that is not the protocol
        self.requests: list[dict] = []
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
                time.sleep(server.delay_s)
                if server.status != 200:
                    self._send(server.status, json.dumps({'error': {'message': 'injected failure'}}))
                    return
                if server.garbage:
                    self._send(200, 'this is not JSON', 'text/plain')
                    return
                text = server.answers.pop(0) if server.answers else ''
                if not body.get('stream'):
                    self._send(200, json.dumps(server.completion(text)))
                    return
                self.send_response(200)
                self.send_header('Content-Type', 'text/event-stream')
                self.send_header('Connection', 'close')
                self.end_headers()
                try:
                    pieces = [text[i:i + 8] for i in range(0, len(text), 8)]
                    for i, piece in enumerate(pieces):
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

        self._httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f'http://127.0.0.1:{self._httpd.server_address[1]}/v1'
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

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
