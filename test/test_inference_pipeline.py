"""The inference pipeline without a graph: plans per keyframe, keyframe checks, task switch and stop
mid-inference, failing, slow, stuck and malformed backends, statistics and health. No ROS."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
from answers import CORPUS
from conftest import wait_for

from vln_ros.core import inference
from vln_ros.core.backends import make_backend
from vln_ros.core.backends.base import (
    Answer,
    AnswerRecord,
    AnswerRecorder,
    Backend,
    BackendError,
    CancelFlag,
    Request,
    load_records,
)
from vln_ros.core.config import InferenceParams
from vln_ros.core.inference import (
    InferencePipeline,
    Keyframe,
    Level,
    PlanOut,
    StatusOut,
)
from vln_ros.core.keyframe_request import REQUEST_RESEND_S, KeyframeAsk
from vln_ros.core.tasks import State

FORWARD = '{"env":"corridor","act":"forward","wp":[[0.5,0,0,0.9],[0.5,0.1,10,0.8]]}'
JPEG = cv2.imencode('.jpg', np.full((64, 64, 3), 90, np.uint8))[1].tobytes()
NOW_NS = 1_700_000_000 * 10**9


class ScriptedBackend(Backend):
    """Answers in order: a text, a BackendError or other exception to raise, or (either, seconds) to take
    that long first; cancellable unless `deaf_s` (then it ignores a cancel for that long)."""

    model_name = 'scripted-model'

    def __init__(self, *answers: object, deaf_s: float = 0.0) -> None:
        self._answers = list(answers)
        self._cancel = CancelFlag()
        self._deaf_s = deaf_s
        self.requests: list = []
        self.busy = threading.Event()
        self.closed = False

    def generate(self, request):
        self.requests.append(request)
        cancelled = self._cancel.start()
        self.busy.set()
        try:
            item = self._answers.pop(0)
            answer, delay_s = item if isinstance(item, tuple) else (item, 0.0)
            if delay_s and cancelled.wait(delay_s):
                time.sleep(self._deaf_s)
                raise BackendError('cancelled')
            if isinstance(answer, Exception):
                raise answer
            return Answer(answer, delay_s, input_tokens=900, output_tokens=31, first_token_s=0.05)
        finally:
            self._cancel.finish()
            self.busy.clear()

    def cancel(self) -> None:
        self._cancel.cancel()

    def close(self) -> None:
        self.closed = True


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.lines.append(('info', message))

    def warning(self, message: str) -> None:
        self.lines.append(('warning', message))

    def error(self, message: str) -> None:
        self.lines.append(('error', message))


class Harness:
    """A pipeline with a fixed ROS clock; records what it publishes (in order) and what it logs."""

    def __init__(self, scripted: Backend | None = None, outage: inference.BackendOutage | None = None,
                 **params: object) -> None:
        """scripted: the backend; None: the one the parameters choose (make_backend). outage: shared with
        other harnesses (robots of one server)."""
        params.setdefault('backend', 'openai')
        self.params = InferenceParams(**params)
        self.now_ns = NOW_NS
        self.plans: list[PlanOut] = []
        self.statuses: list[StatusOut] = []
        self.log = Log()
        self.asks: list[KeyframeAsk] = []
        self.pipeline = InferencePipeline(self.params, self.plans.append, self.statuses.append,
                                          lambda: self.now_ns, self.log, self.asks.append, outage)
        self.pipeline.load(make_backend if scripted is None else lambda _p: scripted)

    def keyframe(self, age_s: float = 0.0, data: bytes = JPEG) -> Keyframe:
        keyframe = Keyframe(data, self.now_ns - int(age_s * 1e9), time.perf_counter(), 'camera', 'jpeg')
        self.pipeline.receive(keyframe)
        return keyframe

    def answer(self, **keyframe_args: object) -> inference.Answered | None:
        """Send one keyframe and run the worker's step for it."""
        self.keyframe(**keyframe_args)
        return self.pipeline.work_once(timeout_s=0.1)

    def model_plans(self) -> list[PlanOut]:
        """Plans made for keyframes (not the stop plans a new task or a stop publishes at once)."""
        return [p for p in self.plans if p.action != 'new_task']

    def totals(self) -> dict[str, int]:
        return self.pipeline.counters.totals()


def recording(tmp_path, *texts: str, latency_s: float = 0.0) -> str:
    path = tmp_path / 'answers.jsonl'
    recorder = AnswerRecorder(path)
    for text in texts:
        recorder.write(AnswerRecord(0, '', '', '', text, latency_s, output_tokens=12, model='replayed-model'))
    recorder.close()
    return str(path)


def test_a_plan_per_keyframe_with_stamp_task_latency_model_and_statistics(tmp_path):
    h = Harness(None, backend='replay', replay={'file': recording(tmp_path, FORWARD, FORWARD, latency_s=0.1)})
    assert [s.state for s in h.statuses] == [State.LOADING, State.IDLE]
    reply = h.pipeline.set_task('go down the corridor')
    assert reply.accepted and reply.task_id.startswith('task-')
    assert reply.message == "task started: 'go down the corridor'"
    assert (h.plans[0].action, h.plans[0].stop, h.plans[0].stamp_ns, h.plans[0].task_id) == (
        'new_task', True, NOW_NS, reply.task_id)
    for expected in (1, 2):
        answered = h.answer()
        plan = h.model_plans()[-1]
        assert answered is not None and answered.plan is plan and len(h.model_plans()) == expected
        assert (plan.stamp_ns, plan.task_id, plan.instruction, plan.model) == (
            answered.keyframe.stamp_ns, reply.task_id, 'go down the corridor', 'replayed-model')
        assert (plan.action, plan.environment, plan.stop) == ('forward', 'corridor', False)
        assert [(w.dx, w.dy, w.confidence) for w in plan.waypoints] == [(0.5, 0.0, 0.9), (0.5, 0.1, 0.8)]
        assert 0.1 <= plan.latency_s < 1.0  # the recorded latency is replayed
    status = h.statuses[-1]
    assert (status.state, status.task_id, status.counters.keyframes_processed, status.counters.plans_published,
            status.counters.parse_failures) == (State.ACTIVE, reply.task_id, 2, 2, 0)
    health = h.pipeline.health(time.monotonic())
    v = health.values
    assert (health.level, health.message) == (Level.OK, 'active')
    assert (v['state'], v['backend'], v['model'], v['answers_json'], v['plans_published'], v['requests']) == (
        'active', 'replay', 'replayed-model', 2, 3, 2)  # 3: the two plans and the new task's stop
    assert v['latency_ms_p50'] >= 100 and v['overhead_ms_p50'] < 50 and v['backend_ms_p50'] >= 100
    assert v['output_tokens_p50'] == 12  # a token count, not a latency
    assert v['keyframe_age_ms_p99'] == 0.0  # the fixed clock: captured "now"


def test_diagnostics_name_every_value_the_bench_and_demo_read():
    h = Harness(ScriptedBackend())
    values = h.pipeline.health(time.monotonic()).values
    for key in ('overhead_ms_p50', 'keyframes_dropped', 'keyframes_received', 'backend_ms_p50', 'wait_ms_p50',
                'first_token_ms_p50', 'output_tokens_p50', 'keyframe_age_ms_p99', 'load_time_s', 'state', 'model',
                *inference.DIAGNOSTIC_COUNTERS):
        assert key in values, key
    assert values['keyframes_stale'] == 0 and values['state'] == 'idle'


def test_the_newest_keyframe_wins_and_the_replaced_ones_are_counted_as_dropped():
    h = Harness(ScriptedBackend(FORWARD))
    h.pipeline.set_task('go')
    first, second = h.keyframe(), h.keyframe()
    answered = h.pipeline.work_once(timeout_s=0.1)
    assert answered is not None and answered.keyframe is second and first is not second
    assert (h.totals()['keyframes_received'], h.totals()['keyframes_dropped']) == (2, 1)
    c = h.statuses[-1].counters
    assert (c.keyframes_received, c.keyframes_dropped, c.keyframes_processed) == (2, 1, 1)


def test_stale_foreign_and_oversized_keyframes_are_skipped_and_counted():
    backend = ScriptedBackend(FORWARD)
    h = Harness(backend, keyframe_max_age_s=5.0)
    h.pipeline.set_task('go')
    assert h.answer(age_s=30.0) is None and h.totals()['keyframes_stale'] == 1
    assert h.answer(data=b'\x89PNG not a jpeg') is None and h.totals()['keyframes_not_jpeg'] == 1
    data = bytearray(JPEG)  # a real JPEG whose header claims 8000x4500: refused before any decoder sees it
    sof = data.find(b'\xff\xc0')
    data[sof + 5:sof + 9] = (4500).to_bytes(2, 'big') + (8000).to_bytes(2, 'big')
    assert h.answer(data=bytes(data)) is None and h.totals()['keyframes_rejected_implausible_size'] == 1
    assert h.model_plans() == [] and backend.requests == [] and 'requests' not in h.totals()
    assert [level for level, _ in h.log.lines] == ['warning'] * 3
    assert 'keyframe_max_age_s 5.0' in h.log.lines[0][1] and "format 'jpeg'" in h.log.lines[1][1]
    values = h.pipeline.health(time.monotonic()).values
    assert (values['keyframes_stale'], values['keyframes_not_jpeg'], values['keyframes_rejected_implausible_size']) \
        == (1, 1, 1)
    assert h.answer() is not None and h.model_plans()[-1].action == 'forward'


def test_keyframes_without_a_running_task_are_not_answered():
    backend = ScriptedBackend(FORWARD)
    h = Harness(backend)
    h.keyframe()
    assert h.pipeline.work_once(timeout_s=0.05) is None and backend.requests == [] and h.plans == []
    assert h.totals()['keyframes_received'] == 1


def test_rejected_instructions_are_counted_and_change_nothing():
    h = Harness(ScriptedBackend())
    reply = h.pipeline.set_task('   ')
    assert (reply.accepted, reply.task_id, reply.message) == (False, '', 'rejected: empty instruction')
    assert h.totals()['tasks_rejected'] == 1 and h.plans == [] and h.statuses[-1].state == State.IDLE


def test_task_switch_mid_inference_never_publishes_the_old_task(tmp_path):
    backend = ScriptedBackend((FORWARD, 5.0), FORWARD)
    h = Harness(backend, record_file=str(tmp_path / 'rec.jsonl'))
    old = h.pipeline.set_task('go to the kitchen').task_id
    h.keyframe()
    worker = threading.Thread(target=h.pipeline.work_once)
    worker.start()
    assert wait_for(backend.busy.is_set, 2.0)
    switched = time.monotonic()
    new = h.pipeline.set_task('go to the bedroom').task_id
    published_at_switch = list(h.plans)
    worker.join(timeout=2.0)
    assert not worker.is_alive() and time.monotonic() - switched < 1.0  # aborted, not waited out
    assert h.plans == published_at_switch  # nothing of the old task after set_task returned
    assert [(p.task_id, p.action) for p in h.plans] == [(old, 'new_task'), (new, 'new_task')]
    assert h.answer() is not None
    assert [(p.task_id, p.action) for p in h.plans][-1] == (new, 'forward')
    assert h.totals()['answers_discarded_old_task'] == 1
    records = load_records(tmp_path / 'rec.jsonl')
    assert [(r.task_id, r.error) for r in records] == [(old, 'cancelled'), (new, '')]
    assert records[0].latency_s < 1.5 and records[1].text == FORWARD and records[1].model == 'scripted-model'


def test_an_answer_for_a_task_no_longer_current_is_discarded():
    """The answer came back (not cancelled) but the task was switched in between: never published."""
    h = Harness(ScriptedBackend(FORWARD))
    h.pipeline.set_task('go')
    keyframe = h.keyframe()
    h.pipeline._slot.take(timeout_s=0.0)
    real_call = h.pipeline._call_backend

    def switch_during_the_call(request, task_id):
        answer = real_call(request, task_id)
        h.pipeline.set_task('another task')
        return answer
    h.pipeline._call_backend = switch_during_the_call
    assert h.pipeline.infer(keyframe, time.perf_counter()) is None
    assert [p.action for p in h.plans] == ['new_task', 'new_task']
    assert h.totals()['answers_discarded_old_task'] == 1


def test_stop_task_publishes_a_stop_plan_at_once_and_ends_planning():
    backend = ScriptedBackend((FORWARD, 5.0), FORWARD)
    h = Harness(backend)
    task = h.pipeline.set_task('go').task_id
    h.keyframe()
    worker = threading.Thread(target=h.pipeline.work_once)
    worker.start()
    assert wait_for(backend.busy.is_set, 2.0)
    success, message = h.pipeline.stop_task('stopped by vln/stop_task')
    assert success and task in message
    stop = h.plans[-1]
    assert (stop.action, stop.stop, stop.task_id, stop.environment, stop.waypoints) == (
        'stop', True, task, 'stopped by vln/stop_task', ())
    worker.join(timeout=2.0)
    h.keyframe()
    assert h.pipeline.work_once(timeout_s=0.05) is None
    assert [p.action for p in h.plans] == ['new_task', 'stop'] and len(backend.requests) == 1
    assert (h.statuses[-1].state, h.statuses[-1].reason) == (State.STOPPED, 'stopped by vln/stop_task')
    assert h.pipeline.stop_task('again') == (False, 'no running task to stop (state stopped)')


def test_failing_backend_stop_plans_failed_state_and_recovery():
    h = Harness(ScriptedBackend(BackendError('oom'), RuntimeError('CUDA out of memory'), BackendError('error'),
                                ValueError('a bug in the backend'), FORWARD), failure_threshold=3)
    h.pipeline.set_task('go')
    for n in range(1, 4):
        h.answer()
        plan = h.model_plans()[-1]
        assert len(h.model_plans()) == n and plan.stop and not plan.waypoints
        assert plan.environment == f'(no plan: backend {"oom" if n < 3 else "error"})' and plan.action == 'stop'
    status = h.statuses[-1]
    assert status.state == State.FAILED and status.reason == '3 failed answers in a row'
    assert (status.counters.backend_failures, status.counters.consecutive_failures) == (3, 3)
    assert 'error' in status.counters.last_error
    health = h.pipeline.health(time.monotonic())
    assert (health.level, health.message) == (Level.ERROR, '3 failed answers in a row')
    assert (health.values['backend_failures_oom'], health.values['backend_failures_error']) == (2, 1)
    h.answer()  # any exception of a backend is an error, never the worker's end
    assert h.model_plans()[-1].environment == '(no plan: backend error)' and h.statuses[-1].state == State.FAILED
    h.answer()  # the pipeline kept serving: a good answer brings the task back
    assert h.model_plans()[-1].action == 'forward'
    assert (h.statuses[-1].state, h.statuses[-1].reason, h.statuses[-1].counters.consecutive_failures) == (
        State.ACTIVE, 'recovered', 0)
    assert h.pipeline.health(time.monotonic()).level == Level.OK


def test_one_failed_answer_warns_with_the_error():
    h = Harness(ScriptedBackend(BackendError('unavailable', 'connection refused')))
    h.pipeline.set_task('go')
    h.answer()
    health = h.pipeline.health(time.monotonic())
    assert (health.level, health.message) == (
        Level.WARN, '1 failed answer(s) in a row: unavailable: connection refused')
    assert h.log.lines == [('warning', 'backend failed (unavailable: connection refused): stop plan')]


def test_a_server_outage_is_one_warning_and_one_line_when_it_answers_again_not_a_line_per_failed_request():
    down = BackendError('unavailable', 'connection refused')
    h = Harness(ScriptedBackend(*[down] * 20, FORWARD, down, FORWARD))
    h.pipeline.set_task('go')
    for _ in range(21):
        h.answer()
    assert h.totals()['backend_failures_unavailable'] == 20 and h.model_plans()[-1].action == 'forward'
    assert sum(1 for p in h.model_plans() if p.stop) == 20   # every failure still stops the robot
    assert [line[0] for line in h.log.lines] == ['warning', 'info']
    assert h.log.lines[0][1] == 'backend failed (unavailable: connection refused): stop plan'
    assert h.log.lines[1][1].startswith('backend answers again after 20 failed requests in ')
    h.answer()
    h.answer()   # a second outage, right after the first: counted, not logged
    assert [line[0] for line in h.log.lines] == ['warning', 'info']
    assert h.totals()['backend_failures_unavailable'] == 21


def test_failures_between_answers_are_not_logged_each_but_a_later_outage_is():
    outage, log = inference.BackendOutage(gap_s=5.0), Log()
    down = BackendError('http_400', 'prompt too long')
    for now_s in (0.0, 0.5, 1.0, 1.5, 2.0):   # one robot's requests fail, another's are answered between them
        outage.failed(down, now_s, log)
        outage.answered(now_s + 0.1, log)
    assert [kind for kind, _ in log.lines] == ['warning', 'info']
    outage.failed(down, 9.0, log)
    outage.answered(9.5, log)
    assert [kind for kind, _ in log.lines] == ['warning', 'info', 'warning', 'info']


def test_a_long_outage_is_recalled_once_a_reminder_period():
    outage = inference.BackendOutage(reminder_s=10.0)
    log = Log()
    for now_s in (0.0, 1.0, 9.0, 10.5, 12.0, 21.0):
        outage.failed(BackendError('timeout', 'slow'), now_s, log)
    assert [message.split(':')[0] for _, message in log.lines] == [
        'backend failed (timeout', 'backend still failing', 'backend still failing']
    assert log.lines[1][1].startswith('backend still failing: 4 failed requests in 10 s, the last (timeout: slow)')


def test_robots_sharing_a_server_log_its_outage_once():
    outage = inference.BackendOutage()
    down = BackendError('unavailable', 'connection refused')
    robots = [Harness(ScriptedBackend(down, down, FORWARD), outage) for _ in range(3)]  # as inference_node does
    for h in robots:
        h.pipeline.set_task('go')
    for h in robots * 2:
        h.answer()
    for h in robots:
        h.answer()
    lines = [line for h in robots for line in h.log.lines]
    assert [kind for kind, _ in lines] == ['warning', 'info']
    assert lines[1][1].startswith('backend answers again after 6 failed requests')


def test_slow_backend_times_out_into_a_stop_plan_and_the_next_request_is_served():
    backend = ScriptedBackend((FORWARD, 30.0), FORWARD)
    h = Harness(backend, inference_timeout_s=0.3)
    h.pipeline.set_task('go')
    started = time.monotonic()
    h.answer()
    plan = h.model_plans()[-1]
    assert plan.stop and plan.environment == '(no plan: backend timeout)' and time.monotonic() - started < 1.0
    assert 'inference_timeout_s (0.3 s)' in h.statuses[-1].counters.last_error
    h.answer()
    assert h.model_plans()[-1].action == 'forward' and h.totals()['backend_failures_timeout'] == 1


def test_a_cancelled_request_that_ends_within_the_grace_period_does_not_block_the_next():
    backend = ScriptedBackend((FORWARD, 30.0), FORWARD, deaf_s=0.6)  # takes 0.6 s to honour the cancel
    h = Harness(backend, inference_timeout_s=0.2)
    h.pipeline.set_task('go')
    h.answer()
    started = time.monotonic()
    h.answer()  # waits for the first to wind down (< CANCEL_GRACE_S), then is served
    assert h.model_plans()[-1].action == 'forward' and 0.3 < time.monotonic() - started < inference.CANCEL_GRACE_S
    assert 'backend_stuck' not in h.totals()


def test_a_request_stuck_past_the_grace_period_is_a_stop_plan_and_an_error(monkeypatch):
    monkeypatch.setattr(inference, 'CANCEL_GRACE_S', 0.2)
    backend = ScriptedBackend((FORWARD, 30.0), FORWARD, deaf_s=1.0)
    h = Harness(backend, inference_timeout_s=0.2)
    h.pipeline.set_task('go')
    h.answer()
    h.answer()
    assert h.model_plans()[-1].environment == '(no plan: backend stuck)' and len(backend.requests) == 1
    assert h.totals()['backend_stuck'] == 1
    health = h.pipeline.health(time.monotonic())
    assert (health.level, health.message) == (Level.ERROR, 'backend stuck')
    time.sleep(1.0)  # once it has ended, the next request is served
    h.answer()
    assert h.model_plans()[-1].action == 'forward'
    # ... and the error is over: it stayed ERROR 'backend stuck' for the node's life, for every later good answer
    health = h.pipeline.health(time.monotonic())
    assert health.level is not Level.ERROR and h.totals()['backend_stuck'] == 1, (health.level, health.message)


def test_malformed_answers_all_become_stop_plans():
    bad = [(text, rejection) for text, _, _, _, rejection in CORPUS if rejection is not None]
    h = Harness(ScriptedBackend(*[text for text, _ in bad]), failure_threshold=1000)
    h.pipeline.set_task('go')
    for _ in bad:
        h.answer()
    assert len(h.model_plans()) == len(bad)
    assert all(p.stop and not p.waypoints for p in h.model_plans())
    assert h.statuses[-1].counters.parse_failures == len(bad)
    totals = h.totals()
    for rejection in {r for _, r in bad}:
        assert totals['parse_failures_' + rejection] == sum(r == rejection for _, r in bad)
    assert totals['parse_failures_non_finite'] == 2
    assert h.pipeline.health(time.monotonic()).values['parse_failures_non_finite'] == 2


def test_an_arrived_answer_stops_the_task():
    h = Harness(ScriptedBackend('{"env":"at the red door","act":"arrived","wp":[]}'))
    h.pipeline.set_task('go to the red door')
    h.answer()
    assert h.model_plans()[-1].stop and h.statuses[-1].state == State.STOPPED
    assert 'goal reached' in h.statuses[-1].reason


ARRIVED = '{"env":"at the red door","act":"arrived","wp":[]}'


def test_with_two_confirmations_one_arrived_answer_halts_the_robot_but_the_task_goes_on():
    h = Harness(ScriptedBackend(ARRIVED, FORWARD, ARRIVED), arrived_confirmations=2)
    h.pipeline.set_task('go to the red door')
    h.answer()
    assert h.model_plans()[-1].stop and not h.model_plans()[-1].waypoints   # halted while unconfirmed ...
    assert h.statuses[-1].state == State.ACTIVE                                # ... the task goes on
    h.answer()
    assert not h.model_plans()[-1].stop and h.statuses[-1].state == State.ACTIVE
    h.answer()   # an 'arrived' after a forward answer starts the count again
    assert h.statuses[-1].state == State.ACTIVE


def test_with_two_confirmations_two_arrived_answers_in_a_row_end_the_task():
    h = Harness(ScriptedBackend(ARRIVED, ARRIVED), arrived_confirmations=2)
    h.pipeline.set_task('go to the red door')
    h.answer()
    h.answer()
    assert h.statuses[-1].state == State.STOPPED and 'goal reached' in h.statuses[-1].reason


def test_a_failed_answer_between_two_arrived_answers_breaks_the_confirmation():
    h = Harness(ScriptedBackend(ARRIVED, 'not an answer at all', ARRIVED), arrived_confirmations=2)
    h.pipeline.set_task('go to the red door')
    for _ in range(3):
        h.answer()
    assert h.statuses[-1].state == State.ACTIVE


def test_a_bug_in_a_step_is_counted_logged_and_ends_in_a_stop_plan():
    h = Harness(ScriptedBackend(FORWARD))
    h.pipeline.set_task('go')

    def broken(request, task_id):
        raise KeyError('bug')
    h.pipeline._call_backend = broken
    assert h.answer() is None
    assert h.totals()['internal_errors'] == 1 and h.plans[-1].stop
    assert h.plans[-1].environment.startswith('internal error: KeyError')
    assert h.log.lines[-1][0] == 'error' and 'inference step failed' in h.log.lines[-1][1]


def test_an_active_task_without_keyframes_warns():
    h = Harness(ScriptedBackend())
    h.pipeline.set_task('go')
    h.pipeline.health(time.monotonic())
    health = h.pipeline.health(time.monotonic() + 1.0)
    assert (health.level, health.message) == (Level.WARN, 'task active but no keyframes arrive')


def test_live_parameters_reach_the_prompt_and_the_failure_threshold():
    backend = ScriptedBackend(BackendError('error'), FORWARD)
    h = Harness(backend, failure_threshold=3)
    h.pipeline.set_params(InferenceParams(backend='openai', failure_threshold=1, history_steps=0))
    h.pipeline.set_task('go')
    h.answer()
    assert h.statuses[-1].state == State.FAILED
    h.answer()
    assert '->' not in backend.requests[-1].prompt.user


def test_after_close_a_request_that_ends_anyway_publishes_nothing():
    """Ctrl-C while the server fails: the request ends in a failure after close() (its cancel came too late),
    and must not publish a stop plan on the node being destroyed."""
    started, release = threading.Event(), threading.Event()

    class FailsLate(Backend):
        model_name = 'fails-late'

        def generate(self, request):
            started.set()
            release.wait(5.0)
            raise BackendError('unavailable', 'connection lost mid-answer')

        def cancel(self) -> None:   # too late: the failure is on its way
            pass

    h = Harness(FailsLate())
    h.pipeline.set_task('go')
    h.keyframe()
    worker = threading.Thread(target=h.pipeline.work_once, kwargs={'timeout_s': 1.0})
    worker.start()
    assert started.wait(5.0)
    plans, statuses = len(h.plans), len(h.statuses)
    h.pipeline.close()
    release.set()
    worker.join(5.0)
    assert not worker.is_alive()
    assert (len(h.plans), len(h.statuses), h.asks[-1:]) == (plans, statuses, h.asks[-1:])
    assert h.totals().get('internal_errors', 0) == 0


def test_close_ends_the_worker_loop_and_release_closes_the_backend():
    backend = ScriptedBackend((FORWARD, 30.0))
    h = Harness(backend)
    h.pipeline.set_task('go')
    h.keyframe()
    worker = threading.Thread(target=lambda: [h.pipeline.work_once() for _ in iter(lambda: h.pipeline.closed, True)])
    worker.start()
    assert wait_for(backend.busy.is_set, 2.0)
    h.pipeline.close()
    worker.join(timeout=2.0)
    assert not worker.is_alive() and h.pipeline.closed
    h.pipeline.release()
    assert backend.closed and h.model_plans() == []  # the task is still current: cancelled means no plan
    assert h.totals()['backend_failures_cancelled'] == 1 and h.statuses[-1].counters.backend_failures == 0



def test_model_paced_keyframes_the_free_model_asks_once_per_keyframe_and_any_frame_only_for_a_new_task():
    """The request protocol camera_node answers (README, model-paced keyframes): a request when the worker is
    free with nothing waiting, a new number for each, any_frame on a task's first, none while a keyframe waits
    or no task runs, and 'wanted: false' once the task ends with a request open."""
    h = Harness(ScriptedBackend(FORWARD, FORWARD, FORWARD))
    assert h.asks == [KeyframeAsk(h.asks[0].sequence, False, False)]  # loaded: a model paces the keyframes
    h.pipeline.set_task('go down the corridor')
    assert h.pipeline.work_once(timeout_s=0.05) is None  # free, nothing waiting: asks, then waits
    first = h.asks[-1]
    assert (first.wanted, first.any_frame) == (True, True) and first.sequence != h.asks[0].sequence
    assert h.pipeline.work_once(timeout_s=0.05) is None  # still open: not asked again before REQUEST_RESEND_S
    assert len(h.asks) == 2
    h.keyframe()
    assert h.pipeline.work_once(timeout_s=0.05) is not None  # the answer is taken at once
    assert h.pipeline.work_once(timeout_s=0.05) is None  # free again: the next request, any frame no more
    second = h.asks[-1]
    assert (second.wanted, second.any_frame, second.sequence) == (True, False, first.sequence + 1)
    h.keyframe()
    h.keyframe()  # unasked keyframes (a camera without pacing) are taken as before, the newest winning
    asks = len(h.asks)
    assert h.pipeline.work_once(timeout_s=0.05) is not None
    assert len(h.asks) == asks  # a keyframe was waiting: nothing asked
    assert h.pipeline.work_once(timeout_s=0.05) is None
    assert h.asks[-1].wanted
    h.pipeline.stop_task('done')
    assert h.pipeline.work_once(timeout_s=0.05) is None
    assert (h.asks[-1].wanted, h.asks[-1].sequence) == (False, second.sequence + 1)
    assert h.totals()['keyframe_requests'] == 3


def test_an_unanswered_keyframe_request_is_asked_again_with_a_new_number(monkeypatch):
    """A lost keyframe or a restarted camera_node must not leave the model waiting for ever."""
    h = Harness(ScriptedBackend(FORWARD))
    h.pipeline.set_task('go')
    clock = [1000.0]
    monkeypatch.setattr(inference.time, 'monotonic', lambda: clock[0])
    h.pipeline.work_once(timeout_s=0.01)
    clock[0] += REQUEST_RESEND_S - 0.1
    h.pipeline.work_once(timeout_s=0.01)
    assert len([a for a in h.asks if a.wanted]) == 1
    clock[0] += 0.2
    h.pipeline.work_once(timeout_s=0.01)
    wanted = [a for a in h.asks if a.wanted]
    assert len(wanted) == 2 and wanted[1].sequence == wanted[0].sequence + 1 and wanted[1].any_frame


def test_the_age_of_a_keyframe_when_the_model_starts_on_it_is_in_diagnostics():
    h = Harness(ScriptedBackend(FORWARD))
    h.pipeline.set_task('go')
    h.answer(age_s=0.2)
    values = h.pipeline.health(time.monotonic()).values
    assert abs(float(values['keyframe_age_at_model_ms_p99']) - 200.0) < 1.0


class StreamingBackend(Backend):
    """Streams an answer in pieces through request.on_chunk; holds before the piece at `hold_at` until released
    (the rest of the answer is still being generated)."""

    model_name = 'streaming-model'

    def __init__(self, text: str, hold_at: int) -> None:
        self.text, self.hold_at = text, hold_at
        self.holding, self.release = threading.Event(), threading.Event()
        self._cancel = CancelFlag()

    def generate(self, request):
        cancelled = self._cancel.start()
        try:
            pieces = [self.text[i:i + 4] for i in range(0, len(self.text), 4)]
            for i, piece in enumerate(pieces):
                if i * 4 >= self.hold_at and not self.holding.is_set():
                    self.holding.set()
                    while not self.release.wait(0.01):
                        if cancelled.is_set():
                            raise BackendError('cancelled')
                request.on_chunk(piece, i + 1)
            return Answer(self.text, 0.1, output_tokens=len(pieces))
        finally:
            self._cancel.finish()

    def cancel(self) -> None:
        self._cancel.cancel()


PLAN_FIRST = '{"act":"forward","wp":[[0.5,0,0,0.9],[0.5,0.1,10,0.8]],"env":"corridor, red door ahead"}'


def run_in_thread(h: Harness) -> threading.Thread:
    worker = threading.Thread(target=h.answer)
    worker.start()
    return worker


def test_a_plan_first_answer_is_published_from_the_stream_before_the_answer_ends_and_only_once():
    backend = StreamingBackend(PLAN_FIRST, hold_at=PLAN_FIRST.index('"env"') + 4)
    h = Harness(backend, parser={'answer_order': 'plan_first'})
    assert '{"act":"<action>","wp":' in h.pipeline._prompts.system  # the model is asked for the plan first
    h.pipeline.set_task('go down the corridor')
    worker = run_in_thread(h)
    assert backend.holding.wait(2.0)
    assert wait_for(lambda: len(h.model_plans()) == 1, 2.0)  # out while the scene is still being written
    early = h.model_plans()[0]
    assert (early.action, early.stop, len(early.waypoints)) == ('forward', False, 2)
    backend.release.set()
    worker.join(2.0)
    assert len(h.model_plans()) == 1  # the whole answer does not publish it again
    assert h.pipeline._tasks.task.history[-1].environment == 'corridor, red door ahead'
    assert h.totals()['plans_from_stream'] == 1
    assert h.statuses[-1].counters.plans_published >= 1


def test_without_guided_decoding_a_plan_first_answer_is_held_until_its_object_closes_as_a_key_may_repeat():
    """Unguided, a key may come again after the waypoints (here act: stop): the answer names two plans and is
    rejected, so the stream must not have published the first (parser: one answer, one plan)."""
    repeated = PLAN_FIRST[:PLAN_FIRST.index('"env"')] + '"act":"stop","env":"a person crossing"}'
    backend = StreamingBackend(repeated, hold_at=repeated.index('"act":"stop"') + 8)
    h = Harness(backend, parser={'answer_order': 'plan_first'}, guided_json=False)
    h.pipeline.set_task('go down the corridor')
    worker = run_in_thread(h)
    assert backend.holding.wait(2.0)  # every piece before the hold has been handed over
    assert h.model_plans() == []
    backend.release.set()
    worker.join(2.0)
    assert [(p.action, p.stop) for p in h.model_plans()] == [('stop', True)]
    assert h.totals()['parse_failures_duplicate_key'] == 1 and h.totals().get('plans_from_stream', 0) == 0


def test_a_streamed_plan_whose_whole_answer_does_not_parse_is_followed_by_a_stop_plan():
    broken = PLAN_FIRST[:PLAN_FIRST.index('"env"')] + '"env": oops}'
    backend = StreamingBackend(broken, hold_at=len(broken))
    backend.release.set()
    h = Harness(backend, parser={'answer_order': 'plan_first', 'text_fallback': False})
    h.pipeline.set_task('go')
    h.answer()
    actions = [(p.action, p.stop) for p in h.model_plans()]
    assert actions[0] == ('forward', False)
    assert actions[-1][1] is True and len(actions) == 2  # the model's answer was not sound: stop


def test_a_task_switch_while_the_plan_streams_publishes_nothing_of_the_old_task():
    backend = StreamingBackend(PLAN_FIRST, hold_at=10)  # before the waypoints are complete
    h = Harness(backend, parser={'answer_order': 'plan_first'})
    old = h.pipeline.set_task('go down the corridor').task_id
    worker = run_in_thread(h)
    assert backend.holding.wait(2.0)
    h.pipeline.set_task('turn around')
    backend.release.set()
    worker.join(2.0)
    assert not [p for p in h.model_plans() if p.task_id == old and not p.stop]


def test_inference_timeout_s_raised_live_reaches_the_openai_backends_request():
    """`ros2 param set ... inference_timeout_s 20` under overload: the openai backend kept the HTTP read timeout of
    the start-up value (1 s), so a 3 s answer failed as the server gone (`unavailable`, 'connection lost
    mid-answer') while the raised timeout had 17 s to run."""
    from openai_server import FORWARD as SERVER_FORWARD
    from openai_server import FakeOpenAIServer

    server = FakeOpenAIServer([SERVER_FORWARD])
    server.repeat_last = True
    server.batching(1.5, 0.0)   # every answer takes 1.5 s
    try:
        h = Harness(inference_timeout_s=0.5, openai={'base_url': server.base_url, 'served_model': 'm'})
        h.pipeline.set_params(h.params.model_copy(update={'inference_timeout_s': 20.0}))
        h.pipeline.set_task('go')
        h.answer()
        assert h.model_plans()[-1].action == 'forward', h.model_plans()[-1]
        assert not [k for k in h.totals() if k.startswith('backend_failures')], h.totals()
        h.pipeline.close()
        h.pipeline.release()
    finally:
        server.close()


class LateRegisteringBackend(Backend):
    """A request is known to the backend only once generate() has started, as with every real backend: a cancel
    before that finds nothing to abort (openai: no call yet; oracle: no flag set; lmdeploy: cleared at start)."""

    model_name = 'late'

    def __init__(self, before_start: Callable[[], None]) -> None:
        self.before_start = before_start
        self.lock = threading.Lock()
        self.in_flight: threading.Event | None = None
        self.cancels_that_found_nothing = 0

    def generate(self, request: Request) -> Answer:
        self.before_start()   # the executor's task switch lands here: after the prompt, before the request
        aborted = threading.Event()
        with self.lock:
            self.in_flight = aborted
        if aborted.wait(5.0):
            raise BackendError('cancelled')
        return Answer(FORWARD, 5.0)

    def cancel(self) -> None:
        with self.lock:
            if self.in_flight is None:
                self.cancels_that_found_nothing += 1
            else:
                self.in_flight.set()


def test_a_task_switch_between_the_prompt_and_the_requests_start_still_aborts_that_request():
    """The cancel of a switch that came after the worker built the old task's prompt but before the backend had
    the request was lost: the old task's request ran to its end (5 s here; up to inference_timeout_s against a
    hung server), holding its batch slot while the robot waited, stopped, for the new task's first plan."""
    switched: list[float] = []

    def switch() -> None:
        if not switched:
            other = threading.Thread(target=lambda: switched.append(time.monotonic())
                                     if h.pipeline.set_task('another way').accepted else None)
            other.start()
            other.join()

    backend = LateRegisteringBackend(switch)
    h = Harness(backend, inference_timeout_s=10.0)
    h.pipeline.set_task('go')
    started = time.monotonic()
    h.answer()
    assert switched and backend.cancels_that_found_nothing >= 1   # the switch's own cancel came too early
    assert time.monotonic() - started < 2.0, 'the old task\'s request ran on'
    assert h.model_plans() == [] and h.totals()['answers_discarded_old_task'] == 1


def test_a_request_given_up_on_against_a_server_that_never_answers_ends_with_the_callers_timeout():
    """A server (or proxy) that holds the headers: the pipeline's timeout gives up on the request, and its HTTP
    thread and connection must end with that timeout, not with a longer one fixed at start-up (a 300 s read
    timeout left every timed-out keyframe's connection open for 5 minutes)."""
    import socket

    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(16)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(listener.accept()[0]) for _ in range(16)], daemon=True).start()
    port = listener.getsockname()[1]

    def requests_alive() -> int:
        return sum(t.name == 'openai_request' and t.is_alive() for t in threading.enumerate())

    before = requests_alive()
    try:
        h = Harness(inference_timeout_s=0.5,
                    openai={'base_url': f'http://127.0.0.1:{port}/v1', 'served_model': 'm'})
        h.pipeline.set_task('go')
        for _ in range(3):
            h.answer()
        assert h.totals()['backend_failures_timeout'] == 3
        assert wait_for(lambda: requests_alive() == before, 5.0), requests_alive() - before
        h.pipeline.close()
        h.pipeline.release()
    finally:
        for conn in held:
            conn.close()
        listener.close()


DEAF_REQUEST_SCRIPT = '''
import sys, time
sys.path[:0] = [sys.argv[1]]
from test_inference_pipeline import FORWARD, Harness
from vln_ros.core.backends.base import Answer, Backend

class Deaf(Backend):
    model_name = 'deaf'
    def generate(self, request):
        time.sleep(30.0)        # a request queued in a saturated engine: the cancel does not reach it
        return Answer(FORWARD, 30.0)
    def cancel(self):
        pass

h = Harness(Deaf(), inference_timeout_s=0.3)
h.pipeline.set_task('go')
h.answer()                      # times out; the request goes on in the background
h.pipeline.close()
h.pipeline.release()
print('released', h.totals()['backend_failures_timeout'], flush=True)
'''


def test_a_process_whose_backend_ignores_the_cancel_exits_once_released():
    """The request ran on a ThreadPoolExecutor's thread, which Python joins at exit: after the node was destroyed
    the process stayed for the rest of the request (23-60 s measured), past the runner's stop deadline."""
    import subprocess
    import sys
    from pathlib import Path

    started = time.monotonic()
    result = subprocess.run([sys.executable, '-c', DEAF_REQUEST_SCRIPT, str(Path(__file__).parent)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and 'released 1' in result.stdout, result.stderr[-2000:]
    assert time.monotonic() - started < 15.0   # the interpreter's start and imports; the request would take 30 s
