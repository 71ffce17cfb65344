"""`bench/gpu.py fleet-node`: the real inference_node serving N robot namespaces through one lmdeploy engine
(issue 25 shape (a), parameter `robots`), driven over ROS 2 as camera_nodes would drive it.

Each robot's probe answers the node's keyframe requests (`rN/vln/keyframe_request`) at once with a keyframe of its
own, stamped now, as a model-paced camera_node does; a robot sent nothing for FALLBACK_S gets a keyframe anyway
(counted: a request is never waited for forever). A steady feed besides the requests would pace the robots itself:
the slot would hold a keyframe as each answer ends, aged by up to the feed's period. Per robot: plans, keyframe
stamp -> plan received (the node's whole path: slot, prompt, engine, parse, publish), answer rate, fairness over the
robots; cross-talk: a plan on rN's topic that names a task of another robot. Then a task switch on r1 while the
engine is busy: r1 publishes no plan of its old task afterwards, and every other robot keeps getting plans (cancel
is per robot). Random weights answer nonsense, so most plans are stop plans of a parse failure: their latency is the
model's all the same (max_new_tokens)."""
from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpu_fleet import fairness, percentile
from run import NodeUnderTest, scene

from vln_ros import interface as ri

INSTRUCTION = 'go down the corridor and stop at the red door'
FALLBACK_S = 2.0


class FleetNodeUnderTest(NodeUnderTest):
    """inference_node with `robots`, and one probe per robot on this process's node."""

    def __init__(self, robots: list[str], params: tuple[str, ...], startup_s: float, log: Path | None,
                 keyframe_px: int = 448) -> None:
        import cv2
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage

        from vln_ros.msg import KeyframeRequest, TaskStatus, WaypointArray
        from vln_ros.srv import SetTask
        robot_list = '[' + ','.join(f"'{r}'" for r in robots) + ']'
        super().__init__('inference_node', (f'robots:={robot_list}', 'diagnostics_period_s:=1.0', *params), log)
        self.robots = robots
        self.plans_lock = threading.Lock()
        self.plans: dict[str, list[tuple[float, float, Any]]] = {r: [] for r in robots}  # (received, stamp, msg)
        self.states: dict[str, list[Any]] = {r: [] for r in robots}
        self.requests: dict[str, int] = dict.fromkeys(robots, 0)
        self.fallbacks: dict[str, int] = dict.fromkeys(robots, 0)
        self.last_sent: dict[str, float] = dict.fromkeys(robots, 0.0)
        self.tasks: dict[str, set[str]] = {r: set() for r in robots}
        self.keyframes: dict[str, Any] = {}
        self.set_task_clients: dict[str, Any] = {}
        self.jpegs = {r: cv2.imencode('.jpg', scene(i, keyframe_px, keyframe_px))[1].tobytes()
                      for i, r in enumerate(robots)}
        self.CompressedImage = CompressedImage
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        for robot in robots:
            name = lambda topic, robot=robot: '/' + ri.robot_name(robot, topic)  # noqa: E731
            self.keyframes[robot] = self.node.create_publisher(CompressedImage, name(ri.KEYFRAME), ri.KEYFRAME_QOS)
            self.node.create_subscription(WaypointArray, name(ri.WAYPOINTS),
                                          lambda m, robot=robot: self._on_plan(robot, m), reliable)
            self.node.create_subscription(TaskStatus, name(ri.TASK_STATUS),
                                          lambda m, robot=robot: self.states[robot].append(m), latched)
            self.node.create_subscription(KeyframeRequest, name(ri.KEYFRAME_REQUEST),
                                          lambda _m, robot=robot: self._on_request(robot), ri.KEYFRAME_REQUEST_QOS)
            self.set_task_clients[robot] = self.node.create_client(SetTask, name(ri.SET_TASK))
        self.SetTask = SetTask
        self.start(lambda: all(c.service_is_ready() for c in self.set_task_clients.values())
                   and all(p.get_subscription_count() > 0 for p in self.keyframes.values())
                   and all(s and s[-1].state_name != 'loading' for s in self.states.values()), startup_s)

    def _on_plan(self, robot: str, msg: Any) -> None:
        now = self.node.get_clock().now().nanoseconds * 1e-9
        with self.plans_lock:
            self.plans[robot].append((time.monotonic(), now - (msg.header.stamp.sec + msg.header.stamp.nanosec
                                                               * 1e-9), msg))

    def _on_request(self, robot: str) -> None:
        self.requests[robot] += 1
        self.send(robot)

    def send(self, robot: str) -> None:
        msg = self.CompressedImage(format='jpeg', data=self.jpegs[robot])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.last_sent[robot] = time.monotonic()
        self.keyframes[robot].publish(msg)

    def start_task(self, robot: str, instruction: str) -> str:
        future = self.set_task_clients[robot].call_async(self.SetTask.Request(instruction=instruction))
        if not self.wait_until(future.done, 30.0):
            raise RuntimeError(f'{robot}: set_task did not answer in 30 s')
        reply = future.result()
        if not reply.accepted:
            raise RuntimeError(f'{robot}: set_task refused: {reply.message}')
        self.tasks[robot].add(reply.task_id)
        return str(reply.task_id)

    def feed(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        """Requests are answered as they come; meanwhile, for `seconds` or until until(), a keyframe to each robot
        that was sent none for FALLBACK_S."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds and not until():
            for robot in self.robots:
                if time.monotonic() - self.last_sent[robot] > FALLBACK_S:
                    self.fallbacks[robot] += 1
                    self.send(robot)
            time.sleep(0.1)

    def window(self, start: float, end: float) -> dict[str, list[tuple[float, float, Any]]]:
        with self.plans_lock:
            return {r: [p for p in plans if start <= p[0] <= end] for r, plans in self.plans.items()}


def fleet_node(args: argparse.Namespace, results: Any) -> int:
    """See the module's docstring; one engine load, N = args.node_robots robots."""
    from vln_ros.harness import local_graph
    print(f'# {local_graph.use_private_domain().describe()}', flush=True)
    robots = [f'r{i + 1}' for i in range(args.node_robots)]
    expect = results.expect
    started = time.monotonic()
    backend = (('backend:=lmdeploy', f'model:={args.model}', f'lmdeploy.tp:={args.tp}',
                f'lmdeploy.executor:={args.executor}', f'lmdeploy.max_batch_size:={args.max_batch_size}',
                f'lmdeploy.weights:={args.node_weights}')
               if args.node_backend == 'lmdeploy' else ('backend:=openai', f'openai.base_url:={args.url}'))
    node = FleetNodeUnderTest(robots, (
        *backend, f'max_new_tokens:={args.node_tokens}', f'guided_json:={"true" if args.node_guided else "false"}',
        'failure_threshold:=1000', 'inference_timeout_s:=60.0'),
        startup_s=900, log=args.out / 'inference_node_fleet.log')
    try:
        results.emit(name='fleet_node_load_s', value=round(time.monotonic() - started, 1), unit='s',
                     robots=len(robots))
        for robot in robots:
            node.start_task(robot, INSTRUCTION)
        node.feed(args.warmup_s)
        t0 = time.monotonic()
        node.feed(args.point_s)
        t1 = time.monotonic()
        plans = node.window(t0, t1)
        seconds = t1 - t0
        rates = [len(plans[r]) / seconds for r in robots]
        ages = [age for r in robots for _, age, _ in plans[r]]
        per_robot = [{'robot': r, 'plans': len(plans[r]), 'rate_hz': round(len(plans[r]) / seconds, 3),
                      'p50_s': round(percentile([a for _, a, _ in plans[r]], 50), 3),
                      'p99_s': round(percentile([a for _, a, _ in plans[r]], 99), 3)} for r in robots]
        cross = sum(1 for r in robots for _, _, m in plans[r] if m.task_id not in node.tasks[r])
        fair = fairness(rates)
        row = {'robots': len(robots), 'guided': args.node_guided, 'backend': args.node_backend,
               'weights': args.node_weights, 'max_new_tokens': args.node_tokens,
               'window_s': round(seconds, 2), 'plans_per_s': round(sum(rates), 2),
               'p50_s': round(percentile(ages, 50), 3), 'p99_s': round(percentile(ages, 99), 3),
               'stop_plans': sum(1 for r in robots for _, _, m in plans[r] if m.stop),
               'fairness': fair, 'cross_talk': cross, 'per_robot': per_robot,
               'keyframe_requests': sum(node.requests.values()), 'fallback_keyframes': sum(node.fallbacks.values()),
               'slowest': sorted(((round(a, 3), r, m.action) for r in robots for _, a, m in plans[r]),
                                 reverse=True)[:5]}
        results.emit(name='fleet_node_keyframe_to_plan_s_p50', value=row['p50_s'], unit='s', row=row)
        results.emit(name='fleet_node_keyframe_to_plan_s_p99', value=row['p99_s'], unit='s')
        results.emit(name='fleet_node_plans_per_s', value=row['plans_per_s'], unit='1/s')
        results.emit(name='fleet_node_fairness_worst_deviation', value=fair['worst_deviation'], unit='ratio')
        expect(all(len(plans[r]) > 0 for r in robots), f'every robot got plans ({[len(plans[r]) for r in robots]})')
        expect(cross == 0, f'no plan on a robot topic names another robot\'s task ({cross})')

        # A switch on r1 while the engine is busy with everyone: r1's old task publishes nothing afterwards,
        # the others keep going (their requests are not cancelled with r1's).
        old = next(iter(node.tasks['r1']))
        new = node.start_task('r1', 'turn around and go back')
        switched = time.monotonic()
        node.feed(args.point_s / 2)
        after = node.window(switched, time.monotonic())
        stale = [m for _, _, m in after['r1'] if m.task_id == old and m.action != 'new_task']
        expect(not stale, f'r1: no plan of its old task after the switch ({len(stale)} seen)')
        expect(any(m.task_id == new for _, _, m in after['r1']), 'r1: plans of its new task after the switch')
        quiet = [r for r in robots[1:] if not after[r]]
        expect(not quiet, f'the other robots kept getting plans after r1 switched (none for {quiet})')
    finally:
        node.close()
    return results.verdict('gpu-fleet-node')
