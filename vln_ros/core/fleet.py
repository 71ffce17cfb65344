"""One inference server, several robots: what inference_node needs beyond one InferencePipeline per robot. No ROS.

With the parameter `robots` the node runs one InferencePipeline per robot namespace (its own task, history,
counters, latest-wins slot, worker thread) and all of them ask one backend: `SharedBackend` loads it once and
hands each robot its own client (Backend.client: the same engine, which batches the robots' requests, but
each client's cancel() aborts only its own robot's request). `Fleet` routes the task services to a robot's
pipeline and applies the cap on robots with a running task (max_active_robots): a new task over the cap is
refused, and the reply and that robot's latched task status say why, unless a robot with a running task has
been silent (no keyframe) for idle_release_s: that task is stopped, saying why, and the place is given.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence

from vln_ros.core.backends.base import Backend, NotShareable
from vln_ros.core.backends.lmdeploy_pipeline import LmdeployParams
from vln_ros.core.config import InferenceParams
from vln_ros.core.inference import InferencePipeline, TaskReply


def capacity_refusal(robot: str, active: Sequence[str], max_active_robots: int) -> str | None:
    """Why a new task on `robot` is refused, or None. `active`: the robots with a running task now. A robot
    that already runs one may switch tasks (it holds its place); 0 = no cap."""
    if max_active_robots == 0 or robot in active or len(active) < max_active_robots:
        return None
    return (f'server at capacity: {len(active)} of {max_active_robots} robots have active tasks '
            f'({", ".join(active)})')


def fleet_engine_params(params: InferenceParams, robots: int) -> tuple[InferenceParams, str]:
    """The backend's settings for `robots` robots sharing it, and a line for the log when they differ from the
    parameters. Each robot has at most one request in flight (its worker asks again only once answered), so an
    in-process engine needs a batch slot per robot: with fewer (config/vln.yaml's lmdeploy.max_batch_size 4 is
    sized for one robot) the rest queue behind whole answers. The fleet bench batched 32 robots in 64 slots with
    no robot waiting for one (docs/gpu_latency.md), so a smaller batch size is raised to the robot count."""
    engine = params.backend_params()
    if robots < 2 or not isinstance(engine, LmdeployParams) or engine.max_batch_size >= robots:
        return params, ''
    raised = params.model_copy(update={'lmdeploy': engine.model_copy(update={'max_batch_size': robots})})
    return raised, (f'lmdeploy.max_batch_size {engine.max_batch_size} raised to {robots}: a batch slot per robot '
                    '(each has at most one request in flight)')


class SharedBackend:
    """One backend for all robots, loaded on the first robot's request for it (on the main thread: lmdeploy
    installs signal handlers), then a client per robot. With one robot the backend itself serves it (any
    backend will do), through a client of its own when that robot is named and the backend can make one (the
    oracle answers a named robot from that robot's ground truth); with more, a backend that cannot be shared
    raises NotShareable at start-up."""

    def __init__(self, factory: Callable[[InferenceParams], Backend], robots: int) -> None:
        self._factory = factory
        self._robots = robots
        self.backend: Backend | None = None
        self._shared = robots > 1   # clients were handed out: the pipelines' release() leaves the model to us

    def client(self, params: InferenceParams, robot: str = '') -> Backend:
        """The backend for one robot's pipeline (robot: its namespace)."""
        if self.backend is None:
            self.backend = self._factory(fleet_engine_params(params, self._robots)[0])
        if self._robots > 1:
            return self.backend.client(robot)
        if robot:   # robots: [r2] alone: without its own client, the oracle answered from the first robot's truth
            try:
                client = self.backend.client(robot)
            except NotShareable:   # a recording serves one robot as it is
                return self.backend
            self._shared = True
            return client
        return self.backend

    def close(self) -> None:
        """After every pipeline's release(): clients leave the shared model alone, so close it here (a pipeline
        served by the backend itself closed it)."""
        if self.backend is not None and self._shared:
            self.backend.close()


class Fleet:
    """The robots' pipelines by namespace, and the cap on robots with a running task."""

    def __init__(self, pipelines: Mapping[str, InferencePipeline], max_active_robots: int,
                 idle_release_s: float = 0.0, log: Callable[[str], object] = lambda _line: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """idle_release_s: 0 = a place is held until the task ends. log: a warning line when a place is released.
        clock: time.monotonic (the pipelines' clock), or a test's."""
        self.pipelines = dict(pipelines)
        self.max_active_robots = max_active_robots
        self.idle_release_s = idle_release_s
        self._log, self._clock = log, clock
        # Held from the count to the start, so that two robots asking at once cannot both take the last place.
        self._admit = threading.Lock()

    def active(self) -> list[str]:
        return [robot for robot, pipeline in self.pipelines.items() if pipeline.running]

    def set_task(self, robot: str, instruction: str) -> TaskReply:
        pipeline = self.pipelines[robot]
        with self._admit:
            refusal = capacity_refusal(robot, self.active(), self.max_active_robots)
            if refusal is not None and self.idle_release_s > 0:
                self._release_silent_robot(robot)
                # counted again: a place may also have freed by itself meanwhile (a task arrived, or was stopped)
                refusal = capacity_refusal(robot, self.active(), self.max_active_robots)
            if refusal is not None:
                return pipeline.refuse_task(refusal)
            return pipeline.set_task(instruction)

    def _release_silent_robot(self, asker: str) -> None:
        """At the cap: stop the task of the robot silent longest, if for idle_release_s or more, so that `asker`
        gets its place. A robot whose camera or link is gone would otherwise hold it until someone stops it."""
        now_s = self._clock()
        silent = [(pipeline.silent_for(now_s), robot) for robot, pipeline in self.pipelines.items()
                  if robot != asker and pipeline.running]
        seconds, robot = max(silent, default=(0.0, ''))
        if seconds < self.idle_release_s:
            return
        reason = f'released after {seconds:.0f} s without a keyframe: its place on the server went to {asker}'
        if self.pipelines[robot].stop_task(reason)[0]:   # else its task ended meanwhile
            self._log(f'{robot}: {reason}')
