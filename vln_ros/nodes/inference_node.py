"""inference_node: the newest keyframe + the task's instruction and history -> the VLM -> a plan.

All decisions are vln_ros.core.inference's (checks, timeout / cancel / grace, stop plans, task rules,
statistics, health); this node only converts messages, serves the task services and runs the threads.
Threads: the executor thread runs callbacks (keyframes, instructions, services, diagnostics) and never
waits on the model: a keyframe is only dropped into the pipeline's size-1 latest-wins slot. One worker
thread runs the pipeline (prompt, backend on a one-thread pool, parse, publish). Nothing queues: keyframes
that arrive while the model is busy replace each other (counted as dropped). The pipeline publishes plans
and status through this node's publishers while holding its lock, so once set_task returns no plan of the
old task is published. Every failure (backend error, timeout, unparsable answer) publishes a stop plan.

The backend is created in __init__, on the main thread before spinning (lmdeploy installs signal
handlers and spawns processes); vln/task_status says `loading` meanwhile (latched) and then `idle`.

A fleet (parameter `robots`: r1, r2, ...): one RobotPort per robot, with the topics and services above under
`<robot>/` (r1/vln/keyframe, r1/vln/waypoints, r1/vln/set_task, ...), its own pipeline and worker thread, and
one backend shared through a client per robot (core/fleet.py): the engine batches the robots' requests, and
a task switch or stop on r1 cancels only r1's request. set_task goes through the fleet's cap
(max_active_robots). /diagnostics carries one status per robot (`<node>: r1`).
"""
from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from vln_ros import interface
from vln_ros.core.annotate import annotate
from vln_ros.core.backends import Backend, make_backend
from vln_ros.core.config import InferenceParams
from vln_ros.core.control import Plan, Pose2D, plan_path
from vln_ros.core.fleet import Fleet, SharedBackend, fleet_engine_params
from vln_ros.core.inference import (
    CANCEL_GRACE_S,
    Answered,
    BackendOutage,
    InferencePipeline,
    Keyframe,
    Level,
    PlanOut,
    StatusOut,
    state_name,
)
from vln_ros.core.keyframe_request import KeyframeAsk
from vln_ros.msg import GuardStatus, KeyframeRequest, TaskStatus, Waypoint, WaypointArray
from vln_ros.nodes import diagnostics
from vln_ros.nodes.parameters import declare_params
from vln_ros.nodes.runner import run_node
from vln_ros.srv import SetTask

LEVELS = {Level.OK: diagnostics.OK, Level.WARN: diagnostics.WARN, Level.ERROR: diagnostics.ERROR}


class RobotPort:
    """One robot's endpoints and pipeline: topics and services under `<robot>/vln/...` (robot '' = the node's own
    namespace, today's single robot), its own InferencePipeline and worker thread. Nothing of one port reaches
    another's topics: each publishes only on its own publishers."""

    def __init__(self, node: InferenceNode, robot: str, backend_factory: Callable[[InferenceParams], Backend]) -> None:
        self.node, self.robot = node, robot
        name = lambda base: interface.robot_name(robot, base)  # noqa: E731  (one short rule, many names)
        self._status_pub = node.create_publisher(TaskStatus, name(interface.TASK_STATUS), interface.STATUS_QOS)
        self._plan_pub = node.create_publisher(WaypointArray, name(interface.WAYPOINTS), interface.PLAN_QOS)
        self._path_pub = node.create_publisher(Path, name(interface.PATH), interface.PLAN_QOS)
        self._marker_pub = node.create_publisher(MarkerArray, name(interface.MARKERS), interface.PLAN_QOS)
        self._debug_pub = node.create_publisher(Image, name(interface.DEBUG_IMAGE), interface.DEBUG_IMAGE_QOS)
        self._request_pub = node.create_publisher(KeyframeRequest, name(interface.KEYFRAME_REQUEST),
                                                  interface.KEYFRAME_REQUEST_QOS)
        self._logger = node.get_logger().get_child(robot.replace('/', '.')) if robot else node.get_logger()
        self.pipeline = InferencePipeline(node.params, self._publish_plan, self._publish_status,
                                          lambda: node.get_clock().now().nanoseconds, self._logger,
                                          self._request_keyframe, node.outage)
        self.pipeline.load(backend_factory)
        self.keyframe_topic, self.waypoints_topic = name(interface.KEYFRAME), name(interface.WAYPOINTS)
        self.instruction_topic, self.stop_service = name(interface.INSTRUCTION), name(interface.STOP_TASK)
        node.create_subscription(CompressedImage, self.keyframe_topic, self._on_keyframe, interface.KEYFRAME_QOS)
        node.create_subscription(String, self.instruction_topic, self._on_instruction, interface.INSTRUCTION_QOS)
        # The collision guard's latched status (controller_node or guard_node): a long hold goes into the history.
        node.create_subscription(GuardStatus, name(interface.GUARD_STATUS), self._on_guard_status,
                                 interface.GUARD_STATUS_QOS)
        node.create_service(SetTask, name(interface.SET_TASK), self._on_set_task)
        node.create_service(Trigger, self.stop_service, self._on_stop_task)
        self.worker = threading.Thread(target=self._work, name=f'inference_worker{"_" + robot if robot else ""}',
                                       daemon=True)

    # -- executor thread: callbacks never wait on the model ----------------------------------------
    def _on_keyframe(self, msg: CompressedImage) -> None:
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.pipeline.receive(Keyframe(bytes(msg.data), stamp_ns, time.perf_counter(), msg.header.frame_id,
                                       msg.format))

    def _on_instruction(self, msg: String) -> None:
        reply = self.node.fleet.set_task(self.robot, msg.data)
        # One call site per severity: rclpy raises if a call site changes severity between calls.
        if reply.accepted:
            self._logger.info(f'instruction on {self.instruction_topic}: {reply.message} ({reply.task_id})')
        else:
            self._logger.warning(f'instruction on {self.instruction_topic}: {reply.message}')

    def _on_guard_status(self, msg: GuardStatus) -> None:
        # Timed by our clock at receipt: the robot's stamps may come from another clock.
        step = self.pipeline.guard_status(msg.action, msg.nearest_m, msg.bearing_rad,
                                          self.node.get_clock().now().nanoseconds * 1e-9)
        if step is not None:
            self._logger.info(f'history: {step.environment} ({step.action})')

    def _on_set_task(self, request: SetTask.Request, response: SetTask.Response) -> SetTask.Response:
        reply = self.node.fleet.set_task(self.robot, request.instruction)
        response.accepted, response.task_id, response.message = reply.accepted, reply.task_id, reply.message
        return response

    def _on_stop_task(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.pipeline.stop_task(f'stopped by {self.stop_service}')
        return response

    # -- worker thread -------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self.pipeline.closed:
            answered = self.pipeline.work_once(timeout_s=0.5)
            if answered is not None and self._publishing() and self._debug_pub.get_subscription_count() > 0:
                self._publish_debug_image(answered)

    # -- core outputs -> messages (plans and status: called with the pipeline's lock held) ------------
    def _publishing(self) -> bool:
        """False once the context is shut down: rclpy's SIGINT handler does that before the node is destroyed,
        and a request ending then (an answer, a failure) must not kill its worker with the publish's error."""
        return self.node.context.ok()

    def _publish_plan(self, plan: PlanOut) -> None:
        if not self._publishing():
            return
        header = _header(plan.stamp_ns, self.node.params.base_frame)
        msg = WaypointArray(header=header, task_id=plan.task_id, instruction=plan.instruction,
                            environment=plan.environment, action=plan.action, stop=plan.stop,
                            inference_latency=float(plan.latency_s), model=plan.model,
                            waypoints=[Waypoint(dx=w.dx, dy=w.dy, dtheta=w.dtheta, confidence=w.confidence)
                                       for w in plan.waypoints])
        self._plan_pub.publish(msg)
        path = Path(header=header)
        markers = MarkerArray(markers=[Marker(header=header, ns='vln_plan', action=Marker.DELETEALL)])
        previous = Pose2D()
        for i, (pose, confidence) in enumerate(plan_path(Plan(0.0, plan.waypoints))):
            stamped = PoseStamped(header=header)
            stamped.pose.position.x, stamped.pose.position.y = pose.x, pose.y
            stamped.pose.orientation.z, stamped.pose.orientation.w = math.sin(pose.yaw / 2), math.cos(pose.yaw / 2)
            path.poses.append(stamped)
            arrow = Marker(header=header, ns='vln_plan', id=i + 1, type=Marker.ARROW, action=Marker.ADD)
            arrow.pose = stamped.pose
            arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.25, 0.05, 0.05
            arrow.color.r, arrow.color.g, arrow.color.a = 1.0 - confidence, confidence, 1.0
            markers.markers.append(arrow)
            previous = pose
        label = Marker(header=header, ns='vln_plan', id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        label.pose.position.x, label.pose.position.y, label.pose.position.z = previous.x, previous.y, 0.6
        label.scale.z = 0.15
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        label.text = f'{plan.action}: {plan.environment}'[:120]
        markers.markers.append(label)
        self._path_pub.publish(path)
        self._marker_pub.publish(markers)

    def _request_keyframe(self, ask: KeyframeAsk) -> None:
        if not self._publishing():
            return
        msg = KeyframeRequest(sequence=ask.sequence, wanted=ask.wanted, any_frame=ask.any_frame)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._request_pub.publish(msg)

    def _publish_status(self, s: StatusOut) -> None:
        if not self._publishing():
            return
        c = s.counters
        status = TaskStatus(state=int(s.state), state_name=state_name(s.state), reason=s.reason)
        status.header.stamp = self.node.get_clock().now().to_msg()
        if s.task_id:
            status.task_id, status.instruction = s.task_id, s.instruction
            status.keyframes_received, status.keyframes_processed = c.keyframes_received, c.keyframes_processed
            status.keyframes_dropped, status.plans_published = c.keyframes_dropped, c.plans_published
            status.parse_failures, status.backend_failures = c.parse_failures, c.backend_failures
            status.consecutive_failures = c.consecutive_failures
            status.last_latency, status.last_error = float(c.last_latency_s), c.last_error[:300]
        self._status_pub.publish(status)

    def _publish_debug_image(self, answered: Answered) -> None:
        bgr = cv2.imdecode(np.frombuffer(answered.keyframe.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            return
        plan = answered.plan
        lines = [f'{plan.action}' + (' (STOP)' if plan.stop else ''), plan.environment,
                 f'{answered.latency_s * 1e3:.0f} ms  {plan.model}  {plan.task_id}']
        out = annotate(bgr, lines, plan_path(Plan(0.0, plan.waypoints)), plan.stop)
        self._debug_pub.publish(Image(header=_header(answered.keyframe.stamp_ns, answered.keyframe.frame_id),
                                      height=out.shape[0], width=out.shape[1], encoding='bgr8',
                                      step=out.shape[1] * 3, data=out.tobytes()))


def _header(stamp_ns: int, frame_id: str) -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return header


class InferenceNode(Node):
    def __init__(self, backend_factory: Callable[[InferenceParams], Backend] = make_backend,
                 **node_kwargs: Any) -> None:
        super().__init__('inference_node', **node_kwargs)
        self.params: InferenceParams = declare_params(self, InferenceParams, self._apply_params,
                                                      cli_args=node_kwargs.get('cli_args'))
        p = self.params
        self._diag_pub = self.create_publisher(DiagnosticArray, interface.DIAGNOSTICS, interface.DIAGNOSTICS_QOS)
        robots = list(p.robots) or ['']
        # One backend for every robot (one engine batches their requests), each robot with its own client.
        self._shared = SharedBackend(backend_factory, len(robots))
        # The robots share the server, so its outage (a restart, an overload) is logged once, not per robot.
        self.outage = BackendOutage()
        self.get_logger().info(f'loading backend {p.backend!r}, model {p.model!r}'
                               + (f' for {len(robots)} robots: {", ".join(robots)}' if p.robots else ''))
        raised = fleet_engine_params(p, len(robots))[1]   # what SharedBackend loads the engine with
        if raised:
            self.get_logger().info(raised)
        self._ports: dict[str, RobotPort] = {}
        for robot in robots:
            self._ports[robot] = RobotPort(self, robot, functools.partial(self._shared.client, robot=robot))
        self.fleet = Fleet({robot: port.pipeline for robot, port in self._ports.items()}, p.max_active_robots,
                           p.idle_release_s, self.get_logger().warning)
        diagnostics.start_timer(self, p.diagnostics_period_s, self._publish_diagnostics)
        for port in self._ports.values():
            port.worker.start()
        first = next(iter(self._ports.values()))
        self.get_logger().info(
            f'ready in {sum(port.pipeline.load_time_s for port in self._ports.values()):.1f} s: '
            f'{self.resolve_topic_name(first.keyframe_topic)} -> {first.pipeline.model_name} ({p.backend}) -> '
            f'{self.resolve_topic_name(first.waypoints_topic)}'
            + (f' (and {len(robots) - 1} more robots)' if len(robots) > 1 else '')
            + f'; timeout {p.inference_timeout_s} s, guided JSON {p.guided_json}, history {p.history_steps} steps'
            + (f', at most {p.max_active_robots} robots with a task' if p.max_active_robots and p.robots else '')
            + (f', recording to {p.record_file}' if p.record_file else ''))

    def pipeline(self, robot: str = '') -> InferencePipeline:
        """A robot's pipeline ('' = the node's own namespace, without `robots`): for tests and tools."""
        return self.fleet.pipelines[robot]

    def _apply_params(self, params: InferenceParams) -> None:
        """A change through the parameter services, validated by the model (parameters.LiveParameters). The
        worker reads the parameters once per keyframe; prompt limits and history take effect with the next
        prompt, the failure threshold at once. The backend, its settings, history_max, base_frame,
        record_file, diagnostics_period_s, robots, max_active_robots and idle_release_s are read-only."""
        for port in getattr(self, '_ports', {}).values():
            port.pipeline.set_params(params)
        self.params = params

    # -- diagnostics (timer, executor thread) -----------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now_s = time.monotonic()
        statuses = []
        active = self.fleet.active()
        for robot, port in self._ports.items():
            health = port.pipeline.health(now_s)
            values = health.values
            if robot:  # a fleet: one status per robot, named after it, with the fleet's load
                values = {'robot': robot, **values, 'active_robots': len(active),
                          'max_active_robots': self.params.max_active_robots}
            status = diagnostics.status(self, LEVELS[health.level], health.message, values)
            if robot:
                status.name = f'{status.name}: {robot}'
            statuses.append(status)
        self._diag_pub.publish(diagnostics.array(self, *statuses))

    def destroy_node(self) -> None:
        ports = getattr(self, '_ports', {})  # absent or partial when parameters or the backend failed in __init__
        for port in ports.values():
            port.pipeline.close()
        # The robots' requests wind down together: one grace for all, not one each (6 robots whose backend
        # ignored the cancel took 18 s, past the runner's stop deadline).
        deadline = time.monotonic() + CANCEL_GRACE_S + 1.0
        for port in ports.values():
            if port.worker.is_alive():
                port.worker.join(timeout=max(0.0, deadline - time.monotonic()))
            port.pipeline.release()
        if hasattr(self, '_shared'):
            self._shared.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node('inference_node', InferenceNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
