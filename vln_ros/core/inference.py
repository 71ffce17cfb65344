"""The inference pipeline: the newest keyframe + the task's instruction and history -> the VLM -> a plan. No ROS.

The node hands keyframes to `receive` (never blocks: a size-1 latest-wins slot; keyframes that arrive while
the model is busy replace each other and are counted as dropped) and runs `work_once` in a loop on its
worker thread: ask for a keyframe when free (model-paced keyframes, below), take the newest keyframe,
check it (stale, not JPEG, implausible declared size), build the prompt, call the backend on a one-thread
pool (so a hung backend costs a timeout, not the worker), parse the answer, apply the task rules, publish.

One lock guards the task manager and every publication: `publish_plan` and `publish_status` are called
with it held, so a task switch or stop and a plan of the old task can never interleave: once `set_task`
or `stop_task` returns, no plan of the old task is published. Every failure (backend error, timeout,
unparsable answer, a bug) publishes a stop plan; a cancelled answer (only a switch, stop or shutdown
cancels, and each publishes its own stop plan) publishes nothing.

Model-paced keyframes (the protocol's rules: core/keyframe_request): whenever the worker is free with a task
running and no keyframe waiting, it asks for one (`request_keyframe`, a KeyframeRequest on
vln/keyframe_request), and camera_node answers with one keyframe. A camera that does not answer requests (an
older one, a bag of keyframes) still works: its keyframes arrive unasked and the slot hands over the newest.

Plans from the stream: a backend that streams hands each piece of the answer over (Request.on_chunk), and the
plan is published as soon as the rest of the answer cannot change it (parser.StreamParser: under guided decoding
once its waypoints are complete, ParserParams.answer_order plan_first asking for act and wp before env; else
once its object has closed), under the same lock and task check as any plan. The whole answer
then completes the task's history; if it does not parse, or names another plan, that is published after it.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import dataclasses
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vln_ros.core import images
from vln_ros.core.backends.base import (
    Answer,
    AnswerRecord,
    AnswerRecorder,
    Backend,
    BackendError,
    Request,
)
from vln_ros.core.config import InferenceParams
from vln_ros.core.control import Waypoint
from vln_ros.core.keyframe_request import KeyframeAsk, KeyframeAsker
from vln_ros.core.latest import LatestSlot
from vln_ros.core.parser import ParsedAnswer, StreamParser, parse_answer
from vln_ros.core.prompts import STOP_ACTION, PromptBuilder, Step
from vln_ros.core.stats import EventCounters, LatencyWindow, NumberWindow, Throttle
from vln_ros.core.tasks import Counters, State, TaskManager, TaskRejected

# After a timeout the cancelled request gets this long to end before the next one may start.
CANCEL_GRACE_S = 2.0
RECANCEL_S = 0.05        # a request of an old task is cancelled again this often until it ends (see _call_backend)
LOG_THROTTLE_S = 5.0
# Counters that /diagnostics always shows (0 until they happen), and the families shown once they occur.
DIAGNOSTIC_COUNTERS = ('keyframes_received', 'keyframes_dropped', 'keyframes_stale', 'keyframes_not_jpeg',
                       'keyframe_requests', 'requests', 'plans_published', 'stop_plans_published',
                       'answers_discarded_old_task', 'tasks_started', 'internal_errors')
DIAGNOSTIC_FAMILIES = ('parse_failures_', 'backend_failures_', 'answers_', 'keyframes_rejected_')


def state_name(state: State) -> str:
    return state.name.lower()


class Level(enum.Enum):
    """How healthy the pipeline is (the node maps it to diagnostic_msgs' levels)."""
    OK = 'ok'
    WARN = 'warn'
    ERROR = 'error'


class Log(Protocol):
    """What the pipeline logs through (rclpy's logger, or `logging`): one call site per severity."""

    def info(self, message: str) -> object: ...

    def warning(self, message: str) -> object: ...

    def error(self, message: str) -> object: ...


class BackendOutage:
    """Failed requests in a row are one outage in the log (a server down, restarting, or too slow for
    inference_timeout_s): a warning at the first, one line when an answer comes again (how many failed, for how
    long), and a reminder every reminder_s while it lasts; not a line per failed request, which a robot whose
    keyframes keep coming would make several times a second. Each failure is still counted
    (backend_failures_<reason>) and answered by a stop plan. A fleet's pipelines share one (they share the
    server), so a server restart under N robots is one warning and one recovery line, not N of each. Outages
    that begin within gap_s of the last one logged are counted, not logged: one robot whose every request fails
    (its own bad input) between others' answers must not log each failure as a new outage.
    Thread-safe: the robots' worker threads report to it."""

    def __init__(self, reminder_s: float = 60.0, gap_s: float = LOG_THROTTLE_S) -> None:
        self.reminder_s, self.gap_s = reminder_s, gap_s
        self._lock = threading.Lock()
        self._started_s: float | None = None   # time.monotonic() of the outage's first failure; None: no outage
        self._reminded_s = 0.0
        self._logged = False                   # this outage's start was logged (so its end is too)
        self._logged_s: float | None = None    # when the last outage's start was logged
        self.failures = 0                      # failed requests of the outage so far

    def failed(self, error: BackendError, now_s: float, log: Log) -> None:
        with self._lock:
            self.failures += 1
            if self._started_s is None:
                self._started_s = self._reminded_s = now_s
                self._logged = self._logged_s is None or not 0.0 <= now_s - self._logged_s < self.gap_s
                if self._logged:
                    self._logged_s = now_s
                    log.warning(f'backend failed ({error}): stop plan')
            elif now_s - self._reminded_s >= self.reminder_s:
                self._reminded_s = now_s
                log.warning(f'backend still failing: {self.failures} failed requests in '
                            f'{now_s - self._started_s:.0f} s, the last ({error}); robots stop until it answers')

    def answered(self, now_s: float, log: Log) -> None:
        with self._lock:
            if self._started_s is None:
                return
            if self._logged:
                log.info(f'backend answers again after {self.failures} failed requests in '
                         f'{now_s - self._started_s:.1f} s')
            self._started_s, self.failures = None, 0


@dataclass(frozen=True)
class Keyframe:
    jpeg: bytes            # as camera_node sent it (checked here before anything decodes it)
    stamp_ns: int          # capture time, ROS clock
    received_s: float      # time.perf_counter() when the node received it
    frame_id: str = ''     # the camera's frame (the debug image keeps it)
    format: str = ''       # CompressedImage.format, for the log when it is not JPEG after all


@dataclass(frozen=True)
class PlanOut:
    """One plan to publish (a WaypointArray); stop plans have no waypoints and latency 0 unless they answer
    a keyframe."""
    stamp_ns: int          # the keyframe's capture time; for a switch or stop plan, the time it was made
    task_id: str
    instruction: str
    environment: str
    action: str
    stop: bool
    waypoints: tuple[Waypoint, ...]
    latency_s: float       # keyframe received -> plan made
    model: str
    from_stream: bool = False  # published from the answer's stream, before the whole answer was in


@dataclass(frozen=True)
class StatusOut:
    """The task status to publish (a TaskStatus); counters are a copy taken under the lock."""
    state: State
    reason: str
    task_id: str
    instruction: str
    counters: Counters


@dataclass(frozen=True)
class TaskReply:
    accepted: bool
    task_id: str
    message: str


@dataclass(frozen=True)
class Answered:
    """What `work_once` published for a keyframe (for the node's debug image)."""
    keyframe: Keyframe
    plan: PlanOut
    latency_s: float


@dataclass(frozen=True)
class Health:
    """What /diagnostics says: a level, one line for humans, and the values (names carry their units)."""
    level: Level
    message: str
    values: dict[str, object]


def _in_daemon_thread(call: Callable[[Request], Answer], request: Request) -> concurrent.futures.Future[Answer]:
    """call(request) on a daemon thread of its own, as a future. Not a ThreadPoolExecutor: Python joins a pool's
    threads at exit, so a backend deaf to the cancel (a request queued in a saturated engine) held the process
    after the node was destroyed, past the runner's stop deadline (which is off by then), for the rest of its
    request (60 s in a test). The pipeline starts a request only once the one before has ended (_call_backend)."""
    future: concurrent.futures.Future[Answer] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(call(request))
        except BaseException as exc:  # noqa: BLE001 - the caller reads it from the future
            future.set_exception(exc)

    threading.Thread(target=run, name='inference_backend', daemon=True).start()
    return future


class InferencePipeline:
    def __init__(self, params: InferenceParams, publish_plan: Callable[[PlanOut], None],
                 publish_status: Callable[[StatusOut], None], clock_ns: Callable[[], int], log: Log,
                 request_keyframe: Callable[[KeyframeAsk], None] | None = None,
                 outage: BackendOutage | None = None) -> None:
        """publish_plan/publish_status: called with the pipeline's lock held (keep them short, never block).
        clock_ns: the ROS clock (keyframe ages, stamps of stop plans). request_keyframe: publishes a keyframe
        request (model-paced keyframes; None: keyframes come unasked); called from the worker thread.
        outage: what logs the backend's failures (a fleet's pipelines share one; None: one of its own)."""
        self.params = params
        self._publish_plan_cb, self._publish_status_cb = publish_plan, publish_status
        self._clock_ns, self._log = clock_ns, log
        self._lock = threading.RLock()
        self._tasks = TaskManager(params.history_max, params.failure_threshold, params.arrived_confirmations,
                                  params.history_blocked_after_s)
        self._prompts = PromptBuilder(params.parser, params.history_steps)
        self._slot: LatestSlot[Keyframe] = LatestSlot()
        self._wake = threading.Event()       # set when a task starts or the pipeline closes
        self.counters = EventCounters(time.monotonic())
        self._latency = LatencyWindow()      # keyframe received -> plan published
        self._backend_time = LatencyWindow()
        self._first_token = LatencyWindow()
        self._wait = LatencyWindow()         # received -> taken by the worker (it was busy with the last one)
        self._overhead = LatencyWindow()     # ours: taken -> backend called, plus returned -> published
        self._keyframe_age = LatencyWindow()  # capture stamp -> plan published
        self._age_at_model = LatencyWindow()  # capture stamp -> the worker took it (the model starts on it)
        self._request_keyframe = request_keyframe
        self._asker = KeyframeAsker()
        self._output_tokens = NumberWindow()
        self._throttles = {name: Throttle() for name in ('stale', 'not_jpeg', 'rejected', 'parse', 'internal')}
        self._outage = outage if outage is not None else BackendOutage()
        self._pending: concurrent.futures.Future[Answer] | None = None
        self._stuck_on: concurrent.futures.Future[Answer] | None = None   # a cancelled request that did not end
        self._woken: threading.Event | None = None   # the request in flight's wait: its end, or a cancel
        self._backend: Backend | None = None
        self._recorder: AnswerRecorder | None = None
        self.load_time_s = 0.0
        # The last keyframe, task start or request's end, and whether a request is on the server: what a fleet's
        # idle release reads (silent_for).
        self._heard_s = time.monotonic()
        self._in_request = False

    def load(self, backend_factory: Callable[[InferenceParams], Backend]) -> None:
        """Create (for lmdeploy: load) the backend; the status says `loading` meanwhile, then `idle`. Call on
        the main thread: lmdeploy installs signal handlers and spawns processes."""
        with self._lock:
            self._tasks.loading(done=False)
            self._publish_status()
        started = time.monotonic()
        self._backend = backend_factory(self.params)
        self.load_time_s = time.monotonic() - started
        if self.params.record_file:
            self._recorder = AnswerRecorder(self.params.record_file)
        with self._lock:
            self._tasks.loading(done=True)
            self._publish_status()
        self._ask(self._asker.loaded())  # tells a camera_node that a model paces its keyframes

    @property
    def model_name(self) -> str:
        return self._backend.model_name if self._backend is not None else ''

    @property
    def closed(self) -> bool:
        return self._slot.closed

    @property
    def running(self) -> bool:
        """A task is running (what the fleet's cap on active robots counts)."""
        with self._lock:
            return self._tasks.running

    def set_params(self, params: InferenceParams) -> None:
        """A live change: prompt limits and history take effect with the next prompt, the failure threshold at
        once; everything else is read once per keyframe."""
        with self._lock:
            self._prompts = PromptBuilder(params.parser, params.history_steps)
            self._tasks.failure_threshold = params.failure_threshold
            self._tasks.arrived_confirmations = params.arrived_confirmations
            self._tasks.blocked.after_s = params.history_blocked_after_s
            self.params = params

    # -- the node's callbacks: never wait on the model ---------------------------------------------
    def silent_for(self, now_s: float) -> float:
        """Seconds since the last keyframe, task start or request's end, whichever was later; now_s:
        time.monotonic(). 0 while a request is on the server: then the wait is on the server, not the robot."""
        if self._in_request:
            return 0.0
        return now_s - self._heard_s

    def receive(self, keyframe: Keyframe) -> None:
        self._heard_s = time.monotonic()
        self.counters.add('keyframes_received')
        with self._lock:
            if self._tasks.running and self._tasks.task is not None:
                self._tasks.task.counters.keyframes_received += 1
        if self._slot.put(keyframe):
            self.counters.add('keyframes_dropped')
            with self._lock:
                if self._tasks.running and self._tasks.task is not None:
                    self._tasks.task.counters.keyframes_dropped += 1

    def guard_status(self, action: str, nearest_m: float, bearing_rad: float, now_s: float) -> Step | None:
        """The collision guard's status (vln/guard_status): a hold longer than history_blocked_after_s goes into
        the running task's history, so the next prompt tells the model (returned: the step, for a log line)."""
        with self._lock:
            return self._tasks.guard_status(action, nearest_m, bearing_rad, now_s)

    def set_task(self, instruction: str) -> TaskReply:
        """Start (or switch to) a task: history cleared, the old task's in-flight answer aborted and never
        published, a stop plan at once (the old plan must not be followed while the new one is made)."""
        with self._lock:
            try:
                task = self._tasks.start(instruction)
            except TaskRejected as exc:
                self.counters.add('tasks_rejected')
                return TaskReply(False, '', f'rejected: {exc}')
            self.counters.add('tasks_started')
            self._heard_s = time.monotonic()
            self._asker.task_started()
            self._cancel_backend()
            self._publish_stop('new_task', f'new task: {task.instruction[:80]}')
            self._publish_status()
        self._wake.set()
        return TaskReply(True, task.task_id, f'task started: {task.instruction!r}')

    def refuse_task(self, reason: str) -> TaskReply:
        """A new task refused from outside the pipeline (a fleet's cap): nothing changes but the status's reason,
        published at once (latched), so the robot's operator sees why rather than silence."""
        with self._lock:
            self.counters.add('tasks_rejected')
            self._tasks.reason = reason
            self._publish_status()
        return TaskReply(False, '', f'rejected: {reason}')

    def stop_task(self, reason: str) -> tuple[bool, str]:
        with self._lock:
            task = self._tasks.task
            if not self._tasks.stop(reason):
                return False, f'no running task to stop (state {state_name(self._tasks.state)})'
            self._cancel_backend()
            self._publish_stop(STOP_ACTION, reason)
            self._publish_status()
        return True, f'task {task.task_id if task else ""} stopped'

    # -- the worker thread ---------------------------------------------------------------------------
    def work_once(self, timeout_s: float = 0.5) -> Answered | None:
        """Wait up to timeout_s for a running task and a keyframe, and answer it. Never raises: a bug ends in
        a counted internal error and a stop plan."""
        with self._lock:
            running = self._tasks.running
        if not running:
            self._ask(self._asker.idle())
            self._wake.wait(timeout_s)
            self._wake.clear()
            return None
        keyframe = self._slot.take(timeout_s=0.0)
        if keyframe is None:  # free and nothing waiting: ask for a fresh one
            self._ask(self._asker.free(time.monotonic()))
            keyframe = self._slot.take(timeout_s=timeout_s)
            if keyframe is None:
                return None
        self._asker.keyframe_taken()
        self._age_at_model.add((self._clock_ns() - keyframe.stamp_ns) * 1e-9)
        try:
            return self.infer(keyframe, time.perf_counter())
        except Exception as exc:  # the worker must outlive any bug; the robot gets a stop plan
            self.counters.add('internal_errors')
            if self._throttles['internal'].ready(time.monotonic(), LOG_THROTTLE_S):
                self._log.error(f'inference step failed: {exc!r}')
            with self._lock:
                if self._tasks.running and not self.closed:
                    self._publish_stop(STOP_ACTION, f'internal error: {exc!r:.80}')
            return None

    def _ask(self, ask: KeyframeAsk | None) -> None:
        """Publish what the asker says, if anything (and if a camera listens: request_keyframe given)."""
        if ask is None or self._request_keyframe is None or self.closed:
            return
        if ask.wanted:
            self.counters.add('keyframe_requests')
        self._request_keyframe(ask)

    def infer(self, keyframe: Keyframe, taken_s: float) -> Answered | None:
        """One keyframe taken from the slot at taken_s (perf_counter) -> the plan published, or None (skipped,
        cancelled, or its task is no longer current)."""
        p = self.params
        if not self._acceptable(keyframe):
            return None
        with self._lock:
            task = self._tasks.task
            if task is None or not self._tasks.running:
                return None
            task_id, instruction = task.task_id, task.instruction
            prompt = self._prompts.build(instruction, task.history)
            task.counters.keyframes_processed += 1
        stream = StreamParser(p.parser, guided=p.guided_json)  # reads each piece once
        early: list[PlanOut] = []  # the plan published from the stream, if it was

        def on_chunk(piece: str, _tokens: int) -> None:  # the backend's thread
            if early:
                return
            parsed = stream.feed(piece)
            if parsed is None:
                return
            with self._lock:
                if self._tasks.is_current(task_id) and not self.closed:
                    early.append(PlanOut(keyframe.stamp_ns, task_id, instruction, parsed.environment, parsed.action,
                                         False, parsed.waypoints, time.perf_counter() - keyframe.received_s,
                                         self.model_name, from_stream=True))
                    self._publish_plan(early[0])
                    self.counters.add('plans_from_stream')

        request = Request(keyframe.jpeg, keyframe.stamp_ns, prompt, p.max_new_tokens, p.guided_json,
                          p.image_max_pixels, on_chunk=on_chunk, timeout_s=p.inference_timeout_s)
        self.counters.add('requests')
        called = time.perf_counter()
        answer, error = self._call_backend(request, task_id)
        returned = time.perf_counter()

        parsed = parse_answer(answer.text, p.parser) if answer is not None else None
        with self._lock:
            if self.closed:   # shutting down: the node's publishers may be gone already; counted, not published
                if error is not None:
                    self.counters.add('backend_failures_' + error.reason)
                plan = None
            elif not self._tasks.is_current(task_id):
                self.counters.add('answers_discarded_old_task')
                plan = None
            else:
                plan = self._publish_result(keyframe, task_id, instruction, answer, error, parsed,
                                            early[0] if early else None)
        done = time.perf_counter()
        # When the plan went out from the stream, that is when it was published.
        latency = plan.latency_s if plan is not None and plan.from_stream else done - keyframe.received_s
        self._record(request, task_id, instruction, answer, error, returned - called)
        if plan is None:
            return None
        self._overhead.add(called - taken_s + (done - returned))
        self._wait.add(taken_s - keyframe.received_s)
        self._latency.add(latency)
        self._keyframe_age.add((self._clock_ns() - keyframe.stamp_ns) * 1e-9 - (done - keyframe.received_s - latency))
        self._backend_time.add(returned - called)
        if answer is not None:
            if answer.first_token_s is not None:
                self._first_token.add(answer.first_token_s)
            if answer.output_tokens is not None:
                self._output_tokens.add(answer.output_tokens)
        return Answered(keyframe, plan, latency)

    def _acceptable(self, keyframe: Keyframe) -> bool:
        """Stale, non-JPEG and implausibly large keyframes are counted and skipped."""
        age_s = (self._clock_ns() - keyframe.stamp_ns) * 1e-9
        if age_s > self.params.keyframe_max_age_s:
            self.counters.add('keyframes_stale')
            if self._throttles['stale'].ready(time.monotonic(), LOG_THROTTLE_S):
                self._log.warning(f'skipped a keyframe {age_s:.1f} s old (keyframe_max_age_s '
                                  f'{self.params.keyframe_max_age_s})')
            return False
        if keyframe.jpeg[:2] != b'\xff\xd8':  # the backends send it on as image/jpeg
            self.counters.add('keyframes_not_jpeg')
            if self._throttles['not_jpeg'].ready(time.monotonic(), LOG_THROTTLE_S):
                self._log.warning(f'skipped a keyframe that is not JPEG (format {keyframe.format!r})')
            return False
        try:  # before any decoder (the backend's, the debug image's) allocates what the header claims
            images.check_declared_size(keyframe.jpeg)
        except images.ImageRejected as exc:
            self.counters.add('keyframes_rejected_' + exc.reason)
            if self._throttles['rejected'].ready(time.monotonic(), LOG_THROTTLE_S):
                self._log.warning(f'skipped a keyframe: {exc}')
            return False
        return True

    def _call_backend(self, request: Request, task_id: str) -> tuple[Answer | None, BackendError | None]:
        """The backend's answer, or the error; bounded by inference_timeout_s whatever the backend does."""
        self._in_request = True
        try:
            return self._call_backend_bounded(request, task_id)
        finally:
            # The wait was on the server: the robot's silence (silent_for) counts from the request's end.
            self._heard_s = time.monotonic()
            self._in_request = False

    def _call_backend_bounded(self, request: Request, task_id: str) -> tuple[Answer | None, BackendError | None]:
        assert self._backend is not None, 'load() first'
        if self._pending is not None and not self._pending.done():  # a cancelled request still winding down
            try:
                self._pending.result(timeout=CANCEL_GRACE_S)
            except Exception:  # its outcome no longer matters; only that it ended
                pass
            if not self._pending.done():
                self.counters.add('backend_stuck')
                self._stuck_on = self._pending
                return None, BackendError('stuck', 'the previous, cancelled request has not ended')
        pending = self._pending = _in_daemon_thread(self._backend.generate, request)
        woken = threading.Event()
        pending.add_done_callback(lambda _done: woken.set())
        with self._lock:
            self._woken = woken   # a task switch, a stop or close sets it (_cancel_backend)
            superseded = self.closed or not self._tasks.is_current(task_id)
        timeout_s = self.params.inference_timeout_s
        deadline = time.monotonic() + timeout_s
        if not superseded and not woken.wait(timeout_s):
            self._backend.cancel()
            return None, BackendError('timeout', f'no answer within inference_timeout_s ({timeout_s} s)')
        # Ended, or its task is over. A cancel that came while the backend did not yet have the request (between
        # the prompt and generate's start) did nothing, and the old task's request would run to its end, holding
        # its batch slot while the robot waits for the new task: so cancel again until it ends.
        while not pending.done() and time.monotonic() < deadline:
            self._backend.cancel()
            with contextlib.suppress(Exception):   # its outcome is read below
                pending.result(timeout=min(RECANCEL_S, max(0.0, deadline - time.monotonic())))
        try:
            return pending.result(timeout=0.0), None
        except concurrent.futures.TimeoutError:
            self._backend.cancel()
            return None, BackendError('timeout', f'no answer within inference_timeout_s ({timeout_s} s)')
        except BackendError as exc:
            return None, exc
        except Exception as exc:  # torch.OutOfMemoryError, engine crashes, bugs in a backend
            reason = 'oom' if 'out of memory' in str(exc).lower() else 'error'
            return None, BackendError(reason, repr(exc)[:200])

    def _cancel_backend(self) -> None:
        if self._backend is not None:
            self._backend.cancel()
        if self._woken is not None:   # the worker's wait: it cancels again until the request ends
            self._woken.set()

    # -- publishing (called with _lock held) ----------------------------------------------------------
    def _publish_result(self, keyframe: Keyframe, task_id: str, instruction: str, answer: Answer | None,
                        error: BackendError | None, parsed: ParsedAnswer | None,
                        early: PlanOut | None = None) -> PlanOut | None:
        """Publish what the answer means (early: the plan already published from its stream)."""
        latency = time.perf_counter() - keyframe.received_s
        if error is not None:
            self.counters.add('backend_failures_' + error.reason)
            if error.reason == 'cancelled':  # only a switch, stop or shutdown cancels; each publishes its own stop
                return None
            self._tasks.failed('backend', str(error), latency)
            self._outage.failed(error, time.monotonic(), self._log)
            plan = PlanOut(keyframe.stamp_ns, task_id, instruction, f'(no plan: backend {error.reason})',
                           STOP_ACTION, True, (), latency, self.model_name)
        else:
            assert parsed is not None and answer is not None
            self._outage.answered(time.monotonic(), self._log)
            for adjustment in parsed.adjustments:
                self.counters.add('answers_' + adjustment)
            if parsed.rejection is not None:
                self.counters.add('parse_failures_' + parsed.rejection)
                self._tasks.failed('parse', f'answer rejected ({parsed.rejection}): {parsed.detail}', latency)
                if self._throttles['parse'].ready(time.monotonic(), LOG_THROTTLE_S):
                    self._log.warning(f'answer rejected ({parsed.rejection}: {parsed.detail}): stop plan; '
                                      f'answer was {answer.text[:120]!r}')
                environment = parsed.environment or f'(no plan: answer {parsed.rejection})'
            else:
                self.counters.add('answers_' + parsed.source)
                self._tasks.succeeded(Step(parsed.environment, parsed.action), latency, parsed.arrived)
                environment = parsed.environment
                if early is not None and (early.action, early.waypoints) == (parsed.action, parsed.waypoints):
                    self._publish_status()  # the plan itself went out from the stream
                    return dataclasses.replace(early, environment=environment)
            plan = PlanOut(keyframe.stamp_ns, task_id, instruction, environment, parsed.action, parsed.stop,
                           parsed.waypoints, latency, self.model_name)
        self._publish_plan(plan)
        self._publish_status()
        return plan

    def _publish_stop(self, action: str, environment: str) -> None:
        task = self._tasks.task
        self._publish_plan(PlanOut(self._clock_ns(), task.task_id if task else '', task.instruction if task else '',
                                   environment, action, True, (), 0.0, self.model_name))

    def _publish_plan(self, plan: PlanOut) -> None:
        self._publish_plan_cb(plan)
        self.counters.add('plans_published')
        if plan.stop:
            self.counters.add('stop_plans_published')

    def _publish_status(self) -> None:
        task = self._tasks.task
        self._publish_status_cb(StatusOut(
            self._tasks.state, self._tasks.reason, task.task_id if task else '', task.instruction if task else '',
            copy.copy(task.counters) if task else Counters()))

    def _record(self, request: Request, task_id: str, instruction: str, answer: Answer | None,
                error: BackendError | None, latency_s: float) -> None:
        if self._recorder is None:
            return
        self._recorder.write(AnswerRecord(
            stamp_ns=request.stamp_ns, task_id=task_id, instruction=instruction,
            prompt_hash=request.prompt.digest(), text=answer.text if answer else '',
            latency_s=answer.latency_s if answer else latency_s,
            input_tokens=answer.input_tokens if answer else None,
            output_tokens=answer.output_tokens if answer else None,
            first_token_s=answer.first_token_s if answer else None,
            error=error.reason if error else '', model=self.model_name))

    # -- health ----------------------------------------------------------------------------------------
    def health(self, now_s: float) -> Health:
        """Level, message and the values /diagnostics shows; now_s: time.monotonic() (rates since the last
        call)."""
        totals = self.counters.totals()
        rates = self.counters.rates(now_s)
        with self._lock:
            state, reason, task = self._tasks.state, self._tasks.reason, self._tasks.task
            failures_in_row = task.counters.consecutive_failures if task else 0
            last_error = task.counters.last_error if task else ''
        values: dict[str, object] = {
            'state': state_name(state), 'reason': reason, 'task_id': task.task_id if task else '',
            'instruction': task.instruction if task else '', 'backend': self.params.backend,
            'model': self.model_name, 'load_time_s': self.load_time_s,
            'keyframe_rate_hz': rates.get('keyframes_received', 0.0),
            'plan_rate_hz': rates.get('plans_published', 0.0),
            'latency_ms_p50': self._latency.percentile_ms(50), 'latency_ms_p99': self._latency.percentile_ms(99),
            'backend_ms_p50': self._backend_time.percentile_ms(50),
            'first_token_ms_p50': self._first_token.percentile_ms(50),
            'output_tokens_p50': self._output_tokens.percentile(50),
            'wait_ms_p50': self._wait.percentile_ms(50), 'overhead_ms_p50': self._overhead.percentile_ms(50),
            'keyframe_age_ms_p99': self._keyframe_age.percentile_ms(99),
            'keyframe_age_at_model_ms_p50': self._age_at_model.percentile_ms(50),
            'keyframe_age_at_model_ms_p99': self._age_at_model.percentile_ms(99),
            'consecutive_failures': failures_in_row, 'last_error': last_error,
        }
        for name in DIAGNOSTIC_COUNTERS:
            values[name] = totals.get(name, 0)
        values.update({k: v for k, v in sorted(totals.items()) if k.startswith(DIAGNOSTIC_FAMILIES)})
        # stuck while that request has not ended, not for ever after (backend_stuck counts every time it was)
        stuck = self._stuck_on is not None and not self._stuck_on.done()
        if state == State.FAILED or stuck:
            return Health(Level.ERROR, reason if state == State.FAILED else 'backend stuck', values)
        if failures_in_row:
            return Health(Level.WARN, f'{failures_in_row} failed answer(s) in a row: {last_error[:80]}', values)
        if state == State.ACTIVE and rates.get('keyframes_received', 0.0) == 0.0:
            return Health(Level.WARN, 'task active but no keyframes arrive', values)
        return Health(Level.OK, state_name(state), values)

    # -- shutdown ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Wake and end the worker loop (work_once returns at once) and abort the request in flight. From now on
        nothing is published: a request that ends anyway (a backend deaf to the cancel, a server that failed at
        that moment) would publish on a node being destroyed, and its worker die with a traceback."""
        self._slot.close()
        self._wake.set()
        self._cancel_backend()

    def release(self) -> None:
        """After the worker has ended: the model and the recording."""
        if self._backend is not None:
            self._backend.close()
        if self._recorder is not None:
            self._recorder.close()
