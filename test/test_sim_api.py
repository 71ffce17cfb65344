"""sim/api: the simulator's side channel without ROS: the real aiohttp app on a loopback port, the one client,
every kind of bad request refused with a 4xx and its reason as JSON; and sim/service: a reset handed to the
physics thread, so that no frame of the old episode is published after it."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for

from vln_ros.core.backends.oracle import OracleParams
from vln_ros.sim import api
from vln_ros.sim.api import ApiServer, SimApiError, SimClient
from vln_ros.sim.params import SimParams

REPO = Path(__file__).resolve().parents[1]


class FakeSim:
    """api.Simulator with canned replies; oracle() refuses or waits as a test asks."""

    def __init__(self) -> None:
        self.resets: list[int] = []
        self.oracle_error: Exception | None = None
        self.oracle_gate = threading.Event()
        self.oracle_gate.set()
        self.oracle_waiting = threading.Event()

    def reset(self, request: api.ResetRequest) -> api.ResetReply:
        self.resets.append(request.seed)
        return api.ResetReply(seed=request.seed, instruction='go to the red door', language='en', kind='door',
                              route_length_m=4.0, shortest_path_m=3.5, start=[0.0, 0.0, 0.0], goal=[4.0, 0.0, 0.0],
                              now_s=12.5, describe='seed 7')

    def episode(self) -> api.EpisodeReply:
        return api.EpisodeReply(seed=7, started_s=12.5, now_s=13.0, collisions=0, min_clearance_m=math.inf,
                                distance_travelled_m=0.0, frames=5, trajectory=[[12.5, 0, 0, 0, 0, 0, 0]],
                                commands=[], answers=[api.OracleRecord(asked_s=12.6, stamp_s=12.55, answered_s=13.0,
                                                                       fault='', text='{}', pose=[0, 0, 0])],
                                real_time_factor=math.nan)

    def status(self) -> api.StatusReply:
        return api.StatusReply(now_s=13.0, real_time_factor=math.nan, seed=7, speed_mps=0.0, yaw_rate=0.0)

    def fault(self, request: api.FaultRequest) -> api.FaultReply:
        return api.FaultReply(camera_frozen=bool(request.camera_frozen), odom_lost=bool(request.odom_lost), now_s=13.0)

    def oracle(self, request: api.OracleRequest) -> api.OracleReply:
        self.oracle_waiting.set()
        assert self.oracle_gate.wait(10.0)
        if self.oracle_error is not None:
            raise self.oracle_error
        return api.OracleReply(text=f'answer for {request.stamp_ns}', fault='')


@pytest.fixture
def served() -> Iterator[tuple[FakeSim, SimClient]]:
    sim = FakeSim()
    server = ApiServer(sim, port=0)
    port = server.start()
    try:
        yield sim, SimClient.on_port(port, timeout_s=5.0)
    finally:
        sim.oracle_gate.set()
        server.stop()


def refusal(client: SimClient, method: str, path: str, data: bytes | None = None) -> tuple[int, str]:
    with pytest.raises(SimApiError) as refused:
        client.send(method, path, data)
    return refused.value.status, refused.value.error


def test_every_route_answers_the_typed_client_with_its_reply_model(served):
    sim, client = served
    assert client.reset(7).instruction == 'go to the red door' and sim.resets == [7]
    episode = client.episode()
    assert episode.answers[0].stamp_s == 12.55 and math.isinf(episode.min_clearance_m)
    assert math.isnan(client.status().real_time_factor)     # not known yet: NaN on the wire, as before
    assert client.fault(camera_frozen=True).camera_frozen
    assert client.oracle(api.OracleRequest(stamp_ns=42, latency_s=0.3)).text == 'answer for 42'
    assert client.ready()


def test_the_wire_format_is_the_json_it_always_was(served):
    _, client = served
    assert client.send('POST', '/reset', b'{"seed": 7}')['start'] == [0.0, 0.0, 0.0]
    assert client.send('POST', '/reset', b'')['seed'] == 0                      # no body: seed 0
    assert set(client.send('GET', '/status')) == {'now_s', 'real_time_factor', 'seed', 'speed_mps', 'yaw_rate'}
    assert client.send('POST', '/oracle', b'{"stamp_ns": 5, "latency_s": 1}') == {'text': 'answer for 5', 'fault': ''}


@pytest.mark.parametrize(('method', 'path', 'data', 'status', 'reason'), [
    ('GET', '/nothing', None, 404, r'no route /nothing \(routes: /reset, /episode'),
    ('GET', '/reset', None, 405, r'GET /reset is not a route; it takes POST'),
    ('POST', '/status', b'{}', 405, r'it takes GET'),
    ('POST', '/reset', b'{"seed": 7', 400, r'the body is not JSON'),
    ('POST', '/reset', b'\xff\xfe', 400, r'the body is not JSON'),
    ('POST', '/reset', b'[7]', 400, r'the body must be a JSON object'),
    ('POST', '/reset', b'{"seed": "7"}', 400, r'^seed: Input should be a valid integer'),
    ('POST', '/reset', b'{"seed": 7.5}', 400, r'^seed: Input should be a valid integer'),
    ('POST', '/reset', b'{"seed": -1}', 400, r'^seed: Input should be greater than or equal to 0'),
    ('POST', '/reset', b'{"sead": 7}', 400, r'^sead: Extra inputs are not permitted'),
    ('POST', '/reset', b'{"people": ["running"]}', 400,
     r"^people\.0: Input should be 'crossing', 'towards', 'doorway' or 'overtaking'"),
    ('POST', '/reset', b'{"people": "crossing"}', 400, r'^people: Input should be a valid list'),
    ('POST', '/reset', b'{"people": ["towards", "towards", "towards", "towards", "towards"]}', 400,
     r'^people: List should have at most 4 items'),
    ('POST', '/reset', b'{"clutter": 13}', 400, r'^clutter: Input should be less than or equal to 12'),
    ('POST', '/reset', b'{"clutter": -1}', 400, r'^clutter: Input should be greater than or equal to 0'),
    ('POST', '/reset', b'{"clutter": 2.0}', 400, r'^clutter: Input should be a valid integer'),
    ('POST', '/fault', b'{"camera_frozen": 1}', 400, r'^camera_frozen: Input should be a valid boolean'),
    ('POST', '/oracle', b'{"latency_s": 0.3}', 400, r'^stamp_ns: Field required'),
    ('POST', '/oracle', b'{"stamp_ns": true}', 400, r'^stamp_ns: Input should be a valid integer'),
    ('POST', '/oracle', b'{"stamp_ns": 1, "latency_s": NaN}', 400, r'^latency_s: Input should be a finite number'),
    ('POST', '/oracle', b'{"stamp_ns": 1, "fault_malformed": 0.8, "fault_wrong_direction": 0.8}', 400,
     r'the fault shares add up to 1\.6'),
    ('POST', '/reset', b'{"seed": 7, "pad": "' + b'x' * api.MAX_BODY_BYTES + b'"}', 413,
     rf'the body is over {api.MAX_BODY_BYTES} bytes'),
])
def test_a_bad_request_gets_a_4xx_with_the_reason_as_json(served, method, path, data, status, reason):
    sim, client = served
    got_status, error = refusal(client, method, path, data)
    assert got_status == status and re.search(reason, error), error
    assert sim.resets == []     # refused before it reached the simulator


def test_a_refusal_is_json_with_an_error_field(served):
    _, client = served
    import urllib.error
    import urllib.request
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(client.url + '/nothing', timeout=5.0)
    assert refused.value.headers['Content-Type'].startswith('application/json')
    assert set(json.loads(refused.value.read())) == {'error'}


@pytest.mark.parametrize(('error', 'status'), [(LookupError('no keyframe at 1.000 s'), 409),
                                               (TimeoutError('simulated time stalled'), 503),
                                               (ValueError('bad seed'), 400),
                                               (RuntimeError('a bug'), 500)])
def test_the_simulators_refusals_keep_their_status_and_reason(served, error, status):
    sim, client = served
    sim.oracle_error = error
    got_status, reason = refusal(client, 'POST', '/oracle', b'{"stamp_ns": 1}')
    assert got_status == status and str(error) in reason


def test_an_oracle_waiting_for_simulated_time_does_not_hold_up_the_other_routes(served):
    sim, client = served
    sim.oracle_gate.clear()
    answers: list[api.OracleReply] = []
    asking = threading.Thread(target=lambda: answers.append(client.oracle(api.OracleRequest(stamp_ns=9))))
    asking.start()
    assert sim.oracle_waiting.wait(5.0)
    assert client.status().seed == 7 and client.reset(3).seed == 3     # answered while the oracle waits
    sim.oracle_gate.set()
    asking.join(5.0)
    assert [a.text for a in answers] == ['answer for 9']


def test_stopping_the_server_does_not_wait_for_an_oracle_that_never_answers():
    sim = FakeSim()
    sim.oracle_gate.clear()           # simulated time that never comes
    server = ApiServer(sim, port=0)
    client = SimClient.on_port(server.start(), timeout_s=10.0)
    assert server.serving()
    failures: list[Exception] = []

    def ask() -> None:
        try:
            client.oracle(api.OracleRequest(stamp_ns=9))
        except (OSError, SimApiError) as exc:
            failures.append(exc)
    asking = threading.Thread(target=ask)
    asking.start()
    assert sim.oracle_waiting.wait(5.0)
    server.stop(timeout_s=2.0)
    asking.join(5.0)
    assert not asking.is_alive() and len(failures) == 1      # the asker hears the connection end
    assert not server.serving()
    sim.oracle_gate.set()


def test_a_port_in_use_is_an_os_error_at_start(served):
    _, client = served
    port = int(client.url.rsplit(':', 1)[1])
    with pytest.raises(OSError):
        ApiServer(FakeSim(), port=port).start()


def test_the_client_names_an_unreachable_simulator_as_os_error():
    server = ApiServer(FakeSim(), port=0)
    port = server.start()
    server.stop()
    with pytest.raises(OSError):
        SimClient.on_port(port, timeout_s=2.0).status()
    assert not SimClient.on_port(port).ready()


def test_the_oracle_backend_settings_are_the_ranges_the_simulator_takes():
    backend = OracleParams.model_json_schema()['properties']
    request = api.OracleSettings.model_json_schema()['properties']
    assert set(request) == set(OracleParams().request_settings())
    for name, field in request.items():
        assert (field['minimum'], field['maximum']) == (backend[name]['minimum'], backend[name]['maximum']), name


def test_the_port_and_routes_are_spelt_only_in_sim_api():
    spelt = [p.relative_to(REPO).as_posix() for p in (REPO / 'vln_ros').rglob('*.py')
             if re.search(r"8765|'/(reset|episode|status|fault|oracle)'", p.read_text())]
    assert spelt == ['vln_ros/sim/api.py'], spelt
    assert SimParams().api_port == api.DEFAULT_PORT and OracleParams().url == api.local_url(api.DEFAULT_PORT)


def test_the_core_imports_the_api_without_ros_aiohttp_or_the_simulator():
    # (numpy is allowed: the controller's parameters nest the collision guard's, whose module needs it)
    script = ('import sys, vln_ros.core.config, vln_ros.sim.api; '
              'print(sorted(m for m in sys.modules if m.split(".")[0] in ("rclpy", "aiohttp") '
              'or m.startswith("vln_ros.sim.") and m != "vln_ros.sim.api"))')
    loaded = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == '[]', loaded


def oracle_request(stamp_ns: int):
    from vln_ros.core.backends.base import Request
    from vln_ros.core.prompts import Prompt
    return Request(b'', stamp_ns, Prompt('system', 'user', {}), 64, False, 1)


def test_the_oracle_backend_asks_through_the_client_and_names_a_refusal_and_an_absence(served):
    from vln_ros.core.backends.base import BackendError
    from vln_ros.core.backends.oracle import OracleBackend
    sim, client = served
    backend = OracleBackend(OracleParams(url=client.url, latency_s=0.2))
    answer = backend.generate(oracle_request(42))
    assert answer.text == 'answer for 42' and answer.finish_reason == 'stop'
    sim.oracle_error = LookupError('no ground truth for a keyframe captured at 0.000 s')
    with pytest.raises(BackendError) as refused:
        backend.generate(oracle_request(42))
    assert refused.value.reason == 'refused' and refused.value.detail == '409 ' + str(sim.oracle_error)
    server = ApiServer(FakeSim(), port=0)
    gone = server.start()
    server.stop()
    with pytest.raises(BackendError) as absent:
        OracleBackend(OracleParams(url=api.local_url(gone))).generate(oracle_request(42))
    assert absent.value.reason == 'unavailable' and api.local_url(gone) in absent.value.detail


# -- the simulator behind it ---------------------------------------------------------------------------------
def test_a_reset_asked_while_a_frame_is_rendered_never_lets_that_frame_out():
    """The interleaving that raced: the side channel's reset lands between a capture and its publication.
    With the reset applied by the side channel's thread (as before), the frame of the old scene would go out
    after the reset; handed to the physics thread, it is dropped with the old episode's frames."""
    from vln_ros.sim.service import SimService

    replies: list[api.ResetReply] = []
    resetting: list[threading.Thread] = []
    service: SimService

    def render_frame(scene, pose, people, _robots):
        if not resetting:   # the first capture: a reset comes in from the side channel while it is rendered
            thread = threading.Thread(target=lambda: replies.append(service.reset(api.ResetRequest(seed=7))))
            resetting.append(thread)
            thread.start()
            assert wait_for(lambda: service.resets_waiting() or not thread.is_alive(), 5.0)
        return scene.seed   # the picture says which scene it shows

    service = SimService(SimParams(seed=1), render_frame)
    published = []
    for _ in range(40):                                   # 0.4 s of simulated time: frames at 10 Hz
        published.extend(service.step().frames)
    resetting[0].join(10.0)
    assert [r.seed for r in replies] == [7]
    assert published and {seed for _, seed in published} == {7}, published
    assert all(stamp_s >= replies[0].now_s for stamp_s, _ in published)


def test_the_simulator_serves_every_route_through_the_real_app_without_ros():
    from vln_ros.sim.service import SimService

    service = SimService(SimParams(seed=1), lambda scene, pose, people, _robots: scene.seed)
    stamps: list[tuple[float, int]] = []
    stopping = threading.Event()

    def physics() -> None:        # unpaced: as fast as it goes
        while not stopping.is_set():
            stamps.extend(service.step().frames)
            service.idle(0.001)
    server = ApiServer(service, port=0)
    client = SimClient.on_port(server.start())
    thread = threading.Thread(target=physics, daemon=True)
    thread.start()
    try:
        scene = client.reset(7)
        assert scene.seed == 7 and scene.shortest_path_m > 1.0 and client.status().seed == 7
        assert wait_for(lambda: any(seed == 7 and t > scene.now_s for t, seed in stamps), 10.0)
        stamp_s = next(t for t, seed in stamps if seed == 7 and t > scene.now_s)
        answer = client.oracle(api.OracleRequest(stamp_ns=round(stamp_s * 1e9), latency_s=0.2))
        assert json.loads(answer.text)['act'] and answer.fault == ''
        with pytest.raises(SimApiError) as refused:
            client.oracle(api.OracleRequest(stamp_ns=1))          # before this episode
        assert refused.value.status == 409 and 'no ground truth' in refused.value.error
        assert client.fault(odom_lost=True).odom_lost and not client.fault().camera_frozen
        episode = client.episode()
        assert episode.seed == 7 and [a.stamp_s for a in episode.answers] == [pytest.approx(stamp_s)]
    finally:
        stopping.set()
        thread.join(5.0)
        server.stop()


def test_a_reset_the_physics_thread_never_takes_is_a_timeout():
    from vln_ros.sim.service import SimService

    service = SimService(SimParams(), lambda scene, pose, people, _robots: None, reset_wait_s=0.05)
    with pytest.raises(TimeoutError, match='did not take the reset'):
        service.reset(api.ResetRequest(seed=3))
    service.step()                                          # the abandoned reset is not applied later
    assert service.world.log.seed == 0


def test_sim_node_help_lists_the_routes_from_the_api():
    from vln_ros.nodes import sim_node
    assert api.describe_routes() in (sim_node.__doc__ or '')
    assert '    POST /reset {"seed": n}            a new episode' in api.describe_routes()


def test_a_post_for_one_robot_names_it_in_the_body_or_the_query_and_never_lands_on_another():
    """POST /fault?robot=r2 froze r1's camera (the query was dropped, and an empty body field means the first
    robot), and /oracle?robot=r2 answered from r1's ground truth; sim_node's docs offer either way."""
    from vln_ros.sim.service import SimService

    service = SimService(SimParams(seed=1, robots=['r1', 'r2']), lambda scene, pose, people, _robots: None)
    server = ApiServer(service, port=0)
    client = SimClient.on_port(server.start())
    try:
        assert client.send('POST', '/fault?robot=r2', b'{"camera_frozen": true}')['camera_frozen'] is True
        assert client.fault(robot='r2').camera_frozen and not client.fault(robot='r1').camera_frozen
        assert refusal(client, 'POST', '/fault?robot=r2', b'{"robot": "r1", "odom_lost": true}') == (
            400, "robot 'r1' in the body but ?robot=r2: name one robot")
        assert not client.fault(robot='r1').odom_lost   # nothing applied on a refusal
        assert refusal(client, 'POST', '/oracle?robot=r1', b'{"robot": "r2", "stamp_ns": 1}')[0] == 400
        assert refusal(client, 'POST', '/oracle?robot=nobody', b'{"stamp_ns": 1}')[0] == 409   # unknown robot
        assert refusal(client, 'POST', '/reset?robot=r2', b'{"seed": 1}') == (
            400, '?robot=r2: a reset is for every robot of the world, not one')
    finally:
        server.stop()
