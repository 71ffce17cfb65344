"""The simulator's side channel, in one place: its routes, default port, request and reply models, the aiohttp
server sim_node runs and the one client everybody uses (make eval, the oracle backend, the tests). No ROS.

Ground truth stays off the ROS graph, on this HTTP side channel (JSON), so nothing in the stack can read it by
accident. ROUTES below is the one definition of the routes (describe_routes() lists them).
A refusal is a 4xx (a 5xx when the simulator cannot answer) with {"error": "<why>"}.

This module is a leaf: the standard library and pydantic at import time, aiohttp only once a server is built.
vln_ros/core/backends/oracle.py imports it (the core's config imports every backend, on every machine), so it
must stay cheap and free of ROS, numpy and the simulator itself.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vln_ros.core.schema import MAX_NAMESPACE_CHARS

if TYPE_CHECKING:
    from aiohttp import web

DEFAULT_ADDRESS = '127.0.0.1'
DEFAULT_PORT = 8765
MAX_BODY_BYTES = 64 * 1024
CLIENT_TIMEOUT_S = 10.0


def local_url(port: int = DEFAULT_PORT) -> str:
    """The side channel of a simulator on this machine."""
    return f'http://{DEFAULT_ADDRESS}:{port}'


DEFAULT_URL = local_url()


# -- the models ----------------------------------------------------------------------------------------------
class ApiRequest(BaseModel):
    """A request body: strict types (no "7" for 7, no 1 for true), finite numbers and no unknown fields, so a
    typo is refused instead of silently ignored."""

    model_config = ConfigDict(extra='forbid', strict=True, frozen=True, allow_inf_nan=False)


class ApiReply(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True)


PersonScript = Literal['crossing', 'towards', 'doorway', 'overtaking']
PERSON_SCRIPTS: tuple[PersonScript, ...] = ('crossing', 'towards', 'doorway', 'overtaking')
MAX_PEOPLE = 4
MAX_CLUTTER = 12


class ResetRequest(ApiRequest):
    """The defaults (no people, no clutter) give every scene exactly as before people existed."""

    seed: int = Field(0, ge=0, description='The scene (vln_ros/sim/scenes.py)')
    people: list[PersonScript] = Field(
        default_factory=list, max_length=MAX_PEOPLE,
        description='One walking person per entry, on a seeded script timed to meet the robot (sim/people.py)')
    clutter: int = Field(0, ge=0, le=MAX_CLUTTER,
                         description='Static obstacles (boxes, chairs) on and near the route; it stays passable')


ROBOT_FIELD = Field('', max_length=MAX_NAMESPACE_CHARS,
                    description="which robot (sim_node's robots parameter); '' the first")


class RobotStart(ApiReply):
    """One robot's place in a new episode (several robots: vln_ros/sim/fleet.py's queue)."""

    robot: str
    start: list[float]        # [x, y, yaw] (m, m, rad), world frame
    goal: list[float]
    route_length_m: float     # its own route, start to goal
    shortest_path_m: float


class ResetReply(ApiReply):
    seed: int
    instruction: str
    language: str
    kind: str
    route_length_m: float
    shortest_path_m: float
    start: list[float]        # [x, y, yaw] (m, m, rad), world frame
    goal: list[float]
    now_s: float              # simulated time of the reset
    describe: str
    robots: list[RobotStart] = Field(default_factory=list)   # every robot, the first (the fields above) too
    # What the reset placed, so a caller can check it got the world it asked for: clutter can be fewer than asked
    # where the scene has no room (sim/people.py); people, one per script asked.
    clutter: int = 0
    people: int = 0


class OracleRecord(ApiReply):
    """One answer the oracle gave, with its simulated times."""

    asked_s: float
    stamp_s: float
    answered_s: float
    fault: str
    text: str
    pose: list[float]         # [x, y, yaw]: the true pose at stamp_s


class EpisodeReply(ApiReply):
    seed: int
    started_s: float
    now_s: float
    collisions: int                 # contacts with walls, doors, landmarks and clutter
    min_clearance_m: float          # to walls, doors, landmarks and clutter
    distance_travelled_m: float
    frames: int
    person_collisions: int = 0      # contacts with people, counted apart (a person never walks into a robot)
    min_clearance_people_m: float = math.inf   # robot body to a person's body; inf without people
    people_tracks: list[list[float]] = Field(default_factory=list)   # [t, person_index, x, y] at 20 Hz
    trajectory: list[list[float]]   # [t, x, y, yaw, vx, vy, wz] true, body twist, 20 Hz
    commands: list[list[float]]     # [t, vx, vy, wz] as received on cmd_vel
    answers: list[OracleRecord]
    real_time_factor: float         # nan until the simulator has run a moment
    robot: str = ''                 # whose episode this is ('' with one robot)
    robot_collisions: int = 0       # contacts with other robots, counted apart


class StatusReply(ApiReply):
    now_s: float
    real_time_factor: float
    seed: int
    speed_mps: float
    yaw_rate: float                 # rad/s


class FaultRequest(ApiRequest):
    """A field left out keeps its state."""

    camera_frozen: bool | None = None
    odom_lost: bool | None = None
    robot: str = ROBOT_FIELD


class FaultReply(ApiReply):
    camera_frozen: bool
    odom_lost: bool
    now_s: float


class OracleSettings(ApiRequest):
    """How the oracle answers (the ranges of the oracle backend's parameters, core/backends/oracle.py)."""

    latency_s: float = Field(0.0, ge=0.0, le=60.0, description='simulated time until the answer')
    noise_m: float = Field(0.0, ge=0.0, le=1.0)
    noise_deg: float = Field(0.0, ge=0.0, le=45.0)
    fault_malformed: float = Field(0.0, ge=0.0, le=1.0)
    fault_wrong_direction: float = Field(0.0, ge=0.0, le=1.0)
    fault_premature_arrived: float = Field(0.0, ge=0.0, le=1.0)
    fault_drift: float = Field(0.0, ge=0.0, le=1.0)
    fault_forward_blocked: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode='after')
    def _one_fault_per_answer(self) -> OracleSettings:
        check_fault_shares(self.fault_malformed, self.fault_wrong_direction, self.fault_premature_arrived,
                           self.fault_drift, self.fault_forward_blocked)
        return self


def check_fault_shares(*shares: float) -> None:
    """An answer has at most one fault, so the fault shares add up to at most 1 (here and in OracleParams)."""
    if sum(shares) > 1.0:
        raise ValueError(f'the fault shares add up to {sum(shares):g}; an answer has at most one fault, so at most 1')


class OracleRequest(OracleSettings):
    stamp_ns: int = Field(ge=0, description='capture stamp of the keyframe (ns of simulated time)')
    robot: str = ROBOT_FIELD


class OracleReply(ApiReply):
    text: str
    fault: str                      # '' or the fault in the text


class ErrorReply(ApiReply):
    error: str


# -- the routes ----------------------------------------------------------------------------------------------
RequestT = TypeVar('RequestT', bound=ApiRequest)
ReplyT = TypeVar('ReplyT', bound=ApiReply)


@dataclass(frozen=True)
class Route(Generic[RequestT, ReplyT]):
    method: str
    path: str
    request: type[RequestT] | None  # None: no body (GET)
    reply: type[ReplyT]
    summary: str
    example: str = ''               # the body, in short, for describe_routes()

    def usage(self) -> str:
        return f'{self.path} {self.example}' if self.example else self.path


RESET = Route('POST', '/reset', ResetRequest, ResetReply,
              'a new episode: the scene of seed n, the robot at its start', '{"seed": n}')
EPISODE: Route[Any, EpisodeReply] = Route('GET', '/episode', None, EpisodeReply,
                                          'the episode so far: true trajectory, commands received, collisions... '
                                          '(?robot=name: that robot\'s)')
STATUS: Route[Any, StatusReply] = Route('GET', '/status', None, StatusReply, 'simulated time, real-time factor '
                                        '(?robot=name: that robot\'s speed)')
FAULT = Route('POST', '/fault', FaultRequest, FaultReply, 'faults in the loop',
              '{"camera_frozen": b, "odom_lost": b}')
ORACLE = Route('POST', '/oracle', OracleRequest, OracleReply,
               "the oracle's answer for the frame captured at stamp_ns", '{"stamp_ns": n, "latency_s": s, ...}')
ROUTES: tuple[Route[Any, Any], ...] = (RESET, EPISODE, STATUS, FAULT, ORACLE)


def describe_routes(indent: str = '    ') -> str:
    """One line per route, for sim_node --help."""
    return '\n'.join(f'{indent}{r.method:<4} ' + (f'{r.usage():<30}' if len(r.usage()) < 30 else r.usage() + '   ')
                     + r.summary for r in ROUTES)


class Simulator(Protocol):
    """What the server serves (sim_node's simulator). Every method is called from a worker thread of its own,
    so it must be thread-safe, and may block (/oracle waits for simulated time). A refusal is an exception:
    LookupError -> 409 (e.g. a keyframe of another episode), TimeoutError -> 503, ValueError -> 400."""

    def reset(self, request: ResetRequest) -> ResetReply: ...

    def episode(self, robot: str = '') -> EpisodeReply: ...

    def status(self, robot: str = '') -> StatusReply: ...

    def fault(self, request: FaultRequest) -> FaultReply: ...

    def oracle(self, request: OracleRequest) -> OracleReply: ...


def _handlers(sim: Simulator) -> dict[str, Callable[[Any, str], ApiReply]]:
    """Each route's path -> its call on the simulator (the request model, or None for a GET; the ?robot= query)."""
    def reset(body: ResetRequest, robot: str) -> ResetReply:
        if robot:
            raise ValueError(f'?robot={robot}: a reset is for every robot of the world, not one')
        return sim.reset(body)

    return {RESET.path: reset,
            EPISODE.path: lambda _, robot: sim.episode(robot) if robot else sim.episode(),
            STATUS.path: lambda _, robot: sim.status(robot) if robot else sim.status(),
            FAULT.path: lambda body, robot: sim.fault(_for_robot(body, robot)),
            ORACLE.path: lambda body, robot: sim.oracle(_for_robot(body, robot))}


def _for_robot(body: FaultRequest | OracleRequest, robot: str) -> Any:
    """A POST's robot from its body's field or from ?robot= (either will do); both, differing, is refused: a fault
    or an answer meant for r2 must not land on r1 (the first robot, an empty field's)."""
    if not robot:
        return body
    if body.robot and body.robot != robot:
        raise ValueError(f'robot {body.robot!r} in the body but ?robot={robot}: name one robot')
    return body.model_copy(update={'robot': robot})


def validation_message(exc: ValidationError) -> str:
    """'field: why; field: why' (pydantic's long form names its docs page on every line)."""
    return '; '.join(f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


# -- the server ----------------------------------------------------------------------------------------------
def _json_response(status: int, reply: BaseModel) -> web.Response:
    from aiohttp import web

    # json.dumps, not pydantic's JSON: a real-time factor not known yet is NaN on the wire, as it always was
    return web.Response(status=status, text=json.dumps(reply.model_dump()), content_type='application/json')


async def _in_daemon_thread(call: Callable[[], ApiReply]) -> ApiReply:
    """call() in a daemon thread of its own: /oracle may wait minutes for simulated time that a stopping
    simulator never brings, and an executor's threads would hold the process at exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[ApiReply] = loop.create_future()

    def settle(result: ApiReply | None, error: BaseException | None) -> None:
        if done.done():      # the request was cancelled (client gone, server stopping)
            return
        if error is not None:
            done.set_exception(error)
        else:
            assert result is not None
            done.set_result(result)

    def run() -> None:
        try:
            result, error = call(), None
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which answers with it
            result, error = None, exc
        with contextlib.suppress(RuntimeError):   # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name='sim-api-call', daemon=True).start()
    return await done


def make_app(sim: Simulator) -> web.Application:
    """The side channel's aiohttp application over sim: ROUTES, JSON in and out, every refusal as
    {"error": ...} with a 4xx (5xx when the simulator cannot answer)."""
    from aiohttp import web

    @web.middleware
    async def errors_as_json(request: web.Request,
                             handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:   # aiohttp's own: 404, 405, 413 ...
            if exc.status < 400:
                raise
            allow = exc.headers.get('Allow', '')
            reason = {404: f'no route {request.path} (routes: {", ".join(r.path for r in ROUTES)})',
                      405: f'{request.method} {request.path} is not a route; it takes {allow}',
                      413: f'the body is over {MAX_BODY_BYTES} bytes'}.get(exc.status, exc.reason)
            response = _json_response(exc.status, ErrorReply(error=reason))
            if allow:
                response.headers['Allow'] = allow
            return response

    handlers = _handlers(sim)

    def endpoint(route: Route[Any, Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
        call = handlers[route.path]

        async def serve(request: web.Request) -> web.Response:
            body: ApiRequest | None = None
            if route.request is not None:
                raw = await request.read()       # 413 past client_max_size
                try:
                    data = json.loads(raw) if raw.strip() else {}
                except ValueError as exc:        # also bad UTF-8
                    return _json_response(400, ErrorReply(error=f'the body is not JSON: {exc}'))
                if not isinstance(data, dict):
                    return _json_response(400, ErrorReply(error='the body must be a JSON object'))
                try:
                    body = route.request.model_validate(data)
                except ValidationError as exc:
                    return _json_response(400, ErrorReply(error=validation_message(exc)))
            try:
                reply = await _in_daemon_thread(lambda: call(body, request.query.get('robot', '')))
            except LookupError as exc:
                return _json_response(409, ErrorReply(error=str(exc)))
            except TimeoutError as exc:
                return _json_response(503, ErrorReply(error=str(exc) or 'the simulator did not answer in time'))
            except ValueError as exc:
                return _json_response(400, ErrorReply(error=str(exc)))
            except Exception as exc:  # noqa: BLE001 - a bug in the simulator: still an answer the client can read
                return _json_response(500, ErrorReply(error=f'the simulator failed: {exc!r}'))
            return _json_response(200, reply)

        return serve

    app = web.Application(middlewares=[errors_as_json], client_max_size=MAX_BODY_BYTES)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, endpoint(route))
    return app


class ApiServer:
    """make_app(sim) served on address:port by aiohttp on its own asyncio loop in a background thread."""

    def __init__(self, sim: Simulator, address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT) -> None:
        self.sim, self.address, self.port = sim, address, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> int:
        """Bind and serve; the port it listens on (port 0 picks one). OSError if address:port cannot be served
        (the port taken, the address not on this machine)."""
        if self._thread is not None:
            raise RuntimeError('the side channel was started already')
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run_loop, args=(loop,), name='sim-api', daemon=True)
        self._thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._start(), loop).result(timeout=10.0)
        except BaseException:
            self.stop()
            raise
        return self.port

    def serving(self) -> bool:
        """Its thread is alive (started and not stopped)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop listening and end the thread (requests still waiting on the simulator are dropped)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError, TimeoutError):   # stopped already; or stopping anyway
            asyncio.run_coroutine_threadsafe(self._cleanup(), loop).result(timeout=timeout_s)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _start(self) -> int:
        from aiohttp import web

        runner = web.AppRunner(make_app(self.sim), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.address, self.port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        return int(runner.addresses[0][1])

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# -- the client ----------------------------------------------------------------------------------------------
class SimApiError(RuntimeError):
    """The simulator refused a request (a reply other than 2xx); `error` is its reason."""

    def __init__(self, method: str, path: str, status: int, error: str) -> None:
        super().__init__(f'{method} {path}: {status} {error}')
        self.status = status
        self.error = error


def _robot_query(robot: str) -> str:
    return urllib.parse.urlencode({'robot': robot})


class SimClient:
    """The side channel of the simulator at url, synchronous (urllib). OSError when it cannot be reached,
    SimApiError when it refuses, pydantic's ValidationError (a ValueError) when a reply is not what it should be."""

    def __init__(self, url: str = DEFAULT_URL, timeout_s: float = CLIENT_TIMEOUT_S) -> None:
        self.url = url.rstrip('/')
        self.timeout_s = timeout_s

    @classmethod
    def on_port(cls, port: int, timeout_s: float = CLIENT_TIMEOUT_S) -> SimClient:
        return cls(local_url(port), timeout_s)

    def send(self, method: str, path: str, data: bytes | None = None, timeout_s: float | None = None) -> Any:
        """One request as bytes -> the reply's JSON; SimApiError on a reply other than 2xx."""
        request = urllib.request.Request(self.url + path, data, {'Content-Type': 'application/json'}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s if timeout_s is None else timeout_s) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors='replace')
            try:
                error = str(json.loads(text)['error'])
            except (ValueError, KeyError, TypeError):
                error = text[:200] or str(exc.reason)
            raise SimApiError(method, path, exc.code, error) from None

    def call(self, route: Route[RequestT, ReplyT], body: RequestT | None = None,
             timeout_s: float | None = None) -> ReplyT:
        data = None if body is None else json.dumps(body.model_dump(exclude_none=True)).encode()
        return route.reply.model_validate(self.send(route.method, route.path, data, timeout_s))

    def reset(self, seed: int, timeout_s: float | None = None, people: list[PersonScript] | None = None,
              clutter: int = 0) -> ResetReply:
        return self.call(RESET, ResetRequest(seed=seed, people=people or [], clutter=clutter), timeout_s)

    def episode(self, timeout_s: float | None = None, robot: str = '') -> EpisodeReply:
        if robot:
            return EPISODE.reply.model_validate(self.send('GET', f'{EPISODE.path}?{_robot_query(robot)}',
                                                          None, timeout_s))
        return self.call(EPISODE, None, timeout_s)

    def status(self, timeout_s: float | None = None, robot: str = '') -> StatusReply:
        if robot:
            return STATUS.reply.model_validate(self.send('GET', f'{STATUS.path}?{_robot_query(robot)}', None,
                                                         timeout_s))
        return self.call(STATUS, None, timeout_s)

    def fault(self, camera_frozen: bool | None = None, odom_lost: bool | None = None, robot: str = '') -> FaultReply:
        return self.call(FAULT, FaultRequest(camera_frozen=camera_frozen, odom_lost=odom_lost, robot=robot))

    def oracle(self, request: OracleRequest, timeout_s: float | None = None) -> OracleReply:
        return self.call(ORACLE, request, timeout_s)

    def ready(self) -> bool:
        """The simulator answers /status within a second."""
        try:
            self.status(timeout_s=1.0)
            return True
        except (OSError, SimApiError, ValueError):
            return False
