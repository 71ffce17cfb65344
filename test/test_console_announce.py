"""Where the console's token goes (vln_ros/console/announce.py): once to the terminal, or a 0600 file without
one; never to the logger, so never to /rosout or ~/.ros/log. First the class with a file standing in for the
terminal, then the console_node executable with a real pseudo-terminal as its controlling terminal and with none
(as under systemd), its /rosout and its log folder read back."""
from __future__ import annotations

import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
from pathlib import Path

from conftest import wait_for
from rcl_interfaces.msg import Log
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from vln_ros.console.announce import Announcement, url_file_folder, without_token
from vln_ros.harness.processes import free_port

VENV_BIN = Path(sys.executable).parent
TOKEN = 'tOk3n-announce-9d2'
URL = f'http://robot:8080/?token={TOKEN}'


def test_without_a_token_the_log_line_is_the_url_as_before(tmp_path: Path) -> None:
    lines: list[str] = []
    Announcement(lines.append, tmp_path, tty=str(tmp_path / 'tty')).announce('http://127.0.0.1:8080/', '')
    assert lines == ['operator console: http://127.0.0.1:8080/ (loopback only, no token)']
    assert not (tmp_path / 'tty').exists()


def test_with_a_terminal_the_url_with_its_token_goes_there_once_and_the_log_line_has_no_token(tmp_path: Path) -> None:
    tty = tmp_path / 'tty'
    tty.write_text('')
    lines: list[str] = []
    announcement = Announcement(lines.append, tmp_path / 'files', tty=str(tty))
    announcement.announce(URL, TOKEN)
    assert tty.read_text() == f'operator console: {URL}\n'
    assert len(lines) == 1 and TOKEN not in lines[0] and 'http://robot:8080/' in lines[0]
    assert announcement.file is None and not (tmp_path / 'files').exists()


def test_without_a_terminal_the_url_goes_to_a_file_only_its_user_reads_and_is_removed_at_the_end(
        tmp_path: Path) -> None:
    folder = tmp_path / 'vln_console'
    folder.mkdir(mode=0o755)
    (folder / 'console-8080.url').write_text('old')
    os.chmod(folder / 'console-8080.url', 0o644)   # left by an earlier run with wider permissions
    lines: list[str] = []
    announcement = Announcement(lines.append, folder, tty=str(tmp_path / 'no-terminal'))
    announcement.announce(URL, TOKEN)
    path = folder / 'console-8080.url'
    assert announcement.file == path and path.read_text() == URL + '\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert len(lines) == 1 and TOKEN not in lines[0] and str(path) in lines[0]
    announcement.withdraw()
    assert not path.exists()


def test_a_url_file_that_cannot_be_written_is_named_in_the_log_and_the_console_goes_on(tmp_path: Path) -> None:
    (tmp_path / 'blocked').write_text('a file where the folder should be')
    lines: list[str] = []
    announcement = Announcement(lines.append, tmp_path / 'blocked' / 'vln_console', tty=str(tmp_path / 'none'))
    announcement.announce(URL, TOKEN)
    assert announcement.file is None and len(lines) == 1
    assert 'cannot be written' in lines[0] and TOKEN not in lines[0]


def test_the_url_file_folder_is_the_runtime_folder_else_ros_home(tmp_path: Path) -> None:
    assert url_file_folder({'XDG_RUNTIME_DIR': str(tmp_path)}) == tmp_path / 'vln_console'
    assert url_file_folder({'XDG_RUNTIME_DIR': str(tmp_path / 'gone'), 'ROS_HOME': str(tmp_path / 'ros')}) == \
        tmp_path / 'ros' / 'vln_console'
    assert without_token('http://[::1]:9/?token=x&y=1') == 'http://[::1]:9/?y=1'


# -- the executable -------------------------------------------------------------------------------------------
# rcl's /rosout publisher keeps its last 1000 lines for late subscribers (transient local): the start line is
# read even when it went out before this subscription matched
ROSOUT_QOS = QoSProfile(depth=1000, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                        reliability=ReliabilityPolicy.RELIABLE)


def _rosout_from_console(graph) -> list[str]:
    seen: list[str] = []
    graph.node('rosout_listener').create_subscription(
        Log, '/rosout', lambda m: seen.append(m.msg) if m.name == 'console_node' else None, ROSOUT_QOS)
    return seen


def _console_command(port: int) -> list[str]:
    return [str(VENV_BIN / 'console_node'), '--ros-args', '-p', 'address:=0.0.0.0', '-p', f'port:={port}']


def _every_file_under(folder: Path) -> str:
    return ''.join(p.read_text(errors='replace') for p in folder.rglob('*') if p.is_file())


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=15)
    finally:
        proc.kill()


def test_console_node_writes_its_token_to_its_terminal_once_and_never_to_rosout_or_a_log_file(graph, tmp_path):
    """A pseudo-terminal made the process's controlling terminal (a new session opening it, as a login does);
    stdout and stderr go to a file, as launch's capture or a redirection would take them."""
    seen = _rosout_from_console(graph)
    port = free_port()
    master, slave = pty.openpty()
    env = {**os.environ, 'ROS_HOME': str(tmp_path / 'ros'), 'ROS_LOG_DIR': str(tmp_path / 'ros' / 'log'),
           'XDG_RUNTIME_DIR': str(tmp_path / 'run')}
    (tmp_path / 'run').mkdir()
    with (tmp_path / 'output.txt').open('w') as output:
        proc = subprocess.Popen(
            [sys.executable, '-c', 'import os, sys; os.setsid(); os.close(os.open(sys.argv[1], os.O_RDWR)); '
             'os.execv(sys.argv[2], sys.argv[2:])', os.ttyname(slave), *_console_command(port)],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env)
    terminal = b''
    try:
        def url_on_terminal() -> bool:
            nonlocal terminal
            while select.select([master], [], [], 0)[0]:
                terminal += os.read(master, 4096)
            return b'token=' in terminal and any('operator console' in m for m in seen)
        assert wait_for(url_on_terminal, 20.0), (terminal, (tmp_path / 'output.txt').read_text())
        assert _stop(proc) == 0
    finally:
        proc.kill()
        os.close(master)
        os.close(slave)
    shown = re.findall(rb'operator console: (http://\S+)', terminal)
    assert len(shown) == 1, terminal
    token = shown[0].decode().split('?token=')[1]
    assert len(token) >= 16
    logged = [m for m in seen if 'operator console' in m]
    assert len(logged) == 1 and 'written to the terminal only' in logged[0], seen
    assert not any(token in m for m in seen)
    assert token not in (tmp_path / 'output.txt').read_text()
    assert 'operator console' in _every_file_under(tmp_path / 'ros' / 'log')   # the logger's file was written ...
    assert token not in _every_file_under(tmp_path / 'ros')                    # ... without the token
    assert not (tmp_path / 'run' / 'vln_console').exists()


def test_console_node_without_a_terminal_puts_its_url_in_a_private_file_it_removes_at_exit(graph, tmp_path):
    seen = _rosout_from_console(graph)
    port = free_port()
    env = {**os.environ, 'ROS_HOME': str(tmp_path / 'ros'), 'ROS_LOG_DIR': str(tmp_path / 'ros' / 'log'),
           'XDG_RUNTIME_DIR': str(tmp_path / 'run')}
    (tmp_path / 'run').mkdir()
    path = tmp_path / 'run' / 'vln_console' / f'console-{port}.url'
    proc = subprocess.Popen(_console_command(port), start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert wait_for(lambda: path.exists() and any(str(path) in m for m in seen), 20.0), seen
        url = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = url.split('?token=')[1]
        assert len(token) >= 16 and url.startswith('http://') and f':{port}/' in url
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert not path.exists()
    assert str(path) in out and token not in out
    assert not any(token in m for m in seen)
    assert token not in _every_file_under(tmp_path / 'ros')
