"""Shared test set-up: an isolated DDS domain per test session and a real rclpy graph fixture."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vln_ros import local_graph

# Before rclpy starts: keep this session's DDS traffic on this machine (loopback and shared memory,
# large raw images included) and apart from other runs.
local_graph.use(domain_id=1 + os.getpid() % 100)

from vln_ros.graph import SpinningGraph as Graph  # noqa: E402  (a real rclpy graph in a background thread)

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
