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
import uuid
from collections import deque
from dataclasses import dataclass, field

from vln_ros.core.prompts import Step

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


class TaskManager:
    def __init__(self, history_max: int, failure_threshold: int, arrived_confirmations: int = 1) -> None:
        self.history_max = history_max
        self.failure_threshold = failure_threshold
        self.arrived_confirmations = arrived_confirmations
        self.state = State.IDLE
        self.reason = ''                   # why the state is what it is, for humans
        self.task: Task | None = None
        self._serial = itertools.count(1)
        self._run = uuid.uuid4().hex[:6]   # task ids stay unique across node restarts

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

    def history(self) -> list[Step]:
        return list(self.task.history) if self.task else []
