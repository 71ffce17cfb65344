"""The closed loop on one machine: sim_node, the stack's three node processes and an observer, episode by
episode.

`EvalStack` starts sim_node (the robot and its world, the owner of /clock) and camera_node, inference_node
and controller_node as vln.launch.py would start them for a robot whose camera is sim_node's
(vln_ros/bringup.py: the same processes, config/vln.yaml, use_sim_time), with the oracle backend (or a
live model) answering. Then, per episode: the simulator gets a new scene through its side channel, the
observer waits for a keyframe of it, the instruction goes to vln/set_task as an operator's would, and the
run ends when the task ends (arrived, stopped, failed) or its time budget runs out. The processes stay up
between episodes, as a robot's stack would between errands; the clock never goes back.

With `robots` N > 1 (make eval ROBOTS=N) one sim_node holds N robots in namespaces r1..rN (vln_ros/sim/fleet.py:
a queue on the scene's route, each with a goal of its own) and each namespace gets its own camera_node,
inference_node (the oracle asking for that robot's ground truth; with shape 'engine' ONE inference_node in the
root serves them all) and controller_node, and an observer of its own; every robot gets the scene's instruction
at once, and an episode ends when every robot's task has ended.
"""
from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vln_ros import bringup
from vln_ros import interface as ri
from vln_ros.core.config import ControllerParams, load_node_yaml, validate_params
from vln_ros.core.limits import VelocityLimits
from vln_ros.eval.metrics import EpisodeRecord, Plan
from vln_ros.harness.observer import SERVICE_TIMEOUT_S, Observer
from vln_ros.harness.processes import REPO, ProcessGroup, executable, free_port, parameter_pairs
from vln_ros.nodes.conversions import stamp_seconds
from vln_ros.nodes.services import call_service
from vln_ros.sim import fleet as sim_fleet
from vln_ros.sim.api import RESET, ResetRequest, SimClient

STARTUP_TIMEOUT_S = 90.0
SETTLE_S = 3.0            # after the task ends: the robot comes to rest (simulated seconds)
BUDGET_MIN_S = 40.0       # an episode's time budget: this, plus
BUDGET_S_PER_M = 5.0      # this per metre of the shortest route (0.2 m/s on average)
SIM_SPEED_LIMIT = 1e-3    # a stalled simulation is an error, not a slow episode
RESTART_SETTLE_S = 3.0    # after restarting a killed node (simulated seconds)
NEW_SCENE_SETTLE_S = 0.5  # after a reset, before the task: camera frames of the new scene reach camera_node
FAULT_WATCH_S = 15.0      # after an in-loop fault: longer than the controller's inference_timeout_s (10 s)
STACK_NODES = tuple(n.name for n in bringup.NODES)
CONTROLLER = 'controller_node'
WALKING_MPS = 0.2         # an in-loop fault comes once the robot walks at least this fast ...
FAULT_WAIT_WALKING_S = 10.0   # ... or this long after fault_after_s, whichever is first


@dataclass(frozen=True)
class EvalOptions:
    backend: str = 'oracle'                 # oracle | lmdeploy | openai
    model: str = ''
    latency_s: float = 0.5                  # the oracle's, in simulated time
    oracle: tuple[str, ...] = ()            # more oracle.* settings, 'name:=value' (noise, faults)
    inference_params: tuple[str, ...] = ()  # more inference_node parameters, 'name:=value'
    controller: str = 'vln'                 # vln: controller_node; baseline: the seed system's rule (bench only)
    latency_compensation: bool = True
    sim_params: tuple[str, ...] = ()        # sim_node parameters, 'name:=value'
    controller_params: tuple[str, ...] = ()  # more controller_node parameters, 'name:=value' (guard.enabled)
    people: tuple[str, ...] = ()            # the world: walking people's scripts at each reset ('crossing', ...)
    clutter: int = 0                        # ... and static obstacles on and near the route
    speed: float = 1.0                      # simulated seconds per wall second
    params_file: Path = REPO / bringup.PARAMS_FILE
    robots: int = 1                         # > 1: that many robots in one world, namespaces r1..rN
    shape: str = 'api'                      # ... answered by an inference_node each (api) or one for all (engine)

    def robot_names(self) -> tuple[str, ...]:
        """The robots' namespaces; () for the single robot in the root namespace."""
        return tuple(f'r{i + 1}' for i in range(self.robots)) if self.robots > 1 else ()


def controller_params(params_file: Path) -> ControllerParams:
    """controller_node's parameters as configured for this run (the parameter file's section)."""
    return validate_params(ControllerParams, load_node_yaml(params_file, 'controller_node'))


@dataclass
class Heard:
    keyframes: list[tuple[float, float]] = field(default_factory=list)   # (received, stamp), simulated s
    plans: list[Plan] = field(default_factory=list)
    statuses: list[tuple[float, Any]] = field(default_factory=list)      # (received, TaskStatus)
    guard: list[tuple[float, str]] = field(default_factory=list)         # (received, GuardStatus action)


class EvalObserver(Observer):
    """The observer node on simulated time: keyframes, plans and task states as they arrive; set and stop tasks."""

    def __init__(self, namespace: str = '') -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CompressedImage
        from std_srvs.srv import Trigger

        from vln_ros.msg import ControllerStatus, GuardStatus, TaskStatus, WaypointArray

        super().__init__('vln_eval_observer', sim_time=True, namespace=namespace)
        # /diagnostics is one topic for every robot: a robot's observer keeps its own nodes' statuses only, those
        # in its namespace and a status a node serving several robots names after it (shape engine's `: r1`)
        self._diagnostics_prefix = f'/{namespace}/' if namespace else ''
        self._diagnostics_suffix = f': {namespace}' if namespace else None
        self.heard = Heard()
        # node name -> the simulated time its last typed status (controller_node: vln/controller_status, 1 Hz)
        # or, for nodes without a periodic typed message (camera_node; inference_node, whose task status comes
        # only on changes), its last /diagnostics carried
        self.clocks: dict[str, float] = {}
        self.controller: Any = None   # the last ControllerStatus
        self.subscribe(CompressedImage, ri.KEYFRAME, ri.KEYFRAME_QOS, self._on_keyframe)
        self.subscribe(WaypointArray, ri.WAYPOINTS, ri.PLAN_QOS, self._on_plan)
        self.subscribe(TaskStatus, ri.TASK_STATUS, ri.STATUS_QOS, self._on_status)
        self.subscribe(ControllerStatus, ri.CONTROLLER_STATUS, ri.CONTROLLER_STATUS_QOS, self._on_controller_status)
        self.subscribe(DiagnosticArray, ri.DIAGNOSTICS, ri.DIAGNOSTICS_QOS, self._on_diagnostics)
        self.subscribe(GuardStatus, ri.GUARD_STATUS, ri.GUARD_STATUS_QOS, self._on_guard)
        self._stop_task: Any = self.node.create_client(Trigger, ri.STOP_TASK)

    def now(self) -> float:
        return float(self.node.get_clock().now().nanoseconds) * 1e-9

    def _on_keyframe(self, msg: Any) -> None:
        self.heard.keyframes.append((self.now(), stamp_seconds(msg.header.stamp)))

    def _on_plan(self, msg: Any) -> None:
        self.heard.plans.append(Plan(self.now(), stamp_seconds(msg.header.stamp), bool(msg.stop), msg.action,
                                     len(msg.waypoints), msg.task_id,
                                     [[w.dx, w.dy, w.dtheta, w.confidence] for w in msg.waypoints], msg.model))

    def _on_controller_status(self, msg: Any) -> None:
        self.controller = msg
        self.clocks[CONTROLLER] = stamp_seconds(msg.header.stamp)

    def _on_diagnostics(self, msg: Any) -> None:
        stamp = stamp_seconds(msg.header.stamp)
        for status in msg.status:
            if self._diagnostics_suffix and status.name.endswith(self._diagnostics_suffix):
                name = status.name[:-len(self._diagnostics_suffix)].rsplit('/', 1)[-1]
            elif status.name.startswith(self._diagnostics_prefix):
                name = status.name.rsplit('/', 1)[-1]
            else:
                continue
            # controller_node's typed status says it; the seed system's rule (eval/baseline.py), which stands in
            # for it under its name, has no typed status and says it here
            if name != CONTROLLER or self.controller is None:
                self.clocks[name] = stamp

    def clocks_after(self, names: tuple[str, ...], t_s: float) -> bool:
        """Each of these nodes has said (in the stamp of its status or /diagnostics) that its simulated clock is
        past t_s."""
        with self.lock:
            return all(self.clocks.get(name, -1.0) > t_s for name in names)

    def _on_guard(self, msg: Any) -> None:
        self.heard.guard.append((self.now(), msg.action))

    def _on_status(self, msg: Any) -> None:
        self.heard.statuses.append((self.now(), msg))

    def stop_task(self) -> Any:
        from std_srvs.srv import Trigger
        return call_service(self._stop_task, Trigger.Request(), SERVICE_TIMEOUT_S)


def task_end(obs: EvalObserver, task_id: str) -> tuple[str, str, float] | None:
    """How the task ended, as its status said: ('arrived' | 'stopped' | 'failed', reason, when); None yet."""
    with obs.lock:
        for received, status in reversed(obs.heard.statuses):
            if status.task_id == task_id and status.state_name in ('stopped', 'failed'):
                arrived = status.state_name == 'stopped' and 'arrived' in status.reason
                return ('arrived' if arrived else status.state_name), status.reason, received
    return None


def guard_stops(times_s: list[float], trajectory: list[list[float]]) -> list[list[float]]:
    """[t, x, y] of the robot at each time the guard went to 'stop' (the trajectory row at or after it)."""
    stops = []
    for t in times_s:
        row = next((r for r in trajectory if r[0] >= t), trajectory[-1] if trajectory else None)
        if row is not None:
            stops.append([t, row[1], row[2]])
    return stops


class EvalStack:
    """The processes of the closed loop. The environment (private ROS domain, transports) is this process's:
    set it up first (local_graph.use_private_domain)."""

    def __init__(self, options: EvalOptions, log_dir: Path) -> None:
        self.options = options
        self.log_dir = log_dir
        self.port = free_port()
        self.sim = SimClient.on_port(self.port)
        self.group = ProcessGroup(log_dir)
        self.observer: EvalObserver | None = None      # the first robot's (the clock of every wait)
        self.observers: list[EvalObserver] = []        # one per robot
        self.controller = controller_params(options.params_file)
        self.limits = VelocityLimits.of(self.controller).as_dict()

    # -- processes -----------------------------------------------------------------------------------
    def commands(self) -> dict[str, list[str]]:
        """Each process's command line: what sim.launch.py starts (bringup.SimArgs: sim_node, and the stack on
        its clock and camera), with the run's backend, simulation and controller settings."""
        o = self.options
        values = {'params_file': str(o.params_file), 'backend': o.backend, 'speed': str(o.speed),
                  'api_port': str(self.port)}
        if o.model:
            values['model'] = o.model
        extra: dict[str, dict[str, Any]] = {
            'sim_node': dict(parameter_pairs(o.sim_params)),
            'inference_node': {**({'oracle.latency_s': o.latency_s} if o.backend == 'oracle' else {}),
                               **{f'oracle.{k}': v for k, v in parameter_pairs(o.oracle).items()},
                               **parameter_pairs(o.inference_params)},
            'controller_node': {'latency_compensation': o.latency_compensation,
                                **parameter_pairs(o.controller_params)},
        }
        names = o.robot_names()
        if names:
            return self._fleet_commands(values, extra, names)
        out = {}
        for p in bringup.processes(bringup.SimArgs, values, str(REPO)):
            p = p.with_parameters(extra.get(p.name, {}))
            if p.name == 'controller_node' and o.controller == 'baseline':
                out[p.name] = [*self._baseline_command(), *p.command('x')[1:]]
            else:
                out[p.name] = p.command(executable(p.executable))
        return out

    def _fleet_commands(self, values: dict[str, str], extra: dict[str, dict[str, Any]],
                        names: tuple[str, ...]) -> dict[str, list[str]]:
        """sim.launch.py robots:=r1,...: one sim_node with every robot, and per robot (namespace) the stack, the
        oracle answering from that robot's ground truth (bringup.sim_world); processes named <robot>_<node>, the
        one inference_node of shape engine (in the root) inference_node."""
        if self.options.controller == 'baseline':
            raise ValueError('the baseline controller runs with one robot only')
        out = {}
        # sim_node starts on a scene whose route holds the queue (seed 0's holds 4); each episode resets to its own
        start_seed = sim_fleet.seeds_that_fit(len(names), 0, 1)[0][0]
        fleet = {'robots': ','.join(names), 'shape': self.options.shape, 'seed': str(start_seed)}
        for p in bringup.processes(bringup.SimArgs, {**values, **fleet}, str(REPO)):
            p = p.with_parameters(extra.get(p.name, {}))
            out[f'{p.namespace}_{p.name}' if p.namespace else p.name] = p.command(executable(p.executable))
        return out

    def _baseline_command(self) -> list[str]:
        import sys
        return [sys.executable, '-m', 'vln_ros.eval.baseline']

    def start(self) -> None:
        """sim_node first (the clock), then the stack; returns once the stack answers on the graph."""
        commands = self.commands()
        self.group.start(bringup.SIM_EXECUTABLE, commands.pop(bringup.SIM_EXECUTABLE))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.sim.ready():
            self._check_alive(deadline, 'sim_node')
            time.sleep(0.1)
        for name, command in commands.items():
            self.group.start(name, command)
        self.observers = [EvalObserver(name) for name in self.options.robot_names() or ('',)]
        self.observer = self.observers[0]
        while not self._stack_up():
            self._check_alive(deadline, 'the stack')
            time.sleep(0.1)

    def _stack_up(self) -> bool:
        """Every node is on the graph and subscribed: keyframes reach the inference node (and the observer),
        its keyframe requests the camera, plans the controller. (Keyframes themselves come only once a task
        asks for them: model-paced keyframes.)"""
        return bool(self.observers) and all(self._robot_up(obs) for obs in self.observers)

    @staticmethod
    def _robot_up(observer: EvalObserver) -> bool:
        node = observer.node
        return (node.count_publishers(ri.WAYPOINTS) > 0 and node.count_subscribers(ri.KEYFRAME) >= 2
                and node.count_publishers(ri.KEYFRAME_REQUEST) > 0 and node.count_subscribers(ri.KEYFRAME_REQUEST) > 0
                and node.count_subscribers(ri.WAYPOINTS) >= 2 and node.count_publishers(ri.CMD_VEL) > 0
                and observer.set_task_client.service_is_ready())

    def _check_alive(self, deadline: float, what: str) -> None:
        dead = self.group.dead()
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f'{what} did not come up ({", ".join(dead) or "timeout"}):\n' + self.logs())

    def restart(self, name: str) -> None:
        """Start a process again after a fault killed it, and wait until it is back on the graph."""
        self.group.start(name, self.group.started[name].command)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._stack_up():
            self._check_alive(deadline, name)
            time.sleep(0.1)
        # The killed node's entries stay in the graph until its lease expires, so the counts above can be
        # met before the new one has matched everything: give discovery a moment more.
        self._wait_sim(lambda: False, RESTART_SETTLE_S, 'discovery after a restart')

    def kill(self, name: str) -> None:
        self.group.send(name, signal.SIGKILL)
        self.group.started[name].popen.wait()

    def stop(self) -> dict[str, int]:
        """SIGINT to every process (what launch does on Ctrl-C); their exit codes."""
        for observer in self.observers:
            observer.close()
        self.observers, self.observer = [], None
        return self.group.stop()

    def logs(self) -> str:
        return self.group.logs(25)

    def __enter__(self) -> EvalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- episodes ------------------------------------------------------------------------------------
    def _wait_sim(self, condition: Any, sim_timeout_s: float, what: str) -> bool:
        """Poll condition() until it holds or sim_timeout_s of simulated time pass (False)."""
        assert self.observer is not None
        start_sim, start_wall = self.observer.now(), time.monotonic()
        while not condition():
            if self.observer.now() - start_sim > sim_timeout_s:
                return False
            if time.monotonic() - start_wall > sim_timeout_s / max(self.options.speed * 0.2, SIM_SPEED_LIMIT) + 30:
                raise RuntimeError(f'simulated time stalled while waiting for {what}:\n' + self.logs())
            time.sleep(0.02)
        return True

    def run_episode(self, seed: int, fault: str = '', fault_after_s: float = 5.0) -> EpisodeRecord:
        """One episode of seed; fault: '' or one in-loop fault injected fault_after_s into the task
        ('kill_inference', 'freeze_camera', 'lose_odom')."""
        assert self.observer is not None
        obs = self.observer
        o = self.options
        # the world's people and clutter only when asked: a simulator without them then still answers
        world: dict[str, Any] = {'people': list(o.people), 'clutter': o.clutter} if o.people or o.clutter else {}
        scene = self.sim.call(RESET, ResetRequest(seed=seed, **world))
        reset_s = scene.now_s
        heard = obs.heard
        # The task's first keyframe is the next camera frame (model-paced keyframes): let frames of the new
        # scene reach camera_node first.
        if not self._wait_sim(lambda: obs.now() > reset_s + NEW_SCENE_SETTLE_S, 20.0, 'frames of the new scene'):
            raise RuntimeError(f'simulated time did not pass the reset of seed {seed}:\n' + self.logs())
        # Every node on the simulated clock: a node that has not heard /clock yet (discovery under load) reads
        # time 0, and the controller then refuses the first plans as stamped in the future (seen: 1.8 s).
        if not self._wait_sim(lambda: obs.clocks_after(STACK_NODES, reset_s), 20.0, "the nodes' clocks"):
            raise RuntimeError(f'the nodes are not on the simulated clock ({obs.clocks}):\n' + self.logs())
        reply = obs.set_task(scene.instruction)
        if not reply.accepted:
            raise RuntimeError(f'set_task refused the instruction: {reply.message}')
        task_id, started_s = reply.task_id, obs.now()
        budget = BUDGET_MIN_S + BUDGET_S_PER_M * scene.route_length_m
        faults: dict[str, Any] = {}

        def ended() -> tuple[str, str, float] | None:
            return task_end(obs, task_id)

        if fault:
            # In-loop faults: inject, then watch FAULT_WATCH_S; the robot must stop by itself and touch nothing.
            self._wait_sim(lambda: ended() is not None, fault_after_s, 'the fault time')
            # ... while the robot walks (a fault when it stands still would prove nothing)
            self._wait_sim(lambda: self.sim.status().speed_mps > WALKING_MPS, FAULT_WAIT_WALKING_S,
                           'the robot to walk')
            faults = {'fault': fault, 'at_s': obs.now()}
            if fault == 'kill_inference':
                self.kill('inference_node')
            elif fault in ('freeze_camera', 'lose_odom'):
                self.sim.fault(camera_frozen=fault == 'freeze_camera', odom_lost=fault == 'lose_odom')
            else:
                raise ValueError(f'unknown fault {fault!r}')
            budget = obs.now() - started_s + FAULT_WATCH_S
        self._wait_sim(lambda: ended() is not None, budget - (obs.now() - started_s), 'the task')
        end = ended()
        if end is None:
            end_state, end_reason, ended_s = 'fault' if fault else 'timeout', f'no end in {budget:.0f} s', obs.now()
            if fault != 'kill_inference':
                obs.stop_task()
        else:
            end_state, end_reason, ended_s = end
        self._wait_sim(lambda: False, SETTLE_S, 'the robot to settle')
        episode = self.sim.episode(timeout_s=30.0)
        if fault in ('freeze_camera', 'lose_odom'):
            self.sim.fault(camera_frozen=False, odom_lost=False)
        with obs.lock:
            plans = [p for p in heard.plans if p.task_id == task_id]
            stops_s = [t for (t, action), (_, before) in zip(heard.guard, [(0.0, '')] + heard.guard, strict=False)
                       if action == 'stop' and before != 'stop' and started_s <= t <= ended_s]
        if fault == 'kill_inference':
            self.restart('inference_node')
        return EpisodeRecord(
            seed=seed, instruction=scene.instruction, language=scene.language, kind=scene.kind,
            route_length_m=scene.route_length_m, shortest_path_m=scene.shortest_path_m,
            goal=list(scene.goal), task_started_s=started_s,
            task_ended_s=ended_s, end_state=end_state, end_reason=end_reason, trajectory=episode.trajectory,
            commands=episode.commands, plans=plans, collisions=episode.collisions,
            min_clearance_m=episode.min_clearance_m, answers=[a.model_dump() for a in episode.answers],
            faults=faults, real_time_factor=episode.real_time_factor,
            # people's fields come with the simulator's people (h-people); absent, the world has none
            person_collisions=getattr(episode, 'person_collisions', 0),
            min_clearance_people_m=getattr(episode, 'min_clearance_people_m', math.inf),
            people_tracks=getattr(episode, 'people_tracks', []), guard_stops=guard_stops(stops_s, episode.trajectory),
            clutter_placed=scene.clutter)

    def run_fleet_episode(self, seed: int) -> list[EpisodeRecord]:
        """One episode of seed with every robot (robots > 1): the scene's instruction to each at once; over when
        every task has ended or the budget of the longest route has run out. A record per robot, the leader first."""
        assert self.observer is not None
        o, names, lead = self.options, self.options.robot_names(), self.observer
        world: dict[str, Any] = {'people': list(o.people), 'clutter': o.clutter} if o.people or o.clutter else {}
        scene = self.sim.call(RESET, ResetRequest(seed=seed, **world))
        reset_s = scene.now_s
        if not self._wait_sim(lambda: lead.now() > reset_s + NEW_SCENE_SETTLE_S, 20.0, 'frames of the new scene'):
            raise RuntimeError(f'simulated time did not pass the reset of seed {seed}:\n' + self.logs())
        if not self._wait_sim(lambda: all(obs.clocks_after(STACK_NODES, reset_s) for obs in self.observers), 20.0,
                              "the nodes' clocks"):
            raise RuntimeError("the nodes are not on the simulated clock "
                               f"({[obs.clocks for obs in self.observers]}):\n" + self.logs())
        tasks = []
        for name, obs in zip(names, self.observers, strict=True):
            reply = obs.set_task(scene.instruction)
            if not reply.accepted:
                raise RuntimeError(f'{name}: set_task refused the instruction: {reply.message}')
            tasks.append((reply.task_id, obs.now()))
        budget = BUDGET_MIN_S + BUDGET_S_PER_M * max(r.shortest_path_m for r in scene.robots)
        started_s = min(t for _, t in tasks)

        def all_ended() -> bool:
            return all(task_end(obs, task_id) is not None
                       for obs, (task_id, _) in zip(self.observers, tasks, strict=True))

        self._wait_sim(all_ended, budget, 'the tasks')
        ends = [task_end(obs, task_id) for obs, (task_id, _) in zip(self.observers, tasks, strict=True)]
        for obs, end in zip(self.observers, ends, strict=True):
            if end is None:
                obs.stop_task()
        self._wait_sim(lambda: False, SETTLE_S, 'the robots to settle')
        records = []
        for i, (name, obs, (task_id, task_s), end) in enumerate(
                zip(names, self.observers, tasks, ends, strict=True)):
            end_state, end_reason, ended_s = end if end is not None else (
                'timeout', f'no end in {budget:.0f} s', started_s + budget)
            episode = self.sim.episode(timeout_s=30.0, robot=name)
            start = scene.robots[i]
            others = {other for other, _ in tasks} - {task_id}
            with obs.lock:
                plans = [p for p in obs.heard.plans if p.task_id == task_id]
                # nothing of another robot may reach this one: its plans, or its task's states
                cross_talk = (sum(1 for p in obs.heard.plans if p.task_id in others)
                              + sum(1 for _, status in obs.heard.statuses if status.task_id in others))
            records.append(EpisodeRecord(
                seed=seed, instruction=scene.instruction, language=scene.language, kind=scene.kind,
                route_length_m=start.route_length_m, shortest_path_m=start.shortest_path_m, goal=list(start.goal),
                task_started_s=task_s, task_ended_s=ended_s, end_state=end_state, end_reason=end_reason,
                trajectory=episode.trajectory, commands=episode.commands, plans=plans,
                collisions=episode.collisions, min_clearance_m=episode.min_clearance_m,
                answers=[a.model_dump() for a in episode.answers], real_time_factor=episode.real_time_factor,
                # each robot's own contacts with people (the people meet every robot); their tracks once
                person_collisions=episode.person_collisions, min_clearance_people_m=episode.min_clearance_people_m,
                people_tracks=episode.people_tracks if i == 0 else [], robot=name, robot_index=i,
                fleet_size=len(names), robot_collisions=episode.robot_collisions, cross_talk=cross_talk,
                clutter_placed=scene.clutter))
        return records
