"""`make bench`: the hot paths' figures, one JSON object per line: {"name", "value", "unit"}.

    python bench/run.py [keyframe|controller|inference ...] [--out bench_out]

Also written to <out>/results.jsonl (default bench_out/ in the checkout). Timings come from this machine as
it is (2 cores); run it on an otherwise idle machine and compare runs side by side, never against a fixed
number in a unit test. The nodes run in a private ROS domain that nobody else on this machine is in
(vln_ros/harness/local_graph.py; the exported ROS_DOMAIN_ID is never used); the domain is named on stderr.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from vln_ros import interface as ri
from vln_ros.core.config import ControllerParams, KeyframeParams
from vln_ros.core.keyframe import KeyframeSampler
from vln_ros.harness.frames import scene
from vln_ros.harness.observer import Observer
from vln_ros.harness.processes import REPO, executable, free_port, stop_process
from vln_ros.harness.run_setup import claim_private_run

if TYPE_CHECKING:
    from vln_ros.msg import TaskStatus, WaypointArray

RESULTS: list[dict] = []
OUT = REPO / 'bench_out'   # main() sets it from --out
SIZES = {'1080p': (1080, 1920), '720p': (720, 1280), '480p': (480, 640)}


def emit(name: str, value: float, unit: str) -> None:
    row = {'name': name, 'value': round(float(value), 3), 'unit': unit}
    RESULTS.append(row)
    print(json.dumps(row), flush=True)


def bench_keyframe_decision(frames_per_size: int = 120, reps: int = 5) -> None:
    rng = np.random.default_rng(0)
    for label, (h, w) in SIZES.items():
        # A camera-like stream: a still scene with sensor noise, cut to a new scene every 30 frames.
        bases = [scene(i, h, w) for i in range(4)]
        noise = [rng.integers(0, 6, (h, w, 3), dtype=np.uint8) for _ in range(4)]
        frames = [bases[(i // 30) % 4] + noise[i % 4] for i in range(frames_per_size)]
        sampler = KeyframeSampler(KeyframeParams(min_interval_s=0.0))
        times = []
        for rep in range(reps):
            for i, frame in enumerate(frames):
                t0 = time.perf_counter()
                sampler.decide(frame, rep * 100 + i / 30)
                times.append(time.perf_counter() - t0)
        times_ms = np.array(times[min(20, len(times) // 2):]) * 1e3  # without warm-up
        emit(f'keyframe_decision_ms_p50_{label}', np.percentile(times_ms, 50), 'ms')
        emit(f'keyframe_decision_ms_p99_{label}', np.percentile(times_ms, 99), 'ms')


def bench_keyframe_robustness(flicker_frames: int = 900) -> None:
    """CHANGE keyframes (spurious: target 0) on still real scenes (test/data/people_clip.mp4: frame 150, a man
    standing at a table; frame 50, the empty room) whose exposure alone changes, with sensor noise, default
    parameters: 30 s of random +-5 % flicker at 30 Hz (frame 150), and an 8 % ramp over 1 s then 4 s held at
    10 Hz (up and down, on both frames)."""
    import cv2
    cap = cv2.VideoCapture(str(REPO / 'test' / 'data' / 'people_clip.mp4'))
    stills = []
    for index in (150, 50):
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, still = cap.read()
        if not ok:
            raise RuntimeError(f'cannot read frame {index} of test/data/people_clip.mp4')
        stills.append(still.astype(np.float32))
    cap.release()
    rng = np.random.default_rng(0)
    noise = [np.asarray(rng.normal(0, 2.0, stills[0].shape), np.float32) for _ in range(8)]

    def changes(base: np.ndarray, gains: np.ndarray, fps: float) -> int:
        sampler = KeyframeSampler(KeyframeParams())
        frames = (np.clip(base * np.float32(g) + noise[i % 8], 0, 255).astype(np.uint8) for i, g in enumerate(gains))
        return sum(sampler.decide(f, i / fps).reason.value == 'change' for i, f in enumerate(frames))

    flicker = 1 + rng.uniform(-0.05, 0.05, flicker_frames)
    emit('keyframe_spurious_flicker_30s', changes(stills[0], flicker, 30.0), 'keyframes')
    ramps = [np.r_[np.linspace(1.0, end, 11), [end] * 40] for end in (1.08, 0.92)]
    emit('keyframe_spurious_exposure_ramp', sum(changes(base, gains, 10.0) for base in stills for gains in ramps),
         'keyframes')


def node_process(name: str, params: tuple[str, ...], log: Path | None = None) -> subprocess.Popen:
    """A real node executable in its own process, with config/vln.yaml and extra `name:=value` parameters."""
    args = [executable(name), '--ros-args', '--params-file', str(REPO / 'config' / 'vln.yaml')]
    for p in params:
        args += ['-p', p]
    return subprocess.Popen(args, stdout=log.open('w') if log else subprocess.DEVNULL, stderr=subprocess.STDOUT)


class NodeUnderTest(Observer):
    """A real node executable in its own process (config/vln.yaml + extra parameters), and a probe node
    here (the harness's observer) for the subclass's publishers and subscriptions."""

    def __init__(self, name: str, params: tuple[str, ...], log: Path | None = None) -> None:
        super().__init__('bench_probe')
        self.path = executable(name)
        self.proc = node_process(name, params, log)

    def start(self, ready: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Wait (bounded) until ready() says the node under test is connected."""
        if not self.wait_until(ready, timeout_s, failed=lambda: self.proc.poll() is not None):
            raise RuntimeError(f'{self.path} did not come up')

    def close(self) -> None:
        stop_process(self.proc)
        super().close()


class CameraNodeUnderTest(NodeUnderTest):
    def __init__(self, *params: str) -> None:
        from diagnostic_msgs.msg import DiagnosticStatus
        from sensor_msgs.msg import CompressedImage, Image
        super().__init__('camera_node', ('publish_decisions:=true', *params))
        self.decisions = 0
        self.keyframe_latencies: list[float] = []
        self.node.create_subscription(DiagnosticStatus, ri.KEYFRAME_DECISIONS, self._on_decision, 1000)
        self.node.create_subscription(CompressedImage, ri.KEYFRAME, self._on_keyframe, 100)
        self.pub = self.node.create_publisher(Image, ri.IMAGE, ri.SENSOR_QOS)
        self.Image = Image
        self.start(lambda: self.pub.get_subscription_count() > 0 and self.node.count_publishers(ri.KEYFRAME) > 0)
        time.sleep(1.0)  # let the keyframe and decision subscriptions match as well

    def _on_decision(self, _msg) -> None:
        self.decisions += 1

    def _on_keyframe(self, msg) -> None:
        now = self.node.get_clock().now().nanoseconds * 1e-9
        self.keyframe_latencies.append(now - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))

    def image(self, frame: np.ndarray):
        h, w = frame.shape[:2]
        return self.Image(height=h, width=w, encoding='bgr8', step=w * 3, data=frame.tobytes())


def bench_camera_node_fps(seconds: float = 4.0, rates: tuple[int, ...] = (30, 60, 90, 120, 150, 200, 250, 300)
                          ) -> None:
    """Highest offered raw 1080p bgr8 rate at which the node decides >= 97% of frames (no backlog:
    the latest-wins slot skips rather than queues, so falling behind shows as frames not decided)."""
    cam = CameraNodeUnderTest()
    msgs = [cam.image(scene(i, 1080, 1920)) for i in range(3)]
    best = 0.0
    try:
        for rate in rates:
            before, sent = cam.decisions, 0
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                cam.pub.publish(msgs[sent % 3])
                sent += 1
                time.sleep(max(0.0, start + sent / rate - time.monotonic()))
            time.sleep(0.5)
            decided = cam.decisions - before
            elapsed = time.monotonic() - start - 0.5
            print(f'# offered {rate} fps ({sent / elapsed:.1f} achieved): decided {decided}/{sent}',
                  file=sys.stderr, flush=True)
            if decided >= 0.97 * sent:
                best = sent / elapsed
            else:
                break
    finally:
        cam.close()
    emit('camera_node_max_fps_1080p', best, 'fps')


def bench_keyframe_latency(count: int = 150, rate: float = 30.0) -> None:
    """Frame stamp (set at publish) to keyframe received by a subscriber, every frame a keyframe."""
    cam = CameraNodeUnderTest('keyframe.min_interval_s:=0.0')
    frames = [scene(i, 1080, 1920) for i in range(6)]  # consecutive frames differ: each is a cut
    try:
        for i in range(count):
            msg = cam.image(frames[i % 6])
            msg.header.stamp = cam.node.get_clock().now().to_msg()
            cam.pub.publish(msg)
            time.sleep(1.0 / rate)
        time.sleep(1.0)
    finally:
        cam.close()
    latencies = np.array(cam.keyframe_latencies[5:]) * 1e3
    print(f'# {len(cam.keyframe_latencies)} of {count} keyframes received', file=sys.stderr)
    emit('keyframe_latency_ms_p50_1080p', np.percentile(latencies, 50), 'ms')
    emit('keyframe_latency_ms_p99_1080p', np.percentile(latencies, 99), 'ms')


def _burn_one_core() -> subprocess.Popen:
    """Another process keeping one of the two cores busy (the issue's load condition)."""
    return subprocess.Popen([sys.executable, '-c', 'while True: pass'])


class ControllerUnderTest(NodeUnderTest):
    def __init__(self, *params: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Twist

        from vln_ros.msg import WaypointArray
        super().__init__('controller_node', ('diagnostics_period_s:=0.5', *params))
        self.cmds: list[tuple[float, float]] = []  # (receive time, vx)
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(Twist, ri.CMD_VEL, lambda m: self.cmds.append((time.perf_counter(), m.linear.x)),
                                      100)
        self.node.create_subscription(DiagnosticArray, ri.DIAGNOSTICS, self._on_diagnostics, 10)
        self.plans = self.node.create_publisher(WaypointArray, ri.WAYPOINTS, ri.PLAN_QOS)
        # ready once the controller reports that it sees our plan publisher (no discovery race)
        self.start(lambda: self.diagnostics.get('plan_publishers', '0') != '0')

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith('controller_node'):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def plan(self, stop: bool):
        from vln_ros.msg import Waypoint, WaypointArray
        msg = WaypointArray(task_id='bench', stop=stop,
                            waypoints=[] if stop else [Waypoint(dx=0.5, confidence=1.0)] * 10)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = ControllerParams().base_frame
        return msg


def bench_controller_flood(seconds: float = 6.0) -> None:
    """The control loop's period while its inputs are flooded: 10,000-waypoint plans at 20 Hz (refused by
    their size), odometry at ~1 kHz and e-stop releases at ~200 Hz, each from its own thread."""
    from nav_msgs.msg import Odometry
    from std_msgs.msg import Bool

    from vln_ros.msg import Waypoint
    ctl = ControllerUnderTest('publish_zero_forever:=true', 'rate_hz:=50.0')
    odom = ctl.node.create_publisher(Odometry, ri.ODOM, ri.SENSOR_QOS)
    estop = ctl.node.create_publisher(Bool, ri.ESTOP, ri.ESTOP_QOS)
    flooding = threading.Event()
    flooding.set()
    huge = ctl.plan(stop=False)
    huge.waypoints = [Waypoint(dx=0.01, confidence=1.0)] * 10_000

    def every(period_s: float, publish) -> None:
        while flooding.is_set():
            publish()
            time.sleep(period_s)

    def odometry() -> Odometry:
        msg = Odometry()
        msg.header.stamp = ctl.node.get_clock().now().to_msg()
        msg.pose.pose.orientation.w = 1.0
        return msg
    floods = [threading.Thread(target=every, args=args, daemon=True) for args in (
        (0.05, lambda: ctl.plans.publish(huge)), (0.001, lambda: odom.publish(odometry())),
        (0.005, lambda: estop.publish(Bool(data=False))))]
    try:
        for flood in floods:
            flood.start()
        time.sleep(seconds)
        d = ctl.diagnostics
        emit('controller_period_ms_p99_under_flood', float(d['period_ms_p99']), 'ms')
        emit('controller_period_ms_max_under_flood', float(d['period_ms_max']), 'ms')
        emit('controller_plans_refused_under_flood', float(d.get('plans_rejected_too_many_waypoints', 0)), 'plans')
    finally:
        flooding.clear()
        for flood in floods:
            flood.join(timeout=2.0)
        ctl.close()


def bench_controller(seconds: float = 12.0, cycles: int = 40) -> None:
    burner = _burn_one_core()
    ctl = ControllerUnderTest('publish_zero_forever:=true', 'rate_hz:=50.0')
    try:
        time.sleep(seconds)  # the loop's own periods, measured inside the node, ~10 s window
        d = ctl.diagnostics
        emit('controller_rate_hz', float(d['rate_hz']), 'Hz')
        emit('controller_period_jitter_ms_p99', float(d['period_jitter_ms_p99']), 'ms')
        emit('controller_period_ms_max', float(d['period_ms_max']), 'ms')
        # New plan published -> first cmd_vel that follows it (vx > 0 after standing still).
        latencies, rng = [], np.random.default_rng(1)
        for _ in range(cycles):
            ctl.plans.publish(ctl.plan(stop=True))
            deadline = time.perf_counter() + 2.0
            while not (ctl.cmds and ctl.cmds[-1][1] == 0.0) and time.perf_counter() < deadline:
                time.sleep(0.005)
            time.sleep(0.1 + rng.uniform(0.0, 0.02))  # any phase of the 20 ms control period
            sent = time.perf_counter()
            ctl.plans.publish(ctl.plan(stop=False))
            while time.perf_counter() < sent + 1.0:
                moving = [t for t, vx in ctl.cmds[-20:] if vx > 0.0 and t >= sent]
                if moving:
                    latencies.append(moving[0] - sent)
                    break
                time.sleep(0.001)
        emit('plan_to_first_cmd_ms_p50', np.percentile(np.array(latencies) * 1e3, 50), 'ms')
        emit('plan_to_first_cmd_ms_p99', np.percentile(np.array(latencies) * 1e3, 99), 'ms')
    finally:
        ctl.close()
        burner.kill()


def suite_module(name: str, folder: str = 'test') -> ModuleType:
    """A module of the test suite (test/<name>.py: the answer corpus, the typical answer) or of bench/, loaded
    from its file: neither folder is a package, and only pytest puts test/ on sys.path."""
    path = REPO / folder / f'{name}.py'
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f'cannot load {path}')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # dataclasses and pickling look a module up by its name
    spec.loader.exec_module(module)
    return module


def bench_parser(repeats: int = 200) -> None:
    """parse_answer per answer over the corpus of realistic model answers (test/answers.py)."""
    from vln_ros.core.config import ParserParams
    from vln_ros.core.parser import parse_answer
    corpus = suite_module('answers').CORPUS
    limits = ParserParams()
    times = []
    for _ in range(repeats):
        for text, *_ in corpus:
            t0 = time.perf_counter()
            parse_answer(text, limits)
            times.append(time.perf_counter() - t0)
    times_us = np.array(times[len(corpus):]) * 1e6
    emit('parser_us_p50', np.percentile(times_us, 50), 'us')
    emit('parser_us_p99', np.percentile(times_us, 99), 'us')


def bench_stream_parser(repeats: int = 5) -> None:
    """The stream parse over one 16k-character answer (a waypoint array closing only at the end), fed in
    4-character pieces as a streaming backend hands them over: linear (re-parsing every prefix took 8-13 s)."""
    from vln_ros.core.config import ParserParams
    from vln_ros.core.parser import MAX_ANSWER_CHARS, StreamParser
    step = '[0.1,0,0,0.9],'
    text = '{"act":"forward","wp":[' + step * ((MAX_ANSWER_CHARS - 50) // len(step)) + '[0.1,0,0,0.9]],"env":"x"}'
    pieces = [text[i:i + 4] for i in range(0, len(text), 4)]
    times = []
    for _ in range(repeats):
        stream = StreamParser(ParserParams())
        t0 = time.perf_counter()
        published = [stream.feed(piece) for piece in pieces]
        times.append(time.perf_counter() - t0)
        if published[-1] is None:
            raise RuntimeError('the stream parser published no plan for the 16k answer')
    emit('stream_parse_16k_ms', min(times) * 1e3, 'ms')


def bench_answer_tokens() -> None:
    """Qwen3 tokens of a typical two-step answer in our format (output tokens are the latency)."""
    from vln_ros.core.prompts import qwen_tokenizer
    answer = suite_module('test_inference_core').TYPICAL_ANSWER
    emit('answer_tokens_two_waypoints', len(qwen_tokenizer().encode(answer).ids), 'tokens')


class InferenceNodeUnderTest(NodeUnderTest):
    """inference_node in its own process with `params`, a keyframe publisher, and the plans, task states and
    diagnostics it publishes. `replay(latency_s)` answers every keyframe after latency_s."""

    def __init__(self, params: tuple[str, ...], startup_s: float = 30.0, instruction: str = 'go down the corridor',
                 keyframe_px: int = 448, log: Path | None = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage

        from vln_ros.msg import TaskStatus, WaypointArray
        super().__init__('inference_node', ('diagnostics_period_s:=0.5', *params), log)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.plans: list[tuple[float, WaypointArray]] = []  # (receive time, plan)
        self.plan_ages: list[float] = []
        self.states: list[tuple[float, TaskStatus]] = []
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(WaypointArray, ri.WAYPOINTS, self._on_plan, reliable)
        self.node.create_subscription(TaskStatus, ri.TASK_STATUS, lambda m: self.states.append(
            (time.monotonic(), m)), QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                               durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.node.create_subscription(DiagnosticArray, ri.DIAGNOSTICS, self._on_diagnostics, 10)
        self.keyframes = self.node.create_publisher(CompressedImage, ri.KEYFRAME, ri.KEYFRAME_QOS)
        self.start(lambda: self.set_task_client.service_is_ready() and self.keyframes.get_subscription_count() > 0
                   and bool(self.states) and self.states[-1][1].state_name != 'loading', startup_s)
        if instruction:
            self.set_task(instruction)
        import cv2
        self.msg = CompressedImage(format='jpeg', data=cv2.imencode('.jpg', scene(0, keyframe_px, keyframe_px))[1]
                                   .tobytes())

    @classmethod
    def replay(cls, latency_s: float, instruction: str = 'go down the corridor') -> InferenceNodeUnderTest:
        from vln_ros.core.backends.base import AnswerRecord
        out = OUT
        out.mkdir(parents=True, exist_ok=True)
        answer = '{"env":"corridor","act":"forward","wp":[[0.5,0,0,0.9],[0.5,0.1,10,0.8]]}'
        (out / 'replay.jsonl').write_text(AnswerRecord(0, '', '', '', answer, latency_s).to_json() + '\n')
        return cls(('backend:=replay', f'replay.file:={out / "replay.jsonl"}', 'replay.loop:=true'),
                   instruction=instruction)

    def _on_plan(self, msg) -> None:
        self.plans.append((time.monotonic(), msg))
        if msg.action == 'forward':
            now = self.node.get_clock().now().nanoseconds * 1e-9
            self.plan_ages.append(now - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith('inference_node'):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def send(self, rate_hz: float, seconds: float) -> None:
        start, sent = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            self.msg.header.stamp = self.node.get_clock().now().to_msg()
            self.keyframes.publish(self.msg)
            sent += 1
            time.sleep(max(0.0, start + sent / rate_hz - time.monotonic()))


def bench_inference_overhead(seconds: float = 20.0) -> None:
    """The node's own time per plan (received -> backend called, plus returned -> published), measured
    inside the node, with an instant replay backend: keyframes at 5 Hz for 20 s."""
    node = InferenceNodeUnderTest.replay(latency_s=0.0)
    try:
        node.send(5.0, seconds)
        time.sleep(1.5)
        emit('inference_overhead_ms_p50', float(node.diagnostics['overhead_ms_p50']), 'ms')
    finally:
        node.close()


def bench_inference_overload(seconds: float = 15.0) -> None:
    """Keyframes at 20 Hz into a 500 ms backend (10x overload): capture stamp -> plan received."""
    node = InferenceNodeUnderTest.replay(latency_s=0.5)
    try:
        node.send(20.0, seconds)
        time.sleep(1.0)
        ages = np.array(node.plan_ages) * 1e3
        print(f'# {len(ages)} plans, {node.diagnostics.get("keyframes_dropped")} of '
              f'{node.diagnostics.get("keyframes_received")} keyframes dropped', file=sys.stderr)
        emit('inference_stale_keyframe_age_ms_p99', np.percentile(ages, 99), 'ms')
        emit('inference_stale_keyframe_age_ms_p50', np.percentile(ages, 50), 'ms')
    finally:
        node.close()


def bench_keyframe_pacing(seconds: float = 15.0, rates: tuple[int, ...] = (10, 30),
                          pacing: tuple[bool, ...] = (True, False)) -> None:
    """Model-paced keyframes (README, camera_node): camera_node and inference_node in their own processes, a
    0.5 s model (replay), camera frames that all differ (a walking robot) at 10 and 30 Hz. keyframe_wait: the
    keyframe received by inference_node -> the model starts on it; keyframe_age_at_model: capture stamp ->
    the model starts on it. Each also unpaced (camera_node pace_by_model false), the way keyframes went before."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    frames = [scene(i, 480, 640) for i in range(6)]
    for rate in rates:
        for paced in pacing:
            node = InferenceNodeUnderTest.replay(latency_s=0.5, instruction='')
            camera = node_process('camera_node', (f'pace_by_model:={str(paced).lower()}',))
            try:
                pub = node.node.create_publisher(Image, ri.IMAGE, ri.SENSOR_QOS)
                camera_state: dict[str, str] = {}
                node.node.create_subscription(
                    DiagnosticArray, ri.DIAGNOSTICS, lambda m, state=camera_state: state.update(
                        {kv.key: kv.value for s in m.status if s.name.endswith('camera_node') for kv in s.values}), 10)
                deadline = time.monotonic() + 30.0
                # Started: camera_node has heard the inference node (until then it sends keyframes unasked, and
                # one of them can wait for the model once: README, model-paced keyframes).
                while (pub.get_subscription_count() == 0 or node.node.count_publishers(ri.KEYFRAME) < 2
                       or camera_state.get('paced_by_model') != str(paced).lower()):
                    if time.monotonic() > deadline or camera.poll() is not None:
                        raise RuntimeError('camera_node did not come up')
                    time.sleep(0.05)
                node.set_task('go down the corridor')
                start, sent = time.monotonic(), 0
                while time.monotonic() - start < seconds:
                    frame = frames[sent % len(frames)]
                    msg = Image(height=480, width=640, encoding='bgr8', step=640 * 3, data=frame.tobytes())
                    msg.header.stamp = node.node.get_clock().now().to_msg()
                    pub.publish(msg)
                    sent += 1
                    time.sleep(max(0.0, start + sent / rate - time.monotonic()))
                time.sleep(1.0)
                d = node.diagnostics
            finally:
                stop_process(camera)
                node.close()
            suffix = ('' if rate == 10 else f'_{rate}hz') + ('' if paced else '_unpaced')
            print(f'# {rate} Hz camera, {"paced" if paced else "unpaced"}: {d.get("requests")} requests, '
                  f'{d.get("keyframes_received")} keyframes, {d.get("keyframes_dropped")} dropped, '
                  f'latency p50 {d.get("latency_ms_p50")} ms', file=sys.stderr, flush=True)
            emit(f'keyframe_wait_ms_p50{suffix}', float(d['wait_ms_p50']), 'ms')
            emit(f'keyframe_age_at_model_ms_p99{suffix}', float(d['keyframe_age_at_model_ms_p99']), 'ms')


def bench_console(images: int = 60, estops: int = 5) -> None:
    """The operator console in headless Chromium: console_node and controller_node in their own processes,
    keyframes (JPEG, stamped now) at 10 Hz and forward plans from this process. console_first_image_s: the page
    starts loading (its navigation start) -> first image shown (loaded: the newest keyframe in the page's own
    answer, or the socket's when that came first: which is printed, with when it was painted), on the page's
    own clock (chromedriver's time
    before the navigation starts is printed apart: it is the test browser's, not the console's, and under load
    it was 0.1-0.6 s of the 1.06 s a run once gave); console_image_latency_ms_p50: keyframe stamp -> shown on
    the page (one clock: this machine's); console_estop_to_zero_ms: e-stop click (the page's time) -> the first
    zero cmd_vel, p50 of `estops`; console_cpu_percent_0_viewers / _2_viewers: console_node's CPU with no page
    and with two pages open (100 = one core)."""
    import cv2
    import psutil
    from geometry_msgs.msg import Twist
    from sensor_msgs.msg import CompressedImage

    from vln_ros.harness.browser import start_browser

    port = free_port()
    console = node_process('console_node', (f'port:={port}',))
    controller = ControllerUnderTest()
    cmds: list[tuple[float, float]] = []
    # (wall-clock time: the e-stop click is timed by the page, on this machine's clock)
    controller.node.create_subscription(Twist, ri.CMD_VEL, lambda m: cmds.append((time.time(), m.linear.x)), 100)
    keyframes = controller.node.create_publisher(CompressedImage, ri.KEYFRAME, ri.KEYFRAME_QOS)
    jpegs = [cv2.imencode('.jpg', scene(i, 336, 448))[1].tobytes() for i in range(6)]
    stop = threading.Event()

    def feed() -> None:  # keyframes at 10 Hz and a forward plan at 2 Hz, as a running task would
        i = 0
        while not stop.wait(0.1):
            msg = CompressedImage(format='jpeg', data=jpegs[i % 6])
            msg.header.stamp = controller.node.get_clock().now().to_msg()
            keyframes.publish(msg)
            if i % 5 == 0:
                controller.plans.publish(controller.plan(stop=False))
            i += 1
    feeder = threading.Thread(target=feed, daemon=True)
    try:
        url = f'http://127.0.0.1:{port}/'
        deadline = time.monotonic() + 30.0
        while keyframes.get_subscription_count() < 1 or controller.node.count_subscribers(ri.ESTOP) < 1:
            if time.monotonic() > deadline or console.poll() is not None:
                raise RuntimeError('console_node did not come up')
            time.sleep(0.05)
        feeder.start()
        time.sleep(1.0)
        proc = psutil.Process(console.pid)
        proc.cpu_percent(None)
        time.sleep(6.0)  # the same traffic, no page open: what the ROS side costs alone
        emit('console_cpu_percent_0_viewers', proc.cpu_percent(None), '%')
        with start_browser() as first, start_browser() as second:
            d = first.driver
            d.get('about:blank')   # the browser's own first-navigation start-up is not the console's
            loaded = time.time()
            d.get(url)
            shown: list[float] | None = None
            deadline = time.monotonic() + PAGE_DEADLINE_S
            while shown is None:  # the page's own record of when it showed its first image
                # >= 1 and the page's first time: the second image can come before this poll sees the first
                # (imagesShown === 1 then waited for ever: the bench hung in 3 of 4 runs).
                # and, when the page's answer carried an image, its Element Timing (it comes after the paint and
                # may move the first image earlier than a socket image that loaded meanwhile)
                shown = d.execute_script('const v = window.vlnConsole || {}; return v.imagesShown >= 1 && '
                                         'v.pageImage !== null && (!v.pageImage || v.firstImagePaintedAt !== null) ? '
                                         '[v.firstImageShownAt, performance.timeOrigin / 1000, v.firstImageSource]'
                                         ' : null')
                if shown is None and time.monotonic() > deadline:
                    raise RuntimeError(f'the console page showed no image within {PAGE_DEADLINE_S} s')
                time.sleep(0.005)
            shown_at, navigation_start, source = shown
            after_navigation_s = shown_at - navigation_start
            print(f'# console: driver.get -> navigation start {navigation_start - loaded:.3f} s (the test browser\'s);'
                  f' navigation start -> first image shown {after_navigation_s:.3f} s (from the {source})',
                  file=sys.stderr)
            # where the time went, in ms since the navigation start (the page's resource timing)
            steps = d.execute_script(
                "const r = performance.getEntriesByType('resource'); const at = (s, k) => { "
                "const e = r.find((x) => x.name.includes(s)); return e ? Math.round(e[k]) : null; }; "
                "const n = performance.getEntriesByType('navigation')[0] || {}; return {"
                "page_answered: Math.round(n.responseEnd || 0), script_answered: at('console.js', 'responseEnd'), "
                "script_started: Math.round(window.vlnConsole.scriptStartedMs), "
                "dom_ready: Math.round(n.domContentLoadedEventStart || 0), "
                "style_answered: at('console.css', 'responseEnd'), "
                "first_paint: Math.round((performance.getEntriesByType('paint')[0] || {}).startTime || 0), "
                "image_painted: window.vlnConsole.firstImagePaintedAt === null ? null : "
                "Math.round(window.vlnConsole.firstImagePaintedAt * 1000 - performance.timeOrigin)}")
            print(f'# console: first image, step by step (ms since the navigation start): {steps}', file=sys.stderr)
            emit('console_first_image_s', after_navigation_s, 's')
            second.driver.get(url)
            proc.cpu_percent(None)
            latencies: dict[float, float] = {}  # stamp -> shown - stamp, as the page measured it
            deadline = time.monotonic() + PAGE_DEADLINE_S + images / 5.0   # keyframes come at 10 Hz
            while len(latencies) < images:
                if time.monotonic() > deadline:
                    raise RuntimeError(f'the console page showed {len(latencies)} of {images} keyframes in time')
                stamp, latency = d.execute_script('const v = window.vlnConsole; '
                                                  'return [v.lastImageStamp, v.lastImageLatencyS]')
                latencies[stamp] = latency
                time.sleep(0.02)
            emit('console_cpu_percent_2_viewers', proc.cpu_percent(None), '%')
            emit('console_image_latency_ms_p50', 1e3 * float(np.percentile(list(latencies.values()), 50)), 'ms')
            d.find_element('id', 'take-control').click()
            wait_page(d, 'return window.vlnConsole.hasControl === true', 'control taken')
            stops = []
            for _ in range(estops):
                release = time.monotonic() + 10.0
                while time.monotonic() < release and not (cmds and cmds[-1][1] > 0.1):
                    time.sleep(0.05)
                d.find_element('id', 'estop').click()
                t0 = d.execute_script('return window.vlnConsole.estopClickedAt')  # the page's click time
                deadline = time.time() + 5.0
                while not any(t >= t0 and vx == 0.0 for t, vx in cmds[-50:]) and time.time() < deadline:
                    time.sleep(0.002)
                zeros = [t for t, vx in cmds[-50:] if t >= t0 and vx == 0.0]
                if not zeros:
                    raise RuntimeError('no zero cmd_vel within 5 s of the e-stop click')
                stops.append(1e3 * (min(zeros) - t0))
                # Release is enabled once the page hears the e-stop engaged (and only then)
                wait_page(d, "return !document.getElementById('release').disabled", 'Release enabled')
                d.find_element('id', 'release').click()
                d.switch_to.alert.accept()
                wait_page(d, 'return window.vlnConsole.estopEngaged === false', 'the e-stop released')
            print(f'# e-stop click -> zero cmd_vel: {[round(s, 1) for s in stops]} ms', file=sys.stderr)
            emit('console_estop_to_zero_ms', float(np.percentile(stops, 50)), 'ms')
    finally:
        stop.set()
        stop_process(console)
        controller.close()


def bench_console_estop_state(estops: int = 40) -> None:
    """console_estop_state_ms_p99: a page's e-stop (its message over the console's socket, as a click sends it)
    -> the first state message the page receives that says the e-stop is engaged (vln/estop -> controller_node ->
    vln/controller_status -> console_node -> the socket), p99 of `estops`; console_node and controller_node in
    their own processes, the page an aiohttp client here (one clock: this process's)."""
    import asyncio

    import aiohttp

    port = free_port()
    console = node_process('console_node', (f'port:={port}',))
    controller = ControllerUnderTest()
    ws_url = f'ws://127.0.0.1:{port}/ws'

    async def until(ws: aiohttp.ClientWebSocketResponse, wanted: Callable[[dict], bool], deadline_s: float,
                    what: str) -> float:
        """perf_counter() when a message the page receives is `wanted`."""
        while True:
            left = deadline_s - time.perf_counter()
            if left <= 0:
                raise RuntimeError(f'the console page never heard {what}')
            try:
                msg = await ws.receive(timeout=left)
            except TimeoutError:
                continue
            if msg.type == aiohttp.WSMsgType.TEXT:
                if wanted(json.loads(msg.data)):
                    return time.perf_counter()
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                raise RuntimeError('the console closed the socket')

    def estop_is(engaged: bool) -> Callable[[dict], bool]:
        return lambda m: m.get('type') == 'estop' and m.get('engaged') is engaged

    def reply_to(kind: str) -> Callable[[dict], bool]:
        return lambda m: m.get('type') == 'reply' and m.get('to') == kind

    async def run() -> list[float]:
        delays = []
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30.0
            while True:   # console_node's server comes up some time after its process starts
                try:
                    ws = await http.ws_connect(ws_url)
                    break
                except aiohttp.ClientError:
                    if time.monotonic() > deadline or console.poll() is not None:
                        raise RuntimeError('console_node did not come up') from None
                    await asyncio.sleep(0.1)
            async with ws:
                # the controller's latched status reached the console: released (the controller starts so)
                await until(ws, estop_is(False), time.perf_counter() + 30.0, 'the e-stop released at the start')
                for _ in range(estops):
                    t0 = time.perf_counter()
                    await ws.send_str(json.dumps({'type': 'estop'}))
                    delays.append(1e3 * (await until(ws, estop_is(True), t0 + 5.0, 'the e-stop engaged') - t0))
                    # release as the page does: take control, release (answered once it ran), hand control
                    # back; all within heartbeat_timeout_s or a heartbeat first
                    await ws.send_str(json.dumps({'type': 'take_control'}))
                    await ws.send_str(json.dumps({'type': 'release_estop'}))
                    seen: set[str] = set()   # the reply and the released state, in either order

                    def released(m: dict, seen: set[str] = seen) -> bool:
                        for name, check in (('reply', reply_to('release_estop')), ('state', estop_is(False))):
                            if check(m):
                                seen.add(name)
                        return len(seen) == 2
                    await until(ws, released, time.perf_counter() + 10.0, 'the e-stop released')
                    await ws.send_str(json.dumps({'type': 'release_control'}))
        return delays

    try:
        delays = asyncio.run(run())
        print(f'# e-stop -> page state engaged: p50 {np.percentile(delays, 50):.1f} ms, max {max(delays):.1f} ms '
              f'over {len(delays)}', file=sys.stderr)
        emit('console_estop_state_ms_p99', float(np.percentile(delays, 99)), 'ms')
    finally:
        stop_process(console)
        controller.close()


def wait_page(driver: Any, script: str, what: str) -> None:
    """Poll the page until script returns true; RuntimeError naming `what` after PAGE_STEP_DEADLINE_S."""
    timeout_s = PAGE_STEP_DEADLINE_S
    deadline = time.monotonic() + timeout_s
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            raise RuntimeError(f'the console page: no {what} within {timeout_s} s')
        time.sleep(0.02)


def bench_closed_loop(episodes: int = 20, studies: int = 4) -> None:
    """make eval's targets: the same seeded episodes with the oracle at 0.5 s and at 5 s (latency
    compensation on), then at 5 s without compensation and with the seed system's rule; the simulator's
    real-time factor while the whole stack runs at real time (the lowest of any 0.5 s episode). The 5 s runs
    go at twice real time (the model's latency is simulated time, so they score the same; docs/eval.md):
    about 25 minutes in all."""
    from dataclasses import replace

    from vln_ros.eval import metrics
    from vln_ros.eval import run as eval_run
    from vln_ros.eval.stack import EvalOptions

    seeds = list(range(episodes))
    for latency, mode in ((0.5, 'compensation'), (5.0, 'compensation'), (5.0, 'no_compensation'),
                          (5.0, 'baseline'))[:studies]:
        options = replace(eval_run.mode_options(EvalOptions(), mode), latency_s=latency,
                          speed=1.0 if latency < 1.0 else 2.0)
        label = f'{mode} {latency:g}s'
        _, scores = eval_run.run_set(options, seeds, OUT / 'eval', label, quiet=True)
        summary = metrics.summarise(scores)
        rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}   # intervals are lists
        print(f'# {label}: {json.dumps(rounded)}', file=sys.stderr, flush=True)
        tag = {0.5: '0p5s', 5.0: '5s'}[latency] + ('' if mode == 'compensation' else f'_{mode}')
        emit(f'eval_sr_{tag}', 100 * summary['sr'], '%')
        emit(f'eval_spl_{tag}', summary['spl'], 'ratio')
        emit(f'eval_waiting_ratio_{tag}', 100 * summary['waiting_ratio'], '%')
        emit(f'eval_collisions_{tag}', summary['collisions'], 'count')
        if latency < 1.0:
            emit('sim_real_time_factor', summary['real_time_factor_min'], 'ratio')


def bench_fleet(episodes: int = 3) -> None:
    """Four robots' stacks on one graph (make eval ROBOTS=4: one sim_node, a camera_node, inference_node with the
    oracle at 0.5 s and controller_node per namespace r1..r4). fleet_cmd_vel_rate_hz_min: the slowest controller's
    cmd_vel rate during its tasks, counted by the simulator's base in simulated time (the controllers' timers run
    on /clock: the rate the robot gets, whatever the simulation's pace; fleet_real_time_factor_min says that
    pace). fleet_cross_talk: plans (vln/waypoints) or task statuses that reached one robot's namespace carrying
    another robot's task id; must be 0. fleet_stack_cpu_cores: the CPU the 13 processes used (cores, over the
    run's wall time), what shape engine saves (bench_fleet_engine)."""
    _fleet('fleet', 'api', episodes)


def bench_fleet_engine(episodes: int = 3) -> None:
    """bench_fleet in shape engine (make eval ROBOTS=4 EVAL_ARGS='--shape engine'): ONE inference_node in the root
    serves r1..r4 (fleet.launch.py's shape engine, the recommended one); fleet_engine_* as bench_fleet's."""
    _fleet('fleet_engine', 'engine', episodes)


def _fleet(prefix: str, shape: str, episodes: int) -> None:
    import resource

    from vln_ros.eval import metrics
    from vln_ros.eval import run as eval_run
    from vln_ros.eval.stack import EvalOptions

    # every process of the stack is this process's child, and waited for when the run stops
    cpu_before, wall_before = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    records, scores = eval_run.run_set(EvalOptions(robots=4, shape=shape), list(range(episodes)), OUT / prefix,
                                       prefix, quiet=True)
    cpu_after, wall_s = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - wall_before
    cpu_s = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    rates = []
    for record in records:
        sent = [c[0] for c in record.commands if record.task_started_s <= c[0] <= record.task_ended_s]
        if len(sent) > 1:
            rates.append((len(sent) - 1) / (sent[-1] - sent[0]))
    summary = metrics.summarise(scores)
    emit(f'{prefix}_cmd_vel_rate_hz_min', min(rates, default=math.nan), 'Hz')
    emit(f'{prefix}_cross_talk', summary['cross_talk'], 'count')
    emit(f'{prefix}_sr_0p5s', 100 * summary['sr'], '%')
    emit(f'{prefix}_robot_collisions', summary['robot_collisions'], 'count')
    emit(f'{prefix}_real_time_factor_min', summary['real_time_factor_min'], 'ratio')
    emit(f'{prefix}_stack_cpu_cores', cpu_s / wall_s, 'cores')


def bench_safety_study(episodes: int = 3, worlds: tuple[str, ...] = ('empty', 'clutter', 'people'),
                       models: tuple[str, ...] = ('oracle', 'drifting')) -> None:
    """make eval STUDY=safety, reduced (the full study is 540 episodes, hours): guard on and off x worlds x
    models at 0.5 s, `episodes` per row. eval_safety_collisions_guard: contacts in the guarded rows (target 0);
    eval_safety_collisions_no_guard: in the unguarded ones (> 0: the study sees collisions);
    eval_safety_sr_people_0p5s: the guarded oracle's success among people (target >= 90 %)."""
    from vln_ros.eval import run as eval_run
    from vln_ros.eval import safety
    from vln_ros.eval.stack import EvalOptions

    ran = tuple(w for w in worlds if safety.available(w)) or ('empty',)   # a simulator without people: empty
    rows = safety.rows(ran, models, ('on', 'off'), ((0.5, episodes),))
    print(f'# safety study REDUCED: {len(rows)} rows x {episodes} episodes at 0.5 s only (worlds {", ".join(ran)}; '
          f'models {", ".join(models)}); not run: 2 s latency, the full counts'
          + (f', worlds {", ".join(w for w in worlds if w not in ran)} (no people/clutter in this simulator)'
             if len(ran) < len(worlds) else ''), file=sys.stderr, flush=True)

    def run_set(options: EvalOptions, seeds: list[int], label: str) -> tuple[list[Any], list[dict[str, Any]]]:
        return eval_run.run_set(options, seeds, OUT / 'eval_safety', label, quiet=True)

    results = safety.run_study(EvalOptions(), rows, 0, run_set)
    print('# ' + safety.table(results).replace('\n', '\n# '), file=sys.stderr, flush=True)
    figures = safety.figures(results)
    emit('eval_safety_collisions_guard', figures['collisions_guard'], 'count')
    emit('eval_safety_collisions_no_guard', figures['collisions_no_guard'], 'count')
    if 'people' in ran and 'oracle' in models:
        emit('eval_safety_sr_people_0p5s', 100 * figures['sr_people_0p5s'], '%')
    else:
        print('# eval_safety_sr_people_0p5s: not measured (no people world or no oracle row ran)', file=sys.stderr)


def bench_sim_people(seconds: float = 20.0, people: int = 4, clutter: int = 12) -> None:
    """The simulator with the guard's test load: every person script, clutter, the laser and the depth camera on.
    sim_real_time_factor_people: sim_node's own real-time factor at speed 1 (it cannot pass 1: the pace), from
    /status after `seconds`; sim_max_speed_people: the same simulator without ROS, stepped as fast as it goes
    (simulated seconds per wall second): the headroom above real time on this machine."""
    from vln_ros.sim import api
    from vln_ros.sim.params import SimParams
    from vln_ros.sim.render import CameraSpec, render
    from vln_ros.sim.service import SimService

    scripts = list(api.PERSON_SCRIPTS[:people])
    port = free_port()
    proc = node_process('sim_node', (f'api_port:={port}', 'depth.enabled:=true', 'laser.enabled:=true'))
    try:
        client = api.SimClient.on_port(port)
        deadline = time.monotonic() + 30.0
        while not client.ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError('sim_node did not come up')
            time.sleep(0.2)
        client.reset(0, people=scripts, clutter=clutter, timeout_s=30.0)
        time.sleep(seconds)
        rtf = client.status().real_time_factor
    finally:
        stop_process(proc)
    print(f'# sim_node with {people} people, {clutter} clutter, laser and depth: {rtf:.3f}x real time', file=sys.stderr)
    emit('sim_real_time_factor_people', rtf, 'ratio')

    params = SimParams.model_validate({'seed': 0, 'depth': {'enabled': True}})
    camera = CameraSpec(width=params.camera.width, height=params.camera.height, hfov_deg=params.camera.hfov_deg)
    service = SimService(params, lambda scene, pose, view, robots: render(scene, pose, camera, view, robots))
    service.world.reset(0, tuple(scripts), clutter)
    steps = max(1, round(seconds * params.physics_rate_hz))
    t0 = time.perf_counter()
    for i in range(steps):
        if i % 10 == 0:   # walking down its route, as in an episode
            service.world.command(0.5, 0.0, 0.0)
        service.step()
    emit('sim_max_speed_people', steps / params.physics_rate_hz / (time.perf_counter() - t0), 'ratio')


def bench_guard(steps: int = 3000, messages: int = 200) -> None:
    """The collision guard's control step and message conversions (bench/bench_guard.py)."""
    suite_module('bench_guard', 'bench').bench_guard(emit, steps=steps, messages=messages)


def bench_guard_reaction(trials: int = 40) -> None:
    """An obstacle enters the stop zone in one 20 Hz LaserScan -> the first zero cmd_vel of a guarded
    controller_node process (bench/bench_guard.py)."""
    suite_module('bench_guard', 'bench').bench_guard_reaction(emit, trials=trials)


BENCHES: dict[str, list[Callable[..., None]]] = {
    'keyframe': [bench_keyframe_decision, bench_keyframe_robustness, bench_camera_node_fps,
                 bench_keyframe_latency, bench_keyframe_pacing],
    'controller': [bench_controller, bench_controller_flood],
    'inference': [bench_parser, bench_stream_parser, bench_answer_tokens, bench_inference_overhead,
                  bench_inference_overload],
    'console': [bench_console, bench_console_estop_state],
    # the guard's study reduced: 2 x 3 x 2 rows x 3 episodes, about 40 minutes
    'safety': [bench_guard, bench_guard_reaction, bench_safety_study],
    # about 25 minutes: 80 closed-loop episodes
    'eval': [bench_closed_loop, bench_sim_people],
    # about 2 minutes: 3 episodes of 4 robots in one world, in each shape
    'fleet': [bench_fleet, bench_fleet_engine]}

# --smoke (test/test_bench.py, in `make test`): every benchmark once, as short as it still runs its whole path,
# so a broken benchmark fails CI. Its figures mean nothing; only that each group runs to the end and prints.
SMOKE: dict[str, dict[str, object]] = {
    'bench_keyframe_decision': {'frames_per_size': 40, 'reps': 1},
    'bench_keyframe_robustness': {'flicker_frames': 60},
    'bench_camera_node_fps': {'seconds': 0.5, 'rates': (30,)},
    'bench_keyframe_latency': {'count': 20},
    'bench_keyframe_pacing': {'seconds': 2.0, 'rates': (10,), 'pacing': (True,)},
    'bench_controller': {'seconds': 2.0, 'cycles': 3},
    'bench_controller_flood': {'seconds': 1.5},
    'bench_parser': {'repeats': 2},
    'bench_stream_parser': {'repeats': 1},
    'bench_inference_overhead': {'seconds': 2.0},
    'bench_inference_overload': {'seconds': 2.0},
    'bench_console': {'images': 5, 'estops': 1},
    'bench_console_estop_state': {'estops': 2},
    'bench_guard': {'steps': 200, 'messages': 10},
    'bench_guard_reaction': {'trials': 2},
    'bench_safety_study': {'episodes': 1, 'worlds': ('people',), 'models': ('oracle',)},
    'bench_closed_loop': {'episodes': 1, 'studies': 1},
    'bench_sim_people': {'seconds': 6.0},
    'bench_fleet': {'episodes': 1},
    'bench_fleet_engine': {'episodes': 1},
}
SMOKE_ARGS: dict[str, dict[str, object]] = {}   # main() sets it to SMOKE under --smoke
PAGE_STEP_DEADLINE_S = 10.0   # one step on the console page (control taken, Release enabled, released)
PAGE_DEADLINE_S = 30.0   # the console page: its first image, and each later step, or the bench fails


def main(argv: list[str] | None = None) -> int:
    """`make bench` runs all; `python bench/run.py inference` only that group."""
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('groups', nargs='*', metavar='GROUP', help=f'{" | ".join(BENCHES)} (default: all)')
    parser.add_argument('--out', type=Path, default=OUT, help=f'output folder (default {OUT})')
    parser.add_argument('--only', metavar='BENCH[,BENCH...]', default='',
                        help='of the groups, only these benchmarks (function names, e.g. bench_guard,bench_fleet)')
    parser.add_argument('--smoke', action='store_true',
                        help='each benchmark once, as short as it runs (make test does): its figures mean nothing')
    args = parser.parse_args(argv)
    for group in args.groups:
        if group not in BENCHES:
            parser.error(f'unknown group {group!r}: one of {", ".join(BENCHES)}')
    groups = args.groups or list(BENCHES)
    only = {name for name in args.only.split(',') if name}
    known = {bench.__name__ for group in groups for bench in BENCHES[group]}
    if only - known:
        parser.error(f'--only: no benchmark {", ".join(sorted(only - known))} in {", ".join(groups)} '
                     f'(there: {", ".join(sorted(known))})')
    claim = claim_private_run('bench', args.out)   # before rclpy: loopback only, large frames pass
    if claim is None:
        return 2
    OUT = args.out
    if args.smoke:
        SMOKE_ARGS.update(SMOKE)
    print(f'# {claim.describe()}', file=sys.stderr, flush=True)
    for group in groups:
        for bench in BENCHES[group]:
            if only and bench.__name__ not in only:
                continue
            print(f'# {group}: {bench.__name__}', file=sys.stderr, flush=True)
            bench(**SMOKE_ARGS.get(bench.__name__, {}))
    try:
        (OUT / 'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in RESULTS))
    except OSError as e:
        print(f'bench: cannot write {OUT / "results.jsonl"}: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
