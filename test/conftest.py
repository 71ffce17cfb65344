"""Shared test set-up: an isolated DDS domain per test session and a real rclpy graph fixture."""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vln_ros import local_graph

# Before rclpy starts: keep this session's DDS traffic on this machine (loopback and shared memory,
# large raw images included) and apart from other runs.
local_graph.use(domain_id=1 + os.getpid() % 100)

import rclpy  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402

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


class Graph:
    """A private rclpy context with an executor spinning in a background thread."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        # Single-threaded on purpose: rclpy's MultiThreadedExecutor in one busy test process was seen
        # to deliver 50 Hz topics at a few Hz. Nodes that need their own threads (camera_node's worker)
        # have them; timing-critical nodes run as their own processes.
        self.executor = SingleThreadedExecutor(context=self.context)
        self._nodes: list[Node] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # shutdown races end the thread quietly
            pass

    def add(self, node: Node) -> Node:
        self._nodes.append(node)
        self.executor.add_node(node)
        return node

    def node(self, name: str) -> Node:
        return self.add(Node(name, context=self.context))

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)  # stop callbacks before their nodes go away
        self._thread.join(timeout=2.0)
        for node in self._nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def graph() -> Iterator[Graph]:
    g = Graph()
    try:
        yield g
    finally:
        g.close()
