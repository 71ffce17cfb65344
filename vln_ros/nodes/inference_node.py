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
"""
from __future__ import annotations

import math
import threading
import time
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
from vln_ros.core.backends import make_backend
from vln_ros.core.config import InferenceParams
from vln_ros.core.control import Plan, Pose2D, plan_path
from vln_ros.core.inference import (
    CANCEL_GRACE_S,
    Answered,
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


class InferenceNode(Node):
    def __init__(self, backend_factory: Any = make_backend, **node_kwargs: Any) -> None:
        super().__init__('inference_node', **node_kwargs)
        self.params: InferenceParams = declare_params(self, InferenceParams, self._apply_params,
                                                      cli_args=node_kwargs.get('cli_args'))
        p = self.params
        self._status_pub = self.create_publisher(TaskStatus, interface.TASK_STATUS, interface.STATUS_QOS)
        self._plan_pub = self.create_publisher(WaypointArray, interface.WAYPOINTS, interface.PLAN_QOS)
        self._path_pub = self.create_publisher(Path, interface.PATH, interface.PLAN_QOS)
        self._marker_pub = self.create_publisher(MarkerArray, interface.MARKERS, interface.PLAN_QOS)
        self._debug_pub = self.create_publisher(Image, interface.DEBUG_IMAGE, interface.DEBUG_IMAGE_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, interface.DIAGNOSTICS, interface.DIAGNOSTICS_QOS)
        self._request_pub = self.create_publisher(KeyframeRequest, interface.KEYFRAME_REQUEST,
                                                  interface.KEYFRAME_REQUEST_QOS)
        self._pipeline = InferencePipeline(p, self._publish_plan, self._publish_status,
                                           lambda: self.get_clock().now().nanoseconds, self.get_logger(),
                                           self._request_keyframe)
        self.get_logger().info(f'loading backend {p.backend!r}, model {p.model!r}')
        self._pipeline.load(backend_factory)

        self.create_subscription(CompressedImage, interface.KEYFRAME, self._on_keyframe, interface.KEYFRAME_QOS)
        self.create_subscription(String, interface.INSTRUCTION, self._on_instruction, interface.INSTRUCTION_QOS)
        # The collision guard's latched status (controller_node or guard_node): a long hold goes into the history.
        self.create_subscription(GuardStatus, interface.GUARD_STATUS, self._on_guard_status,
                                 interface.GUARD_STATUS_QOS)
        self.create_service(SetTask, interface.SET_TASK, self._on_set_task)
        self.create_service(Trigger, interface.STOP_TASK, self._on_stop_task)
        diagnostics.start_timer(self, p.diagnostics_period_s, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name='inference_worker', daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'ready in {self._pipeline.load_time_s:.1f} s: {self.resolve_topic_name(interface.KEYFRAME)} -> '
            f'{self._pipeline.model_name} ({p.backend}) -> {self.resolve_topic_name(interface.WAYPOINTS)}; '
            f'timeout {p.inference_timeout_s} s, guided JSON {p.guided_json}, history {p.history_steps} steps'
            + (f', recording to {p.record_file}' if p.record_file else ''))

    def _apply_params(self, params: InferenceParams) -> None:
        """A change through the parameter services, validated by the model (parameters.LiveParameters). The
        worker reads the parameters once per keyframe; prompt limits and history take effect with the next
        prompt, the failure threshold at once. The backend, its settings, history_max, base_frame,
        record_file and diagnostics_period_s are read-only."""
        self._pipeline.set_params(params)
        self.params = params

    # -- executor thread: callbacks never wait on the model ----------------------------------------
    def _on_keyframe(self, msg: CompressedImage) -> None:
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self._pipeline.receive(Keyframe(bytes(msg.data), stamp_ns, time.perf_counter(), msg.header.frame_id,
                                        msg.format))

    def _on_instruction(self, msg: String) -> None:
        reply = self._pipeline.set_task(msg.data)
        # One call site per severity: rclpy raises if a call site changes severity between calls.
        if reply.accepted:
            self.get_logger().info(f'instruction on {interface.INSTRUCTION}: {reply.message} ({reply.task_id})')
        else:
            self.get_logger().warning(f'instruction on {interface.INSTRUCTION}: {reply.message}')

    def _on_guard_status(self, msg: GuardStatus) -> None:
        # Timed by our clock at receipt: the robot's stamps may come from another clock.
        step = self._pipeline.guard_status(msg.action, msg.nearest_m, msg.bearing_rad,
                                           self.get_clock().now().nanoseconds * 1e-9)
        if step is not None:
            self.get_logger().info(f'history: {step.environment} ({step.action})')

    def _on_set_task(self, request: SetTask.Request, response: SetTask.Response) -> SetTask.Response:
        reply = self._pipeline.set_task(request.instruction)
        response.accepted, response.task_id, response.message = reply.accepted, reply.task_id, reply.message
        return response

    def _on_stop_task(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self._pipeline.stop_task(f'stopped by {interface.STOP_TASK}')
        return response

    # -- worker thread -------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._pipeline.closed:
            answered = self._pipeline.work_once(timeout_s=0.5)
            if answered is not None and self._debug_pub.get_subscription_count() > 0:
                self._publish_debug_image(answered)

    # -- core outputs -> messages (plans and status: called with the pipeline's lock held) ------------
    def _header(self, stamp_ns: int, frame_id: str) -> Header:
        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        return header

    def _publish_plan(self, plan: PlanOut) -> None:
        header = self._header(plan.stamp_ns, self.params.base_frame)
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
        msg = KeyframeRequest(sequence=ask.sequence, wanted=ask.wanted, any_frame=ask.any_frame)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._request_pub.publish(msg)

    def _publish_status(self, s: StatusOut) -> None:
        c = s.counters
        status = TaskStatus(state=int(s.state), state_name=state_name(s.state), reason=s.reason)
        status.header.stamp = self.get_clock().now().to_msg()
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
        self._debug_pub.publish(Image(header=self._header(answered.keyframe.stamp_ns, answered.keyframe.frame_id),
                                      height=out.shape[0], width=out.shape[1], encoding='bgr8',
                                      step=out.shape[1] * 3, data=out.tobytes()))

    # -- diagnostics (timer, executor thread) -----------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        health = self._pipeline.health(time.monotonic())
        self._diag_pub.publish(diagnostics.array(
            self, diagnostics.status(self, LEVELS[health.level], health.message, health.values)))

    def destroy_node(self) -> None:
        if hasattr(self, '_worker'):  # absent when parameters or the backend failed in __init__
            self._pipeline.close()
            self._worker.join(timeout=CANCEL_GRACE_S + 1.0)
            self._pipeline.release()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node('inference_node', InferenceNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
