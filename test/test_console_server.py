"""The operator console's web server (vln_ros/console/server.py) without ROS and without a browser: the real
server on 127.0.0.1 (port 0), aiohttp's client, a fake Commands that records its calls."""
from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp import web
from yarl import URL

from vln_ros.console.server import ConsoleServer
from vln_ros.core.config import ConsoleParams
from vln_ros.core.tasks import MAX_INSTRUCTION_CHARS

STAMP = struct.Struct('<d')


class FakeCommands:
    """Records every call with its monotonic time; set_task may be made slow."""

    def __init__(self, set_task_s: float = 0.0) -> None:
        self.set_task_s = set_task_s
        self.calls: list[tuple[str, tuple[Any, ...], float]] = []
        self._lock = threading.Lock()

    def _record(self, name: str, *args: Any) -> None:
        with self._lock:
            self.calls.append((name, args, time.monotonic()))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return [args for n, args, _ in self.calls if n == name]

    def times(self, name: str) -> list[float]:
        with self._lock:
            return [t for n, _, t in self.calls if n == name]

    def set_task(self, instruction: str) -> tuple[bool, str]:
        self._record('set_task', instruction)
        time.sleep(self.set_task_s)
        return True, f'task started ({len(instruction)} characters)'

    def stop_task(self) -> tuple[bool, str]:
        self._record('stop_task')
        return True, 'stopped'

    def estop(self) -> None:
        self._record('estop')

    def release_estop(self) -> tuple[bool, str]:
        self._record('release_estop')
        return False, 'the cause persists'

    def control_lost(self, why: str) -> None:
        self._record('control_lost', why)


class Servers:
    """Starts servers (127.0.0.1, port 0) with a fake Commands; stops them all at the end; keeps their log."""

    def __init__(self) -> None:
        self.started: list[ConsoleServer] = []
        self.logs: list[str] = []

    def __call__(self, commands: FakeCommands | None = None,
                 **overrides: Any) -> tuple[ConsoleServer, FakeCommands, str]:
        params = ConsoleParams(**{'address': '127.0.0.1', 'port': 0, **overrides})
        commands = commands or FakeCommands()
        server = ConsoleServer(params, commands, self.logs.append)
        url = server.start()
        self.started.append(server)
        return server, commands, url


Make = Servers


@pytest.fixture
def make_server() -> Iterator[Servers]:
    servers = Servers()
    yield servers
    for server in servers.started:
        server.stop()


def base(url: str) -> str:
    u = URL(url)
    return f'http://127.0.0.1:{u.port}'


def ws_url(url: str, token: str = '') -> str:
    return base(url).replace('http://', 'ws://') + '/ws' + (f'?token={token}' if token else '')


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


async def next_json(ws: aiohttp.ClientWebSocketResponse, pred: Callable[[dict[str, Any]], bool] = lambda m: True,
                    timeout_s: float = 2.0) -> dict[str, Any]:
    """The next JSON message for which pred holds (images and other messages skipped)."""
    deadline = time.monotonic() + timeout_s
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        if msg.type == aiohttp.WSMsgType.TEXT:
            data = json.loads(msg.data)
            if pred(data):
                return data
        elif msg.type != aiohttp.WSMsgType.BINARY:
            raise AssertionError(f'the socket closed: {msg}')


async def ask(ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any], timeout_s: float = 2.0) -> dict[str, Any]:
    """Send a message and wait for the reply to it."""
    await ws.send_str(json.dumps(message))
    return await next_json(ws, lambda m: m['type'] == 'reply' and m['to'] == message['type'], timeout_s)


async def next_image(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 2.0) -> tuple[float, bytes]:
    deadline = time.monotonic() + timeout_s
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        if msg.type == aiohttp.WSMsgType.BINARY:
            return STAMP.unpack_from(msg.data)[0], msg.data[STAMP.size:]
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f'the socket closed: {msg}')


def jpeg(i: int, size: int = 100) -> bytes:
    return b'\xff\xd8' + i.to_bytes(4, 'little') + bytes(size)


# -- access -------------------------------------------------------------------------------------------------
def test_loopback_without_token(make_server: Make) -> None:
    server, _, url = make_server()
    assert server.token == '' and '?token' not in url and URL(url).host == '127.0.0.1'

    async def body() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(base(url) + '/') as r:
                page = await r.text()
                assert r.status == 200 and 'static/console.js' in page and '{{' not in page
                assert "script-src 'self'" in r.headers['Content-Security-Policy']
            for name, kind in (('console.js', 'javascript'), ('console.css', 'text/css')):
                async with http.get(f'{base(url)}/static/{name}') as r:
                    assert r.status == 200 and kind in r.headers['Content-Type']
            async with http.get(base(url) + '/static/..%2Fserver.py') as r:
                assert r.status == 404
            async with http.ws_connect(ws_url(url)) as ws:
                hello = await next_json(ws, lambda m: m['type'] == 'hello')
                assert hello['max_instruction_chars'] == MAX_INSTRUCTION_CHARS
            # no token: only loopback host names (DNS rebinding), and a browser's socket from this origin only
            async with http.get(base(url) + '/', headers={'Host': 'evil.example:80'}) as r:
                assert r.status == 403
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws_url(url), origin='http://evil.example')
            assert refused.value.status == 403
            async with http.ws_connect(ws_url(url), origin=base(url)) as ws:
                await next_json(ws, lambda m: m['type'] == 'hello')

    asyncio.run(body())


def test_token_required_on_every_route(make_server: Make) -> None:
    token = 'sEcret-42'
    server, _, url = make_server(token=token)
    assert server.token == token and url.endswith(f'?token={token}')

    async def body() -> None:
        async with aiohttp.ClientSession() as http:
            for path in ('/', '/static/console.js', '/ws'):
                for query in ('', '?token=wrong', '?token=' + token[:-1]):
                    async with http.get(base(url) + path + query) as r:
                        assert r.status == 401, (path, query)
                async with http.get(base(url) + path, headers={'Authorization': 'Bearer nope'}) as r:
                    assert r.status == 401
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws_url(url))
            assert refused.value.status == 401
            async with http.get(base(url) + f'/?token={token}') as r:
                page = await r.text()
                assert r.status == 200 and token not in page   # the assets authenticate by the cookie
            async with http.get(base(url) + '/static/console.css', headers={'Authorization': f'Bearer {token}'}) as r:
                assert r.status == 200
            async with http.ws_connect(ws_url(url, token)) as ws:
                await next_json(ws, lambda m: m['type'] == 'hello')
        assert server.stats()['refused_token'] >= 10

    asyncio.run(body())
    assert make_server.logs and not any(token in line for line in make_server.logs)


def test_the_first_load_with_the_token_sets_a_strict_httponly_session_cookie_and_the_cookie_then_suffices(
        make_server: Make) -> None:
    token = 'c00kie-Token'
    server, _, url = make_server(token=token)
    port = URL(url).port

    async def body() -> None:
        # unsafe: aiohttp's jar keeps no cookie of an IP address unless told to (browsers keep them)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(base(url) + f'/?token={token}') as r:
                assert r.status == 200
                cookies = r.headers.getall('Set-Cookie')
            assert len(cookies) == 1
            attributes = [a.strip() for a in cookies[0].split(';')]
            assert attributes[0] == f'vln_console_{port}={token}'
            assert {a.lower() for a in attributes[1:]} == {'httponly', 'samesite=strict', 'path=/'}  # no Max-Age
            for path in ('/', '/static/console.js'):   # the cookie alone: a reload, the page's assets
                async with http.get(base(url) + path) as r:
                    assert r.status == 200 and 'Set-Cookie' not in r.headers, path
            async with http.ws_connect(ws_url(url)) as ws:   # the socket too, with the page's Origin
                assert (await next_json(ws, lambda m: m['type'] == 'hello'))['page'] >= 1
            async with http.get(base(url) + '/?token=wrong') as r:   # a wrong one in the URL beats the cookie
                assert r.status == 401
        # another port's cookie (another console's) is no help, nor a wrong one
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
            other.cookie_jar.update_cookies({f'vln_console_{port + 1}': token}, URL(base(url)))
            async with other.get(base(url) + '/') as r:
                assert r.status == 401
            other.cookie_jar.update_cookies({f'vln_console_{port}': 'wrong'}, URL(base(url)))
            async with other.get(base(url) + '/') as r:
                assert r.status == 401

    asyncio.run(body())


def test_without_a_token_no_cookie_is_set(make_server: Make) -> None:
    _, _, url = make_server()

    async def body() -> None:
        async with aiohttp.ClientSession() as http, http.get(base(url) + '/?token=anything') as r:
            assert r.status == 200 and 'Set-Cookie' not in r.headers

    asyncio.run(body())


def test_other_address_without_token_generates_one(make_server: Make) -> None:
    server, _, url = make_server(address='0.0.0.0')
    assert len(server.token) >= 16 and url.endswith('?token=' + server.token)

    async def body() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(base(url) + '/') as r:
                assert r.status == 401
            async with http.get(base(url) + '/?token=' + server.token) as r:
                assert r.status == 200

    asyncio.run(body())
    assert ConsoleServer(ConsoleParams(address='0.0.0.0'), FakeCommands(), print).token != server.token


def test_port_taken() -> None:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen()
        port = s.getsockname()[1]
        server = ConsoleServer(ConsoleParams(port=port), FakeCommands(), print)
        with pytest.raises(OSError, match=str(port)):
            server.start()
        server.stop()


# -- the page's first image: the newest keyframe in the page's own answer -----------------------------------------
def in_page(image: bytes) -> str:
    """How the page's answer carries an image (a data: URL in the <img>)."""
    return 'data:image/jpeg;base64,' + base64.b64encode(image).decode('ascii')


def test_the_page_carries_the_newest_keyframe_only_to_a_request_with_the_token_or_its_cookie(
        make_server: Make) -> None:
    token = 'k3yframe-Token'
    server, _, url = make_server(token=token)
    server.publish_image(jpeg(1), 5.0)
    port = URL(url).port

    async def body() -> None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            for query in ('', '?token=wrong', '?token=' + token[:-1]):
                async with http.get(base(url) + '/' + query) as r:
                    assert r.status == 401 and in_page(jpeg(1)) not in await r.text(), query
            async with http.get(base(url) + '/', headers={'Authorization': 'Bearer nope'}) as r:
                assert r.status == 401 and in_page(jpeg(1)) not in await r.text()
            http.cookie_jar.update_cookies({f'vln_console_{port + 1}': token}, URL(base(url)))   # another console's
            async with http.get(base(url) + '/') as r:
                assert r.status == 401 and in_page(jpeg(1)) not in await r.text()
            http.cookie_jar.update_cookies({f'vln_console_{port}': 'wrong'}, URL(base(url)))
            async with http.get(base(url) + '/') as r:
                assert r.status == 401 and in_page(jpeg(1)) not in await r.text()
            async with http.get(base(url) + f'/?token={token}') as r:   # the first load; the cookie then suffices
                assert r.status == 200 and in_page(jpeg(1)) in await r.text()
            async with http.get(base(url) + '/') as r:
                assert r.status == 200 and in_page(jpeg(1)) in await r.text()
        assert server.stats()['refused_token'] == 6

    asyncio.run(body())


def test_the_page_carries_the_newest_keyframe_with_its_stamp_uncached_and_no_image_before_the_first(
        make_server: Make) -> None:
    server, _, url = make_server()

    async def body() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(base(url) + '/') as r:
                page = await r.text()
                assert r.status == 200 and '<img id="image" alt="camera image (keyframe)">' in page
                assert 'data:image' not in page and '{{' not in page
            server.publish_image(jpeg(1), 10.25)
            server.publish_image(jpeg(2, size=3000), 11.5)
            async with http.get(base(url) + '/') as r:
                page = await r.text()
                assert r.status == 200 and r.headers['Cache-Control'] == 'no-store'
                assert f'src="{in_page(jpeg(2, size=3000))}" data-stamp="11.5" data-source="page"' in page
                assert in_page(jpeg(1)) not in page
        assert server.stats()['images_sent'] == 0   # the page's answer is no socket's: its counters stay the socket's

    asyncio.run(body())


class HeldSocketServer(ConsoleServer):
    """Holds every WebSocket handshake until `opened` is set (bounded): whatever image the page shows meanwhile
    came over HTTP."""

    HOLD_LIMIT_S = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened = threading.Event()
        self.held = threading.Event()   # a page asked for its socket

    async def _serve_socket(self, request: web.Request) -> web.WebSocketResponse:
        self.held.set()
        deadline = time.monotonic() + self.HOLD_LIMIT_S
        while not self.opened.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return await super()._serve_socket(request)


def real_jpeg(shade: int, width: int = 64, height: int = 48) -> bytes:
    return bytes(cv2.imencode('.jpg', np.full((height, width, 3), shade, np.uint8))[1].tobytes())


def test_the_page_shows_the_keyframe_its_own_answer_carried_before_its_socket_brings_any(browser: Any) -> None:
    """A real browser: with the socket's handshake held, the page still shows the keyframe the server had when it
    answered (console_first_image_s no longer waits for the script, the worker, the socket and the next
    keyframe); once the socket opens, its newer images replace it."""
    server = HeldSocketServer(ConsoleParams(address='127.0.0.1', port=0), FakeCommands(), lambda line: None)
    url = server.start()
    try:
        server.publish_image(real_jpeg(90, width=64), 1234.5)
        browser.get(url)
        shown = 'const v = window.vlnConsole || {}; return v.firstImageShownAt !== null && v.imagesShown > 0'
        assert wait_until(lambda: browser.execute_script(shown), 10.0)
        page = browser.execute_script('const v = window.vlnConsole; return {source: v.firstImageSource, '
                                      'stamp: v.lastImageStamp, received: v.imagesReceived, connected: v.connected,'
                                      ' width: document.getElementById("image").naturalWidth}')
        assert page == {'source': 'page', 'stamp': 1234.5, 'received': 0, 'connected': False, 'width': 64}
        assert server.held.is_set() and server.stats()['viewers'] == 0   # the socket was asked for, and held
        server.opened.set()
        server.publish_image(real_jpeg(160, width=80), 1240.0)
        newer = 'const v = window.vlnConsole; return v.connected && v.lastImageStamp === 1240 && ' \
                'document.getElementById("image").naturalWidth === 80'
        assert wait_until(lambda: browser.execute_script(newer), 10.0)
        assert browser.execute_script('return window.vlnConsole.firstImageSource') == 'page'
    finally:
        server.opened.set()
        server.stop()


# -- images and state -----------------------------------------------------------------------------------------
def test_images_newest_wins_and_rate_limit(make_server: Make) -> None:
    hz = 20.0
    server, _, url = make_server(image_max_hz=hz)

    async def body() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as ws:
            server.publish_image(jpeg(1), 1.5)
            assert await next_image(ws) == (1.5, jpeg(1))
            # a burst: only the newest is sent (after the rate limit's interval)
            for i in range(2, 102):
                server.publish_image(jpeg(i), float(i))
            stamp, data = await next_image(ws)
            assert (stamp, data) == (101.0, jpeg(101))
            with pytest.raises(asyncio.TimeoutError):
                await next_image(ws, timeout_s=0.2)
            assert server.stats()['images_skipped'] == 99
            # published at 200 Hz for 1 s: received at about image_max_hz, never more
            stop = threading.Event()

            def publisher() -> None:
                i = 1000
                while not stop.is_set():
                    i += 1
                    server.publish_image(jpeg(i), float(i))
                    time.sleep(0.005)

            t0 = time.monotonic()
            received = await images_while(ws, publisher, stop, 1.0)
            elapsed = time.monotonic() - t0
            # never more than the limit; and still images (a loaded machine may deliver fewer)
            assert 0.3 * hz * elapsed <= received <= hz * elapsed + 2, (received, elapsed)

    asyncio.run(body())


async def images_while(ws: Any, publisher: Callable[[], None], stop: threading.Event, seconds: float) -> int:
    """Images this page received while `publisher` ran in a thread for `seconds` (then `stop` ends it)."""
    thread = threading.Thread(target=publisher)
    t0 = time.monotonic()
    thread.start()
    received = 0
    try:
        while time.monotonic() - t0 < seconds:
            await next_image(ws)
            received += 1
    finally:
        stop.set()
        thread.join()
    return received


def _silent_page(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads (a tiny receive buffer)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(('127.0.0.1', port))
    s.sendall(f'GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
              'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'.encode())
    s.settimeout(2.0)
    head = b''
    while b'\r\n\r\n' not in head:
        head += s.recv(1)
    assert head.startswith(b'HTTP/1.1 101'), head
    return s


def test_slow_page_blocks_neither_the_node_nor_other_pages(make_server: Make) -> None:
    hz = 20.0
    server, _, url = make_server(image_max_hz=hz)
    silent = _silent_page(URL(url).port or 0)
    assert wait_until(lambda: server.stats()['viewers'] == 1, 2.0)
    big = bytes(300_000)
    publish_s: list[float] = []
    stop = threading.Event()

    def publisher() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            t = time.monotonic()
            server.publish_image(big, float(i))
            server.publish('cmd', {'vx': float(i)})
            publish_s.append(time.monotonic() - t)
            time.sleep(0.01)

    async def body() -> int:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as ws:
            t0 = time.monotonic()
            received = await images_while(ws, publisher, stop, 1.5)
            assert received >= 0.3 * hz * (time.monotonic() - t0), received
            return received

    try:
        received = asyncio.run(body())
        assert max(publish_s) < 0.25, max(publish_s)   # never waits for a page (a wait would be for ever)
        slow = next(p for p in server.pages() if p['id'] == 1)
        assert slow['images_sent'] < received / 2 and slow['images_skipped'] > 0, (slow, received)
        # stop() is bounded though a page is stuck in a send
        t = time.monotonic()
        server.stop(timeout_s=2.0)
        assert time.monotonic() - t < 2.5
        silent.settimeout(2.0)
        try:
            while silent.recv(65536):   # the server closed (or reset) the connection
                pass
        except ConnectionResetError:
            pass
    finally:
        silent.close()


def test_state_newest_per_kind_and_initial_state(make_server: Make) -> None:
    server, _, url = make_server()
    for i in range(3):
        server.publish('status', {'state': f'state-{i}', 'reason': '', 'task_id': 't', 'instruction': 'x'})
    server.publish('plan', {'latency_s': float('nan'), 'waypoints': [[0.5, 0.0, 0.0, 1.0]]})
    for i in range(5):
        server.publish('cmd', {'vx': float(i), 'vy': 0.0, 'wz': 0.0, 'stamp_s': 1.0})
    server.publish_image(jpeg(7), 7.0)

    async def body() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as ws:
            got: list[dict[str, Any]] = []
            image = None
            while image is None or len([m for m in got if m['type'] in ('status', 'plan', 'cmd')]) < 3:
                msg = await ws.receive(timeout=2.0)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    image = STAMP.unpack_from(msg.data)[0]
                else:
                    got.append(json.loads(msg.data))
            with pytest.raises(asyncio.TimeoutError):   # nothing more: the older ones were replaced
                await next_json(ws, lambda m: m['type'] in ('status', 'plan', 'cmd'), timeout_s=0.2)
            kinds = [m['type'] for m in got]
            assert kinds.count('status') == kinds.count('plan') == kinds.count('cmd') == 1
            assert image == 7.0
            by_kind = {m['type']: m for m in got}
            assert by_kind['status']['state'] == 'state-2' and by_kind['cmd']['vx'] == 4.0
            assert by_kind['plan']['latency_s'] is None and by_kind['plan']['waypoints'] == [[0.5, 0.0, 0.0, 1.0]]
            assert kinds.index('status') < kinds.index('plan') < kinds.index('cmd')   # in publication order
            # while connected: a burst is coalesced, the last value arrives
            for i in range(2000):
                server.publish('cmd', {'vx': float(i)})
            last, count = -1.0, 0
            while last != 1999.0:
                last = (await next_json(ws, lambda m: m['type'] == 'cmd'))['vx']
                count += 1
            assert count < 2000 / 4, count

    asyncio.run(body())


def test_state_carries_how_long_the_server_has_held_it_so_the_page_needs_no_clock_of_its_own(
        make_server: Make) -> None:
    server, _, url = make_server()
    server.publish('status', {'state': 'active'})
    held_s = 0.3
    time.sleep(held_s)   # the state ages in the server before any page connects

    async def body() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as ws:
            status = await next_json(ws, lambda m: m['type'] == 'status')
            assert status['state'] == 'active'
            assert held_s <= status['age_s'] < held_s + 10.0, status
            server.publish('status', {'state': 'stopped'})   # a new one is young
            fresh = await next_json(ws, lambda m: m['type'] == 'status')
            assert fresh['state'] == 'stopped' and 0.0 <= fresh['age_s'] < status['age_s'], fresh

    asyncio.run(body())


# -- control --------------------------------------------------------------------------------------------------
def test_one_page_holds_control(make_server: Make) -> None:
    server, commands, url = make_server(heartbeat_timeout_s=10.0)

    async def body() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as a, \
                http.ws_connect(ws_url(url)) as b:
            assert not server.control_alive()
            assert (await ask(a, {'type': 'take_control'}))['ok']
            assert (await next_json(a, lambda m: m['type'] == 'control' and m['mine']))['held']
            assert server.control_alive() and server.stats()['control_held']
            control_b = await next_json(b, lambda m: m['type'] == 'control' and m['held'])
            assert not control_b['mine']
            refused = await ask(b, {'type': 'take_control'})
            assert not refused['ok'] and 'holds control' in refused['message']
            for message in ({'type': 'instruction', 'text': 'go'}, {'type': 'stop_task'}, {'type': 'release_estop'},
                            {'type': 'release_control'}):
                assert not (await ask(b, message))['ok'], message
            reply = await ask(b, {'type': 'estop'})   # the e-stop: from any page
            assert reply['ok'] and commands.named('estop') == [()]
            assert (await ask(a, {'type': 'instruction', 'text': '  go to the door \n'}))['ok']
            assert commands.named('set_task') == [('go to the door',)]
            assert (await ask(a, {'type': 'stop_task'}))['ok']
            reply = await ask(a, {'type': 'release_estop'})
            assert not reply['ok'] and reply['message'] == 'the cause persists'   # the node's answer, passed on
            assert commands.named('stop_task') == [()] and commands.named('release_estop') == [()]
            assert (await ask(a, {'type': 'release_control'}))['ok']
            assert not server.control_alive()
            assert (await ask(b, {'type': 'take_control'}))['ok']
        assert server.stats()['commands_refused'] >= 5

    asyncio.run(body())
    assert wait_until(lambda: bool(commands.named('control_lost')), 1.0)   # b closed its socket holding control
    assert len(commands.named('control_lost')) == 1 and 'disconnected' in commands.named('control_lost')[0][0]


def test_heartbeat_lost_calls_control_lost_once(make_server: Make) -> None:
    timeout_s = 0.3
    server, commands, url = make_server(heartbeat_timeout_s=timeout_s)

    async def body() -> float:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as a, \
                http.ws_connect(ws_url(url)) as b:
            assert (await ask(a, {'type': 'take_control'}))['ok']
            last = start = time.monotonic()
            while time.monotonic() - start < 0.8:   # kept alive: 0.1 s beats
                await a.send_str('{"type": "heartbeat"}')
                last = time.monotonic()
                await asyncio.sleep(0.1)
                assert server.control_alive() and not commands.named('control_lost')
            lost = await next_json(a, lambda m: m['type'] == 'reply' and m['to'] == 'heartbeat')
            assert not lost['ok'] and 'control lost' in lost['message']
            assert not server.control_alive()
            await asyncio.sleep(0.3)
            assert (await ask(b, {'type': 'take_control'}))['ok']   # free again
            assert not (await ask(a, {'type': 'instruction', 'text': 'go'}))['ok']
            assert (await ask(b, {'type': 'release_control'}))['ok']
            return last

    last = asyncio.run(body())
    assert len(commands.named('control_lost')) == 1 and 'heartbeat' in commands.named('control_lost')[0][0]
    assert commands.times('control_lost')[0] - last <= timeout_s + 0.1
    assert server.stats()['control_lost'] == 1


def test_socket_closed_calls_control_lost_and_release_does_not(make_server: Make) -> None:
    server, commands, url = make_server(heartbeat_timeout_s=0.2)

    async def body() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(ws_url(url)) as a:
                assert (await ask(a, {'type': 'take_control'}))['ok']
                assert (await ask(a, {'type': 'release_control'}))['ok']
                await asyncio.sleep(0.4)        # longer than the heartbeat timeout: released, no e-stop
                assert not commands.named('control_lost') and not server.control_alive()
                assert (await ask(a, {'type': 'take_control'}))['ok']
                t0 = time.monotonic()
            assert wait_until(lambda: bool(commands.named('control_lost')), 1.0)
            assert commands.times('control_lost')[0] - t0 < 0.2   # the close, not the heartbeat's timeout
            await asyncio.sleep(0.3)
            assert len(commands.named('control_lost')) == 1

    asyncio.run(body())


def test_slow_command_delays_neither_estop_nor_heartbeat(make_server: Make) -> None:
    server, commands, url = make_server(FakeCommands(set_task_s=1.2), heartbeat_timeout_s=0.3)

    async def body() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as a, \
                http.ws_connect(ws_url(url)) as b:
            assert (await ask(a, {'type': 'take_control'}))['ok']
            await a.send_str(json.dumps({'type': 'instruction', 'text': 'go'}))
            t0 = time.monotonic()
            await asyncio.sleep(0.1)
            assert (await ask(b, {'type': 'estop'}))['ok'] and time.monotonic() - t0 < 0.5
            while not commands.named('set_task') or time.monotonic() - t0 < 1.5:
                await a.send_str('{"type": "heartbeat"}')
                await asyncio.sleep(0.1)
            reply = await next_json(a, lambda m: m['type'] == 'reply' and m['to'] == 'instruction')
            assert reply['ok'] and not commands.named('control_lost') and server.control_alive()

    asyncio.run(body())


# -- what the pages send ----------------------------------------------------------------------------------------
def test_instructions_checked_and_bad_messages_answered(make_server: Make) -> None:
    server, commands, url = make_server(heartbeat_timeout_s=10.0)

    async def body() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as a, \
                http.ws_connect(ws_url(url)) as b:
            assert (await ask(a, {'type': 'take_control'}))['ok']
            huge = await ask(a, {'type': 'instruction', 'text': 'x' * 1_000_000}, timeout_s=5.0)
            assert not huge['ok'] and str(MAX_INSTRUCTION_CHARS) in huge['message']
            for text in ('', '   \n\t'):
                reply = await ask(a, {'type': 'instruction', 'text': text})
                assert not reply['ok'] and 'empty' in reply['message']
            assert not (await ask(a, {'type': 'instruction', 'text': 42}))['ok']
            assert not (await ask(a, {'type': 'instruction'}))['ok']
            markup = '<img src=x onerror="alert(1)"> 走到<b>门口</b> & stop'
            assert (await ask(a, {'type': 'instruction', 'text': markup}))['ok']
            assert (await ask(a, {'type': 'instruction', 'text': 'y' * MAX_INSTRUCTION_CHARS}))['ok']
            assert commands.named('set_task') == [(markup,), ('y' * MAX_INSTRUCTION_CHARS,)]
            await a.send_str('{not json')
            bad = await next_json(a, lambda m: m['type'] == 'reply')
            assert not bad['ok'] and bad['to'] == ''
            assert not (await ask(a, {'type': 'launch_missiles'}))['ok']
            await a.send_str('[1, 2]')
            assert not (await next_json(a, lambda m: m['type'] == 'reply'))['ok']
            assert server.stats()['bad_messages'] == 3
            # a frame over the limit closes that socket only
            await a.send_str(json.dumps({'type': 'instruction', 'text': 'z' * 3_000_000}))
            closed = await a.receive(timeout=5.0)
            while closed.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                closed = await a.receive(timeout=5.0)
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert (await ask(b, {'type': 'take_control'}))['ok']
            assert (await ask(b, {'type': 'instruction', 'text': 'still here'}))['ok']
        assert commands.named('set_task')[-1] == ('still here',)

    asyncio.run(body())


async def closed_by_server(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 2.0) -> str:
    """The reason the server gave for closing ws (fails if anything but a close comes first, images aside)."""
    deadline = time.monotonic() + timeout_s
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        if msg.type == aiohttp.WSMsgType.CLOSE:
            return str(msg.extra)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg


def test_a_new_page_replaces_the_page_idle_longest_when_every_slot_is_taken(make_server: Make) -> None:
    server, _, url = make_server(max_viewers=3)

    async def body() -> None:
        async with aiohttp.ClientSession() as http:
            a, b, c = [await http.ws_connect(ws_url(url)) for _ in range(3)]
            for ws in (a, b, c):
                await next_json(ws, lambda m: m['type'] == 'hello')
            await ask(a, {'type': 'heartbeat'})   # a spoke last: b has been idle longest
            d = await http.ws_connect(ws_url(url))
            await next_json(d, lambda m: m['type'] == 'hello')
            assert 'replaced by a newer page' in await closed_by_server(b)
            assert b.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
            assert wait_until(lambda: server.stats()['viewers'] == 3, 2.0)
            assert server.stats()['replaced'] == 1 and server.stats()['refused_full'] == 0
            for ws in (a, c, d):
                assert not ws.closed
                await ws.close()

    asyncio.run(body())


def test_sockets_held_open_by_a_script_cannot_lock_a_new_page_out_of_estop_or_control(make_server: Make) -> None:
    server, commands, url = make_server(max_viewers=8, heartbeat_timeout_s=5.0)

    async def body() -> None:
        async with aiohttp.ClientSession() as script, aiohttp.ClientSession() as operator:
            held = [await script.ws_connect(ws_url(url)) for _ in range(8)]
            for ws in held:
                await next_json(ws, lambda m: m['type'] == 'hello')
            page = await operator.ws_connect(ws_url(url))
            await next_json(page, lambda m: m['type'] == 'hello')
            assert (await ask(page, {'type': 'estop'}))['ok']
            assert (await ask(page, {'type': 'take_control'}))['ok']
            again = [await script.ws_connect(ws_url(url)) for _ in range(8)]   # the script opens more: it
            for ws in again:                                                  # replaces its own, never the
                await next_json(ws, lambda m: m['type'] == 'hello')           # page holding control
            assert (await ask(page, {'type': 'instruction', 'text': 'still in control'}))['ok']
            assert server.stats()['viewers'] == 8 and server.pages()[0]['holds_control']
            for ws in held + again:
                await ws.close()
            await page.close()

    asyncio.run(body())
    assert commands.named('estop') == [()] and commands.named('set_task') == [('still in control',)]


def test_the_page_holding_control_is_never_replaced_so_a_single_slot_it_holds_refuses_the_next(
        make_server: Make) -> None:
    server, _, url = make_server(max_viewers=1, heartbeat_timeout_s=5.0)

    async def body() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(ws_url(url)) as a:
                await next_json(a, lambda m: m['type'] == 'hello')
                assert (await ask(a, {'type': 'take_control'}))['ok']
                second = await http.ws_connect(ws_url(url))
                assert 'at most 1' in await closed_by_server(second)
                assert second.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
                assert server.stats()['refused_full'] == 1 and server.stats()['replaced'] == 0
                assert (await ask(a, {'type': 'release_control'}))['ok']
                third = await http.ws_connect(ws_url(url))   # a page without control makes room now
                await next_json(third, lambda m: m['type'] == 'hello')
                assert 'replaced' in await closed_by_server(a)
                await third.close()

    asyncio.run(body())


def test_a_replaced_page_whose_close_is_on_the_way_cannot_take_control_but_can_still_estop(
        make_server: Make) -> None:
    """What a page sent before its close frame reached it is read after it lost its slot: the replacement and
    that message in one turn of the server's loop (the race, made certain)."""
    server, commands, url = make_server(max_viewers=1)

    async def body() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as a:
            await next_json(a, lambda m: m['type'] == 'hello')

            async def replace_then_hear() -> None:
                (page,) = server._pages.values()
                server._make_room()
                server._on_text(page, '{"type": "take_control"}')
                server._on_text(page, '{"type": "estop"}')
            assert server._loop is not None
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(replace_then_hear(), server._loop))
            reply = await next_json(a, lambda m: m['type'] == 'reply' and m['to'] == 'take_control')
            assert not reply['ok'] and 'replaced' in reply['message']
            assert server._control.holder is None
        assert wait_until(lambda: commands.named('estop') == [()], 2.0)

    asyncio.run(body())


def test_a_socket_without_the_token_never_takes_a_slot(make_server: Make) -> None:
    token = 'slot-T0ken'
    server, _, url = make_server(token=token, max_viewers=1)

    async def body() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url, token)) as page:
            await next_json(page, lambda m: m['type'] == 'hello')
            for _ in range(5):
                with pytest.raises(aiohttp.WSServerHandshakeError):
                    await http.ws_connect(ws_url(url))
            assert not page.closed and server.stats()['viewers'] == 1 and server.stats()['replaced'] == 0

    asyncio.run(body())


def test_stop_is_bounded_and_closes_every_socket(make_server: Make) -> None:
    server, commands, url = make_server(heartbeat_timeout_s=10.0)

    async def body() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(url)) as a, \
                http.ws_connect(ws_url(url)) as b:
            assert (await ask(a, {'type': 'take_control'}))['ok']
            t = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(None, server.stop, 2.0)
            assert time.monotonic() - t < 2.5
            assert not server.control_alive()
            for ws in (a, b):
                msg = await ws.receive(timeout=2.0)
                while msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    msg = await ws.receive(timeout=2.0)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            with pytest.raises(aiohttp.ClientConnectionError):
                await http.get(base(url) + '/')
        server.publish_image(jpeg(1), 1.0)   # after stop: harmless
        server.publish('cmd', {'vx': 0.0})

    asyncio.run(body())
    assert not commands.named('control_lost')
