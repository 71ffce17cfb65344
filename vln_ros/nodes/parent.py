"""A node ends with the process that started it.

`ros2 launch` forwards SIGINT to its children but not SIGTERM: a supervisor's SIGTERM to the launcher alone
(systemd stopping a unit whose main process is `ros2 launch`, a wrapper script ended by `kill`) left camera,
inference and controller nodes and the bag player running, the controller still publishing (seen). Each of our
executables therefore watches its parent: when the parent process is gone (the process is re-parented, so
getppid() changes), it shuts down as it does on SIGTERM, and controller_node sends a last zero command.

Why a poll rather than Linux's parent-death signal (prctl PR_SET_PDEATHSIG): that signal fires when the *thread*
that forked the process ends, not the process, so a launcher that starts nodes from a short-lived thread would
stop them at once; getppid() changes only when the parent process itself is gone. A process started by init
(ppid 1, e.g. a systemd unit running the node directly) has no parent to lose and is never stopped by this.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable

POLL_S = 0.2   # how often the parent is looked at: the node starts to stop within this of its parent's end


def watch_parent(on_gone: Callable[[], None], poll_s: float = POLL_S) -> threading.Event:
    """Call on_gone once, from a daemon thread, when this process's parent ends. Set the returned event to stop
    watching (a node that ends for another reason)."""
    parent = os.getppid()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(poll_s):
            if os.getppid() != parent:
                on_gone()
                return
    if parent != 1:
        threading.Thread(target=watch, name='parent_watch', daemon=True).start()
    return stop
