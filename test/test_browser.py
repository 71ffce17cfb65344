"""The browser test set-up itself (vln_ros/harness/browser.py, the browser fixtures in conftest.py): headless
Chromium from Debian through Selenium opens a page served on 127.0.0.1, clicks, reads what the page's script
wrote, talks WebSocket to a local aiohttp server, takes screenshots; the phone fixture emulates a phone."""
from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from vln_ros.harness import browser as browser_helpers

PAGE = '''<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>browser smoke</title></head>
<body>
<button id="go">Go</button> <p id="out"></p> <p id="ws">connecting</p>
<script>
  document.getElementById('go').addEventListener('click', () => {
    document.getElementById('out').textContent = 'clicked ' + (window.clicks = (window.clicks || 0) + 1);
  });
  const port = new URLSearchParams(location.search).get('ws');
  if (port) {
    const ws = new WebSocket('ws://127.0.0.1:' + port + '/ws');
    ws.onopen = () => ws.send('hello');
    ws.onmessage = (event) => { document.getElementById('ws').textContent = event.data; };
    ws.onerror = () => { document.getElementById('ws').textContent = 'error'; };
  }
</script>
</body></html>
'''


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = PAGE.encode()
        self.send_response(200)
        self.send_header('Content-Type', 'text/html; charset=utf-8')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def page_url() -> Iterator[str]:
    """The page above on http://127.0.0.1:<free port>/."""
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Page)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name='page-server', daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}/'
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def ws_port() -> Iterator[int]:
    """An aiohttp WebSocket echo server (ws://127.0.0.1:<port>/ws answers 'echo:<text>') on its own loop."""
    sockets: set[web.WebSocketResponse] = set()

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets.add(ws)
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await ws.send_str(f'echo:{message.data}')
        finally:
            sockets.discard(ws)
        return ws

    async def close_sockets(app: web.Application) -> None:
        for ws in list(sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY)

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_get('/ws', echo)
        app.on_shutdown.append(close_sockets)
        runner = web.AppRunner(app, shutdown_timeout=2.0)
        await runner.setup()
        await web.TCPSite(runner, '127.0.0.1', 0).start()
        return runner

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name='ws-server', daemon=True)
    thread.start()
    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield runner.addresses[0][1]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def _text_becomes(driver: WebDriver, element_id: str, expected: str, timeout_s: float = 10.0) -> None:
    """Wait until the element's text is expected (the page writes it asynchronously)."""
    try:
        WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(
            lambda d: d.find_element(By.ID, element_id).text == expected)
    except TimeoutException:
        actual = driver.find_element(By.ID, element_id).text
        raise AssertionError(f'#{element_id} reads {actual!r}, not {expected!r}, after {timeout_s} s') from None


def test_page_click_and_websocket(browser: WebDriver, page_url: str, ws_port: int) -> None:
    browser.get(f'{page_url}?ws={ws_port}')
    assert browser.title == 'browser smoke'
    button = browser.find_element(By.ID, 'go')
    button.click()
    _text_becomes(browser, 'out', 'clicked 1')
    button.click()
    _text_becomes(browser, 'out', 'clicked 2')
    _text_becomes(browser, 'ws', 'echo:hello')


def test_desktop_screenshot(browser: WebDriver, page_url: str, tmp_path: Path) -> None:
    browser.get(page_url)
    width, height, ratio = browser.execute_script(
        'return [window.innerWidth, window.innerHeight, window.devicePixelRatio]')
    assert (width, ratio) == (1280, 1)
    assert 700 <= height <= 900   # the window is 1280x900; headless chromium may keep some of it for its frame
    assert browser_helpers.save_screenshot(browser, tmp_path / 'desktop.png') == (width, height)


def test_phone_viewport(phone_browser: WebDriver, page_url: str, tmp_path: Path) -> None:
    phone_browser.get(page_url)
    width, height, ratio, agent, touch = phone_browser.execute_script(
        'return [window.innerWidth, window.innerHeight, window.devicePixelRatio, navigator.userAgent,'
        ' navigator.maxTouchPoints]')
    phone = browser_helpers.PHONE
    assert (width, height, ratio) == (phone.width, phone.height, phone.pixel_ratio)
    assert 'Mobile' in agent and touch > 0
    size = browser_helpers.save_screenshot(phone_browser, tmp_path / 'phone.png')
    assert size == (round(phone.width * phone.pixel_ratio), round(phone.height * phone.pixel_ratio))


def test_start_and_close_are_bounded_and_leave_nothing() -> None:
    """The helper without the fixtures: how long a start takes (printed), and close() ends chromedriver and every
    browser process through quit() (nothing left to kill) and removes the profile."""
    reason = browser_helpers.browser_unavailable()
    if reason is not None:
        pytest.skip(reason)   # the fixtures' tests above fail instead when CI is set
    b = browser_helpers.start_browser(start_timeout_s=60)
    try:
        driver = psutil.Process(b.driver_pid)
        tree = [driver, *driver.children(recursive=True)]
        assert len(tree) >= 2, 'chromedriver and at least one chromium process'
        assert (b.folder / 'profile').is_dir()
        b.driver.get('about:blank')
    finally:
        closing = time.monotonic()
        b.close()
        close_s = time.monotonic() - closing
    print(f'[browser] start {b.start_s:.2f} s, close {close_s:.2f} s, {len(tree)} processes')
    assert b.killed == []
    assert not [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not b.folder.exists()


def test_browser_unavailable_names_the_missing_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(browser_helpers, 'CHROMEDRIVER', tmp_path / 'chromedriver')
    browser_helpers.browser_unavailable.cache_clear()
    try:
        reason = browser_helpers.browser_unavailable()
        assert reason is not None and str(tmp_path / 'chromedriver') in reason and 'chromium-driver' in reason
        with pytest.raises(browser_helpers.BrowserStartError, match='chromium-driver'):
            browser_helpers.start_browser()
    finally:
        monkeypatch.undo()
        browser_helpers.browser_unavailable.cache_clear()


def test_a_start_that_hangs_is_cut_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A chromedriver that never answers: start_browser gives up after start_timeout_s and kills it."""
    fake = tmp_path / 'chromedriver'
    fake.write_text(f'#!/bin/sh\necho $$ > {tmp_path}/pid\nexec sleep 600\n')
    fake.chmod(0o755)
    monkeypatch.setattr(browser_helpers, 'CHROMEDRIVER', fake)
    monkeypatch.setattr(browser_helpers, 'browser_unavailable', lambda: None)
    began = time.monotonic()
    with pytest.raises(browser_helpers.BrowserStartError, match='no answer within 1.5 s'):
        browser_helpers.start_browser(start_timeout_s=1.5)
    assert time.monotonic() - began < 10
    pid = int((tmp_path / 'pid').read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
