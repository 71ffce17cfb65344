"""vln_ros/nodes/runner.py: a shutdown from outside (SIGINT/SIGTERM) that catches a callback mid-publish
is a normal exit (0); an error in a callback while the context is alive is a crash."""
from __future__ import annotations

import pytest
import rclpy
from rclpy.node import Node
from std_msgs.msg import String

from vln_ros.nodes.runner import run_node


class ShutdownMidPublish(Node):
    """A timer callback that is interrupted by a shutdown, as a signal does it: it then publishes on the
    dead context (rclpy raises) before returning."""

    def __init__(self) -> None:
        super().__init__('runner_test_shutdown')
        self.pub = self.create_publisher(String, 'runner_test', 1)
        self.create_timer(0.01, self._tick)

    def _tick(self) -> None:
        rclpy.try_shutdown()
        self.pub.publish(String(data='after shutdown'))


class Broken(Node):
    def __init__(self) -> None:
        super().__init__('runner_test_broken')
        self.create_timer(0.01, self._tick)

    def _tick(self) -> None:
        raise RuntimeError('a bug in a callback')


def test_a_callback_failing_because_of_the_shutdown_is_a_normal_exit():
    assert run_node('runner_test', ShutdownMidPublish, []) == 0


def test_a_callback_failing_on_a_live_context_is_a_crash():
    with pytest.raises(RuntimeError, match='a bug in a callback'):
        run_node('runner_test', Broken, [])
