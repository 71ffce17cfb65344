"""diagnostic_msgs helpers shared by the nodes."""
from __future__ import annotations

import math
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.timer import Timer

OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                          DiagnosticStatus.STALE)


def _text(value: object) -> str:
    if isinstance(value, float):
        return 'nan' if math.isnan(value) else f'{value:.4g}'
    return str(value)


def start_timer(node: Node, period_s: float, publish: Callable[[], None]) -> Timer:
    """The /diagnostics timer, on the steady clock: with use_sim_time a ROS-time timer stops when /clock
    does (a paused or finished bag), which is when an operator most needs to see the node's state."""
    return node.create_timer(period_s, publish, clock=Clock(clock_type=ClockType.STEADY_TIME))


def status(node: Node, level: bytes, message: str, values: dict[str, object]) -> DiagnosticStatus:
    """One status named `<fully qualified node name>` (so namespaced robots stay apart)."""
    return DiagnosticStatus(level=level, name=node.get_fully_qualified_name(), message=message,
                            hardware_id=node.get_name(),
                            values=[KeyValue(key=k, value=_text(v)) for k, v in values.items()])


def array(node: Node, *statuses: DiagnosticStatus) -> DiagnosticArray:
    msg = DiagnosticArray(status=list(statuses))
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg


def values_of(status_msg: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status_msg.values}
