"""A private rclpy context whose nodes are spun by a background thread: for processes that watch or drive
a ROS graph from the outside (the tests, `make demo`'s observer) while their main thread does other work.

Single-threaded on purpose: rclpy's MultiThreadedExecutor in one busy process was seen to deliver 50 Hz
topics at a few Hz. Nodes that need their own threads have them; timing-critical nodes run as their own
processes.
"""
from __future__ import annotations

import threading

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from vln_ros.nodes.services import call_service  # noqa: F401  (re-exported: the tests and observers use it)


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
