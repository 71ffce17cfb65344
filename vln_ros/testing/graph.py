"""A private rclpy context whose nodes are spun by a background thread: for processes that watch or drive
a ROS graph from the outside (the tests, `make demo`'s observer) while their main thread does other work.

Single-threaded on purpose: rclpy's MultiThreadedExecutor in one busy process was seen to deliver 50 Hz
topics at a few Hz. Nodes that need their own threads have them; timing-critical nodes run as their own
processes.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


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


class SpinningGraph:
    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
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
