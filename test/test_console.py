"""The operator console in a real browser (headless Chromium from Debian, through Selenium) on the demo stack: the
corridor bag looping through camera_node, inference_node, controller_node and console_node, each its own process
(what `make demo CONSOLE=1` starts). From the page: an instruction -> plans on the page -> e-stop -> cmd_vel zero ->
release -> stop task; the page holding control closed -> the robot stops; a wrong or missing token refused; the
token moved from the URL to a cookie, a reload still working; sockets a script holds open not locking a page out of
e-stop or control; a 1 MB instruction refused; markup in an instruction shown inert. Screenshots of the desktop and
the phone layout are written to $VLN_SCREENSHOT_DIR when set (the README's pictures), else to tmp."""
from __future__ import annotations

import asyncio
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from conftest import wait_for

from vln_ros.demo.stack import RunOptions, StackRun
from vln_ros.harness.processes import free_port

TOKEN = 'test-token-4f9c'
INSTRUCTION = 'go down the corridor and stop at the red door'
ESTOP_BOUND_S = 1.0       # the benchmark measures it (target 100 ms); this only proves it happens promptly,
                          # the WebDriver click included (0.53 s once, fresh-clone run under two burners)
DEADMAN_SLACK_S = 0.5     # beyond heartbeat_timeout_s: a control period, DDS, the page's socket closing


@pytest.fixture(scope='module')
def stack(tmp_path_factory):
    port = free_port()
    options = RunOptions(console=True, loop=True, console_params=(f'port:={port}', f'token:={TOKEN}'))
    run = StackRun(options, tmp_path_factory.mktemp('console') / 'logs')
    try:
        run.start_stack()
        run.play()
        url = f'http://127.0.0.1:{port}/'
        assert wait_for(lambda: status_of(url + f'?token={TOKEN}') == 200, 30.0), run.logs()
        run.url = url  # type: ignore[attr-defined]
        yield run
    finally:
        run.stop()
        run.observer.close()


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def page(browser, stack):
    browser.get(stack.url + f'?token={TOKEN}')
    assert wait_for(lambda: js(browser, 'return (window.vlnConsole || {}).connected === true'), 10.0)
    return browser


def js(browser, script: str, *args):
    return browser.execute_script(script, *args)


def click(browser, element_id: str) -> None:
    browser.find_element('id', element_id).click()


def reply_to(browser, kind: str, timeout_s: float = 10.0) -> dict:
    """The page's first reply to a command of this kind (command() empties the list before each)."""
    found: dict = {}

    def replied() -> bool:
        for r in js(browser, 'return window.vlnConsole.replies'):
            if r.get('to') == kind:
                found.update(r)
                return True
        return False
    assert wait_for(replied, timeout_s), f'no reply to {kind}'
    return found


def command(browser, element_id: str, kind: str, confirm: bool = False) -> dict:
    """Click a control and return the page's reply to it (accepting the confirmation it asks first)."""
    js(browser, 'window.vlnConsole.replies.length = 0')
    click(browser, element_id)
    if confirm:
        browser.switch_to.alert.accept()
    return reply_to(browser, kind)


def take_control(browser) -> None:
    """Take control; release an e-stop a page before left engaged (closing a page that held control does)."""
    assert command(browser, 'take-control', 'take_control')['ok']
    assert wait_for(lambda: js(browser, 'return window.vlnConsole.estopEngaged') is not None, 5.0)
    if js(browser, 'return window.vlnConsole.estopEngaged'):
        assert command(browser, 'release', 'release_estop', confirm=True)['ok']
        assert wait_for(lambda: js(browser, 'return window.vlnConsole.estopEngaged') is False, 5.0)


def end_task(browser) -> None:
    """Stop the task, or find it ended already (the demo's recorded answers say arrived at the red door)."""
    reply = command(browser, 'stop-task', 'stop_task')
    assert reply['ok'] or reply['message'].startswith('no running task to stop'), reply


def hand_back_control(browser) -> None:
    """Give control up (no e-stop), as an operator leaving on purpose does."""
    assert command(browser, 'release-control', 'release_control')['ok']


def send_instruction(browser, text: str) -> dict:
    box = browser.find_element('id', 'instruction')
    box.clear()
    js(browser, 'arguments[0].value = arguments[1]', box, text)
    return command(browser, 'send', 'instruction')


def commands_since(stack, wall_s: float) -> list:
    with stack.observer.lock:
        return [c for c in stack.recording.commands if c.wall_s >= wall_s]


def moving_now(stack) -> bool:
    recent = commands_since(stack, time.monotonic() - 0.3)
    return bool(recent) and recent[-1].msg.linear.x > 0.05


def zero_after(stack, t0: float) -> float | None:
    """Wall time of the first all-zero cmd_vel after t0."""
    for c in commands_since(stack, t0):
        if not (c.msg.linear.x or c.msg.linear.y or c.msg.angular.z):
            return c.wall_s
    return None


def screenshot(browser, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get('VLN_SCREENSHOT_DIR') or tmp_path)
    path = folder / name
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 20_000
    return path


def test_instruction_plans_estop_release_and_stop_from_the_page(stack, browser, tmp_path):
    page(browser, stack)
    assert wait_for(lambda: js(browser, 'return window.vlnConsole.imagesShown') > 0, 15.0), 'no image shown'
    take_control(browser)
    assert not browser.find_element('id', 'release').is_enabled(), 'Release e-stop enabled with nothing engaged'
    before = js(browser, 'return window.vlnConsole.planCount')
    reply = send_instruction(browser, INSTRUCTION)
    assert reply['ok'], reply
    assert wait_for(lambda: js(browser, 'return window.vlnConsole.planCount') >= before + 2, 20.0)
    assert wait_for(lambda: browser.find_element('id', 'task-instruction').text == INSTRUCTION, 10.0)
    assert wait_for(lambda: moving_now(stack), 20.0), 'the robot never moved'
    screenshot(browser, 'console.png', tmp_path)

    t0 = time.monotonic()
    click(browser, 'estop')
    assert wait_for(lambda: zero_after(stack, t0) is not None, 5.0)
    assert zero_after(stack, t0) - t0 <= ESTOP_BOUND_S
    assert wait_for(lambda: js(browser, 'return window.vlnConsole.estopEngaged') is True, 5.0)

    assert wait_for(lambda: browser.find_element('id', 'release').is_enabled(), 5.0)   # engaged: now it may
    assert command(browser, 'release', 'release_estop', confirm=True)['ok']  # release asks first
    assert wait_for(lambda: js(browser, 'return window.vlnConsole.estopEngaged') is False, 5.0)
    assert wait_for(lambda: not browser.find_element('id', 'release').is_enabled(), 5.0)
    stopped = command(browser, 'stop-task', 'stop_task')
    assert stopped['ok'], stopped
    assert wait_for(lambda: 'stopped' in browser.find_element('id', 'state').text, 10.0)
    hand_back_control(browser)


def test_closing_the_page_that_holds_control_stops_the_robot(stack, browser):
    page(browser, stack)
    take_control(browser)
    assert send_instruction(browser, INSTRUCTION)['ok']
    assert wait_for(lambda: moving_now(stack), 20.0), 'the robot never moved'
    t0 = time.monotonic()
    browser.get('about:blank')  # the tab leaves the console: its socket closes, its heartbeat stops
    assert wait_for(lambda: zero_after(stack, t0) is not None, 5.0)
    assert zero_after(stack, t0) - t0 <= 0.5 + DEADMAN_SLACK_S  # heartbeat_timeout_s 0.5 s
    # Latched: still zero a second later, until someone releases it.
    time.sleep(1.0)
    assert not moving_now(stack)
    page(browser, stack)
    take_control(browser)  # releases it
    end_task(browser)
    hand_back_control(browser)


def test_a_missing_or_wrong_token_is_refused(stack, browser):
    for url in (stack.url, stack.url + '?token=wrong'):
        assert status_of(url) == 401
        browser.get(url)
        assert 'token' in browser.find_element('tag name', 'body').text.lower()
        assert not js(browser, 'return !!window.vlnConsole')
    assert status_of(stack.url + '?token=' + TOKEN) == 200


def test_the_token_leaves_the_url_for_an_httponly_session_cookie_and_a_reload_still_works(stack, browser):
    page(browser, stack)
    assert browser.current_url == stack.url   # the token is out of the address bar and the history entry
    assert js(browser, 'return document.cookie') == ''   # HttpOnly: the page's scripts cannot read it
    cookies = browser.get_cookies()
    assert len(cookies) == 1, cookies
    cookie = cookies[0]
    assert cookie['value'] == TOKEN and cookie['httpOnly'] and cookie['sameSite'] == 'Strict'
    assert 'expiry' not in cookie   # a session cookie
    browser.refresh()
    assert wait_for(lambda: js(browser, 'return (window.vlnConsole || {}).connected === true'), 10.0)
    assert browser.current_url == stack.url and js(browser, 'return window.vlnConsole.page') is not None


class HeldSockets:
    """Sockets a local script holds open (with the token: the worst case), read on a thread of their own so
    they answer the server's pings and stay open until close()."""

    def __init__(self, url: str, count: int) -> None:
        self.open = 0
        self.closed_by_server = 0
        self._url = url.replace('http://', 'ws://') + 'ws'
        self._count = count
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._hold(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10.0) and self.open == count, f'{self.open} of {count} sockets opened'

    async def _hold(self) -> None:
        self._stop = asyncio.Event()
        async with aiohttp.ClientSession(headers={'Authorization': f'Bearer {TOKEN}'}) as http:
            sockets = [await http.ws_connect(self._url) for _ in range(self._count)]
            for ws in sockets:
                while (await ws.receive(timeout=5.0)).type != aiohttp.WSMsgType.TEXT:
                    pass   # the hello: this socket has its slot
            self.open = len(sockets)
            self._ready.set()

            async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
                async for _ in ws:
                    pass
                if not self._stop.is_set():   # type: ignore[union-attr]
                    self.closed_by_server += 1
            readers = [asyncio.ensure_future(read(ws)) for ws in sockets]
            await self._stop.wait()
            for ws in sockets:
                await ws.close()
            await asyncio.wait(readers, timeout=5.0)

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10.0)


def test_sockets_a_script_holds_open_do_not_lock_the_page_out_of_estop_or_control(stack, browser):
    held = HeldSockets(stack.url, 8)   # max_viewers: every slot
    try:
        page(browser, stack)                 # replaces the socket idle longest
        take_control(browser)
        assert command(browser, 'estop', 'estop')['ok']
        assert wait_for(lambda: js(browser, 'return window.vlnConsole.estopEngaged') is True, 5.0)
        assert command(browser, 'release', 'release_estop', confirm=True)['ok']
        assert held.closed_by_server == 1
        hand_back_control(browser)
    finally:
        held.close()


def test_a_huge_instruction_is_refused_and_markup_is_shown_inert(stack, browser):
    """A 1 MB paste is cut to the box's maxlength by the browser (the page never lays out a megabyte of text,
    which stalled it past the heartbeat timeout under load: control lost, e-stop), and a page that sends 1 MB
    anyway is refused by the server with the reason. Setting the box's value from a script, as this test once
    did, bypasses maxlength and measured the stall, not the console."""
    page(browser, stack)
    take_control(browser)
    box = browser.find_element('id', 'instruction')
    box.clear()
    box.click()
    length = js(browser, "document.execCommand('insertText', false, 'x'.repeat(1 << 20)); "
                         "return document.getElementById('instruction').value.length")
    assert length == 2000, length
    js(browser, 'window.vlnConsole.replies.length = 0')
    js(browser, "window.vlnConsole.send({type: 'instruction', text: 'x'.repeat(1 << 20)})")
    reply = reply_to(browser, 'instruction')
    assert not reply['ok'] and 'instruction of 1048576 characters (at most 2000)' in reply['message'], reply
    assert js(browser, 'return window.vlnConsole.estopEngaged') is False   # control was never lost
    markup = '<img src=x onerror="window.pwned=1"><b id="injected">bold</b> 去红门'
    reply = send_instruction(browser, markup)
    assert reply['ok'], reply
    assert wait_for(lambda: markup in browser.find_element('id', 'task-instruction').text, 10.0)
    time.sleep(0.5)
    assert not js(browser, 'return !!window.pwned')
    assert browser.find_elements('id', 'injected') == []
    end_task(browser)
    hand_back_control(browser)


def test_the_phone_layout_shows_the_image_and_the_controls(stack, phone_browser, tmp_path):
    page(phone_browser, stack)
    assert wait_for(lambda: js(phone_browser, 'return window.vlnConsole.imagesShown') > 0, 15.0)
    width = js(phone_browser, 'return document.documentElement.scrollWidth')
    assert width <= js(phone_browser, 'return window.innerWidth') + 1, 'the page scrolls sideways on a phone'
    for element_id in ('image', 'estop', 'instruction', 'send'):
        assert phone_browser.find_element('id', element_id).is_displayed(), element_id
    screenshot(phone_browser, 'console_phone.png', tmp_path)


def test_a_stalled_page_keeps_control_because_its_heartbeat_comes_from_a_worker(stack, browser):
    """The page's main thread busy for four heartbeat timeouts (what laying out a huge paste did under load):
    the Web Worker that owns the socket keeps heartbeating, so control is not lost and nothing stops."""
    page(browser, stack)
    take_control(browser)
    js(browser, 'window.vlnConsole.replies.length = 0')
    js(browser, 'const t = performance.now(); while (performance.now() - t < 2000) {}')   # heartbeat_timeout_s 0.5
    time.sleep(0.5)   # replies the stall would have caused come in now
    lost = [r for r in js(browser, 'return window.vlnConsole.replies') if 'control lost' in r.get('message', '')]
    assert lost == []
    assert js(browser, 'return window.vlnConsole.hasControl') is True
    assert js(browser, 'return window.vlnConsole.estopEngaged') is False
    hand_back_control(browser)


def test_a_page_frozen_for_longer_than_the_workers_limit_loses_control_and_stops_the_robot(stack, browser):
    """A main thread silent past the socket worker's 5 s limit: its heartbeats stop, the dead-man acts."""
    page(browser, stack)
    take_control(browser)
    js(browser, 'const t = performance.now(); while (performance.now() - t < 6500) {}')
    assert wait_for(lambda: js(browser, 'return window.vlnConsole.estopEngaged') is True, 5.0)
    assert js(browser, 'return window.vlnConsole.hasControl') is False
    assert any('control lost' in r.get('message', '') for r in js(browser, 'return window.vlnConsole.replies'))


def test_task_events_stay_in_the_history_while_plans_come(stack, browser):
    page(browser, stack)
    take_control(browser)
    before = js(browser, 'return window.vlnConsole.planCount')
    assert send_instruction(browser, INSTRUCTION)['ok']
    plans_kept = 10
    assert wait_for(lambda: js(browser, 'return window.vlnConsole.planCount') > before + plans_kept, 60.0)
    events = browser.find_element('id', 'events').text
    assert 'active' in events and INSTRUCTION in events, events
    assert len(browser.find_elements('css selector', '#plans li')) == plans_kept
    end_task(browser)
    hand_back_control(browser)


def test_the_guard_state_is_shown_and_greys_when_unheard_for_two_periods(stack, browser):
    """A GuardStatus (what controller_node publishes with guard.enabled; off in the demo, so this test's is the
    only one): its action, nearest obstacle and source on the page, then stale past 2 x its 1 s period."""
    from vln_ros import interface as ri
    from vln_ros.msg import GuardStatus

    page(browser, stack)
    publisher = stack.observer.node.create_publisher(GuardStatus, ri.GUARD_STATUS, ri.GUARD_STATUS_QOS)
    try:
        publisher.publish(GuardStatus(action='stop', nearest_m=0.42, bearing_rad=0.1, source='laser',
                                      reason='laser: obstacle in the stop zone', scale=0.0))
        guard = browser.find_element('id', 'guard')
        assert wait_for(lambda: 'stop' in guard.text and 'nearest 0.42 m' in guard.text and 'laser' in guard.text,
                        10.0), guard.text
        heard = time.monotonic()
        assert wait_for(lambda: guard.get_attribute('data-stale') == 'true', 5.0), guard.text
        assert time.monotonic() - heard >= 1.0, 'stale before twice its period could have passed'
        assert 'stale (' in guard.text
    finally:
        stack.observer.node.destroy_publisher(publisher)


def test_a_killed_node_turns_stale_and_a_page_without_its_socket_greys_everything(stack, browser):
    """Last in this file: it kills inference_node, then console_node."""
    page(browser, stack)
    health = browser.find_element('id', 'health')
    assert wait_for(lambda: 'ok · /inference_node' in health.text or 'warn · /inference_node' in health.text, 15.0), \
        health.text
    assert js(browser, 'return window.vlnConsole.stale.task') is False
    killed = stack.kill('inference_node')
    state = browser.find_element('id', 'state')
    assert wait_for(lambda: 'stale (' in state.text and 'stale (' in node_line(browser, '/inference_node'), 3.0), \
        (state.text, health.text, time.time() - killed)
    assert state.get_attribute('data-stale') == 'true' and 'level-stale' in health.get_attribute('innerHTML')

    stack.kill('console_node')
    assert wait_for(lambda: js(browser, 'return window.vlnConsole.connected') is False, 5.0)
    assert wait_for(lambda: 'offline' in browser.find_element('tag name', 'body').get_attribute('class'), 2.0)
    estop = browser.find_element('id', 'estop-state').text
    assert 'unknown (not connected' in estop and 'e-stop released' not in estop, estop
    assert 'not connected' in state.text
    assert 'ok ·' not in health.text, health.text   # no node shown healthy by a page that hears nothing


def node_line(browser, name: str) -> str:
    return js(browser, 'const li = [...document.querySelectorAll("#health li")]'
                       '.find((e) => e.dataset.name === arguments[0]); return li ? li.textContent : ""', name)
