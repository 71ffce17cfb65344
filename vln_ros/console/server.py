"""The operator console's web server: no ROS. aiohttp on its own asyncio loop in a background thread.

Routes: GET / (the page, with the newest image in it: shown before its socket is open), GET /static/<file> (its
assets), GET /ws (the WebSocket); every one passes the guard of routes.py (token, or loopback host names only; a
browser's WebSocket from the same origin only).

To the pages: images as binary frames (8-byte little-endian float64 stamp_s, then the JPEG), state as JSON
text frames `{"type": kind, ..., "age_s": s}` (age_s: how long the server had held that state when it sent it, on
its own monotonic clock, so a page can age every field without trusting its own clock). Each page has its own
sender task that sends the newest image (at most image_max_hz; images replaced before it could send them are
skipped and counted) and the newest message of each kind: a slow page never slows the node or the other pages,
and memory stays flat.

From the pages (JSON text, messages.py): take_control, release_control, heartbeat, instruction, stop_task,
estop, release_estop; each command is answered `{"type": "reply", "to": type, "ok": bool, "message": str}`.
Who may do what is control.py's: the e-stop from any page; everything else that commands the robot only from
the page holding control. That page's heartbeats stop for heartbeat_timeout_s, or its socket closes:
Commands.control_lost is called once and control is free again (release_control frees it without that).

Slots: at most max_viewers sockets, and only requests that passed the guard (token, host, origin) get one. A new
page when all are taken replaces the page that has been idle longest (no message from it for the longest time)
among those not holding control, so sockets held open by some local process cannot lock the operator's page
out of the e-stop or of control; only the page holding control is never replaced (refused_full counts the pages
refused because no other page could make room: max_viewers 1 and that page holds control).

The Commands calls run in worker threads (they may block for seconds); the e-stop and control_lost have
their own workers, so a slow set_task never delays them.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import math
import secrets
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from aiohttp import WSCloseCode, WSMsgType, web

from vln_ros.console.control import Control, Lost, Verdict
from vln_ros.console.messages import Estop, Instruction, RobotCommand, StopTask, Unreadable, parse
from vln_ros.console.routes import Routes, is_loopback
from vln_ros.core.config import ConsoleParams
from vln_ros.core.tasks import MAX_INSTRUCTION_CHARS

MAX_MESSAGE_BYTES = 2 * 1024 * 1024   # bigger frames close that socket; a 1 MB instruction gets a refusal
WATCHDOG_PERIOD_S = 0.025             # how often the holder's heartbeat is checked
PING_PERIOD_S = 5.0                   # WebSocket pings: half-open sockets (a phone gone) free their slot
CLOSE_TIMEOUT_S = 0.5                 # per page, at stop(); then the connection is aborted
COMMAND_QUEUE = 4                     # commands of one page waiting for the node
OUTBOX_MAX = 64                       # replies waiting to be sent to one page (oldest dropped)
STAMP = struct.Struct('<d')
REPLACED = 'this page was replaced by a newer page (too many pages open)'


class Commands(Protocol):
    """Implemented by the node; called from a worker thread, may block up to ~2 s."""

    def set_task(self, instruction: str) -> tuple[bool, str]: ...

    def stop_task(self) -> tuple[bool, str]: ...

    def estop(self) -> None: ...

    def release_estop(self) -> tuple[bool, str]: ...

    def control_lost(self, why: str) -> None: ...


def _finite(value: Any) -> Any:
    """NaN and infinities as null: the page's JSON.parse refuses them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(_finite(message), ensure_ascii=False, separators=(',', ':'))


def _with_age(text: str, age_s: float) -> str:
    """The state's JSON object with "age_s" added (text is _dumps of a dict: it ends in '}')."""
    return f'{text[:-1]},"age_s":{max(0.0, age_s):.3f}}}'


@dataclass(eq=False)
class _Page:
    """One connected page (loop thread only)."""
    id: int
    ws: web.WebSocketResponse
    peer: str
    transport: asyncio.BaseTransport | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    outbox: deque[str] = field(default_factory=lambda: deque(maxlen=OUTBOX_MAX))   # replies, in order
    private: dict[str, str] = field(default_factory=dict)        # newest per kind, for this page only
    state_seq: dict[str, int] = field(default_factory=dict)      # kind -> seq of the message last sent
    commands: asyncio.Queue[RobotCommand] = field(default_factory=lambda: asyncio.Queue(COMMAND_QUEUE))
    image_seq: int = 0
    images_sent: int = 0
    images_skipped: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    active_s: float = field(default_factory=time.monotonic)   # connected, or its last message (monotonic)

    def abort(self) -> None:
        """Drop the connection now (what is still buffered for it is thrown away)."""
        if isinstance(self.transport, asyncio.WriteTransport):   # closing, perhaps, but waiting to flush
            sock = self.transport.get_extra_info('socket')
            if sock is not None:
                with contextlib.suppress(OSError):   # a reset, not megabytes left to a peer that does not read
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            self.transport.abort()


class ConsoleServer:
    def __init__(self, params: ConsoleParams, commands: Commands, log: Callable[[str], None]) -> None:
        self.params = params
        self._commands = commands
        self._log = log
        self._token = params.token or ('' if is_loopback(params.address) else secrets.token_urlsafe(16))
        # shared with the publishing threads and control_alive()/stats() callers
        self._lock = threading.Lock()
        self._image: tuple[int, bytes] | None = None      # (image seq, frame)
        self._image_count = 0
        self._state: dict[str, tuple[int, str, float]] = {}   # kind -> (seq, JSON text, monotonic receipt s)
        self._seq = 0
        self._wake_pending = False
        self._control = Control(params.heartbeat_timeout_s)   # who holds control (its own lock)
        self._stopping = False
        # the loop thread's
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._pages: dict[int, _Page] = {}
        self._page_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._url = ''
        self._counts = {'images_published': 0, 'images_sent': 0, 'images_skipped': 0, 'refused_token': 0,
                        'refused_host': 0, 'refused_origin': 0, 'refused_full': 0, 'replaced': 0, 'commands': 0,
                        'commands_refused': 0, 'bad_messages': 0, 'estops': 0, 'control_lost': 0}
        self._routes = Routes(self._token, self._counts, self._newest_image)
        self._command_pool = ThreadPoolExecutor(2, thread_name_prefix='console_cmd')
        self._safety_pool = ThreadPoolExecutor(2, thread_name_prefix='console_estop')   # estop, control_lost

    # -- the node's side (any thread) ----------------------------------------------------------------------
    @property
    def token(self) -> str:
        """'' when none is in force (loopback address and no token set)."""
        return self._token

    @property
    def url(self) -> str:
        return self._url

    def start(self) -> str:
        """Bind and serve; the URL to open (with ?token=... when a token is in force). OSError if the
        address cannot be served (port taken, address not on this machine)."""
        if self._thread is not None:
            raise RuntimeError('the console server was started already')
        self._routes.load()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run_loop, args=(loop,), name='console_web', daemon=True)
        self._thread.start()
        try:
            self._url = asyncio.run_coroutine_threadsafe(self._start(), loop).result(timeout=10.0)
        except BaseException:
            self.stop(1.0)
            raise
        return self._url

    def stop(self, timeout_s: float = 3.0) -> None:
        """Close every socket and end the thread, in about timeout_s at most. control_lost is not called:
        control_alive() is false from now on (the node stops its heartbeat)."""
        loop, thread = self._loop, self._thread
        with self._lock:
            self._stopping = True
        if loop is None or thread is None:
            return
        deadline = time.monotonic() + timeout_s
        if not loop.is_closed():
            try:
                done = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            except RuntimeError:   # the loop has stopped already
                pass
            else:
                try:
                    done.result(timeout=max(0.0, 0.75 * timeout_s))
                except TimeoutError:
                    done.cancel()
                    self._log('console: the server did not stop in time; closing it anyway')
                except Exception as exc:  # noqa: BLE001 - stopping anyway
                    self._log(f'console: error while stopping the server: {exc!r}')
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
        thread.join(max(0.0, deadline - time.monotonic()))
        self._command_pool.shutdown(wait=False, cancel_futures=True)
        self._safety_pool.shutdown(wait=False, cancel_futures=True)

    def publish_image(self, jpeg: bytes, stamp_s: float) -> None:
        """Thread-safe, never blocks: the newest image replaces any the pages have not been sent yet."""
        frame = STAMP.pack(float(stamp_s)) + bytes(jpeg)
        with self._lock:
            self._image_count += 1
            self._image = (self._image_count, frame)
            self._counts['images_published'] += 1
        self._wake_pages()

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Thread-safe, never blocks: JSON state for the pages, {"type": kind, **data}; newest per kind wins."""
        text = _dumps({**data, 'type': kind})
        with self._lock:
            self._seq += 1
            self._state[kind] = (self._seq, text, time.monotonic())
        self._wake_pages()

    def control_alive(self) -> bool:
        """A page holds control and its last heartbeat is within heartbeat_timeout_s."""
        with self._lock:
            stopping = self._stopping
        return not stopping and self._control.alive(time.monotonic())

    def stats(self) -> dict[str, Any]:
        """Counters (flat, for /diagnostics). images_skipped: images a page never got because a newer one
        replaced them first (the page was still sending the one before, or the rate limit), summed over pages."""
        return {'viewers': len(self._pages), **self._counts, 'control_held': self._control.holder is not None,
                'control_alive': self.control_alive(), 'token_required': bool(self._token)}

    def pages(self) -> list[dict[str, Any]]:
        """Per page (for tests and debugging): id, peer, images_sent, images_skipped, holds_control."""
        holder = self._control.holder
        return [{'id': p.id, 'peer': p.peer, 'images_sent': p.images_sent, 'images_skipped': p.images_skipped,
                 'holds_control': p.id == holder} for p in list(self._pages.values())]

    def _wake_pages(self) -> None:
        """Tell the loop there is something new; at most one pending call, however fast the publishers."""
        loop = self._loop
        with self._lock:
            if self._wake_pending or loop is None or self._stopping:
                return
            self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._on_wake)
        except RuntimeError:  # the loop is closed
            pass

    # -- start and stop ------------------------------------------------------------------------------------
    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=0.5))
            for page in self._pages.values():   # whatever the shutdown did not close
                page.abort()
            loop.close()

    async def _start(self) -> str:
        p = self.params
        app = web.Application(middlewares=[self._routes.guard], client_max_size=64 * 1024)
        app.router.add_get('/', self._routes.serve_index)
        app.router.add_get('/static/{name}', self._routes.serve_static)
        app.router.add_get('/ws', self._serve_socket)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, p.address or None, p.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(exc.errno, f'cannot listen on {p.address}:{p.port}: {exc.strerror or exc}') from None
        self._runner, self._site = runner, site
        port = runner.addresses[0][1]
        host = p.address if p.address not in ('', '0.0.0.0', '::') else socket.gethostname()
        if ':' in host:
            host = f'[{host}]'
        self._spawn(self._watch_heartbeat())
        return f'http://{host}:{port}/' + (f'?token={quote(self._token, safe="")}' if self._token else '')

    async def _shutdown(self) -> None:
        if self._site is not None:
            await self._site.stop()   # no new connections
        pages = list(self._pages.values())
        for page in pages:
            for task in page.tasks:
                task.cancel()

        async def close(page: _Page) -> None:
            try:
                await asyncio.wait_for(page.ws.close(code=WSCloseCode.GOING_AWAY, message=b'server stopping'),
                                       CLOSE_TIMEOUT_S)
            finally:   # a page stuck in a send: its close frame never goes out; drop it
                page.abort()

        await asyncio.gather(*(close(page) for page in pages), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the page's first image ------------------------------------------------------------------------------
    def _newest_image(self) -> tuple[float, bytes] | None:
        """(stamp_s, JPEG) of the newest image, or None before the first (any thread)."""
        with self._lock:
            image = self._image
        if image is None:
            return None
        return STAMP.unpack_from(image[1])[0], image[1][STAMP.size:]

    # -- the WebSocket ---------------------------------------------------------------------------------------
    async def _serve_socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=CLOSE_TIMEOUT_S, heartbeat=PING_PERIOD_S, max_msg_size=MAX_MESSAGE_BYTES,
                                   compress=False)
        if not self._stopping and len(self._pages) >= self.params.max_viewers:
            self._make_room()
        if self._stopping or len(self._pages) >= self.params.max_viewers:
            await ws.prepare(request)
            self._counts['refused_full'] += 1
            reason = 'server stopping' if self._stopping else f'too many pages open (at most {self.params.max_viewers})'
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=reason.encode())
            return ws
        page = _Page(next(self._page_ids), ws, str(request.remote), request.transport)
        self._pages[page.id] = page            # the slot is taken before the first await
        prepared = False
        try:
            await ws.prepare(request)
            prepared = True
            self._log(f'console: page {page.id} connected from {page.peer} ({len(self._pages)} open)')
            page.outbox.append(_dumps({'type': 'hello', 'page': page.id, 'max_instruction_chars': MAX_INSTRUCTION_CHARS,
                                       'heartbeat_timeout_s': self.params.heartbeat_timeout_s,
                                       'image_max_hz': self.params.image_max_hz}))
            page.tasks = [asyncio.create_task(self._send_loop(page)), asyncio.create_task(self._command_loop(page))]
            self._announce_control()
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(page, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._counts['bad_messages'] += 1
                    self._reply(page, '', False, 'binary messages are not accepted')
                elif msg.type == WSMsgType.ERROR:    # e.g. a frame over MAX_MESSAGE_BYTES: that socket closes
                    self._log(f'console: page {page.id}: {ws.exception()!r}')
                    break
        finally:
            self._pages.pop(page.id, None)
            for task in page.tasks:
                task.cancel()
            lost = self._control.closed(page.id)
            if lost is not None and not self._stopping:
                self._lose_control(lost)
            self._announce_control()
            if prepared:
                self._log(f'console: page {page.id} disconnected ({len(self._pages)} open)')
        return ws

    def _make_room(self) -> None:
        """Free the slot of the page idle longest that does not hold control, if there is one (loop thread)."""
        holder = self._control.holder
        idle = [page for page in self._pages.values() if page.id != holder]
        if not idle:
            return
        page = min(idle, key=lambda p: p.active_s)
        del self._pages[page.id]   # now: the new page takes the slot before anything awaits
        self._counts['replaced'] += 1
        self._log(f'console: page {page.id} replaced by a newer page (at most {self.params.max_viewers} open)')
        self._spawn(self._close_replaced(page))

    async def _close_replaced(self, page: _Page) -> None:
        try:
            await asyncio.wait_for(page.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b'replaced by a newer '
                                                 b'page (too many pages open)'), CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError):   # a page that does not read: drop it
            page.abort()

    def _on_wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        for page in self._pages.values():
            page.wake.set()

    async def _send_loop(self, page: _Page) -> None:
        """Replies, then this page's own messages, then new state (oldest first), then the newest image when
        the rate limit allows; whatever came meanwhile waits in its newest-wins slot."""
        ws, interval, next_image_at = page.ws, 1.0 / self.params.image_max_hz, 0.0
        try:
            while True:
                page.wake.clear()
                while page.outbox:
                    await ws.send_str(page.outbox.popleft())
                while page.private:
                    await ws.send_str(page.private.pop(next(iter(page.private))))
                with self._lock:
                    fresh = sorted((seq, kind, text, received_s) for kind, (seq, text, received_s)
                                   in self._state.items() if seq > page.state_seq.get(kind, 0))
                    image = self._image
                for seq, kind, text, received_s in fresh:
                    page.state_seq[kind] = seq
                    await ws.send_str(_with_age(text, time.monotonic() - received_s))
                wait_s: float | None = None
                if image is not None and image[0] > page.image_seq:
                    now = time.monotonic()
                    if now >= next_image_at:
                        if page.image_seq:
                            skipped = image[0] - page.image_seq - 1
                            page.images_skipped += skipped
                            self._counts['images_skipped'] += skipped
                        page.image_seq, next_image_at = image[0], now + interval
                        await ws.send_bytes(image[1])
                        page.images_sent += 1
                        self._counts['images_sent'] += 1
                        continue
                    wait_s = next_image_at - now
                if not page.wake.is_set():
                    try:
                        await asyncio.wait_for(page.wake.wait(), wait_s)
                    except TimeoutError:
                        pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the connection broke: end this page
            if not self._stopping and not page.ws.closed:
                self._log(f'console: page {page.id}: sending failed ({exc!r}); closing it')
            page.abort()

    def _announce_control(self) -> None:
        holder = self._control.holder
        for page in self._pages.values():
            page.private['control'] = _dumps({'type': 'control', 'held': holder is not None, 'mine': holder == page.id,
                                              'viewers': len(self._pages), 'page': page.id})
            page.wake.set()

    def _reply(self, page: _Page, to: str, ok: bool, message: str) -> None:
        page.outbox.append(_dumps({'type': 'reply', 'to': to, 'ok': ok, 'message': message}))
        page.wake.set()

    def _refuse(self, page: _Page, to: str, message: str) -> None:
        self._counts['commands_refused'] += 1
        self._reply(page, to, False, message)

    def _on_text(self, page: _Page, text: str) -> None:
        """A text frame from a page: control.py says what it means; this carries it out."""
        page.active_s = time.monotonic()
        message = parse(text)
        if self._pages.get(page.id) is not page and not isinstance(message, Estop):
            # replaced, its close on the way: what it sent meanwhile must not take control (the e-stop still counts)
            self._refuse(page, message.to if isinstance(message, Unreadable) else message.type, REPLACED)
            return
        self._carry_out(page, self._control.handle(page.id, message, time.monotonic()))

    def _carry_out(self, page: _Page, verdict: Verdict) -> None:
        if verdict.bad:
            self._counts['bad_messages'] += 1
        if verdict.refused:
            self._counts['commands_refused'] += 1
        if verdict.log:
            self._log(f'console: {verdict.log}')
        if verdict.estop:
            self._spawn(self._estop(page))
        if verdict.run is not None:
            try:
                page.commands.put_nowait(verdict.run)
            except asyncio.QueueFull:
                self._refuse(page, verdict.to, f'busy: {COMMAND_QUEUE} commands are waiting already')
        if verdict.reply is not None:
            self._reply(page, verdict.to, *verdict.reply)
        if verdict.changed:
            self._announce_control()

    async def _command_loop(self, page: _Page) -> None:
        """The page's commands to the node, one at a time, in order (in a worker thread: they may block)."""
        loop = asyncio.get_running_loop()
        while True:
            command = await page.commands.get()
            kind = command.type
            refusal = self._control.before_run(page.id)
            if refusal is not None:
                self._refuse(page, kind, refusal)
                continue
            self._counts['commands'] += 1
            try:
                ok, message = await loop.run_in_executor(self._command_pool, self._call, command)
            except Exception as exc:  # noqa: BLE001 - the page hears of it
                ok, message = False, f'{kind} failed: {exc}'
                self._log(f'console: {message}')
            self._reply(page, kind, bool(ok), str(message))

    def _call(self, command: RobotCommand) -> tuple[bool, str]:
        """The node's call for a command (worker thread)."""
        if isinstance(command, Instruction):
            return self._commands.set_task(command.text)
        if isinstance(command, StopTask):
            return self._commands.stop_task()
        return self._commands.release_estop()

    async def _estop(self, page: _Page) -> None:
        self._counts['commands'] += 1
        self._counts['estops'] += 1
        self._log(f'console: e-stop from page {page.id}')
        try:
            await asyncio.get_running_loop().run_in_executor(self._safety_pool, self._commands.estop)
        except Exception as exc:  # noqa: BLE001
            self._log(f'console: e-stop failed: {exc!r}')
            self._reply(page, 'estop', False, f'e-stop failed: {exc}')
            return
        self._reply(page, 'estop', True, 'e-stop engaged')

    # -- the dead-man -----------------------------------------------------------------------------------------
    async def _watch_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_PERIOD_S)
            lost = self._control.expire(time.monotonic())
            if lost is not None:
                self._lose_control(lost)

    def _lose_control(self, lost: Lost) -> None:
        """Control was taken from a page (control.py freed it): call Commands.control_lost once (loop thread)."""
        why = lost.why
        self._counts['control_lost'] += 1
        self._log(f'console: control lost: {why}')
        page = self._pages.get(lost.page)
        if page is not None:
            self._reply(page, 'heartbeat', False, f'control lost: {why} (e-stop)')
        done: Future[None] = self._safety_pool.submit(self._commands.control_lost, why)
        done.add_done_callback(functools.partial(self._log_failure, 'control_lost'))
        self._announce_control()

    def _log_failure(self, what: str, done: Future[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            self._log(f'console: {what} failed: {done.exception()!r}')
