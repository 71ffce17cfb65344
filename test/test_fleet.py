"""One inference server for several robots, without a graph: the `robots` and `max_active_robots` parameters,
the cap's refusal, a shared backend with a client per robot, and per-robot cancel. The same on a real graph:
test/test_inference_fleet.py. No ROS."""
from __future__ import annotations

import re
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import wait_for
from fake_engine import FakeEngine
from test_inference_node import recording

from vln_ros.core.backends import make_backend
from vln_ros.core.backends.base import BackendError, NotShareable
from vln_ros.core.backends.openai_server import OpenAIBackend, OpenAIParams
from vln_ros.core.backends.oracle import OracleBackend, OracleParams
from vln_ros.core.config import InferenceParams, ParameterError, validate_params
from vln_ros.core.fleet import Fleet, SharedBackend, capacity_refusal, fleet_engine_params
from vln_ros.core.inference import InferencePipeline, Keyframe, PlanOut, StatusOut
from vln_ros.core.tasks import State

JPEG = cv2.imencode('.jpg', np.full((64, 64, 3), 90, np.uint8))[1].tobytes()
NOW_NS = 1_700_000_000 * 10**9


class Log:
    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...


class Robot:
    """One robot's pipeline on a shared backend, with what it published."""

    def __init__(self, shared: SharedBackend, params: InferenceParams) -> None:
        self.plans: list[PlanOut] = []
        self.statuses: list[StatusOut] = []
        self.pipeline = InferencePipeline(params, self.plans.append, self.statuses.append, lambda: NOW_NS, Log())
        self.pipeline.load(shared.client)
        self.worker: threading.Thread | None = None

    def answer_in_background(self, stamp_ns: int) -> None:
        self.pipeline.receive(Keyframe(JPEG, stamp_ns, time.perf_counter()))
        self.worker = threading.Thread(target=self.pipeline.work_once, kwargs={'timeout_s': 0.1})
        self.worker.start()

    def model_plans(self) -> list[PlanOut]:
        return [p for p in self.plans if p.action not in ('new_task', 'stop')]


def fleet_of(engine: FakeEngine, *robots: str, max_active_robots: int = 0, idle_release_s: float = 0.0,
             clock=time.monotonic, log=lambda _line: None) -> tuple[Fleet, dict[str, Robot]]:
    params = InferenceParams(backend='openai', robots=robots, max_active_robots=max_active_robots)
    shared = SharedBackend(lambda _p: engine, len(robots))
    by_name = {robot: Robot(shared, params) for robot in robots}
    fleet = Fleet({r: robot.pipeline for r, robot in by_name.items()}, max_active_robots, idle_release_s, log, clock)
    return fleet, by_name


# -- parameters ---------------------------------------------------------------------------------------

def test_without_robots_the_node_serves_its_own_namespace_and_caps_nothing():
    params = InferenceParams()
    assert params.robots == () and params.max_active_robots == 0


def test_robot_namespaces_from_ros_are_kept_in_order():
    params = validate_params(InferenceParams, {'backend': 'openai', 'robots': ['r1', 'site_a/r2', '_r3']})
    assert params.robots == ('r1', 'site_a/r2', '_r3')


def test_a_robot_listed_twice_is_refused_not_merged():
    with pytest.raises(ParameterError, match=r"robots: 'r1' is listed twice"):
        validate_params(InferenceParams, {'backend': 'openai', 'robots': ['r1', 'r2', 'r1']})


@pytest.mark.parametrize('bad', ['', '1r', '/r1', 'r1/', 'r1//r2', 'r-1', 'r 1', '~/r1', 'r' * 65])
def test_a_robot_name_that_is_no_relative_ros_namespace_is_refused_by_name(bad):
    with pytest.raises(ParameterError, match=f'robots: {bad!r} is not a relative ROS namespace'):
        validate_params(InferenceParams, {'backend': 'openai', 'robots': ['r0', bad]})


def test_the_longest_robot_name_allowed_makes_valid_names_of_every_topic_and_service():
    """A 240-character robot name passed the check and ended inference_node's start with rclpy's
    InvalidTopicNameException (a traceback): the names are now capped, and the cap keeps every name valid."""
    from rclpy.validate_full_topic_name import validate_full_topic_name

    from vln_ros import interface
    from vln_ros.core.schema import MAX_NAMESPACE_CHARS

    longest = 'site_' + 'x' * 10 + '/' + 'r' * (MAX_NAMESPACE_CHARS - 16)
    assert len(longest) == MAX_NAMESPACE_CHARS
    validate_params(InferenceParams, {'backend': 'openai', 'robots': [longest]})
    relative = [v for k, v in vars(interface).items() if k.isupper() and isinstance(v, str) and '/' in v
                and not v.startswith('/') and ' ' not in v]
    assert len(relative) > 10
    for name in relative:
        assert validate_full_topic_name(f'/{longest}/{name}')
        assert validate_full_topic_name(f'/{longest}/{name}', is_service=True)


# -- the cap ------------------------------------------------------------------------------------------

def test_the_cap_refuses_a_new_robot_with_the_count_and_the_robots_that_hold_it():
    assert capacity_refusal('r3', ['r1', 'r2'], 2) == \
        'server at capacity: 2 of 2 robots have active tasks (r1, r2)'


def test_the_cap_lets_an_active_robot_switch_tasks_and_is_off_at_zero():
    assert capacity_refusal('r1', ['r1', 'r2'], 2) is None
    assert capacity_refusal('r3', ['r1'], 2) is None
    assert capacity_refusal('r3', ['r1', 'r2', 'r4'], 0) is None


def test_a_task_over_the_cap_is_refused_and_the_robots_status_says_why_until_a_place_frees():
    fleet, robots = fleet_of(FakeEngine(), 'r1', 'r2', 'r3', max_active_robots=2)
    assert fleet.set_task('r1', 'go').accepted and fleet.set_task('r2', 'go').accepted
    reply = fleet.set_task('r3', 'go')
    reason = 'server at capacity: 2 of 2 robots have active tasks (r1, r2)'
    assert (reply.accepted, reply.message) == (False, f'rejected: {reason}')
    status = robots['r3'].statuses[-1]
    assert (status.state, status.reason) == (State.IDLE, reason)
    assert not robots['r3'].pipeline.running and robots['r3'].pipeline.counters.totals()['tasks_rejected'] == 1
    assert fleet.set_task('r1', 'switch').accepted  # holds its place
    robots['r2'].pipeline.stop_task('done')
    assert fleet.set_task('r3', 'go').accepted and fleet.active() == ['r1', 'r3']


def test_at_the_cap_the_robot_silent_longest_past_idle_release_s_gives_its_place_and_says_why():
    """A robot whose camera or link died mid-task held its place until someone stopped it: with a cap, one
    dead robot kept a live one from ever getting a task. (Real seconds: the pipelines stamp with the monotonic
    clock; the margins are 0.8 s either way.)"""
    lines: list[str] = []
    fleet, robots = fleet_of(FakeEngine(), 'r1', 'r2', 'r3', 'r4', max_active_robots=3, idle_release_s=2.0,
                             log=lines.append)
    for robot in ('r1', 'r2', 'r3'):
        assert fleet.set_task(robot, 'go').accepted
    time.sleep(1.0)   # r2 and r3 still send keyframes; r1 has been silent since its task started
    robots['r2'].pipeline.receive(Keyframe(JPEG, NOW_NS, time.perf_counter()))
    robots['r3'].pipeline.receive(Keyframe(JPEG, NOW_NS, time.perf_counter()))
    assert not fleet.set_task('r4', 'go').accepted   # r1 silent 1 s: not yet
    time.sleep(1.2)
    reply = fleet.set_task('r4', 'go')
    assert reply.accepted and fleet.active() == ['r2', 'r3', 'r4']
    status = robots['r1'].statuses[-1]
    assert status.state == State.STOPPED and lines == [f'r1: {status.reason}']
    assert re.fullmatch(r'released after \d+ s without a keyframe: its place on the server went to r4', status.reason)
    assert robots['r1'].plans[-1].action == 'stop'   # the released robot is told to stop, not left on its plan
    # one place is given, no more: r2 and r3 are within idle_release_s of their keyframes, r4 just started
    assert not fleet.set_task('r1', 'again').accepted and fleet.active() == ['r2', 'r3', 'r4']


def test_no_place_is_released_while_the_robots_request_is_on_the_server_or_with_idle_release_off():
    later = {'s': 0.0}
    engine = FakeEngine(60.0, 0.0)   # r1's request hangs on the server
    fleet, robots = fleet_of(engine, 'r1', 'r2', max_active_robots=1, idle_release_s=5.0,
                             clock=lambda: time.monotonic() + later['s'])
    assert fleet.set_task('r1', 'go').accepted
    robots['r1'].answer_in_background(NOW_NS)
    assert wait_for(lambda: engine.in_flight, 5.0)
    later['s'] = 100.0
    assert not fleet.set_task('r2', 'go').accepted   # the server is slow, r1 is not silent
    robots['r1'].pipeline.stop_task('test over')
    robots['r1'].worker.join(5.0)
    off, _ = fleet_of(FakeEngine(), 'r1', 'r2', max_active_robots=1, clock=lambda: time.monotonic() + 1e6)
    assert off.set_task('r1', 'go').accepted and not off.set_task('r2', 'go').accepted


def test_a_robots_silence_counts_from_its_requests_end_not_from_the_keyframe_before_it():
    """A model-paced camera sends nothing while the request is on the server: counted from the keyframe, a
    healthy robot was released right after a slow answer. (Real seconds; margins of 1 s either way.)"""
    engine = FakeEngine(2.0)   # r1's answer takes 2 s, over idle_release_s
    fleet, robots = fleet_of(engine, 'r1', 'r2', max_active_robots=1, idle_release_s=1.0)
    assert fleet.set_task('r1', 'go').accepted
    robots['r1'].answer_in_background(NOW_NS)
    robots['r1'].worker.join(10.0)
    assert robots['r1'].model_plans()   # answered after 2 s, its next keyframe not yet sent
    assert not fleet.set_task('r2', 'go').accepted and fleet.active() == ['r1']


# -- one backend, a client per robot ------------------------------------------------------------------

def test_every_robot_gets_its_own_client_of_one_engine_loaded_once():
    loads = []
    engine = FakeEngine()

    def factory(params):
        loads.append(params)
        return engine

    shared = SharedBackend(factory, 3)
    clients = [shared.client(InferenceParams(backend='openai')) for _ in range(3)]
    assert len(loads) == 1 and len({id(c) for c in clients}) == 3 and engine not in clients
    for client in clients:
        client.close()
    assert not engine.closed
    shared.close()
    assert engine.closed


def test_the_engine_gets_a_batch_slot_per_robot_when_the_parameters_give_fewer():
    """config/vln.yaml's lmdeploy.max_batch_size (4) is sized for one robot: 16 robots through it left 12
    waiting in the engine's queue behind whole answers (the node only warned)."""
    loads = []
    shared = SharedBackend(lambda params: loads.append(params) or FakeEngine(), 16)
    shared.client(InferenceParams(backend='lmdeploy', **{'lmdeploy': {'max_batch_size': 4}}), robot='r1')
    assert loads[0].lmdeploy.max_batch_size == 16
    params, said = fleet_engine_params(InferenceParams(backend='lmdeploy'), 16)
    assert params.lmdeploy.max_batch_size == 16 and said.startswith('lmdeploy.max_batch_size 4 raised to 16')
    # a larger batch is kept; one robot, or another backend, is left as configured
    big = InferenceParams(backend='lmdeploy', **{'lmdeploy': {'max_batch_size': 64}})
    assert fleet_engine_params(big, 16) == (big, '')
    assert fleet_engine_params(InferenceParams(backend='lmdeploy'), 1)[0].lmdeploy.max_batch_size == 4
    openai = InferenceParams(backend='openai')
    assert fleet_engine_params(openai, 16) == (openai, '')


def test_a_replay_recording_cannot_serve_two_robots_but_serves_one(tmp_path):
    params = InferenceParams(backend='replay', robots=('r1', 'r2'), **{'replay': {'file': recording(tmp_path, 'x')}})
    with pytest.raises(NotShareable, match="backend 'replay' cannot serve several robots"):
        SharedBackend(make_backend, 2).client(params)
    one = SharedBackend(make_backend, 1)
    assert one.client(params) is one.backend
    named = SharedBackend(make_backend, 1)   # robots: [r1] alone: a recording still serves it as it is
    assert named.client(params, robot='r1') is named.backend


def test_one_named_robot_gets_its_own_oracle_client_answering_from_its_ground_truth():
    """robots: [r2] alone was served by the backend itself, whose oracle asked for the simulator's first robot's
    ground truth (r1's), not r2's."""
    params = InferenceParams(backend='oracle', robots=('r2',))
    shared = SharedBackend(make_backend, 1)
    client = shared.client(params, robot='r2')
    assert client is not shared.backend and client._params.robot == 'r2'
    client.close()
    shared.close()


def test_openai_and_oracle_clients_cancel_only_their_own_request():
    from openai_server import FORWARD, FakeOpenAIServer
    from test_inference_core import request
    server = FakeOpenAIServer([FORWARD])
    server.repeat_last = True
    server.batching(1.0, 0.0)      # both requests wait in the fake batch for 1 s
    openai = OpenAIBackend(OpenAIParams(base_url=server.base_url, served_model='m'), 'm', 5.0)
    first, second = openai.client(), openai.client()
    outcome: dict[str, object] = {}

    def ask(name: str, client: OpenAIBackend) -> None:
        try:
            outcome[name] = client.generate(request()).text
        except BackendError as exc:
            outcome[name] = exc.reason

    try:
        threads = [threading.Thread(target=ask, args=pair) for pair in (('first', first), ('second', second))]
        for thread in threads:
            thread.start()
        assert wait_for(lambda: server.in_flight == 2, 3.0)
        first.cancel()
        for thread in threads:
            thread.join(5.0)
        assert outcome == {'first': 'cancelled', 'second': FORWARD}
        first.close()
        assert not openai._client.is_closed()  # the pool is the shared backend's
        openai.close()
        assert openai._client.is_closed()
    finally:
        server.close()
    oracle = OracleBackend(OracleParams())
    a, b = oracle.client(), oracle.client()
    started = b._cancel.start()
    a.cancel()
    assert not started.is_set()


def test_a_task_switch_on_one_robot_never_cancels_anothers_request_in_flight():
    engine = FakeEngine(0.5, 0.3)
    fleet, robots = fleet_of(engine, 'r1', 'r2')
    fleet.set_task('r1', 'go')
    fleet.set_task('r2', 'go')
    robots['r1'].answer_in_background(NOW_NS + 1)
    robots['r2'].answer_in_background(NOW_NS + 2)
    assert wait_for(lambda: len(engine.in_flight) == 2, 2.0)  # both at once: one engine batches them
    fleet.set_task('r1', 'another way')  # a switch cancels r1's request
    robots['r1'].pipeline.stop_task('stopped')
    for robot in robots.values():
        assert robot.worker is not None
        robot.worker.join(3.0)
    assert engine.cancelled == [0] and engine.answered == [(1, NOW_NS + 2)]
    assert [p.stamp_ns for p in robots['r2'].model_plans()] == [NOW_NS + 2]
    assert robots['r1'].model_plans() == []


def test_one_inference_node_with_the_oracle_answers_each_robot_from_its_own_ground_truth(monkeypatch):
    """With robots r1,r2 and the oracle backend, each robot's client asked for oracle.robot's (the first robot's)
    ground truth: every robot got r1's plans. Each client now asks for its own robot."""
    from vln_ros.core.backends.base import Request
    from vln_ros.core.prompts import Prompt
    from vln_ros.sim import api

    asked: list[str] = []

    def oracle(self, body):
        asked.append(body.robot)
        return api.OracleReply(text=f'{{"robot":"{body.robot}"}}', fault='')

    monkeypatch.setattr(api.SimClient, 'oracle', oracle)
    shared = SharedBackend(lambda params: OracleBackend(OracleParams()), 2)
    clients = {robot: shared.client(InferenceParams(), robot=robot) for robot in ('r1', 'r2')}
    request = Request(b'', NOW_NS, Prompt('', '', {}), 64, False, 0)
    answers = {robot: client.generate(request).text for robot, client in clients.items()}
    assert asked == ['r1', 'r2'] and answers == {'r1': '{"robot":"r1"}', 'r2': '{"robot":"r2"}'}
