"""Task lifecycle, counters and bounded history of the inference node. No ROS, no threads: the node
serialises access (one lock around every change and every plan publication, so that no plan of an old
task can be published after a switch).

States: idle (no task yet), loading (the model is loading), active (plans are being made), stopped (by
the user, or the model said the goal is reached), failed (failure_threshold answers in a row failed; the
node keeps trying and a good answer makes the task active again).
"""
from __future__ import annotations

import enum
import itertools
import math
import uuid
from collections import deque
from dataclasses import dataclass, field

from vln_ros.core.prompts import Step, blocked_step

MAX_INSTRUCTION_CHARS = 2000


class State(enum.IntEnum):  # values are TaskStatus.msg's STATE_* constants
    IDLE = 0
    LOADING = 1
    ACTIVE = 2
    STOPPED = 3
    FAILED = 4


class TaskRejected(ValueError):
    """An instruction that cannot become a task (empty, too long)."""


@dataclass
class Counters:
    keyframes_received: int = 0
    keyframes_processed: int = 0
    keyframes_dropped: int = 0     # replaced in the latest-wins slot before inference took them
    plans_published: int = 0
    parse_failures: int = 0
    backend_failures: int = 0
    consecutive_failures: int = 0
    consecutive_arrived: int = 0   # 'arrived' answers in a row, towards arrived_confirmations
    last_latency_s: float = 0.0
    last_error: str = ''


@dataclass
class Task:
    task_id: str
    instruction: str
    history: deque[Step]
    counters: Counters = field(default_factory=Counters)


class BlockedWatch:
    """The collision guard's holds, from its status messages: one 'blocked' step per hold longer than after_s.

    A hold is a run of status messages that stop the robot for an obstacle (a finite distance; a fault
    stop, such as a silent sensor, says nothing about the way ahead). Its length is measured from the first
    to the newest such message (the guard republishes its status at least every second), so a guard that
    goes quiet never makes a hold grow. after_s 0: never."""

    def __init__(self, after_s: float) -> None:
        if not after_s >= 0.0:
            raise ValueError(f'after_s must be >= 0, got {after_s}')
        self.after_s = after_s
        self._since_s: float | None = None
        self._told = False

    def reset(self) -> None:
        self._since_s, self._told = None, False

    def update(self, action: str, nearest_m: float, bearing_rad: float, now_s: float) -> Step | None:
        """A guard status at now_s; the step to record when this hold has just passed after_s."""
        if action != 'stop' or not math.isfinite(nearest_m):
            self.reset()
            return None
        if self._since_s is None or now_s < self._since_s:   # a new hold (or the clock went back)
            self._since_s, self._told = now_s, False
        held_s = now_s - self._since_s
        if self._told or self.after_s <= 0.0 or held_s < self.after_s:
            return None
        self._told = True
        return blocked_step(held_s, nearest_m, bearing_rad)


class TaskManager:
    def __init__(self, history_max: int, failure_threshold: int, arrived_confirmations: int = 1,
                 blocked_after_s: float = 0.0) -> None:
        self.history_max = history_max
        self.failure_threshold = failure_threshold
        self.arrived_confirmations = arrived_confirmations
        self.state = State.IDLE
        self.reason = ''                   # why the state is what it is, for humans
        self.task: Task | None = None
        self._serial = itertools.count(1)
        self._run = uuid.uuid4().hex[:6]   # task ids stay unique across node restarts
        self.blocked = BlockedWatch(blocked_after_s)

    def loading(self, done: bool) -> None:
        self.state, self.reason = (State.IDLE, 'model loaded') if done else (State.LOADING, 'loading the model')

    def start(self, instruction: str) -> Task:
        instruction = instruction.strip() if isinstance(instruction, str) else ''
        if not instruction:
            raise TaskRejected('empty instruction')
        if len(instruction) > MAX_INSTRUCTION_CHARS:
            raise TaskRejected(f'instruction of {len(instruction)} characters (most: {MAX_INSTRUCTION_CHARS})')
        if self.state == State.LOADING:
            raise TaskRejected('the model is still loading')
        self.task = Task(f'task-{next(self._serial)}-{self._run}', instruction, deque(maxlen=self.history_max))
        self.blocked.reset()   # a hold before this task is not this task's history
        self.state, self.reason = State.ACTIVE, 'new task'
        return self.task

    def stop(self, reason: str) -> bool:
        """False when there is no active (or failing) task to stop."""
        if self.state not in (State.ACTIVE, State.FAILED):
            return False
        self.state, self.reason = State.STOPPED, reason
        return True

    @property
    def running(self) -> bool:
        """Plans are wanted: a task is active (or failing and retrying)."""
        return self.state in (State.ACTIVE, State.FAILED)

    def is_current(self, task_id: str) -> bool:
        return self.running and self.task is not None and self.task.task_id == task_id

    def succeeded(self, step: Step, latency_s: float, arrived: bool) -> bool:
        """A good answer. True when it ends the task: 'arrived' for the arrived_confirmations-th time in a row
        (one premature 'arrived' then only halts the robot until the next answer)."""
        assert self.task is not None
        c = self.task.counters
        c.plans_published += 1
        c.consecutive_failures = 0
        c.last_latency_s = latency_s
        c.consecutive_arrived = c.consecutive_arrived + 1 if arrived else 0
        self.task.history.append(step)
        if arrived and c.consecutive_arrived >= self.arrived_confirmations:
            self.state, self.reason = State.STOPPED, 'goal reached (the model answered arrived)'
            return True
        if self.state == State.FAILED:
            self.state, self.reason = State.ACTIVE, 'recovered'
        return False

    def failed(self, kind: str, error: str, latency_s: float) -> None:
        """A failed answer (kind: parse or backend); a stop plan is published for it."""
        assert self.task is not None
        c = self.task.counters
        c.plans_published += 1
        c.consecutive_failures += 1
        c.consecutive_arrived = 0     # confirmations are answers in a row
        c.last_latency_s = latency_s
        c.last_error = error
        if kind == 'parse':
            c.parse_failures += 1
        else:
            c.backend_failures += 1
        if c.consecutive_failures >= self.failure_threshold and self.state == State.ACTIVE:
            self.state, self.reason = State.FAILED, f'{c.consecutive_failures} failed answers in a row'

    def guard_status(self, action: str, nearest_m: float, bearing_rad: float, now_s: float) -> Step | None:
        """The collision guard's status: a hold longer than blocked_after_s becomes one history step of the
        running task (returned; None otherwise)."""
        if not self.running or self.task is None:
            self.blocked.reset()
            return None
        step = self.blocked.update(action, nearest_m, bearing_rad, now_s)
        if step is not None:
            self.task.history.append(step)
        return step

    def history(self) -> list[Step]:
        return list(self.task.history) if self.task else []
