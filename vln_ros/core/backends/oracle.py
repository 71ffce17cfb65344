"""The oracle backend: what a perfect model would answer, from the simulator's ground truth (make eval).

There are no model weights where CI runs, so closed-loop evaluation needs a stand-in that answers as a
perfect model would: the simulator (vln_ros/nodes/sim_node.py) knows where the robot stood when each
keyframe was captured, and the scene's goal, and answers in the project's answer format. This backend asks
it over the simulator's HTTP side channel (POST <url>/oracle with the keyframe's capture stamp), never over
the ROS graph: ground truth is kept off the graph so that nothing in the stack can read it by accident.

The latency, waypoint noise and answer faults are settings of this backend, sent with each request; the
simulator holds the answer until its own clock has advanced latency_s (simulated time), so a slow or
fast-forwarded simulation keeps the model's latency in the robot's time.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from pydantic import ValidationError, model_validator

from vln_ros.core.backends.base import Answer, Backend, BackendError, CancelFlag, Request
from vln_ros.core.backends.registry import BackendSpec, register_backend
from vln_ros.core.schema import BackendParams, param

# A leaf module (stdlib and pydantic; no ROS, no simulator, aiohttp only to serve), so the core may use it: the
# one spelling of the side channel's routes, models and client, for this backend as for make eval.
from vln_ros.sim.api import (
    DEFAULT_URL,
    OracleReply,
    OracleRequest,
    SimApiError,
    SimClient,
    check_fault_shares,
    validation_message,
)

# The simulator answers a request after latency_s of simulated time; past that much more wall time the
# simulator is gone or stalled (the caller's inference_timeout_s usually ends the wait first).
WALL_MARGIN_S = 30.0


class OracleParams(BackendParams):
    """The simulator's ground-truth answers (backend: oracle; make eval). Not a model: see docs/eval.md."""

    url: str = param(DEFAULT_URL, "The simulator's HTTP side channel (sim_node's api_port)")
    robot: str = param('', "Whose ground truth: one of sim_node's robots (its robots parameter, e.g. r2); "
                       'empty: the first (the only one, usually). An inference_node serving several robots '
                       '(robots) answers each from its own, whatever this says')
    latency_s: float = param(0.5, 'Each answer takes this long in simulated time, like a model', 's',
                             ge=0.0, le=60.0)
    noise_m: float = param(0.0, 'Gaussian noise (standard deviation) on each waypoint step', 'm', ge=0.0, le=1.0)
    noise_deg: float = param(0.0, 'Gaussian noise (standard deviation) on each waypoint turn', 'deg',
                             ge=0.0, le=45.0)
    fault_malformed: float = param(0.0, 'Share of answers replaced by text that is not an answer', ge=0.0, le=1.0)
    fault_wrong_direction: float = param(0.0, 'Share of answers mirrored left-right', ge=0.0, le=1.0)
    fault_premature_arrived: float = param(0.0, "Share of answers saying 'arrived' away from the goal",
                                           ge=0.0, le=1.0)
    fault_drift: float = param(0.0, 'Share of answers whose waypoints drift into the nearest wall', ge=0.0, le=1.0)
    fault_forward_blocked: float = param(0.0, "Share of answers saying 'forward' (straight, the whole horizon) "
                                         'where a wall or landmark blocks the way ahead', ge=0.0, le=1.0)

    @model_validator(mode='after')
    def _one_fault_per_answer(self) -> OracleParams:
        check_fault_shares(self.fault_malformed, self.fault_wrong_direction, self.fault_premature_arrived,
                           self.fault_drift, self.fault_forward_blocked)
        return self

    def request_settings(self) -> dict[str, float]:
        """What /oracle takes besides the stamp and the robot (sim/api.py's OracleSettings)."""
        return {k: v for k, v in self.model_dump().items() if k not in ('url', 'robot')}


class OracleBackend(Backend):
    model_name = 'oracle'

    def __init__(self, params: OracleParams) -> None:
        self._params = params
        self._cancel = CancelFlag()

    def generate(self, request: Request) -> Answer:
        started = time.perf_counter()
        try:
            body = OracleRequest(stamp_ns=request.stamp_ns, robot=self._params.robot,
                                 **self._params.request_settings())
        except ValidationError as exc:   # e.g. a stamp before the epoch
            raise BackendError('refused', validation_message(exc)) from None
        cancelled = self._cancel.start()
        result: dict[str, Any] = {}
        done = threading.Event()
        client = SimClient(self._params.url, timeout_s=self._params.latency_s + WALL_MARGIN_S)

        def ask() -> None:  # a thread of its own, so that cancel() returns the worker at once
            try:
                result['answer'] = client.oracle(body)
            except SimApiError as exc:   # the simulator's refusal, e.g. a keyframe it never took
                result['error'] = BackendError('refused', f'{exc.status} {exc.error}'[:200])
            except (OSError, ValueError) as exc:   # not there, or not answering as the API says
                result['error'] = BackendError('unavailable', f'simulator at {self._params.url}: {exc}')
            finally:
                done.set()

        threading.Thread(target=ask, name='oracle-request', daemon=True).start()
        try:
            while not done.wait(0.05):
                if cancelled.is_set():
                    raise BackendError('cancelled')
            if cancelled.is_set():
                raise BackendError('cancelled')
            if 'error' in result:
                raise result['error']
            answer: OracleReply = result['answer']
            return Answer(answer.text, time.perf_counter() - started, finish_reason=answer.fault or 'stop')
        finally:
            self._cancel.finish()

    def cancel(self) -> None:
        self._cancel.cancel()

    def client(self, robot: str = '') -> OracleBackend:
        """Each request is its own HTTP call: a client only needs its own cancel flag, and the robot whose ground
        truth it answers from (its namespace, one of sim_node's robots; without it every robot of one
        inference_node would be answered from oracle.robot's keyframes)."""
        return OracleBackend(self._params.model_copy(update={'robot': robot}) if robot else self._params)


register_backend(BackendSpec('oracle', "the simulator's ground truth (make eval; not a model)", OracleParams,
                             lambda section, params: OracleBackend(section)))
