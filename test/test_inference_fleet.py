"""One inference_node serving two robot namespaces through one (fake, slow) engine, on a real graph: nothing of
one robot reaches the other (plans, cancels), the cap's refusal on the robot's task status, duplicate names,
and a robot whose camera goes away mid-request. The per-robot logic without a graph: test/test_fleet.py."""
from __future__ import annotations

import re
import threading
import time

import pytest
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticArray
from fake_engine import FakeEngine
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage
from std_srvs.srv import Trigger
from test_inference_node import JPEG, LATCHED, RELIABLE, stamp_ns_of

from vln_ros import interface
from vln_ros.core.config import ParameterError
from vln_ros.msg import TaskStatus, WaypointArray
from vln_ros.nodes.diagnostics import values_of
from vln_ros.nodes.inference_node import InferenceNode
from vln_ros.srv import SetTask


class RobotProbe:
    """One robot's side: its camera's keyframes, its task services, the plans and status it receives."""

    def __init__(self, graph, robot: str) -> None:
        self.robot = robot
        self.node = graph.node(f'probe_{robot}')
        self.lock = threading.Lock()
        self.plans: list[WaypointArray] = []
        self.statuses: list[TaskStatus] = []
        name = lambda base: interface.robot_name(robot, base)  # noqa: E731
        self.node.create_subscription(WaypointArray, name(interface.WAYPOINTS), self._keep(self.plans), RELIABLE)
        self.node.create_subscription(TaskStatus, name(interface.TASK_STATUS), self._keep(self.statuses), LATCHED)
        self.keyframes = self.node.create_publisher(CompressedImage, name(interface.KEYFRAME), interface.KEYFRAME_QOS)
        self.set_client = self.node.create_client(SetTask, name(interface.SET_TASK))
        self.stop_client = self.node.create_client(Trigger, name(interface.STOP_TASK))
        assert self.set_client.wait_for_service(timeout_sec=5.0) and self.stop_client.wait_for_service(5.0)
        assert wait_for(lambda: self.keyframes.get_subscription_count() > 0, 5.0)

    def _keep(self, into):
        def callback(msg):
            with self.lock:
                into.append(msg)
        return callback

    def call(self, client, request):
        # A reply may be lost while discovery still matches the reply path: ask again (the calls here are
        # idempotent enough: a repeated set_task only starts the same instruction again).
        for _ in range(5):
            future = client.call_async(request)
            if wait_for(future.done, 2.0):
                return future.result()
            client.remove_pending_request(future)
        raise AssertionError('service did not answer')

    def set_task(self, instruction):
        return self.call(self.set_client, SetTask.Request(instruction=instruction))

    def stop_task(self):
        return self.call(self.stop_client, Trigger.Request())

    def send_keyframe(self, offset_ns: int = 0) -> int:
        """offset_ns keeps the two robots' stamps apart, so a plan names the robot whose keyframe it answers."""
        msg = CompressedImage(format='jpeg', data=JPEG)
        stamp_ns = self.node.get_clock().now().nanoseconds + offset_ns
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        self.keyframes.publish(msg)
        return stamp_ns

    def model_plans(self) -> list[WaypointArray]:
        with self.lock:
            return [m for m in self.plans if m.action == 'forward']

    def last_status(self) -> TaskStatus | None:
        with self.lock:
            return self.statuses[-1] if self.statuses else None


def start(graph, engine: FakeEngine, robots=('r1', 'r2'), **params):
    values = {'backend': 'openai', 'robots': list(robots), 'diagnostics_period_s': 0.2, **params}
    node = graph.add(InferenceNode(backend_factory=lambda _p: engine, context=graph.context,
                                   parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]))
    return node, {robot: RobotProbe(graph, robot) for robot in robots}


def test_a_plan_for_one_robot_never_reaches_anothers_waypoints(graph):
    engine = FakeEngine(0.2, 0.2)
    _, probes = start(graph, engine)
    r1, r2 = probes['r1'], probes['r2']
    one, two = r1.set_task('r1 go'), r2.set_task('r2 go')
    assert one.accepted and two.accepted
    sent = {'r1': [r1.send_keyframe(offset_ns=1) for _ in range(1)], 'r2': [r2.send_keyframe(offset_ns=2)]}
    assert wait_for(lambda: len(r1.model_plans()) == 1 and len(r2.model_plans()) == 1, 5.0)
    sent['r1'].append(r1.send_keyframe(offset_ns=1))
    assert wait_for(lambda: len(r1.model_plans()) == 2, 5.0)
    assert [stamp_ns_of(p) for p in r1.model_plans()] == sent['r1']
    assert [stamp_ns_of(p) for p in r2.model_plans()] == sent['r2']
    assert {p.task_id for p in r1.plans} == {one.task_id} and {p.task_id for p in r2.plans} == {two.task_id}
    assert len(engine.clients) == 2 and not engine.cancelled


def test_a_task_switch_and_a_stop_on_one_robot_never_cancel_anothers_request(graph):
    engine = FakeEngine(2.0, 1.0)   # r1's answer takes longer than r2's, so r2's is in flight at the switch
    _, probes = start(graph, engine)
    r1, r2 = probes['r1'], probes['r2']
    r1.set_task('r1 go')
    r2.set_task('r2 go')
    r1.send_keyframe(offset_ns=1)
    r2_stamp = r2.send_keyframe(offset_ns=2)
    assert wait_for(lambda: engine.in_flight == {0, 1}, 5.0)
    assert r1.set_task('r1 another way').accepted   # cancels r1's request
    assert r1.stop_task().success
    assert wait_for(lambda: len(r2.model_plans()) == 1, 5.0), "r2's plan never came"
    assert stamp_ns_of(r2.model_plans()[0]) == r2_stamp
    assert engine.cancelled == [0] and r1.model_plans() == []


def test_two_robots_are_answered_together_by_the_one_engine(graph):
    engine = FakeEngine(0.5, 0.5)
    _, probes = start(graph, engine)
    for offset, probe in enumerate(probes.values(), 1):
        probe.set_task('go')
        probe.send_keyframe(offset_ns=offset)
    assert wait_for(lambda: all(len(p.model_plans()) == 1 for p in probes.values()), 5.0)
    assert engine.most_in_flight == 2


def test_the_cap_refuses_a_task_and_the_robots_task_status_says_why(graph):
    engine = FakeEngine()
    _, probes = start(graph, engine, robots=('r1', 'r2', 'r3'), max_active_robots=2)
    assert probes['r1'].set_task('go').accepted and probes['r2'].set_task('go').accepted
    reply = probes['r3'].set_task('go')
    reason = 'server at capacity: 2 of 2 robots have active tasks (r1, r2)'
    assert (reply.accepted, reply.message) == (False, f'rejected: {reason}')
    r3 = probes['r3']
    assert wait_for(lambda: (s := r3.last_status()) is not None and s.reason == reason, 5.0)
    assert r3.last_status().state_name == 'idle'
    assert probes['r1'].stop_task().success
    assert r3.set_task('go').accepted


def test_at_the_cap_a_silent_robot_gives_its_place_after_idle_release_s(graph):
    engine = FakeEngine()
    _, probes = start(graph, engine, robots=('r1', 'r2', 'r3'), max_active_robots=2, idle_release_s=3.0)
    assert probes['r1'].set_task('go').accepted and probes['r2'].set_task('go').accepted
    time.sleep(3.2)   # neither camera sends a keyframe: r1, whose task started first, is the one silent longest
    assert probes['r3'].set_task('go').accepted
    r1 = probes['r1']
    assert wait_for(lambda: (s := r1.last_status()) is not None and s.state_name == 'stopped', 5.0)
    assert re.fullmatch(r'released after \d+ s without a keyframe: its place on the server went to r3',
                        r1.last_status().reason)
    assert probes['r2'].last_status().state_name == 'active'


def test_duplicate_robot_namespaces_are_refused_at_start_up(graph):
    with pytest.raises(ParameterError, match=r"robots: 'r1' is listed twice"):
        InferenceNode(backend_factory=lambda _p: FakeEngine(), context=graph.context,
                      parameter_overrides=[Parameter('backend', value='openai'),
                                           Parameter('robots', value=['r1', 'r2', 'r1'])])


def test_a_robot_whose_camera_vanishes_mid_request_does_not_stall_the_others(graph):
    engine = FakeEngine(60.0, 0.2)   # r1's request hangs until its timeout
    node, probes = start(graph, engine, inference_timeout_s=3.0)
    r1, r2 = probes['r1'], probes['r2']
    r1.set_task('go')
    r2.set_task('go')
    r1.send_keyframe(offset_ns=1)
    assert wait_for(lambda: 0 in engine.in_flight, 5.0)
    graph.executor.remove_node(r1.node)   # r1's namespace goes away: no camera, nobody listening
    r1.node.destroy_node()
    stamps: list[int] = []
    for answered in range(1, 4):
        stamps.append(r2.send_keyframe(offset_ns=2))
        assert wait_for(lambda n=answered: len(r2.model_plans()) == n, 3.0)
    assert 0 in engine.in_flight   # all of that while r1's request was still hanging
    assert [stamp_ns_of(p) for p in r2.model_plans()] == stamps
    # r1's request ends by the timeout (its stop plan has no listener), and the node stays whole
    assert wait_for(lambda: 0 not in engine.in_flight, 5.0)
    assert node.fleet.pipelines['r1'].counters.totals().get('backend_failures_timeout') == 1


def test_diagnostics_carry_one_status_per_robot_with_its_latency(graph):
    engine = FakeEngine(0.2, 0.2)
    node, probes = start(graph, engine)
    seen: dict[str, dict[str, str]] = {}
    watcher = graph.node('diag_watcher')
    watcher.create_subscription(DiagnosticArray, interface.DIAGNOSTICS, lambda m: seen.update(
        {s.name: values_of(s) for s in m.status}), 10)
    for offset, probe in enumerate(probes.values(), 1):
        probe.set_task('go')
        probe.send_keyframe(offset_ns=offset)
    assert wait_for(lambda: all(len(p.model_plans()) == 1 for p in probes.values()), 5.0)
    names = ('/inference_node: r1', '/inference_node: r2')
    # the latency is taken just after the plan goes out: wait for a status that has it
    assert wait_for(lambda: all(seen.get(n, {}).get('latency_ms_p50', 'nan') != 'nan' for n in names), 5.0)
    for robot, name in zip(('r1', 'r2'), names, strict=True):
        assert seen[name]['robot'] == robot and float(seen[name]['latency_ms_p50']) >= 200
        assert (seen[name]['requests'], seen[name]['active_robots']) == ('1', '2')


def test_an_answer_that_comes_after_ctrl_c_shut_the_context_down_ends_quietly(graph):
    """rclpy's SIGINT handler shuts the context down at once, before the node is destroyed: a robot's request
    that ends then (its server failing, an answer) has nothing to publish on. Its worker must neither log an
    internal error nor die with a traceback on the way out; the failure is still counted."""
    engine = FakeEngine(1.0, 1.0)
    node, probes = start(graph, engine)
    probes['r1'].set_task('go')
    probes['r1'].send_keyframe(offset_ns=1)
    assert wait_for(lambda: 0 in engine.in_flight, 5.0)
    totals = node.fleet.pipelines['r1'].counters.totals
    graph.executor.shutdown(timeout_sec=2.0)
    graph.context.handle.shutdown()   # what the signal handler does: the context only, the nodes stay
    assert wait_for(lambda: 'answers_json' in totals() or not node._ports['r1'].worker.is_alive(), 10.0), totals()
    assert wait_for(lambda: totals().get('keyframe_requests', 0) >= 2 or not node._ports['r1'].worker.is_alive(),
                    10.0), totals()   # the worker went on to its next turn
    assert node._ports['r1'].worker.is_alive() and totals().get('internal_errors', 0) == 0, totals()


def test_stopping_a_node_whose_robots_requests_ignore_the_cancel_takes_one_grace_not_one_per_robot(graph):
    """destroy_node waited CANCEL_GRACE_S + 1 s for each robot's worker in turn: six robots whose requests did not
    end on the cancel (a request still queued in a saturated engine) took 18 s, past the runner's 15 s stop
    deadline, which then dumps the stacks and exits 1."""
    import time

    from vln_ros.core.inference import CANCEL_GRACE_S, Keyframe

    engine = FakeEngine(default_latency_s=60.0)
    make_client = engine.client

    def deaf_client(robot: str = ''):
        client = make_client(robot)
        client.cancel = lambda: None   # the cancel is not honoured
        return client

    engine.client = deaf_client
    robots = [f'r{i}' for i in range(1, 7)]
    node = InferenceNode(backend_factory=lambda _p: engine, context=graph.context, parameter_overrides=[
        Parameter('backend', value='openai'), Parameter('robots', value=robots),
        Parameter('inference_timeout_s', value=30.0)])
    for robot in robots:
        assert node.fleet.set_task(robot, 'go').accepted
        node.pipeline(robot).receive(Keyframe(JPEG, node.get_clock().now().nanoseconds, time.perf_counter()))
    assert wait_for(lambda: len(engine.in_flight) == len(robots), 5.0), engine.in_flight
    began = time.monotonic()
    node.destroy_node()
    assert time.monotonic() - began < CANCEL_GRACE_S + 1.0 + 2.0   # one grace (3 s) and slack; it was 18 s
