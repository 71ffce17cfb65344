"""Who may command the robot from which page: control, heartbeats and the command checks. No sockets, no clock.

One page at a time holds control. It takes it when nobody holds it, keeps it by heartbeats, and loses it when
they stop for heartbeat_timeout_s or its socket closes (then the node e-stops: Lost), or frees it with
release_control (no e-stop). The e-stop is taken from any page; everything else that commands the robot
(instruction, stop_task, release_estop) only from the page holding control, checked again when the command
runs. The server (server.py) carries out the Verdict; every time is passed in (monotonic seconds), so the
tests need neither sockets nor sleeps. Thread-safe: alive() is asked from the node's threads.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from vln_ros.console.messages import (
    Estop,
    Heartbeat,
    Instruction,
    Invalid,
    PageMessage,
    ReleaseControl,
    ReleaseEstop,
    RobotCommand,
    StopTask,
    TakeControl,
    Unreadable,
)

NOT_HOLDER = 'this page does not hold control'
LOST_BEFORE_RUN = 'control was lost before the command ran'


@dataclass(frozen=True)
class Verdict:
    """What the server does with one message from a page."""
    to: str = ''                          # the reply's "to" (the message's type)
    reply: tuple[bool, str] | None = None  # (ok, message) to that page now; None: no reply now
    refused: bool = False                 # a command refused (counted: commands_refused)
    bad: bool = False                     # not a message (counted: bad_messages)
    run: RobotCommand | None = None       # for the node, in the page's order (answered when it has run)
    estop: bool = False                   # e-stop now (answered when it is done)
    changed: bool = False                 # control changed hands: tell every page
    log: str = ''                         # a line for the node's log


@dataclass(frozen=True)
class Lost:
    """Control was taken from a page that went silent or away: the node e-stops (Commands.control_lost)."""
    page: int
    why: str


def _refuse(to: str, message: str) -> Verdict:
    return Verdict(to, (False, message), refused=True)


class Control:
    def __init__(self, heartbeat_timeout_s: float) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._lock = threading.Lock()
        self._holder: int | None = None   # the page holding control
        self._heartbeat_s = 0.0           # the holder's last heartbeat (or when it took control)

    @property
    def holder(self) -> int | None:
        with self._lock:
            return self._holder

    def alive(self, now_s: float) -> bool:
        """A page holds control and its last heartbeat is within heartbeat_timeout_s."""
        with self._lock:
            return self._holder is not None and not self._late(now_s)

    def _late(self, now_s: float) -> bool:
        return now_s - self._heartbeat_s > self.heartbeat_timeout_s

    def handle(self, page: int, message: PageMessage | Invalid | Unreadable, now_s: float) -> Verdict:
        """One message from a page, at now_s."""
        if isinstance(message, Unreadable):
            return Verdict(message.to, (False, message.reason), bad=True)
        with self._lock:
            holder = self._holder
            holds = holder == page
            if isinstance(message, Heartbeat):
                if not holds:   # answered, not counted: a page's last beats may cross its loss of control
                    return Verdict(message.type, (False, NOT_HOLDER))
                self._heartbeat_s = now_s
                return Verdict(message.type)
            if isinstance(message, TakeControl):
                if holder is not None and not holds:
                    return _refuse(message.type, f'page {holder} holds control: it must release it (or close) first')
                self._holder, self._heartbeat_s = page, now_s
                if holds:
                    return Verdict(message.type, (True, 'you had control already'))
                return Verdict(message.type, (True, 'you have control'), changed=True,
                               log=f'page {page} took control')
            if isinstance(message, ReleaseControl):
                if not holds:
                    return _refuse(message.type, NOT_HOLDER)
                self._holder = None
                return Verdict(message.type, (True, 'control released (no e-stop)'), changed=True,
                               log=f'page {page} released control')
            if isinstance(message, Estop):
                return Verdict(message.type, estop=True)
        kind = message.type
        if not holds:
            return _refuse(kind, 'take control first' if holder is None else f'page {holder} holds control')
        if isinstance(message, Invalid):
            return _refuse(kind, message.reason)
        assert isinstance(message, (Instruction, StopTask, ReleaseEstop))
        return Verdict(kind, run=message)

    def before_run(self, page: int) -> str | None:
        """Why a command the page queued may not run now (it lost control meanwhile), or None."""
        return None if self.holder == page else LOST_BEFORE_RUN

    def expire(self, now_s: float) -> Lost | None:
        """The holder's heartbeat is late at now_s: control is free again."""
        with self._lock:
            if self._holder is None or not self._late(now_s):
                return None
            holder, self._holder = self._holder, None
        return Lost(holder, f'no heartbeat for {self.heartbeat_timeout_s:g} s from the page holding control')

    def closed(self, page: int) -> Lost | None:
        """The page's socket closed: if it held control, control is free again."""
        with self._lock:
            if self._holder != page:
                return None
            self._holder = None
        return Lost(page, f'the page holding control (page {page}) disconnected')

    def clear(self) -> None:
        """Free control without a Lost (the server stops)."""
        with self._lock:
            self._holder = None
