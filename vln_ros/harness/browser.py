"""Headless Chromium for the browser tests, from Debian's packages, driven by Selenium.

tools/install.sh installs `chromium` and `chromium-driver` (apt). Selenium talks to /usr/bin/chromedriver, which
starts /usr/bin/chromium: both paths are given explicitly, so Selenium Manager (which would download a browser
and a driver) never runs; SE_OFFLINE=true keeps it offline should anything reach it anyway.

    reason = browser_unavailable()            # None, or why no browser can run here
    with start_browser(window=(1280, 900)) as b:
        b.driver.get(url)
    with start_browser(phone=PHONE) as b:     # mobile emulation: a 390x844 CSS-pixel phone at 3x

Each browser gets a fresh profile in a temporary folder, removed on close. Start and close are bounded: a start
that hangs is killed after start_timeout_s (BrowserStartError); close gives quit() close_timeout_s, then kills
what is left of chromedriver and its browser processes (by their pids, taken while the tree was intact).
test/conftest.py wraps this in the `browser` and `phone_browser` fixtures.
"""
from __future__ import annotations

import functools
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path('/usr/bin/chromium')
CHROMEDRIVER = Path('/usr/bin/chromedriver')
DEBS = 'chromium chromium-driver'
# Selenium Manager is never called (explicit paths); were it reached, it must not download anything.
os.environ.setdefault('SE_OFFLINE', 'true')


@dataclass(frozen=True)
class Phone:
    """Chromium's mobile emulation: the viewport in CSS pixels, its device pixel ratio, a phone user agent."""

    width: int = 390
    height: int = 844
    pixel_ratio: float = 3.0
    user_agent: str = ('Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 '
                       '(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1')

    def emulation(self) -> dict[str, Any]:
        return {'deviceMetrics': {'width': self.width, 'height': self.height, 'pixelRatio': self.pixel_ratio,
                                  'mobile': True, 'touch': True},
                'userAgent': self.user_agent}


PHONE = Phone()   # an iPhone 14-sized phone


class BrowserStartError(RuntimeError):
    """Chromium or chromedriver is installed but the browser did not start (the message says why)."""


def _version(path: Path) -> tuple[str | None, str]:
    """(major version, the --version line) of chromium or chromedriver; (None, why) when it does not run."""
    try:
        run = subprocess.run([str(path), '--version'], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f'{path} --version: {e}'
    # Debian's /usr/bin/chromium is a shell script that may print noise on stderr; the version is on stdout.
    words = run.stdout.split()
    major = next((w.split('.')[0] for w in words if w[:1].isdigit() and '.' in w), None)
    if run.returncode != 0 or major is None:
        tail = (run.stderr.strip() or run.stdout.strip()).splitlines()[-1:] or ['no output']
        return None, f'{path} --version failed (exit {run.returncode}): {tail[0]}'
    return major, run.stdout.strip()


@functools.cache
def browser_unavailable() -> str | None:
    """None when a headless Chromium can be driven here, else the reason (for a skip or a failure message)."""
    try:
        import selenium.webdriver  # noqa: F401
    except ImportError as e:
        return f'selenium is not installed ({e}); run tools/install.sh'
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f'{path} not found: install the Debian packages {DEBS} (tools/install.sh does, as root)'
    browser, browser_line = _version(CHROMIUM)
    driver, driver_line = _version(CHROMEDRIVER)
    if browser is None:
        return browser_line
    if driver is None:
        return driver_line
    if browser != driver:
        return f'chromedriver and chromium differ in major version ({driver_line!r}, {browser_line!r})'
    return None


def _options(profile: Path, window: tuple[int, int], phone: Phone | None) -> Any:
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
                     f'--window-size={window[0]},{window[1]}', f'--user-data-dir={profile}',
                     '--no-first-run', '--no-default-browser-check', '--disable-extensions',
                     '--disable-background-networking', '--disable-component-update', '--disable-sync',
                     '--metrics-recording-only', '--password-store=basic', '--use-mock-keychain',
                     '--hide-scrollbars', '--mute-audio'):
        options.add_argument(argument)
    if phone is not None:
        options.add_experimental_option('mobileEmulation', phone.emulation())
    return options


def _process_tree(pid: int) -> list[Any]:
    """psutil handles of pid and all its descendants (empty when it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _alive(processes: list[Any]) -> list[Any]:
    """Those still running; a zombie (ended, not yet reaped by its new parent) counts as ended."""
    import psutil

    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            pass
    return alive


def _kill(processes: list[Any], wait_s: float) -> list[int]:
    """Wait up to wait_s for the processes to end, then SIGKILL those left (psutil checks that a pid is still the
    same process). Returns the pids that had to be killed."""
    import psutil

    deadline = time.monotonic() + wait_s
    alive = _alive(processes)
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = _alive(alive)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    return [p.pid for p in alive]


@dataclass
class Browser:
    """A started headless Chromium: driver (a Selenium WebDriver), how long its start took, close()."""

    driver: WebDriver
    start_s: float
    folder: Path                        # the profile (folder/profile) and chromedriver's log
    driver_pid: int
    close_timeout_s: float = 20.0
    killed: list[int] = field(default_factory=list)   # pids close() had to kill (empty after a clean quit)
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        """quit() within close_timeout_s, then kill what is left, then remove the folder. Never raises."""
        if self._closed:
            return
        self._closed = True
        tree = _process_tree(self.driver_pid)
        quitter = threading.Thread(target=_quiet(self.driver.quit), name='chromium-quit', daemon=True)
        deadline = time.monotonic() + self.close_timeout_s
        quitter.start()
        quitter.join(self.close_timeout_s)
        self.killed = _kill(tree, max(0.0, min(5.0, deadline - time.monotonic())))
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _quiet(call: Any) -> Any:
    def run() -> None:
        try:
            call()
        except Exception:
            pass
    return run


def start_browser(window: tuple[int, int] = (1280, 900), phone: Phone | None = None, *,
                  start_timeout_s: float = 60.0, command_timeout_s: float = 60.0,
                  close_timeout_s: float = 20.0) -> Browser:
    """Start headless Chromium through chromedriver. window: the window size in pixels (--window-size); phone:
    mobile emulation on top of it. command_timeout_s bounds every later WebDriver command (HTTP to chromedriver).
    Raises BrowserStartError when no browser is installed (browser_unavailable()) or the start fails or hangs."""
    reason = browser_unavailable()
    if reason is not None:
        raise BrowserStartError(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    folder = Path(tempfile.mkdtemp(prefix='vln-chromium-'))
    log = folder / 'chromedriver.log'
    options = _options(folder / 'profile', window, phone)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log))
    outcome: dict[str, Any] = {}

    def start() -> None:
        try:
            outcome['driver'] = webdriver.Chrome(options=options, service=service)
        except BaseException as e:   # handed to the caller's thread
            outcome['error'] = e

    began = time.monotonic()
    starter = threading.Thread(target=start, name='chromium-start', daemon=True)
    starter.start()
    starter.join(start_timeout_s)
    start_s = time.monotonic() - began
    process = getattr(service, 'process', None)
    if 'driver' not in outcome:
        hung = 'error' not in outcome
        if process is not None:   # hung (or failed half-way): take chromedriver and its browser down
            _kill(_process_tree(process.pid), 0.0)
        starter.join(5)
        why = (f'no answer within {start_timeout_s:g} s' if hung
               else f'{type(outcome["error"]).__name__}: {str(outcome["error"]).strip()}')
        log_tail = _tail(log)
        shutil.rmtree(folder, ignore_errors=True)
        raise BrowserStartError(f'headless chromium did not start: {why}'
                                + (f'\nchromedriver log:\n{log_tail}' if log_tail else '')) from outcome.get('error')
    assert process is not None
    b = Browser(driver=outcome['driver'], start_s=start_s, folder=folder, driver_pid=process.pid,
                close_timeout_s=close_timeout_s)
    try:
        if not isinstance(b.driver.command_executor, str):   # a RemoteConnection here (a URL only for Remote)
            b.driver.command_executor.client_config.timeout = command_timeout_s
        if phone is not None:
            # The session's first page may still see navigator.maxTouchPoints == 0 (about a third of the starts
            # here, chromium 150; the touch emulation holds for every page after): make that page a blank one.
            b.driver.get('about:blank')
    except BaseException:
        b.close()
        raise
    return b


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])
    except OSError:
        return ''


def save_screenshot(driver: WebDriver, path: Path) -> tuple[int, int]:
    """The viewport as a PNG at path; returns its (width, height) in device pixels. Raises when none was made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f'the browser made no screenshot ({path})')
    return png_size(path)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header; ValueError when the file is not a PNG."""
    head = path.read_bytes()[:24]
    if len(head) < 24 or head[:8] != b'\x89PNG\r\n\x1a\n' or head[12:16] != b'IHDR':
        raise ValueError(f'{path} is not a PNG')
    width, height = struct.unpack('>II', head[16:24])
    return width, height
