"""Service calls from a node's own worker threads (the executor spins elsewhere): bounded, and surviving a
reply lost right after discovery."""
from __future__ import annotations

import time
from typing import Any


def call_service(client: Any, request: Any, timeout_s: float = 20.0, attempt_s: float = 2.0) -> Any:
    """A service call that survives a lost reply: right after discovery a server can answer before it has
    matched the client's reply reader, and that reply is gone (rclpy waits for ever). Each attempt gets
    attempt_s, then the request is sent again: only for requests that may be repeated (a get, a set of the
    same values, a task switch whose last answer is the one that counts). TimeoutError when none is answered."""
    if not client.wait_for_service(timeout_sec=timeout_s):
        raise TimeoutError(f'{client.srv_name}: no server')
    deadline = time.monotonic() + timeout_s
    while True:
        future = client.call_async(request)
        answered = min(deadline, time.monotonic() + attempt_s)
        while not future.done() and time.monotonic() < answered:
            time.sleep(0.01)
        if future.done():
            return future.result()
        client.remove_pending_request(future)
        if time.monotonic() >= deadline:
            raise TimeoutError(f'{client.srv_name} never answered in {timeout_s} s')
