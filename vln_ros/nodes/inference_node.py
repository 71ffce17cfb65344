"""inference_node: the newest keyframe + the task's instruction and history -> the VLM -> a plan.

Threads: the executor thread runs callbacks (keyframes, instructions, services, diagnostics) and never
waits on the model: a keyframe is only dropped into a size-1 latest-wins slot. One worker thread takes
the newest keyframe, builds the prompt, calls the backend (on a one-thread pool, so a hung backend costs
a timeout, not the worker), parses the answer and publishes. Nothing queues: keyframes that arrive while
the model is busy replace each other (counted as dropped).

One lock (`_lock`) guards the task manager and every plan publication, so a task switch or stop in a
service callback and a plan of the old task can never interleave: once set_task returns, no plan of the
old task is published. Every failure (backend error, timeout, unparsable answer) publishes a stop plan.

The backend is created in __init__, on the main thread before spinning (lmdeploy installs signal
handlers and spawns processes); vln/task_status says `loading` meanwhile (latched) and then `idle`.
"""
from __future__ import annotations

import concurrent.futures
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from vln_ros.core import images
from vln_ros.core.annotate import annotate
from vln_ros.core.backends import Answer, AnswerRecord, AnswerRecorder, Backend, BackendError, Request, make_backend
from vln_ros.core.config import InferenceParams
from vln_ros.core.control import Plan, Pose2D, plan_path
from vln_ros.core.latest import LatestSlot
from vln_ros.core.parser import ParsedAnswer, parse_answer
from vln_ros.core.prompts import STOP_ACTION, PromptBuilder, Step
from vln_ros.core.stats import EventCounters, LatencyWindow
from vln_ros.core.tasks import State, TaskManager, TaskRejected
from vln_ros.msg import TaskStatus, Waypoint, WaypointArray
from vln_ros.nodes import diagnostics
from vln_ros.nodes.camera_node import KEYFRAME_QOS, KEYFRAME_TOPIC
from vln_ros.nodes.parameters import declare_params
from vln_ros.nodes.runner import run_node
from vln_ros.srv import SetTask

PLAN_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
STATUS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# After a timeout the cancelled request gets this long to end before the next one may start.
CANCEL_GRACE_S = 2.0


@dataclass(frozen=True)
class Keyframe:
    msg: CompressedImage
    received_s: float   # perf_counter at the callback


def state_name(state: State) -> str:
    return state.name.lower()


class InferenceNode(Node):
    def __init__(self, backend_factory: Any = make_backend, **node_kwargs: Any) -> None:
        super().__init__('inference_node', **node_kwargs)
        self.params: InferenceParams = declare_params(self, InferenceParams, self._apply_params,
                                                      cli_args=node_kwargs.get('cli_args'))
        p = self.params
        self._lock = threading.RLock()
        self._tasks = TaskManager(p.history_max, p.failure_threshold)
        self._prompts = PromptBuilder(p.parser, p.history_steps)
        self._slot: LatestSlot[Keyframe] = LatestSlot()
        self._wake = threading.Event()       # set when a task starts or the node closes
        self._counters = EventCounters(time.monotonic())
        self._latency = LatencyWindow()      # keyframe received -> plan published
        self._backend_time = LatencyWindow()
        self._first_token = LatencyWindow()
        self._wait = LatencyWindow()         # received -> taken by the worker (it was busy with the last one)
        self._overhead = LatencyWindow()     # ours: taken -> backend called, plus returned -> published
        self._keyframe_age = LatencyWindow()  # capture stamp -> plan published
        self._output_tokens = LatencyWindow()  # (a window of numbers; percentile_ms is then x1000)
        self._pending: concurrent.futures.Future[Answer] | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='inference_backend')
        self._recorder: AnswerRecorder | None = None

        self._status_pub = self.create_publisher(TaskStatus, 'vln/task_status', STATUS_QOS)
        self._plan_pub = self.create_publisher(WaypointArray, 'vln/waypoints', PLAN_QOS)
        self._path_pub = self.create_publisher(Path, 'vln/path', PLAN_QOS)
        self._marker_pub = self.create_publisher(MarkerArray, 'vln/markers', PLAN_QOS)
        self._debug_pub = self.create_publisher(Image, 'vln/debug_image', 2)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

        with self._lock:
            self._tasks.loading(done=False)
            self._publish_status()
        started = time.monotonic()
        self.get_logger().info(f'loading backend {p.backend!r}, model {p.model!r}')
        self._backend: Backend = backend_factory(p)
        self._load_time_s = time.monotonic() - started
        if p.record_file:
            self._recorder = AnswerRecorder(p.record_file)
        with self._lock:
            self._tasks.loading(done=True)
            self._publish_status()

        self.create_subscription(CompressedImage, KEYFRAME_TOPIC, self._on_keyframe, KEYFRAME_QOS)
        self.create_subscription(String, 'vln/instruction', self._on_instruction, PLAN_QOS)
        self.create_service(SetTask, 'vln/set_task', self._on_set_task)
        self.create_service(Trigger, 'vln/stop_task', self._on_stop_task)
        diagnostics.start_timer(self, p.diagnostics_period_s, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name='inference_worker', daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'ready in {self._load_time_s:.1f} s: {self.resolve_topic_name(KEYFRAME_TOPIC)} -> '
            f'{self._backend.model_name} ({p.backend}) -> {self.resolve_topic_name("vln/waypoints")}; '
            f'timeout {p.inference_timeout_s} s, guided JSON {p.guided_json}, history {p.history_steps} steps'
            + (f', recording to {p.record_file}' if p.record_file else ''))

    def _apply_params(self, params: InferenceParams) -> None:
        """A change through the parameter services, validated by the model (parameters.LiveParameters). The
        worker reads self.params once per keyframe; prompt limits and history take effect with the next
        prompt, the failure threshold at once. The backend, its settings, history_max, base_frame,
        record_file and diagnostics_period_s are read-only."""
        with self._lock:
            self._prompts = PromptBuilder(params.parser, params.history_steps)
            self._tasks.failure_threshold = params.failure_threshold
            self.params = params

    # -- executor thread: callbacks never wait on the model ----------------------------------------
    def _on_keyframe(self, msg: CompressedImage) -> None:
        self._counters.add('keyframes_received')
        with self._lock:
            if self._tasks.running and self._tasks.task is not None:
                self._tasks.task.counters.keyframes_received += 1
        if self._slot.put(Keyframe(msg, time.perf_counter())):
            self._counters.add('keyframes_dropped')
            with self._lock:
                if self._tasks.running and self._tasks.task is not None:
                    self._tasks.task.counters.keyframes_dropped += 1

    def _on_instruction(self, msg: String) -> None:
        accepted, task_id, message = self.set_task(msg.data)
        # One call site per severity: rclpy raises if a call site changes severity between calls.
        if accepted:
            self.get_logger().info(f'instruction on vln/instruction: {message} ({task_id})')
        else:
            self.get_logger().warning(f'instruction on vln/instruction: {message}')

    def _on_set_task(self, request: SetTask.Request, response: SetTask.Response) -> SetTask.Response:
        response.accepted, response.task_id, response.message = self.set_task(request.instruction)
        return response

    def _on_stop_task(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.stop_task('stopped by vln/stop_task')
        return response

    def set_task(self, instruction: str) -> tuple[bool, str, str]:
        """Start (or switch to) a task: history cleared, the old task's in-flight answer aborted and never
        published, a stop plan at once (the old plan must not be followed while the new one is made)."""
        with self._lock:
            try:
                task = self._tasks.start(instruction)
            except TaskRejected as exc:
                self._counters.add('tasks_rejected')
                return False, '', f'rejected: {exc}'
            self._counters.add('tasks_started')
            self._backend.cancel()
            self._publish_stop(None, 'new_task', f'new task: {task.instruction[:80]}')
            self._publish_status()
        self._wake.set()
        return True, task.task_id, f'task started: {task.instruction!r}'

    def stop_task(self, reason: str) -> tuple[bool, str]:
        with self._lock:
            task = self._tasks.task
            if not self._tasks.stop(reason):
                return False, f'no running task to stop (state {state_name(self._tasks.state)})'
            self._backend.cancel()
            self._publish_stop(None, STOP_ACTION, reason)
            self._publish_status()
        return True, f'task {task.task_id if task else ""} stopped'

    # -- worker thread -------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._slot.closed:
            with self._lock:
                running = self._tasks.running
            if not running:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            keyframe = self._slot.take(timeout_s=0.5)
            if keyframe is None:
                continue
            try:
                self._infer(keyframe, time.perf_counter())
            except Exception as exc:  # the worker must outlive any bug; the robot gets a stop plan
                self._counters.add('internal_errors')
                self.get_logger().error(f'inference step failed: {exc!r}', throttle_duration_sec=5.0)
                with self._lock:
                    if self._tasks.running:
                        self._publish_stop(None, STOP_ACTION, f'internal error: {exc!r:.80}')

    def _infer(self, keyframe: Keyframe, taken_s: float) -> None:
        p = self.params
        msg = keyframe.msg
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        age_s = self._now_s() - stamp_ns * 1e-9
        if age_s > p.keyframe_max_age_s:
            self._counters.add('keyframes_stale')
            self.get_logger().warning(f'skipped a keyframe {age_s:.1f} s old (keyframe_max_age_s '
                                      f'{p.keyframe_max_age_s})', throttle_duration_sec=5.0)
            return
        if bytes(msg.data[:2]) != b'\xff\xd8':  # the backends send it on as image/jpeg
            self._counters.add('keyframes_not_jpeg')
            self.get_logger().warning(f'skipped a keyframe that is not JPEG (format {msg.format!r})',
                                      throttle_duration_sec=5.0)
            return
        try:  # before any decoder (the backend's, the debug image's) allocates what the header claims
            images.check_declared_size(msg.data)
        except images.ImageRejected as exc:
            self._counters.add('keyframes_rejected_' + exc.reason)
            self.get_logger().warning(f'skipped a keyframe: {exc}', throttle_duration_sec=5.0)
            return
        with self._lock:
            task = self._tasks.task
            if task is None or not self._tasks.running:
                return
            task_id, instruction = task.task_id, task.instruction
            prompt = self._prompts.build(instruction, task.history)
            task.counters.keyframes_processed += 1
        request = Request(bytes(msg.data), stamp_ns, prompt, p.max_new_tokens, p.guided_json, p.image_max_pixels)
        self._counters.add('requests')
        called = time.perf_counter()
        overhead = called - taken_s
        answer, error = self._call_backend(request)
        returned = time.perf_counter()

        parsed = parse_answer(answer.text, p.parser) if answer is not None else None
        with self._lock:
            if not self._tasks.is_current(task_id):
                self._counters.add('answers_discarded_old_task')
                published = None
            else:
                published = self._publish_result(msg, task_id, instruction, answer, error, parsed, keyframe)
        done = time.perf_counter()
        self._record(request, task_id, instruction, answer, error, returned - called)
        if published is None:
            return
        self._overhead.add(overhead + (done - returned))
        self._wait.add(taken_s - keyframe.received_s)
        self._latency.add(done - keyframe.received_s)
        self._keyframe_age.add(self._now_s() - stamp_ns * 1e-9)
        self._backend_time.add(returned - called)
        if answer is not None:
            if answer.first_token_s is not None:
                self._first_token.add(answer.first_token_s)
            if answer.output_tokens is not None:
                self._output_tokens.add(answer.output_tokens / 1000.0)
        if self._debug_pub.get_subscription_count() > 0:
            self._publish_debug_image(msg, published, done - keyframe.received_s)

    def _call_backend(self, request: Request) -> tuple[Answer | None, BackendError | None]:
        """The backend's answer, or the error; bounded by inference_timeout_s whatever the backend does."""
        if self._pending is not None and not self._pending.done():  # a cancelled request still winding down
            try:
                self._pending.result(timeout=CANCEL_GRACE_S)
            except Exception:  # its outcome no longer matters; only that it ended
                pass
            if not self._pending.done():
                self._counters.add('backend_stuck')
                return None, BackendError('stuck', 'the previous, cancelled request has not ended')
        self._pending = self._pool.submit(self._backend.generate, request)
        try:
            return self._pending.result(timeout=self.params.inference_timeout_s), None
        except concurrent.futures.TimeoutError:
            self._backend.cancel()
            return None, BackendError('timeout', f'no answer within inference_timeout_s '
                                                 f'({self.params.inference_timeout_s} s)')
        except BackendError as exc:
            return None, exc
        except Exception as exc:  # torch.OutOfMemoryError, engine crashes, bugs in a backend
            reason = 'oom' if 'out of memory' in str(exc).lower() else 'error'
            return None, BackendError(reason, repr(exc)[:200])

    # -- publishing (called with _lock held) ----------------------------------------------------------
    def _publish_result(self, msg: CompressedImage, task_id: str, instruction: str, answer: Answer | None,
                        error: BackendError | None, parsed: ParsedAnswer | None,
                        keyframe: Keyframe) -> WaypointArray | None:
        latency = time.perf_counter() - keyframe.received_s
        if error is not None:
            self._counters.add('backend_failures_' + error.reason)
            if error.reason == 'cancelled':  # only a switch, stop or shutdown cancels; each publishes its own stop
                return None
            self._tasks.failed('backend', str(error), latency)
            self.get_logger().warning(f'backend failed ({error}): stop plan', throttle_duration_sec=5.0)
            plan = self._make_plan(msg, task_id, instruction, f'(no plan: backend {error.reason})', STOP_ACTION,
                                   True, (), latency)
        else:
            assert parsed is not None and answer is not None
            for adjustment in parsed.adjustments:
                self._counters.add('answers_' + adjustment)
            if parsed.rejection is not None:
                self._counters.add('parse_failures_' + parsed.rejection)
                self._tasks.failed('parse', f'answer rejected ({parsed.rejection}): {parsed.detail}', latency)
                self.get_logger().warning(f'answer rejected ({parsed.rejection}: {parsed.detail}): stop plan; '
                                          f'answer was {answer.text[:120]!r}', throttle_duration_sec=5.0)
                environment = parsed.environment or f'(no plan: answer {parsed.rejection})'
            else:
                self._counters.add('answers_' + parsed.source)
                self._tasks.succeeded(Step(parsed.environment, parsed.action), latency, parsed.arrived)
                environment = parsed.environment
            plan = self._make_plan(msg, task_id, instruction, environment, parsed.action, parsed.stop,
                                   parsed.waypoints, latency)
        self._publish_plan(plan)
        self._publish_status()
        return plan

    def _make_plan(self, msg: CompressedImage | None, task_id: str, instruction: str, environment: str,
                   action: str, stop: bool, waypoints: Any, latency_s: float) -> WaypointArray:
        plan = WaypointArray(task_id=task_id, instruction=instruction, environment=environment, action=action,
                             stop=stop, inference_latency=float(latency_s), model=self._backend_model())
        plan.waypoints = [Waypoint(dx=w.dx, dy=w.dy, dtheta=w.dtheta, confidence=w.confidence) for w in waypoints]
        if msg is not None:
            plan.header.stamp = msg.header.stamp
        else:
            plan.header.stamp = self.get_clock().now().to_msg()
        plan.header.frame_id = self.params.base_frame
        return plan

    def _backend_model(self) -> str:
        backend = getattr(self, '_backend', None)
        return backend.model_name if backend is not None else ''

    def _publish_stop(self, msg: CompressedImage | None, action: str, environment: str) -> None:
        task = self._tasks.task
        self._publish_plan(self._make_plan(msg, task.task_id if task else '', task.instruction if task else '',
                                           environment, action, True, (), 0.0))

    def _publish_plan(self, plan: WaypointArray) -> None:
        self._plan_pub.publish(plan)
        self._counters.add('plans_published')
        if plan.stop:
            self._counters.add('stop_plans_published')
        path = Path(header=plan.header)
        markers = MarkerArray(markers=[Marker(header=plan.header, ns='vln_plan', action=Marker.DELETEALL)])
        poses = plan_path(Plan(0.0, tuple(plan.waypoints)))
        previous = Pose2D()
        for i, (pose, confidence) in enumerate(poses):
            stamped = PoseStamped(header=plan.header)
            stamped.pose.position.x, stamped.pose.position.y = pose.x, pose.y
            stamped.pose.orientation.z, stamped.pose.orientation.w = math.sin(pose.yaw / 2), math.cos(pose.yaw / 2)
            path.poses.append(stamped)
            arrow = Marker(header=plan.header, ns='vln_plan', id=i + 1, type=Marker.ARROW, action=Marker.ADD)
            arrow.pose = stamped.pose
            arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.25, 0.05, 0.05
            arrow.color.r, arrow.color.g, arrow.color.a = 1.0 - confidence, confidence, 1.0
            markers.markers.append(arrow)
            previous = pose
        label = Marker(header=plan.header, ns='vln_plan', id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        label.pose.position.x, label.pose.position.y, label.pose.position.z = previous.x, previous.y, 0.6
        label.scale.z = 0.15
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        label.text = f'{plan.action}: {plan.environment}'[:120]
        markers.markers.append(label)
        self._path_pub.publish(path)
        self._marker_pub.publish(markers)

    def _publish_status(self) -> None:
        task = self._tasks.task
        status = TaskStatus(state=int(self._tasks.state), state_name=state_name(self._tasks.state))
        status.header.stamp = self.get_clock().now().to_msg()
        if task is not None:
            c = task.counters
            status.task_id, status.instruction = task.task_id, task.instruction
            status.keyframes_received, status.keyframes_processed = c.keyframes_received, c.keyframes_processed
            status.keyframes_dropped, status.plans_published = c.keyframes_dropped, c.plans_published
            status.parse_failures, status.backend_failures = c.parse_failures, c.backend_failures
            status.consecutive_failures = c.consecutive_failures
            status.last_latency, status.last_error = float(c.last_latency_s), c.last_error[:300]
        status.reason = self._tasks.reason
        self._status_pub.publish(status)

    def _publish_debug_image(self, msg: CompressedImage, plan: WaypointArray, latency_s: float) -> None:
        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            return
        path = plan_path(Plan(0.0, tuple(plan.waypoints)))
        lines = [f'{plan.action}' + (' (STOP)' if plan.stop else ''), plan.environment,
                 f'{latency_s * 1e3:.0f} ms  {plan.model}  {plan.task_id}']
        out = annotate(bgr, lines, path, plan.stop)
        image = Image(header=msg.header, height=out.shape[0], width=out.shape[1], encoding='bgr8',
                      step=out.shape[1] * 3, data=out.tobytes())
        self._debug_pub.publish(image)

    def _record(self, request: Request, task_id: str, instruction: str, answer: Answer | None,
                error: BackendError | None, latency_s: float) -> None:
        if self._recorder is None:
            return
        self._recorder.write(AnswerRecord(
            stamp_ns=request.stamp_ns, task_id=task_id, instruction=instruction,
            prompt_hash=request.prompt.digest(), text=answer.text if answer else '',
            latency_s=answer.latency_s if answer else latency_s,
            input_tokens=answer.input_tokens if answer else None,
            output_tokens=answer.output_tokens if answer else None,
            first_token_s=answer.first_token_s if answer else None,
            error=error.reason if error else '', model=self._backend.model_name))

    # -- diagnostics (timer, executor thread) -----------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        totals = self._counters.totals()
        rates = self._counters.rates(time.monotonic())
        with self._lock:
            state, reason, task = self._tasks.state, self._tasks.reason, self._tasks.task
            failures_in_row = task.counters.consecutive_failures if task else 0
            last_error = task.counters.last_error if task else ''
        values: dict[str, object] = {
            'state': state_name(state), 'reason': reason, 'task_id': task.task_id if task else '',
            'instruction': task.instruction if task else '', 'backend': self.params.backend,
            'model': self._backend.model_name, 'load_time_s': self._load_time_s,
            'keyframe_rate_hz': rates.get('keyframes_received', 0.0),
            'plan_rate_hz': rates.get('plans_published', 0.0),
            'latency_ms_p50': self._latency.percentile_ms(50), 'latency_ms_p99': self._latency.percentile_ms(99),
            'backend_ms_p50': self._backend_time.percentile_ms(50),
            'first_token_ms_p50': self._first_token.percentile_ms(50),
            'output_tokens_p50': self._output_tokens.percentile_ms(50),
            'wait_ms_p50': self._wait.percentile_ms(50), 'overhead_ms_p50': self._overhead.percentile_ms(50),
            'keyframe_age_ms_p99': self._keyframe_age.percentile_ms(99),
            'consecutive_failures': failures_in_row, 'last_error': last_error,
        }
        for name in ('keyframes_received', 'keyframes_dropped', 'keyframes_stale', 'keyframes_not_jpeg', 'requests',
                     'plans_published', 'stop_plans_published', 'answers_discarded_old_task', 'tasks_started',
                     'internal_errors'):
            values[name] = totals.get(name, 0)
        values.update({k: v for k, v in sorted(totals.items())
                       if k.startswith(('parse_failures_', 'backend_failures_', 'answers_', 'keyframes_rejected_'))})
        if state == State.FAILED or totals.get('backend_stuck', 0):
            level, message = diagnostics.ERROR, reason if state == State.FAILED else 'backend stuck'
        elif failures_in_row:
            level, message = diagnostics.WARN, f'{failures_in_row} failed answer(s) in a row: {last_error[:80]}'
        elif state == State.ACTIVE and rates.get('keyframes_received', 0.0) == 0.0:
            level, message = diagnostics.WARN, 'task active but no keyframes arrive'
        else:
            level, message = diagnostics.OK, state_name(state)
        self._diag_pub.publish(diagnostics.array(self, diagnostics.status(self, level, message, values)))

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def destroy_node(self) -> None:
        if hasattr(self, '_worker'):  # absent when parameters or the backend failed in __init__
            self._slot.close()
            self._wake.set()
            self._backend.cancel()
            self._worker.join(timeout=CANCEL_GRACE_S + 1.0)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._backend.close()
            if self._recorder is not None:
                self._recorder.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node('inference_node', InferenceNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
