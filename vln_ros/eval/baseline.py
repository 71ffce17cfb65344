"""The seed system's way of turning waypoints into velocity, as a stand-in controller_node for make eval's
comparison. Not shipped as a controller mode: it is what this package replaces.

The system vln_ros re-makes drove the robot with linear = mean(dx) x output_fps and angular =
mean(dtheta) x output_fps over the plan's waypoints, held until the next plan, with no pose feedback and no
plan timeout. Here the command is clamped to controller_node's limits (the same parameter section), so the
comparison is of the rule alone, and a stop plan stops it.

    python -m vln_ros.eval.baseline --ros-args -r __node:=controller_node --params-file config/vln.yaml
"""
from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rclpy.node import Node

from vln_ros import interface
from vln_ros.core.config import ControllerParams
from vln_ros.msg import WaypointArray
from vln_ros.nodes import diagnostics
from vln_ros.nodes.parameters import declare_params
from vln_ros.nodes.runner import run_node

# Waypoints per second of the seed system's answers: with the oracle's 0.5 m steps, 1.0 makes its cruise
# speed controller_node's max_linear_x (0.5 m/s), so both drive equally fast on a straight.
OUTPUT_FPS = 1.0


def baseline_twist(waypoints: list[tuple[float, float]], params: ControllerParams) -> tuple[float, float]:
    """(linear, angular) for a plan's (dx, dtheta) steps: their mean x OUTPUT_FPS, clamped to the limits."""
    if not waypoints:
        return 0.0, 0.0
    linear = sum(dx for dx, _ in waypoints) / len(waypoints) * OUTPUT_FPS
    angular = sum(dtheta for _, dtheta in waypoints) / len(waypoints) * OUTPUT_FPS
    return (max(-params.max_linear_x, min(params.max_linear_x, linear)),
            max(-params.max_angular_z, min(params.max_angular_z, angular)))


class BaselineNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__('controller_node', **node_kwargs)
        self.params: ControllerParams = declare_params(self, ControllerParams, cli_args=node_kwargs.get('cli_args'))
        self._command = (0.0, 0.0)
        self._pub = self.create_publisher(Twist, interface.CMD_VEL, interface.CMD_QOS)
        self.create_subscription(WaypointArray, interface.WAYPOINTS, self._on_plan, interface.PLAN_QOS)
        self.create_timer(1.0 / self.params.rate_hz, self._tick)
        # /diagnostics like controller_node's (make eval reads each node's clock from its stamp)
        self._diag_pub = self.create_publisher(DiagnosticArray, interface.DIAGNOSTICS, interface.DIAGNOSTICS_QOS)
        diagnostics.start_timer(self, self.params.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(f'baseline rule (mean step x {OUTPUT_FPS} fps, held until the next plan)')

    def _on_plan(self, msg: WaypointArray) -> None:
        steps = [] if msg.stop else [(w.dx, w.dtheta) for w in msg.waypoints]
        self._command = baseline_twist(steps, self.params)

    def _publish_diagnostics(self) -> None:
        linear, angular = self._command
        self._diag_pub.publish(diagnostics.array(self, diagnostics.status(
            self, diagnostics.OK, 'baseline rule', {'cmd_vx': linear, 'cmd_wz': angular})))

    def _tick(self) -> None:
        twist = Twist()
        twist.linear.x, twist.angular.z = self._command
        self._pub.publish(twist)


def main(args: list[str] | None = None) -> int:
    return run_node('controller_node', BaselineNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
