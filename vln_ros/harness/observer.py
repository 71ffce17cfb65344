"""One node that watches or drives a running graph from the outside: make demo's and make eval's observers and
the benchmarks' probes are this, plus what each records.

The node lives in a private rclpy context (graph.SpinningGraph) spun by a background thread, so the caller's
main thread stays free to poll, publish and start processes, and several observers in one process never share
rclpy's global context. Callbacks registered through `subscribe` run under `lock`; a reader that holds the
lock sees whole updates. Every wait is bounded.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from vln_ros.nodes.services import call_service

# rclpy is imported when an observer starts, after the run has set up its ROS environment (local_graph.py).
if TYPE_CHECKING:
    from rclpy.client import Client
    from rclpy.qos import QoSProfile
    from rclpy.subscription import Subscription

    from vln_ros.harness.graph import SpinningGraph

Msg = TypeVar('Msg')
SERVICE_TIMEOUT_S = 15.0
POLL_S = 0.02


class Observer:
    """A node named `name` in its own spinning context; `sim_time`: on the simulated clock (/clock); `namespace`:
    its relative names (topics, vln/set_task) are that robot's."""

    def __init__(self, name: str, sim_time: bool = False, namespace: str = '') -> None:
        from rclpy.node import Node
        from rclpy.parameter import Parameter

        from vln_ros.harness.graph import SpinningGraph

        # Re-entrant: a condition polled under the lock may call a method that takes it again.
        self.lock = threading.RLock()
        self.graph: SpinningGraph = SpinningGraph()
        overrides = [Parameter('use_sim_time', Parameter.Type.BOOL, True)] if sim_time else []
        self.node = self.graph.add(Node(name, context=self.graph.context, parameter_overrides=overrides,
                                        namespace=namespace or None))
        self._set_task: Client[Any, Any] | None = None

    def subscribe(self, msg_type: type[Msg], topic: str, qos: QoSProfile | int,
                  callback: Callable[[Msg], None]) -> Subscription[Msg]:
        """A subscription whose callback runs under `lock`."""
        def locked(msg: Msg) -> None:
            with self.lock:
                callback(msg)
        return self.node.create_subscription(msg_type, topic, locked, qos)

    def wait_until(self, condition: Callable[[], bool], timeout_s: float,
                   failed: Callable[[], bool] = lambda: False) -> bool:
        """Poll condition (under `lock`) until it holds: True; False once timeout_s pass or failed() says
        waiting is pointless (a process it waits for died)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not failed():
            with self.lock:
                if condition():
                    return True
            time.sleep(POLL_S)
        with self.lock:
            return condition()

    @property
    def set_task_client(self) -> Client[Any, Any]:
        """The vln/set_task client, made on first use (an observer that never sets a task adds none)."""
        if self._set_task is None:
            from vln_ros import interface as ri
            from vln_ros.srv import SetTask
            self._set_task = self.node.create_client(SetTask, ri.SET_TASK)
        return self._set_task

    def set_task(self, instruction: str, timeout_s: float = SERVICE_TIMEOUT_S, attempt_s: float = 2.0) -> Any:
        """vln/set_task's response, retried each attempt_s: a reply can be lost while discovery still matches
        the reply path (each retry is a new switch, so the last response is the one). TimeoutError when
        none is answered in timeout_s."""
        from vln_ros.srv import SetTask
        return call_service(self.set_task_client, SetTask.Request(instruction=instruction), timeout_s, attempt_s)

    def close(self) -> None:
        self.graph.close()
