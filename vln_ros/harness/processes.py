"""Node processes of a development run: found, started by name with their logs, stopped together.

make demo's and make eval's stacks, the tests and the benchmarks start the installed executables (the very
ones `ros2 launch` runs) through this, never through a launch service: each run owns its processes, their
logs and their exit codes.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from vln_ros.bringup import STOP_TIMEOUT_S  # what launch gives a node after Ctrl-C, before it escalates

REPO = Path(__file__).resolve().parents[2]   # the source tree: config/, demo/ and test/ of a development run


def stop_on_sigterm() -> None:
    """SIGTERM (a CI timeout, `kill`) ends a run like Ctrl-C: KeyboardInterrupt unwinds through the run's
    `with` blocks, which stop the stack's processes instead of leaving them running (a killed `vln_eval` left
    its four node processes behind, /clock still ticking)."""
    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f'signal {signum}')
    signal.signal(signal.SIGTERM, interrupt)


def executable(name: str) -> str:
    """An installed executable: next to this Python first (the venv), then on PATH."""
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if found is None:
        raise FileNotFoundError(f'{name} is not installed: run `make install`, or source your ROS 2 workspace')
    return found


def parameter_pairs(items: tuple[str, ...]) -> dict[str, str]:
    """'name:=value' items (command-line parameters) as a dict."""
    return dict(item.partition(':=')[::2] for item in items)


def free_port() -> int:
    """A TCP port on loopback that nobody holds now, for a server process of the run to listen on."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def stop_process(popen: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """SIGINT (a node's clean shutdown, as Ctrl-C), a kill after timeout_s; the exit code."""
    popen.send_signal(signal.SIGINT)
    try:
        return popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        popen.kill()
        return popen.wait()


@dataclass
class Started:
    command: list[str]
    popen: subprocess.Popen
    log: Path
    log_file: IO[str]


class ProcessGroup:
    """Node processes started by name, each logging to <log_dir>/<name>.log, stopped together as launch does
    on Ctrl-C (SIGINT, then a kill after STOP_TIMEOUT_S). make demo's and make eval's stacks run on it."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: dict[str, Started] = {}

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        """Start (or start again: the log goes on) the process `name`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        again = name in self.started
        if again:
            self.started[name].log_file.close()
        log = self.log_dir / f'{name}.log'
        log_file = log.open('a' if again else 'w')
        popen = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=log_file,
                                 stderr=subprocess.STDOUT, text=True)
        self.started[name] = Started(command, popen, log, log_file)

    def dead(self) -> list[str]:
        return [name for name, s in self.started.items() if s.popen.poll() is not None]

    def send(self, name: str, sig: int) -> float:
        """Signal one process (SIGKILL is a crash); the wall time it was sent."""
        self.started[name].popen.send_signal(sig)
        return time.monotonic()

    def stop(self) -> dict[str, int]:
        """SIGINT to every process still running; their exit codes."""
        for s in self.started.values():
            if s.popen.poll() is None:
                s.popen.send_signal(signal.SIGINT)
        codes = {}
        for name, s in self.started.items():
            try:
                codes[name] = s.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                s.popen.kill()
                codes[name] = s.popen.wait()
            s.log_file.close()
        return codes

    def logs(self, tail_lines: int = 30) -> str:
        parts = []
        for name, s in self.started.items():  # the children write to the files themselves
            lines = s.log.read_text(errors='replace').splitlines()[-tail_lines:]
            parts.append(f'--- {name} (exit {s.popen.poll()}) ---\n' + '\n'.join(lines))
        return '\n'.join(parts)
