"""The stack of replay.launch.py run for real on a bag, and everything it publishes, recorded.

`StackRun` starts the processes vln_ros/bringup.py describes for replay.launch.py (camera_node,
inference_node, controller_node and the vln_bag player, each its own process with config/vln.yaml)
and an observer node that records keyframes, plans, velocity commands, task states, annotated keyframes
and /diagnostics, each with the wall time it arrived at (Recording.bag_time turns that into bag time).
`make demo` and the end-to-end tests (test/test_e2e.py) both run the stack through it; the tests add
faults (kill a node, switch the task) while it runs.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from vln_ros import bringup
from vln_ros.core.bags import NS_PER_S
from vln_ros.demo.make_bag import ANSWERS_NAME, BAG_NAME, CAMERA_TOPIC, DEMO_DIR

if TYPE_CHECKING:
    from rclpy.client import Client

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def stop_on_sigterm() -> None:
    """SIGTERM (a CI timeout, `kill`) ends a run like Ctrl-C: KeyboardInterrupt unwinds through the run's
    `with` blocks, which stop the stack's processes instead of leaving them running (a killed `vln_eval` left
    its four node processes behind, /clock still ticking)."""
    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f'signal {signum}')
    signal.signal(signal.SIGTERM, interrupt)


def executable(name: str) -> str:
    """An installed executable: next to this Python first (the venv), then on PATH."""
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if found is None:
        raise FileNotFoundError(f'{name} is not installed: run `make install`, or source your ROS 2 workspace')
    return found


@dataclass(frozen=True)
class RunOptions:
    bag: Path = DEMO_DIR / BAG_NAME
    answers: Path = DEMO_DIR / ANSWERS_NAME
    camera_topic: str = CAMERA_TOPIC
    rate: float = 1.0
    backend: str = 'replay'          # replay: the answers file; lmdeploy / openai: live
    model: str = ''                  # lmdeploy / openai: the model (empty: the parameter file's)
    inference_params: tuple[str, ...] = ()   # more inference_node parameters, 'name:=value'
    params_file: Path = REPO / bringup.PARAMS_FILE
    wait_s: float = 30.0             # the player waits this long for the stack's subscriptions (model loading)
    console: bool = False            # also console_node, the operator console (launch argument console)
    console_params: tuple[str, ...] = ()     # more console_node parameters, 'name:=value'
    loop: bool = False               # play the bag again and again (make demo CONSOLE=1: until Ctrl-C)


def parameter_pairs(items: tuple[str, ...]) -> dict[str, str]:
    """'name:=value' items (command-line parameters) as a dict."""
    return dict(item.partition(':=')[::2] for item in items)


def stack_processes(options: RunOptions) -> list[bringup.Process]:
    """What replay.launch.py starts for the bag, with the two settings a params file would add for it:
    the camera reads JPEG frames (the bag holds /compressed), the inference node answers from the
    recorded answers matched by keyframe stamp (or from a live backend)."""
    values = {'bag': str(options.bag), 'camera_topic': options.camera_topic, 'rate': str(options.rate),
              'params_file': str(options.params_file), 'wait_s': str(options.wait_s),
              'console': str(options.console).lower(), 'loop': str(options.loop).lower()}
    if options.model:
        values['model'] = options.model
    processes = bringup.processes(bringup.ReplayArgs, values, str(REPO))
    inference: dict[str, Any] = {'backend': options.backend}
    if options.backend == 'replay':
        inference.update({'replay.file': str(options.answers), 'replay.match': 'stamp'})
    inference.update(parameter_pairs(options.inference_params))
    extra = {'camera_node': {'input_transport': 'compressed'}, 'inference_node': inference,
             'console_node': parameter_pairs(options.console_params)}
    return [p.with_parameters(extra.get(p.name, {})) for p in processes]


@dataclass
class Stamped:
    wall_s: float      # time.monotonic() at arrival
    msg: Any


@dataclass
class Recording:
    rate: float = 1.0
    clock_offset_s: float | None = None   # bag time - rate x wall time, from the least delayed /clock
    last_clock_s: float = 0.0             # the latest bag time /clock said
    keyframes: list[Stamped] = field(default_factory=list)
    plans: list[Stamped] = field(default_factory=list)
    commands: list[Stamped] = field(default_factory=list)
    statuses: list[Stamped] = field(default_factory=list)       # vln/task_status
    debug_images: list[Stamped] = field(default_factory=list)   # vln/debug_image (annotated keyframes)
    diagnostics: dict[str, list[Stamped]] = field(default_factory=dict)  # by node name: DiagnosticStatus

    def bag_time(self, wall_s: float) -> float:
        """Bag time at a wall time: the player's /clock is bag start + rate x (wall time since it started
        playing) until the bag ends, so /clock messages fix the line (the least delayed one best); before
        any, 0. Computed from wall time rather than read from a node's sim clock, which starts only once
        that node has heard /clock (discovery can take a second or two)."""
        if self.clock_offset_s is None:
            return 0.0
        return min(self.clock_offset_s + wall_s * self.rate, self.last_clock_s)

    def last_diagnostics(self, node: str) -> dict[str, str]:
        """The newest /diagnostics values of a node ('camera_node' or its full name), {} if none came."""
        for name, entries in self.diagnostics.items():
            if (name == node or name.endswith('/' + node)) and entries:
                return {kv.key: kv.value for kv in entries[-1].msg.values}
        return {}


class Observer:
    """An rclpy node (its own context and executor thread) recording the stack's outputs and /clock."""

    def __init__(self, recording: Recording) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Twist
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CompressedImage, Image

        from vln_ros import interface as ri
        from vln_ros.msg import TaskStatus, WaypointArray
        from vln_ros.srv import SetTask
        from vln_ros.testing.graph import SpinningGraph

        self.recording = recording
        self.lock = threading.Lock()
        self.graph = SpinningGraph()
        self.node = self.graph.node('vln_demo_observer')
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        r = recording
        self.outputs = [
            self._subscribe(CompressedImage, ri.KEYFRAME, r.keyframes, reliable),
            self._subscribe(WaypointArray, ri.WAYPOINTS, r.plans, reliable),
            self._subscribe(Twist, ri.CMD_VEL, r.commands, reliable),
        ]
        self._subscribe(TaskStatus, ri.TASK_STATUS, r.statuses, latched)
        self._subscribe(Image, ri.DEBUG_IMAGE, r.debug_images, QoSProfile(depth=10))
        self.node.create_subscription(DiagnosticArray, ri.DIAGNOSTICS, self._on_diagnostics, 100)
        self.node.create_subscription(Clock, ri.CLOCK, self._on_clock, 10)
        self._set_task: Client[Any, Any] = self.node.create_client(SetTask, ri.SET_TASK)
        self._set_task_type = SetTask

    def _subscribe(self, msg_type: Any, topic: str, into: list[Stamped], qos: Any) -> Any:
        def keep(msg: Any) -> None:
            wall = time.monotonic()
            with self.lock:
                into.append(Stamped(wall, msg))
        return self.node.create_subscription(msg_type, topic, keep, qos)

    def _on_diagnostics(self, msg: Any) -> None:
        wall = time.monotonic()
        with self.lock:
            for status in msg.status:
                self.recording.diagnostics.setdefault(status.name, []).append(Stamped(wall, status))

    def _on_clock(self, msg: Any) -> None:
        wall = time.monotonic()
        bag = msg.clock.sec + msg.clock.nanosec / NS_PER_S
        with self.lock:
            r = self.recording
            offset = bag - r.rate * wall   # a delayed message reads low, and the clock holds at the end
            r.clock_offset_s = offset if r.clock_offset_s is None else max(r.clock_offset_s, offset)
            r.last_clock_s = max(r.last_clock_s, bag)

    def outputs_heard(self) -> bool:
        return all(s.get_publisher_count() > 0 for s in self.outputs)

    def set_task(self, instruction: str, timeout_s: float = 10.0) -> tuple[Any, float]:
        """vln/set_task; (response, wall time it arrived). Retried: a reply can be lost while discovery
        still matches the reply path (each retry is a new switch, so the last response is the one)."""
        from vln_ros.testing.graph import call_service
        reply = call_service(self._set_task, self._set_task_type.Request(instruction=instruction), timeout_s, 1.0)
        return reply, time.monotonic()

    def close(self) -> None:
        self.graph.close()


@dataclass
class Started:
    command: list[str]
    popen: subprocess.Popen
    log: Path
    log_file: IO[str]


class ProcessGroup:
    """Node processes started by name, each logging to <log_dir>/<name>.log, stopped together as launch does
    on Ctrl-C (SIGINT, then a kill after STOP_TIMEOUT_S). make demo's and make eval's stacks run on it."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: dict[str, Started] = {}

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        """Start (or start again: the log goes on) the process `name`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        again = name in self.started
        if again:
            self.started[name].log_file.close()
        log = self.log_dir / f'{name}.log'
        log_file = log.open('a' if again else 'w')
        popen = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=log_file,
                                 stderr=subprocess.STDOUT, text=True)
        self.started[name] = Started(command, popen, log, log_file)

    def dead(self) -> list[str]:
        return [name for name, s in self.started.items() if s.popen.poll() is not None]

    def send(self, name: str, sig: int) -> float:
        """Signal one process (SIGKILL is a crash); the wall time it was sent."""
        self.started[name].popen.send_signal(sig)
        return time.monotonic()

    def stop(self) -> dict[str, int]:
        """SIGINT to every process still running; their exit codes."""
        for s in self.started.values():
            if s.popen.poll() is None:
                s.popen.send_signal(signal.SIGINT)
        codes = {}
        for name, s in self.started.items():
            try:
                codes[name] = s.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                s.popen.kill()
                codes[name] = s.popen.wait()
            s.log_file.close()
        return codes

    def logs(self, tail_lines: int = 30) -> str:
        parts = []
        for name, s in self.started.items():  # the children write to the files themselves
            lines = s.log.read_text(errors='replace').splitlines()[-tail_lines:]
            parts.append(f'--- {name} (exit {s.popen.poll()}) ---\n' + '\n'.join(lines))
        return '\n'.join(parts)


class StackRun:
    """Start the stack on the bag, play it, inject faults, stop; what was heard is in `recording`.
    The environment (ROS domain, transports) is this process's: set it up before
    (local_graph.use_private_domain)."""

    def __init__(self, options: RunOptions, log_dir: Path) -> None:
        self.options = options
        self.log_dir = log_dir
        self.recording = Recording(rate=options.rate)
        self.observer = Observer(self.recording)
        self.group = ProcessGroup(log_dir)
        self.processes = stack_processes(options)
        self.play_started_wall_s: float | None = None

    def __enter__(self) -> StackRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.observer.close()

    def _start(self, process: bringup.Process) -> None:
        self.group.start(process.name, process.command(executable(process.executable)), process.env)

    def start_stack(self) -> None:
        """The three nodes; returns once the observer hears each of their outputs."""
        for process in self.processes:
            if process.executable != bringup.BAG_EXECUTABLE:
                self._start(process)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S + self.options.wait_s
        while not self.observer.outputs_heard():
            dead = self.group.dead()
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f'the stack did not come up ({", ".join(dead) or "timeout"}):\n' + self.logs())
            time.sleep(0.05)

    def play(self) -> None:
        """Start the player (it waits for the stack's subscriptions itself, then plays the bag)."""
        player = next(p for p in self.processes if p.executable == bringup.BAG_EXECUTABLE)
        self.play_started_wall_s = time.monotonic()
        self._start(player)

    @property
    def player(self) -> subprocess.Popen:
        return self.group.started['vln_bag_player'].popen

    def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Poll condition (under the recording lock) until it holds; False on timeout or if a process died
        that was not killed on purpose."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.observer.lock:
                if condition():
                    return True
            time.sleep(0.02)
        with self.observer.lock:
            return condition()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Signal one process (a fault: SIGKILL is a crash); the wall time it was sent."""
        return self.group.send(name, sig)

    def set_task(self, instruction: str) -> tuple[Any, float]:
        return self.observer.set_task(instruction)

    def stop(self) -> dict[str, int]:
        """SIGINT to every process still running (what launch does on Ctrl-C); their exit codes."""
        return self.group.stop()

    def logs(self, tail_lines: int = 30) -> str:
        return self.group.logs(tail_lines)
