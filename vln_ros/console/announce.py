"""Where the console's URL with its token goes: the operator's terminal, never a log. No ROS.

The node's logger writes to /rosout and to ~/.ros/log, so the line it logs never carries the token. The URL
with the token is written once to the controlling terminal (/dev/tty): under `ros2 launch` from a terminal
that is the operator's terminal itself (launch gives its nodes no session of their own, so they share its
terminal; its capture of their stdout and stderr, into launch.log with output 'log', 'both' or 'full', never
sees what goes to /dev/tty). A process
without a terminal (systemd, a supervisor, a CI job) gets the URL in a file only its user can read (0600, in a
0700 folder), and the log names the file; the file is removed when the console stops.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from yarl import URL

TTY = '/dev/tty'
FOLDER_NAME = 'vln_console'


def url_file_folder(env: dict[str, str] | None = None) -> Path:
    """$XDG_RUNTIME_DIR/vln_console (a per-user tmpfs) when set, else $ROS_HOME (or ~/.ros)/vln_console."""
    env = dict(os.environ) if env is None else env
    runtime = env.get('XDG_RUNTIME_DIR', '')
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / FOLDER_NAME
    return Path(env.get('ROS_HOME') or Path.home() / '.ros') / FOLDER_NAME


def without_token(url: str) -> str:
    """The URL with its token taken out (what may be logged)."""
    return str(URL(url).without_query_params('token'))


def write_private(path: Path, text: str) -> None:
    """text into path, readable and writable by this user only (the folder too), whatever was there before."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)   # a file left by an earlier run with wider permissions
        os.write(fd, text.encode('utf-8'))
    finally:
        os.close(fd)


def to_terminal(text: str, tty: str = TTY) -> bool:
    """Write text to the controlling terminal; False when there is none."""
    try:
        fd = os.open(tty, os.O_WRONLY | os.O_NOCTTY)
    except OSError:   # ENXIO: no controlling terminal
        return False
    try:
        os.write(fd, text.encode('utf-8'))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


class Announcement:
    """Tell the operator the console's URL once: log (a line without the token), the terminal or a file."""

    def __init__(self, log: Callable[[str], None], folder: Path | None = None, tty: str = TTY) -> None:
        self._log = log
        self._folder = folder
        self._tty = tty
        self.file: Path | None = None   # the URL file written, if any

    def announce(self, url: str, token: str) -> None:
        if not token:
            self._log(f'operator console: {url} (loopback only, no token)')
            return
        shown = without_token(url)
        if to_terminal(f'operator console: {url}\n', self._tty):
            self._log(f'operator console: {shown} (token required: the URL with it was written to the terminal '
                      'only)')
            return
        path = (self._folder or url_file_folder()) / f'console-{URL(url).port}.url'
        try:
            write_private(path, url + '\n')
        except OSError as exc:   # the robot runs on; the operator hears why there is no page to open
            self._log(f'operator console: {shown} (token required; no terminal, and the URL file {path} cannot be '
                      f'written: {exc.strerror or exc}; set the token parameter)')
            return
        self.file = path
        self._log(f'operator console: {shown} (token required; no terminal: the URL with it is in {path}, '
                  'readable by this user only)')

    def withdraw(self) -> None:
        """Remove the URL file (the token ends with this console)."""
        if self.file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.file.unlink()
            self.file = None
