"""The replay backend: answers recorded by an earlier run, served back in order or by keyframe stamp.

With `use_recorded_latency` each answer takes as long as it took when recorded (cancellable), so a bag
plus its recording reproduces a run, timing included, without a GPU. Recorded failures replay as
failures (BackendError with the recorded reason).
"""
from __future__ import annotations

import threading
import time
from typing import Literal

from vln_ros.core.backends.base import (
    Answer,
    AnswerRecord,
    Backend,
    BackendError,
    CancelFlag,
    NotShareable,
    Request,
    load_records,
)
from vln_ros.core.backends.registry import BackendSpec, model_name, register_backend
from vln_ros.core.schema import BackendParams, StartupError, param


class ReplayParams(BackendParams):
    """Answers recorded by an earlier run (backend: replay)."""

    file: str = param('', 'JSONL file written by record_file of an earlier run')
    match: Literal['order', 'stamp'] = param(
        'order', "order: the next recorded answer per request; stamp: the answer recorded for the keyframe's "
        'capture stamp')
    use_recorded_latency: bool = param(True, 'Take as long as the recorded answer took (a realistic replay)')
    loop: bool = param(False, "order: start again from the first answer when all are used")

    def check_selected(self) -> None:
        if not self.file:
            raise ValueError("backend 'replay' needs replay.file (a JSONL file written with record_file)")


class ReplayBackend(Backend):
    def __init__(self, params: ReplayParams, model_name: str) -> None:
        try:
            self._records = load_records(params.file)
        except OSError as exc:
            raise StartupError(f'replay.file {params.file!r} cannot be read ({exc.strerror}); record one with '
                               'record_file:=<path> on a run with a real backend') from None
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        if not self._records:
            raise StartupError(f'replay.file {params.file!r} holds no answers')
        self._params = params
        self._by_stamp = {r.stamp_ns: r for r in self._records}
        self._next = 0
        self._lock = threading.Lock()
        self._cancel = CancelFlag()
        self.model_name = next((r.model for r in self._records if r.model), model_name)

    def _pick(self, request: Request) -> AnswerRecord:
        if self._params.match == 'stamp':
            record = self._by_stamp.get(request.stamp_ns)
            if record is None:
                raise BackendError('no_recorded_answer', f'no answer recorded for keyframe stamp {request.stamp_ns}')
            return record
        with self._lock:
            if self._next >= len(self._records):
                if not self._params.loop:
                    raise BackendError('no_recorded_answer', f'all {len(self._records)} recorded answers used')
                self._next = 0
            record = self._records[self._next]
            self._next += 1
            return record

    def generate(self, request: Request) -> Answer:
        started = time.perf_counter()
        cancelled = self._cancel.start()
        try:
            record = self._pick(request)
            if self._params.use_recorded_latency and cancelled.wait(record.latency_s):
                raise BackendError('cancelled')
            if cancelled.is_set():
                raise BackendError('cancelled')
            if record.error:
                raise BackendError(record.error, 'recorded failure')
            return Answer(record.text, time.perf_counter() - started, record.input_tokens, record.output_tokens,
                          record.first_token_s, 'recorded')
        finally:
            self._cancel.finish()

    def cancel(self) -> None:
        self._cancel.cancel()

    def client(self, robot: str = '') -> Backend:
        # A recording is one robot's answers (in order, or keyed by that robot's keyframe stamps).
        raise NotShareable("backend 'replay' cannot serve several robots: a recording holds one robot's answers; "
                           'run one inference_node per robot (without robots), each with its own replay.file')


register_backend(BackendSpec('replay', 'answers recorded by an earlier run', ReplayParams,
                             lambda section, params: ReplayBackend(section, model_name(params))))
