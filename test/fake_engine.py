"""A fake shared engine for the fleet tests: one Backend whose clients (one per robot) take a set time per answer,
each cancellable on its own, and which records every request and every cancel by client. No ROS, no model."""
from __future__ import annotations

import threading

from vln_ros.core.backends.base import Answer, Backend, BackendError, CancelFlag, Request

FORWARD = '{"env":"corridor","act":"forward","wp":[[0.5,0,0,0.9],[0.5,0.1,10,0.8]]}'


class FakeEngine(Backend):
    """latency_s: per client, in the order clients were made (the node makes them in `robots` order); a client
    past the list takes default_latency_s. The engine itself never answers: shared, only its clients do."""

    model_name = 'fake-engine'

    def __init__(self, *latency_s: float, default_latency_s: float = 0.3) -> None:
        self.latency_s = list(latency_s)
        self.default_latency_s = default_latency_s
        self.lock = threading.Lock()
        self.clients: list[FakeClient] = []
        self.requests: list[tuple[int, int]] = []     # (client, keyframe stamp)
        self.answered: list[tuple[int, int]] = []
        self.cancelled: list[int] = []                # the clients whose request ended by a cancel
        self.in_flight: set[int] = set()
        self.most_in_flight = 0                       # the engine saw this many requests at once (batching)
        self.closed = False

    def generate(self, request: Request) -> Answer:
        raise AssertionError('a shared engine answers only through its clients')

    def cancel(self) -> None:
        raise AssertionError('a shared engine is cancelled only through its clients')

    def client(self, robot: str = '') -> FakeClient:
        with self.lock:
            client = FakeClient(self, len(self.clients))
            self.clients.append(client)
            return client

    def close(self) -> None:
        self.closed = True


class FakeClient(Backend):
    model_name = 'fake-engine'

    def __init__(self, engine: FakeEngine, index: int) -> None:
        self.engine, self.index = engine, index
        self._cancel = CancelFlag()

    def generate(self, request: Request) -> Answer:
        e = self.engine
        with e.lock:
            latency_s = e.latency_s[self.index] if self.index < len(e.latency_s) else e.default_latency_s
            e.requests.append((self.index, request.stamp_ns))
            e.in_flight.add(self.index)
            e.most_in_flight = max(e.most_in_flight, len(e.in_flight))
        cancelled = self._cancel.start()
        try:
            if cancelled.wait(latency_s):
                with e.lock:
                    e.cancelled.append(self.index)
                raise BackendError('cancelled')
            with e.lock:
                e.answered.append((self.index, request.stamp_ns))
            return Answer(FORWARD, latency_s)
        finally:
            self._cancel.finish()
            with e.lock:
                e.in_flight.discard(self.index)

    def cancel(self) -> None:
        self._cancel.cancel()
