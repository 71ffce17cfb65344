"""inference_node on a real graph with the replay backend: the wiring of core.inference's pipeline to topics,
services, threads and timers. Plans per keyframe (and rviz topics, debug image), latest-wins under overload,
task switch and stop mid-inference, a failing backend's status and diagnostics levels, the instruction topic
and keyframe checks. Timeouts, grace, malformed answers and health rules: test/test_inference_pipeline.py."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Path
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from vln_ros import interface
from vln_ros.core.backends.base import AnswerRecord, AnswerRecorder, load_records
from vln_ros.msg import TaskStatus, WaypointArray
from vln_ros.nodes.diagnostics import values_of
from vln_ros.nodes.inference_node import InferenceNode
from vln_ros.srv import SetTask

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
FORWARD = '{"env":"corridor","act":"forward","wp":[[0.5,0,0,0.9],[0.5,0.1,10,0.8]]}'
JPEG = cv2.imencode('.jpg', np.full((224, 224, 3), 90, np.uint8))[1].tobytes()


def recording(tmp_path, *answers, latency_s=0.0):
    """A replay file: answers are texts, or (text, latency_s) or (None, error reason)."""
    path = tmp_path / 'answers.jsonl'
    recorder = AnswerRecorder(path)
    for answer in answers:
        text, latency = answer if isinstance(answer, tuple) else (answer, latency_s)
        error = '' if text is not None else latency
        recorder.write(AnswerRecord(stamp_ns=0, task_id='', instruction='', prompt_hash='', text=text or '',
                                    latency_s=0.0 if error else latency, error=error, model='replayed-model'))
    recorder.close()
    return str(path)


class Probe:
    """Feeds keyframes and instructions; records plans (in arrival order), status, diagnostics, rviz topics."""

    def __init__(self, graph):
        self.node = graph.node('probe')
        self.lock = threading.Lock()
        self.plans: list[tuple[float, WaypointArray]] = []
        self.statuses: list[TaskStatus] = []
        self.diagnostics: list = []
        self.paths: list[Path] = []
        self.markers: list[MarkerArray] = []
        self.debug_images: list[Image] = []
        n = self.node
        n.create_subscription(WaypointArray, interface.WAYPOINTS, self._on_plan, RELIABLE)
        n.create_subscription(TaskStatus, interface.TASK_STATUS, self._keep(self.statuses), LATCHED)
        n.create_subscription(Path, interface.PATH, self._keep(self.paths), RELIABLE)
        n.create_subscription(MarkerArray, interface.MARKERS, self._keep(self.markers), RELIABLE)
        n.create_subscription(Image, interface.DEBUG_IMAGE, self._keep(self.debug_images), 10)
        n.create_subscription(DiagnosticArray, interface.DIAGNOSTICS, lambda m: self._keep(self.diagnostics)(
            *[s for s in m.status if s.name == '/inference_node']) if m.status else None, 10)
        self.keyframes = n.create_publisher(CompressedImage, interface.KEYFRAME, interface.KEYFRAME_QOS)
        self.instructions = n.create_publisher(String, interface.INSTRUCTION, interface.INSTRUCTION_QOS)
        self.set_client = n.create_client(SetTask, interface.SET_TASK)
        self.stop_client = n.create_client(Trigger, interface.STOP_TASK)
        assert self.set_client.wait_for_service(timeout_sec=5.0)
        # A service reply can be lost while discovery is still matching the reply path: warm both clients
        # up with harmless calls (an empty instruction is refused; there is no task to stop) until answered.
        for client, request in ((self.set_client, SetTask.Request(instruction='')),
                                (self.stop_client, Trigger.Request())):
            assert any(self._answered(client, request) for _ in range(5)), 'service never answered'
        assert wait_for(lambda: self.keyframes.get_subscription_count() > 0
                        and self.instructions.get_subscription_count() > 0, 5.0)

    def _keep(self, into):
        def callback(*msgs):
            with self.lock:
                into.extend(msgs)
        return callback

    def _on_plan(self, msg):
        with self.lock:
            self.plans.append((time.monotonic(), msg))

    @staticmethod
    def _answered(client, request):
        future = client.call_async(request)
        if wait_for(future.done, 1.0):
            return True
        client.remove_pending_request(future)
        return False

    def call(self, client, request, timeout_s=5.0):
        future = client.call_async(request)
        assert wait_for(future.done, timeout_s), 'service did not answer'
        return future.result()

    def set_task(self, instruction):
        return self.call(self.set_client, SetTask.Request(instruction=instruction))

    def stop_task(self):
        return self.call(self.stop_client, Trigger.Request())

    def send_keyframe(self, age_s=0.0, data=JPEG):
        msg = CompressedImage(format='jpeg', data=data)
        stamp_ns = self.node.get_clock().now().nanoseconds - int(age_s * 1e9)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        self.keyframes.publish(msg)
        return stamp_ns

    def model_plans(self):
        """Plans made from answers (not the stop plans a new task or a stop publishes at once)."""
        with self.lock:
            return [m for _, m in self.plans if m.action not in ('new_task',)]

    def diag(self):
        with self.lock:
            return values_of(self.diagnostics[-1]) if self.diagnostics else {}


def start(graph, tmp_path, *answers, latency_s=0.0, **params):
    values = {'backend': 'replay', 'replay.file': recording(tmp_path, *answers, latency_s=latency_s),
              'diagnostics_period_s': 0.2, **params}
    node = graph.add(InferenceNode(context=graph.context,
                                   parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]))
    return node, Probe(graph)


def stamp_ns_of(msg):
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def test_a_plan_per_keyframe_with_stamp_task_latency_model_and_rviz_topics(graph, tmp_path):
    _, probe = start(graph, tmp_path, FORWARD, FORWARD, latency_s=0.3, base_frame='body')
    assert wait_for(lambda: probe.statuses and probe.statuses[-1].state_name == 'idle', 5.0)
    reply = probe.set_task('go down the corridor')
    assert reply.accepted and reply.task_id.startswith('task-')
    assert wait_for(lambda: any(m.action == 'new_task' for _, m in probe.plans), 5.0)
    for expected in (1, 2):
        stamp = probe.send_keyframe()
        assert wait_for(lambda expected=expected: len(probe.model_plans()) == expected, 5.0)
        plan = probe.model_plans()[-1]
        assert stamp_ns_of(plan) == stamp and plan.header.frame_id == 'body'
        assert (plan.task_id, plan.instruction, plan.model) == (reply.task_id, 'go down the corridor',
                                                                'replayed-model')
        assert (plan.action, plan.environment, plan.stop) == ('forward', 'corridor', False)
        assert [(round(w.dx, 3), round(w.dy, 3), round(w.confidence, 3)) for w in plan.waypoints] == [
            (0.5, 0.0, 0.9), (0.5, 0.1, 0.8)]
        assert 0.3 <= plan.inference_latency < 2.0  # the recorded latency is replayed
    assert wait_for(lambda: probe.paths and probe.markers, 5.0)
    path = probe.paths[-1]
    assert len(path.poses) == 2 and path.header.frame_id == 'body' and stamp_ns_of(path) == stamp
    assert path.poses[1].pose.position.x == pytest.approx(1.0) and path.poses[1].pose.position.y == pytest.approx(0.1)
    assert any(m.text.startswith('forward: corridor') for m in probe.markers[-1].markers)
    assert wait_for(lambda: probe.statuses[-1].plans_published == 2, 5.0)
    status = probe.statuses[-1]
    assert (status.state_name, status.task_id, status.keyframes_processed, status.parse_failures) == (
        'active', reply.task_id, 2, 0)
    assert wait_for(lambda: probe.diag().get('plans_published') == '3', 5.0)  # 2 + the new task's stop
    d = probe.diag()
    assert (d['state'], d['backend'], d['model'], d['answers_json']) == ('active', 'replay', 'replayed-model', '2')
    assert float(d['latency_ms_p50']) >= 300 and float(d['overhead_ms_p50']) < 50


def test_debug_image_is_the_annotated_keyframe(graph, tmp_path):
    _, probe = start(graph, tmp_path, FORWARD)
    probe.set_task('go')
    assert wait_for(lambda: probe.node.count_subscribers(interface.DEBUG_IMAGE) > 0, 5.0)
    time.sleep(0.5)  # the node must see our debug_image subscription to draw at all
    probe.send_keyframe()
    assert wait_for(lambda: probe.debug_images, 5.0)
    image = probe.debug_images[-1]
    assert (image.width, image.height, image.encoding) == (224, 224, 'bgr8')
    pixels = np.frombuffer(bytes(image.data), np.uint8).reshape(224, 224, 3)
    assert (pixels != 90).sum() > 1000  # text and the plan inset drawn over the grey keyframe


def test_latest_keyframe_wins_under_tenfold_overload(graph, tmp_path):
    """Keyframes at 20 Hz into 0.5 s answers: nothing queues, every plan is from a fresh keyframe."""
    _, probe = start(graph, tmp_path, FORWARD, latency_s=0.5, **{'replay.loop': True})
    probe.set_task('go')
    sent_at: dict[int, float] = {}
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        sent_at[probe.send_keyframe()] = time.monotonic()
        time.sleep(0.05)
    assert wait_for(lambda: probe.diag().get('keyframes_received') == str(len(sent_at)), 5.0)
    # the request in flight when sending stopped finishes too
    assert wait_for(lambda: probe.diag().get('requests') == str(len(probe.model_plans())), 3.0)
    received = [(t, m) for t, m in probe.plans if m.action == 'forward']
    assert 4 <= len(received) <= 7, len(received)  # ~3 s / 0.5 s
    for arrived, plan in received:
        age = arrived - sent_at[stamp_ns_of(plan)]
        assert age < 0.5 + 0.05 + 0.35, age  # one inference period + one keyframe interval + slack
    d = probe.diag()
    assert int(d['keyframes_dropped']) >= len(sent_at) - len(received) - 2
    assert int(d['requests']) == len(received)


def test_task_switch_mid_inference_never_publishes_the_old_task(graph, tmp_path):
    _, probe = start(graph, tmp_path, FORWARD, FORWARD, latency_s=2.0, record_file=str(tmp_path / 'rec.jsonl'))
    old = probe.set_task('go to the kitchen').task_id
    probe.send_keyframe()
    assert wait_for(lambda: probe.diag().get('requests') == '1', 5.0)
    new = probe.set_task('go to the bedroom').task_id
    probe.send_keyframe()
    assert wait_for(lambda: any(m.task_id == new and m.action == 'forward' for _, m in probe.plans), 6.0)
    order = [m.task_id for _, m in probe.plans]
    first_new = order.index(new)
    assert old not in order[first_new:], order
    assert [m.action for _, m in probe.plans if m.task_id == old] == ['new_task']  # the old answer never came
    switch_stop = probe.plans[first_new][1]
    assert switch_stop.stop and switch_stop.action == 'new_task'
    # the old task's request was aborted (recorded as cancelled), not waited out
    records = load_records(tmp_path / 'rec.jsonl')
    assert [(r.task_id, r.error) for r in records][0] == (old, 'cancelled') and records[0].latency_s < 1.5


def test_stop_task_publishes_a_stop_plan_at_once_and_ends_planning(graph, tmp_path):
    _, probe = start(graph, tmp_path, FORWARD, FORWARD, latency_s=1.5)
    task = probe.set_task('go').task_id
    probe.send_keyframe()
    assert wait_for(lambda: probe.diag().get('requests') == '1', 5.0)
    asked = time.monotonic()
    reply = probe.stop_task()
    assert reply.success and task in reply.message
    assert wait_for(lambda: probe.plans and probe.plans[-1][1].action == 'stop', 2.0)
    assert probe.plans[-1][0] - asked < 0.5 and probe.plans[-1][1].stop
    probe.send_keyframe()
    time.sleep(2.0)
    assert [m.action for _, m in probe.plans] == ['new_task', 'stop']
    assert probe.statuses[-1].state_name == 'stopped' and 'vln/stop_task' in probe.statuses[-1].reason
    assert not probe.stop_task().success  # nothing left to stop


def test_failing_backend_stop_plans_failed_state_and_recovery(graph, tmp_path):
    _, probe = start(graph, tmp_path, (None, 'oom'), (None, 'oom'), (None, 'error'), FORWARD, failure_threshold=3)
    probe.set_task('go')
    for n in range(1, 4):
        probe.send_keyframe()
        assert wait_for(lambda n=n: len(probe.model_plans()) == n, 5.0)
        plan = probe.model_plans()[-1]
        assert plan.stop and not plan.waypoints and '(no plan: backend' in plan.environment
    assert wait_for(lambda: probe.statuses[-1].state_name == 'failed', 5.0)
    status = probe.statuses[-1]
    assert status.backend_failures == 3 and status.consecutive_failures == 3 and 'error' in status.last_error
    assert wait_for(lambda: probe.diagnostics and probe.diagnostics[-1].level == DiagnosticStatus.ERROR, 5.0)
    d = probe.diag()
    assert (d['backend_failures_oom'], d['backend_failures_error'], d['state']) == ('2', '1', 'failed')
    probe.send_keyframe()  # the node kept serving: a good answer brings the task back
    assert wait_for(lambda: probe.statuses[-1].state_name == 'active', 5.0)
    assert probe.model_plans()[-1].action == 'forward' and probe.statuses[-1].consecutive_failures == 0


def test_instruction_topic_rejected_instructions_stale_and_foreign_keyframes(graph, tmp_path):
    _, probe = start(graph, tmp_path, FORWARD, keyframe_max_age_s=5.0)
    reply = probe.set_task('   ')
    assert not reply.accepted and 'empty instruction' in reply.message
    probe.instructions.publish(String(data='follow the corridor'))
    assert wait_for(lambda: probe.statuses and probe.statuses[-1].instruction == 'follow the corridor', 5.0)
    probe.send_keyframe(age_s=30.0)
    assert wait_for(lambda: probe.diag().get('keyframes_stale') == '1', 5.0)
    probe.send_keyframe(data=b'\x89PNG not a jpeg')
    assert wait_for(lambda: probe.diag().get('keyframes_not_jpeg') == '1', 5.0)
    data = bytearray(JPEG)  # a real JPEG whose header claims 8000x4500: refused before any decoder sees it
    sof = data.find(b'\xff\xc0')
    data[sof + 5:sof + 9] = (4500).to_bytes(2, 'big') + (8000).to_bytes(2, 'big')
    probe.send_keyframe(data=bytes(data))
    assert wait_for(lambda: probe.diag().get('keyframes_rejected_implausible_size') == '1', 5.0)
    assert probe.model_plans() == []
    probe.send_keyframe()
    assert wait_for(lambda: probe.model_plans(), 5.0)


@pytest.mark.parametrize('order', [('go to the door', ''), ('', 'go to the door'),
                                   ('go to the door', '', 'turn around', '')])
def test_accepted_and_rejected_instructions_on_the_topic_in_any_order_keep_the_node_up(graph, tmp_path, order):
    """Regression: the instruction callback logged at two severities from one call site, which rclpy
    refuses ('Logger severity cannot be changed between calls'): the node died on the second message."""
    node, probe = start(graph, tmp_path, FORWARD)
    for instruction in order:
        before = len(probe.statuses) if instruction else node.pipeline().counters.totals().get('tasks_rejected', 0)
        probe.instructions.publish(String(data=instruction))
        if instruction:
            assert wait_for(lambda before=before, instruction=instruction:
                            probe.statuses[before:] and probe.statuses[-1].instruction == instruction, 5.0)
        else:
            assert wait_for(lambda before=before:
                            node.pipeline().counters.totals().get('tasks_rejected', 0) == before + 1, 5.0)
    assert probe.set_task('still serving').accepted
