"""The openai backend: any OpenAI-compatible chat server (`lmdeploy serve api_server`, vLLM, ...).

For when the GPUs are on another machine than the inference node. The keyframe goes as a data URL (the
JPEG camera_node made, not re-encoded), guided JSON as `response_format` json_schema, greedy decoding.
The image budget is the lmdeploy backend's (lmdeploy_pipeline.mm_processor_kwargs), sent as the extra body
field `mm_processor_kwargs` that lmdeploy's api_server reads (0.18: protocol.py ChatCompletionRequest, passed
to the HF processor's size by lmdeploy/vl/model/base.py); without it the server would use the processor's
default budget (16 M pixels for Qwen3-VL). Answers are streamed so that time to first token is measured and
cancel() can close the stream between chunks.

Each request runs on a thread of its own, and generate() waits for it or for cancel(): a server (or a proxy) may
hold the response's headers until the batch gets to the request, and a read blocked there cannot be
interrupted, so a cancel must not wait for it (it did, until inference_timeout_s). The abandoned request ends
by itself: its stream is closed as soon as it opens, or the HTTP timeout ends it (the request's timeout_s, the
caller's inference_timeout_s when it was sent).
"""
from __future__ import annotations

import copy
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from vln_ros.core.backends.base import Answer, Backend, BackendError, Request
from vln_ros.core.backends.lmdeploy_pipeline import mm_processor_kwargs
from vln_ros.core.backends.registry import BackendSpec, model_name, register_backend
from vln_ros.core.schema import BackendParams, StartupError, param

if TYPE_CHECKING:  # the openai package is imported only when this backend is built
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.shared_params import ResponseFormatJSONSchema

BOUND_MARGIN_S = 5.0   # generate() waits this much past the request's read timeout and connect before giving up


class OpenAIParams(BackendParams):
    """An OpenAI-compatible server (backend: openai), e.g. `lmdeploy serve api_server` on the GPU machine."""

    base_url: str = param('http://localhost:23333/v1', 'Base URL of the OpenAI-compatible API')
    api_key_env: str = param('OPENAI_API_KEY', 'Environment variable holding the API key (unset: none sent)')
    served_model: str = param('', "Model name the server knows; empty = the server's first model")
    connect_timeout_s: float = param(2.0, 'TCP connect timeout', 's', gt=0.0, le=60.0)


def chat_messages(request: Request) -> list[ChatCompletionMessageParam]:
    """OpenAI chat messages: system prompt, then the image and the user prompt."""
    return [
        {'role': 'system', 'content': request.prompt.system},
        {'role': 'user', 'content': [
            {'type': 'image_url', 'image_url': {'url': request.image_data_url()}},
            {'type': 'text', 'text': request.prompt.user},
        ]},
    ]


def response_format(request: Request) -> ResponseFormatJSONSchema | None:
    if not request.guided:
        return None
    return {'type': 'json_schema', 'json_schema': {'name': 'vln_plan', 'schema': request.prompt.schema}}


def extra_body(request: Request) -> dict[str, Any]:
    """Request fields beyond OpenAI's that lmdeploy's api_server (and vLLM) accept: the image budget, and
    ignore_eos for benchmarks (random weights never stop on their own)."""
    body: dict[str, Any] = {'mm_processor_kwargs': mm_processor_kwargs(request)}
    if request.ignore_eos:
        body['ignore_eos'] = True
    return body


class _Call:
    """One request: set by its thread (stream, answer or error, finished) or by cancel() (cancelled, finished)."""

    def __init__(self) -> None:
        self.finished = threading.Event()
        self.cancelled = False
        self.stream: Any = None
        self.answer: Answer | None = None
        self.error: BackendError | None = None


class OpenAIBackend(Backend):
    def __init__(self, params: OpenAIParams, model_name: str, timeout_s: float) -> None:
        try:  # here, not at the top: core/config imports this module (backends/registry.py)
            import httpx
            import openai
        except ImportError:
            raise StartupError("backend 'openai' needs the openai package: pip install '.[openai]' in the package "
                               '(the venv of tools/install.sh has it)') from None
        self._params = params
        self._client = openai.OpenAI(
            base_url=params.base_url, api_key=os.environ.get(params.api_key_env) or 'none', max_retries=0,
            timeout=httpx.Timeout(timeout_s, connect=params.connect_timeout_s))
        self._served_model = params.served_model
        self.model_name = params.served_model or model_name
        self._lock = threading.Lock()
        self._call: _Call | None = None     # the request in flight, if any
        self._owns_client = True
        self._timeout_s = timeout_s   # a request's read timeout when it carries none of its own

    def _model(self) -> str:
        if not self._served_model:  # the server's first model (asked once, when first needed)
            models = self._client.models.list().data
            if not models:
                raise BackendError('unavailable', f'{self._params.base_url} serves no model')
            self._served_model = models[0].id
            self.model_name = self._served_model
        return self._served_model

    def generate(self, request: Request) -> Answer:
        call = _Call()
        with self._lock:
            self._call = call
        threading.Thread(target=self._request, args=(call, request), name='openai_request', daemon=True).start()
        # generate()'s own bound: past the request's read timeout and its connect
        bound_s = (request.timeout_s or self._timeout_s) + self._params.connect_timeout_s + BOUND_MARGIN_S
        finished = call.finished.wait(bound_s)
        with self._lock:
            if self._call is call:
                self._call = None
        if call.cancelled:
            raise BackendError('cancelled')
        if not finished:
            raise BackendError('timeout', f'no answer from {self._params.base_url} in {bound_s:.0f} s')
        if call.error is not None:
            raise call.error
        assert call.answer is not None
        return call.answer

    def _request(self, call: _Call, request: Request) -> None:
        """The request, on its own thread: its answer or BackendError into call, then call.finished."""
        try:
            call.answer = self._stream_answer(call, request)
        except BackendError as exc:
            call.error = exc
        except Exception as exc:  # noqa: BLE001 - a bug here must still end generate(), as a counted error
            call.error = BackendError('error', repr(exc)[:200])
        finally:
            call.finished.set()

    def _stream_answer(self, call: _Call, request: Request) -> Answer:
        import httpx
        import openai
        started = time.perf_counter()
        first_token_s = None
        parts: list[str] = []
        usage = None
        finish_reason = ''
        chunks = 0
        try:
            fmt = response_format(request)
            stream = self._client.chat.completions.create(
                model=self._model(), messages=chat_messages(request), max_tokens=request.max_new_tokens,
                temperature=0.0, stream=True, stream_options={'include_usage': True},
                response_format=openai.omit if fmt is None else fmt,  # omit: the field is not sent at all
                extra_body=extra_body(request),
                # the read timeout of this request: the caller's bound now, not at start-up (it is raised live
                # under overload, and a request the caller gave up on must not hold a connection for longer)
                timeout=openai.NOT_GIVEN if request.timeout_s is None else
                httpx.Timeout(request.timeout_s, connect=self._params.connect_timeout_s))
            with self._lock:
                call.stream = stream
            if call.cancelled:   # cancelled while the headers were awaited: hang up now
                stream.close()
                raise BackendError('cancelled')
            for chunk in stream:
                chunks += 1
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        if first_token_s is None:
                            first_token_s = time.perf_counter() - started
                        parts.append(choice.delta.content)
                        if request.on_chunk is not None and not call.cancelled:  # counted only at the end: pieces
                            request.on_chunk(choice.delta.content, len(parts))
                    finish_reason = choice.finish_reason or finish_reason
        except BackendError:
            raise
        except openai.APITimeoutError as exc:
            raise BackendError('timeout', str(exc)) from None
        except openai.APIConnectionError as exc:
            raise BackendError('cancelled' if call.cancelled else 'unavailable',
                               f'{self._params.base_url}: {exc}') from None
        except openai.APIStatusError as exc:
            raise BackendError(f'http_{exc.status_code}', str(exc)[:200]) from None
        except httpx.TransportError as exc:   # the connection broke mid-answer: the server went away
            raise BackendError('cancelled' if call.cancelled else 'unavailable',
                               f'{self._params.base_url}: connection lost mid-answer ({exc!r:.120})') from None
        except (openai.OpenAIError, httpx.HTTPError, ValueError) as exc:
            raise BackendError('cancelled' if call.cancelled else 'error', repr(exc)[:200]) from None
        if call.cancelled:
            raise BackendError('cancelled')
        if not finish_reason and stream.response.headers.get('content-type', '').startswith('text/event-stream'):
            # An answer stream that ends before its last chunk (every answer's last chunk has a finish_reason):
            # the server went away mid-answer (killed, restarted) and its end of the connection ended the body.
            raise BackendError('unavailable', f'{self._params.base_url}: the answer stream ended after {chunks} '
                                              'chunks, before its end (connection lost mid-answer)')
        if chunks == 0:  # not even an empty completion: whatever answered does not speak the protocol
            raise BackendError('bad_response', f'{self._params.base_url} sent no completion chunks')
        return Answer(''.join(parts), time.perf_counter() - started,
                      usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None,
                      first_token_s, finish_reason)

    def cancel(self) -> None:
        with self._lock:
            call = self._call
            if call is None:
                return
            call.cancelled = True
            stream = call.stream
        call.finished.set()   # generate() returns now, whatever the request's thread is blocked in
        if stream is not None:
            try:
                stream.close()  # the request's thread then fails in its next read
            except Exception:  # closing a half-read stream from another thread may raise; it is closed
                pass

    def client(self, robot: str = '') -> OpenAIBackend:
        """Another client on the same HTTP connection pool (httpx's client is thread-safe), with its own stream
        and cancel; its close() leaves the pool to this backend's."""
        other = copy.copy(self)
        other._lock = threading.Lock()
        other._call = None
        other._owns_client = False
        return other

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


register_backend(BackendSpec(
    'openai', 'an OpenAI-compatible server', OpenAIParams,
    lambda section, params: OpenAIBackend(section, model_name(params), params.inference_timeout_s)))
