"""Shared test set-up: an isolated DDS domain per test session and a real rclpy graph fixture."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

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


# a real rclpy graph in a background thread; a service call that retries a lost reply (tests import it from here)
from vln_ros.testing.graph import SpinningGraph as Graph  # noqa: E402
from vln_ros.testing.graph import call_service  # noqa: E402, F401

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


@pytest.fixture
def graph() -> Iterator[Graph]:
    g = Graph()
    try:
        yield g
    finally:
        g.close()
