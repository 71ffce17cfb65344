"""Shared test set-up: an isolated DDS domain per test session and a real rclpy graph fixture."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vln_ros.testing import local_graph

# Before rclpy starts: keep this session's DDS traffic on this machine (loopback and shared memory,
# large raw images included) in a private domain nobody else is in (never the exported ROS_DOMAIN_ID); every
# process a test starts inherits it.
try:
    DOMAIN = local_graph.use_private_domain()
except local_graph.DomainUnavailable as e:
    pytest.exit(f'the tests need a private ROS domain: {e}', returncode=3)


def pytest_report_header() -> str:
    return DOMAIN.describe()


from vln_ros.testing.graph import SpinningGraph as Graph  # noqa: E402  (a real rclpy graph in a background thread)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / 'test' / 'data'


def wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
    """Poll condition until true or timeout; never a bare sleep-and-hope."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()


def call_service(client: Any, request: Any, timeout_s: float = 20.0, attempt_s: float = 2.0) -> Any:
    """A service call that survives a lost reply: right after discovery the server can answer before it has
    matched the client's reply reader, and that reply is gone (rclpy waits forever). Each attempt gets
    attempt_s, then the request is sent again; only for idempotent requests (a get, a set of the same values)."""
    deadline = time.monotonic() + timeout_s
    assert client.wait_for_service(timeout_sec=timeout_s), f'{client.srv_name}: no server'
    while True:
        future = client.call_async(request)
        if wait_for(future.done, max(0.0, min(attempt_s, deadline - time.monotonic()))):
            return future.result()
        client.remove_pending_request(future)
        assert time.monotonic() < deadline, f'{client.srv_name} never answered in {timeout_s} s'


@pytest.fixture
def graph() -> Iterator[Graph]:
    g = Graph()
    try:
        yield g
    finally:
        g.close()
