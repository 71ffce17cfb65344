"""The stack of replay.launch.py run for real on a bag, and everything it publishes, recorded.

`StackRun` starts the processes vln_ros/bringup.py describes for replay.launch.py (camera_node,
inference_node, controller_node and the vln_bag player, each its own process with config/vln.yaml)
and an observer node that records keyframes, plans, velocity commands, task states, annotated keyframes
and /diagnostics, each with the wall time it arrived at (Recording.bag_time turns that into bag time).
`make demo` and the end-to-end tests (test/test_e2e.py) both run the stack through it; the tests add
faults (kill a node, switch the task) while it runs.
"""
from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vln_ros import bringup
from vln_ros.core.bags import NS_PER_S
from vln_ros.demo.make_bag import ANSWERS_NAME, BAG_NAME, CAMERA_TOPIC, DEMO_DIR
from vln_ros.harness.observer import Observer
from vln_ros.harness.processes import REPO, ProcessGroup, executable, parameter_pairs

STARTUP_TIMEOUT_S = 60.0


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


class StackObserver(Observer):
    """The observer node recording the stack's outputs and /clock into a Recording."""

    def __init__(self, recording: Recording) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Twist
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CompressedImage, Image

        from vln_ros import interface as ri
        from vln_ros.msg import TaskStatus, WaypointArray

        super().__init__('vln_demo_observer')
        self.recording = recording
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        r = recording
        self.outputs = [
            self._record(CompressedImage, ri.KEYFRAME, r.keyframes, reliable),
            self._record(WaypointArray, ri.WAYPOINTS, r.plans, reliable),
            self._record(Twist, ri.CMD_VEL, r.commands, reliable),
        ]
        self._record(TaskStatus, ri.TASK_STATUS, r.statuses, latched)
        self._record(Image, ri.DEBUG_IMAGE, r.debug_images, QoSProfile(depth=10))
        self.subscribe(DiagnosticArray, ri.DIAGNOSTICS, 100, self._on_diagnostics)
        self.subscribe(Clock, ri.CLOCK, 10, self._on_clock)

    def _record(self, msg_type: Any, topic: str, into: list[Stamped], qos: Any) -> Any:
        return self.subscribe(msg_type, topic, qos, lambda msg: into.append(Stamped(time.monotonic(), msg)))

    def _on_diagnostics(self, msg: Any) -> None:
        wall = time.monotonic()
        for status in msg.status:
            self.recording.diagnostics.setdefault(status.name, []).append(Stamped(wall, status))

    def _on_clock(self, msg: Any) -> None:
        wall = time.monotonic()
        bag = msg.clock.sec + msg.clock.nanosec / NS_PER_S
        r = self.recording
        offset = bag - r.rate * wall   # a delayed message reads low, and the clock holds at the end
        r.clock_offset_s = offset if r.clock_offset_s is None else max(r.clock_offset_s, offset)
        r.last_clock_s = max(r.last_clock_s, bag)

    def outputs_heard(self) -> bool:
        return all(s.get_publisher_count() > 0 for s in self.outputs)

    def stamped_set_task(self, instruction: str, timeout_s: float = 10.0) -> tuple[Any, float]:
        """vln/set_task (retried each second); (response, wall time it arrived)."""
        reply = self.set_task(instruction, timeout_s, 1.0)
        return reply, time.monotonic()


class StackRun:
    """Start the stack on the bag, play it, inject faults, stop; what was heard is in `recording`.
    The environment (ROS domain, transports) is this process's: set it up before
    (local_graph.use_private_domain)."""

    def __init__(self, options: RunOptions, log_dir: Path) -> None:
        self.options = options
        self.log_dir = log_dir
        self.recording = Recording(rate=options.rate)
        self.observer = StackObserver(self.recording)
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
        if not self.observer.wait_until(self.observer.outputs_heard, STARTUP_TIMEOUT_S + self.options.wait_s,
                                        failed=lambda: bool(self.group.dead())):
            dead = self.group.dead()
            raise RuntimeError(f'the stack did not come up ({", ".join(dead) or "timeout"}):\n' + self.logs())

    def play(self) -> None:
        """Start the player (it waits for the stack's subscriptions itself, then plays the bag)."""
        player = next(p for p in self.processes if p.executable == bringup.BAG_EXECUTABLE)
        self.play_started_wall_s = time.monotonic()
        self._start(player)

    @property
    def player(self) -> subprocess.Popen:
        return self.group.started['vln_bag_player'].popen

    def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Poll condition (under the recording lock) until it holds; False on timeout."""
        return self.observer.wait_until(condition, timeout_s)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Signal one process (a fault: SIGKILL is a crash); the wall time it was sent."""
        return self.group.send(name, sig)

    def set_task(self, instruction: str) -> tuple[Any, float]:
        return self.observer.stamped_set_task(instruction)

    def stop(self) -> dict[str, int]:
        """SIGINT to every process still running (what launch does on Ctrl-C); their exit codes."""
        return self.group.stop()

    def logs(self, tail_lines: int = 30) -> str:
        return self.group.logs(tail_lines)
