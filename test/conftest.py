"""Shared test set-up: an isolated DDS domain per test session and a real rclpy graph fixture."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from vln_ros.harness import browser as _browser
from vln_ros.harness import local_graph

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

# Before rclpy starts: keep this session's DDS traffic on this machine (loopback and shared memory,
# large raw images included) in a private domain nobody else is in (never the exported ROS_DOMAIN_ID); every
# process a test starts inherits it.
# A session started with SIGINT ignored (a background job of a non-interactive shell: `make test &` in a script)
# would hand that to every process it starts, and `ros2 launch` (whose handling rests on Python's own SIGINT
# handler) would never hear Ctrl-C: many launch tests then fail with `exit None`. Seen in a scripted run here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

try:
    DOMAIN = local_graph.use_private_domain()
except local_graph.DomainUnavailable as e:
    pytest.exit(f'the tests need a private ROS domain: {e}', returncode=3)


def pytest_report_header() -> str:
    return DOMAIN.describe()


# a real rclpy graph in a background thread; a service call that retries a lost reply (tests import it from here)
from vln_ros.harness.graph import SpinningGraph as Graph  # noqa: E402
from vln_ros.harness.graph import call_service  # noqa: E402, F401

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / 'test' / 'data'


def load_tool(name: str) -> ModuleType:
    """A development tool from tools/NAME.py: tools/ is not a package (it does not ship), so from its file."""
    spec = importlib.util.spec_from_file_location(name, REPO / 'tools' / f'{name}.py')
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



@pytest.fixture(autouse=True)
def signals_as_they_were() -> Iterator[None]:
    """Every process a test starts inherits this process's ignored and blocked signals (see the module's start):
    a test that left SIGINT or SIGTERM ignored or blocked here would make every later `ros2 launch` and
    vln_eval deaf to them. Each test gets the dispositions it started with back; the one that changed them is
    named by a warning."""
    import warnings
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, []) & {signal.SIGINT, signal.SIGTERM}
    if blocked:   # a blocked signal is inherited too, and no handler a child installs unblocks it
        warnings.warn(f'this test left {sorted(s.name for s in blocked)} blocked in the test process (unblocked)',
                      stacklevel=1)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
    for signum, handler in before.items():
        if signal.getsignal(signum) is not handler:
            if signal.getsignal(signum) is signal.SIG_IGN:
                warnings.warn(f'this test left {signal.Signals(signum).name} ignored in the test process '
                              '(restored)', stacklevel=1)
            signal.signal(signum, handler)


def wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
    """Poll condition until true or timeout; never a bare sleep-and-hope."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()


@pytest.fixture
def graph() -> Iterator[Graph]:
    g = Graph()
    try:
        yield g
    finally:
        g.close()


# -- Browser fixtures (vln_ros/harness/browser.py): headless Chromium from Debian's packages through Selenium.
# Without a browser they skip with the reason, except in CI (CI set, and not false/0): there they fail, so a
# CI image without chromium cannot pass by skipping every browser test.
BROWSER_WINDOW = (1280, 900)


def _in_ci() -> bool:
    return os.environ.get('CI', '').strip().lower() not in ('', '0', 'false', 'no')


@contextlib.contextmanager
def _started_browser(**kwargs: Any) -> Iterator[_browser.Browser]:
    reason = _browser.browser_unavailable()
    if reason is not None:
        if _in_ci():
            pytest.fail(f'no browser in CI (CI={os.environ["CI"]}): {reason}', pytrace=False)
        pytest.skip(f'no browser: {reason}')
    b = _browser.start_browser(**kwargs)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A started headless Chromium (Selenium WebDriver), window 1280x900; closed at the end of the test. A failing
    test leaves a screenshot (its path in the report, under the test's tmp_path)."""
    with _started_browser(window=BROWSER_WINDOW) as b:
        yield b.driver


@pytest.fixture
def phone_browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Like browser, with mobile emulation: a 390x844 CSS-pixel phone viewport at 3x, a phone user agent."""
    with _started_browser(window=(_browser.PHONE.width, _browser.PHONE.height), phone=_browser.PHONE) as b:
        yield b.driver


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failing test that uses a browser fixture: a screenshot of the page it was on, into its tmp_path."""
    report = yield
    funcargs = getattr(item, 'funcargs', {})
    if report.when == 'call' and report.failed:
        for name in ('browser', 'phone_browser'):
            driver, folder = funcargs.get(name), funcargs.get('tmp_path')
            if driver is None or folder is None:
                continue
            path = folder / f'failure-{name}.png'
            try:
                _browser.save_screenshot(driver, path)
                report.sections.append((f'{name} screenshot', str(path)))
            except Exception as e:  # a dead browser: the test's own failure says more
                report.sections.append((f'{name} screenshot', f'none: {type(e).__name__}: {e}'))
    return report


def node_starter(executable: str, *fixed: str) -> Generator[Callable[..., subprocess.Popen], None, None]:
    """A fixture's body: start this venv's real `executable` (a process of its own, as on the robot: its timing
    is its own executor's, not the test's) with diagnostics at 5 Hz, the `fixed` NAME:=VALUE parameters and the
    given ones, as often as the test asks; at the end each gets SIGINT and must exit 0."""
    procs: list[subprocess.Popen] = []

    def start(**params: object) -> subprocess.Popen:
        args = [str(Path(sys.executable).parent / executable), '--ros-args', '-p', 'diagnostics_period_s:=0.2']
        for pair in fixed:
            args += ['-p', pair]
        for name, value in params.items():
            args += ['-p', f'{name}:={str(value).lower() if isinstance(value, bool) else value}']
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        return procs[-1]
    yield start
    for proc in procs:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=10) == 0, proc.stdout.read() if proc.stdout else ''
        finally:
            proc.kill()
