"""The one `main` every vln_ros node executable uses: init, spin, shut down, and exit codes.

Exit codes: 0 after a normal shutdown (Ctrl-C, SIGTERM via launch, rclpy shutdown), 1 when the node is
still running SHUTDOWN_DEADLINE_S after a stop was asked for (every thread's stack is printed on stderr first:
a node must not stay stuck, and the stacks say where it was), 2 when the parameters are invalid (the message
names the parameter, the value and the allowed range), 3 when the node cannot start as configured (e.g. the
chosen backend's library is missing; the message says the fix).
Written with try/finally rather than `with rclpy.init()` so it runs on Jazzy as well as Kilted.

Signals: SIGINT and SIGTERM only ever request a shutdown, however many arrive and whenever (a second
Ctrl-C, or `ros2 launch` and the terminal both signalling the process group): rclpy's own handler wakes
the executor and then calls ours, which only sets a flag; the spin loop ends at its next turn, and the node
is destroyed and rclpy shut down from the main thread's normal flow. Python's default SIGINT handler would
raise KeyboardInterrupt in the middle of destroy_node() instead (exit -2 with a traceback), and shutting
down from inside the handler can hang (see _ShutdownOnSignal._handle).

The parent: an executable ends like on SIGTERM when the process that started it ends (nodes/parent.py: `ros2
launch` does not pass a SIGTERM on to its nodes).

`--help` (before `--ros-args`) prints the node's usage and parameters and exits 0 without starting ROS.
"""
from __future__ import annotations

import faulthandler
import signal
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

from vln_ros.core.config import NODE_PARAMS, ParameterError, StartupError, StrictModel, param_specs
from vln_ros.nodes.parent import watch_parent

# Longest a turn of the spin loop waits for work before it looks at the signal flag again (a signal also
# wakes it at once: rclpy's own handler triggers the executor's guard condition).
SIGNAL_CHECK_S = 0.1
# A stop asked for (a signal, the parent gone) and the process still here this long after: its threads' stacks
# go to stderr and it exits 1. Seen once (a fresh-clone run under load): a controller_node still running 25 s
# after launch's SIGINT and through its SIGTERM, until launch killed it. Below launch's STOP_TIMEOUT_S (20 s),
# so that the stacks come out before launch escalates; well above a normal stop (under a second; an lmdeploy
# engine's teardown, a few seconds).
SHUTDOWN_DEADLINE_S = 15.0
EXIT_BAD_PARAMETERS = 2
EXIT_CANNOT_START = 3


def usage(name: str, factory: Callable[[], Node], params: type[StrictModel] | None = None) -> str:
    """What `<node> --help` prints: the node's module docstring, its parameters from the model (`params`, else
    the node's in NODE_PARAMS), exit codes."""
    doc = (sys.modules[factory.__module__].__doc__ or '').strip()
    lines = [f'usage: {name} [--help] [--ros-args [-p NAME:=VALUE]... [--params-file FILE]... '
             '[-r FROM:=TO]...]', '', doc, '']
    model = params or NODE_PARAMS.get(name)
    if model is not None:
        lines.append(f'Parameters (ros2 param describe /{name} NAME shows the same):')
        for spec in param_specs(model):
            live = 'settable live' if spec.dynamic else 'fixed at start-up'
            lines.append(f'  {spec.name} = {spec.default!r}  ({spec.allowed()}; {live})')
            lines.extend(textwrap.wrap(spec.description, 96, initial_indent=' ' * 6, subsequent_indent=' ' * 6))
        lines.append('')
    lines.append(f'Exit codes: 0 after a normal shutdown, 1 still running {SHUTDOWN_DEADLINE_S:g} s after a stop '
                 f'(the stacks on stderr), {EXIT_BAD_PARAMETERS} invalid parameters or arguments, '
                 f'{EXIT_CANNOT_START} cannot start as configured (the message says the fix).')
    return '\n'.join(lines)


class _ShutdownOnSignal:
    """SIGINT/SIGTERM handlers for the node's lifetime and after it: an executable keeps them until the
    interpreter has exited, so a late signal (the second of a process-group SIGINT) cannot become a
    KeyboardInterrupt at exit (exit -2). In-process callers (tests) restore their own with `restore()`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, deadline: bool = False) -> None:
        # Remembered as well as acted on: a signal before rclpy.init (or while the node is being built)
        # has no context to shut down yet, and the node must then not start and run on.
        self.requested = False
        self._deadline = deadline    # executables only: it ends the process (a test runner's too)
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, _signum: int, _frame: Any) -> None:
        # Only remembered: run_node's spin loop ends at its next turn (rclpy's own handler has already woken
        # the executor). Shutting rclpy down from here instead hangs: the handler runs between two bytecodes
        # of whatever the main thread is doing, often a callback that holds the node's handle, and the
        # shutdown's destroy_node() waits for that handle for ever (seen, 1 run in 30 under load).
        self.request()

    def request(self) -> None:
        """A shutdown asked for: by a signal, or by other means (the parent process ended)."""
        if not self.requested and self._deadline:
            # faulthandler's watchdog is a C thread: it prints and exits even while the main thread is stuck
            # in a call that holds the GIL.
            faulthandler.dump_traceback_later(SHUTDOWN_DEADLINE_S, exit=True)
        self.requested = True

    def done(self) -> None:
        """The shutdown is over: no deadline any more."""
        if self._deadline:
            faulthandler.cancel_dump_traceback_later()

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def run_node(name: str, factory: Callable[[], Node], args: list[str] | None = None,
             threads: int = 1, restore_signal_handlers: bool = False,
             params: type[StrictModel] | None = None) -> int:
    """Run the node `factory` builds until a signal or shutdown; its exit code. `params`: the node's parameter
    model for --help, where it is not in NODE_PARAMS (sim_node, a development node, keeps its own)."""
    own_args = remove_ros_args(sys.argv if args is None else args)[1:]  # [0] is the program
    if own_args:
        if own_args[0] in ('-h', '--help'):
            print(usage(name, factory, params))
            return 0
        print(f'[{name}] unknown arguments {own_args}: a node takes only --help and --ros-args ... '
              f'(see {name} --help)', file=sys.stderr, flush=True)
        return EXIT_BAD_PARAMETERS
    # Installed before rclpy.init, so rclpy's own handlers (which wake the executor) chain to them.
    signals = _ShutdownOnSignal(deadline=not restore_signal_handlers)
    # In-process callers (tests) are not executables: their parent is the test runner's.
    parent_watch = None if restore_signal_handlers else watch_parent(signals.request)
    rclpy.init(args=args)
    node = None
    try:
        if signals.requested:
            return 0
        # Made before the node: rclpy's SIGINT handler shuts the context down before ours records the signal,
        # and an executor made on a dead context leaves a half-built guard condition whose __del__ prints
        # tracebacks. A stop comes once the node's start-up line is out, so the executor must exist by then.
        executor = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
        node = factory()
        if signals.requested:
            return 0
        executor.add_node(node)
        # executor.spin(), but ending at a signal: the signal wakes the executor, the turn ends, we stop.
        while not signals.requested and rclpy.ok():
            executor.spin_once(timeout_sec=SIGNAL_CHECK_S)
    except ParameterError as exc:
        print(f'[{name}] invalid parameters, not starting: {exc}', file=sys.stderr, flush=True)
        return EXIT_BAD_PARAMETERS
    except StartupError as exc:
        print(f'[{name}] cannot start: {exc}', file=sys.stderr, flush=True)
        return EXIT_CANNOT_START
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # SIGINT/SIGTERM shut the context down from outside while a callback was publishing (or while
        # the node was being built): that error (the context is gone) is part of a normal shutdown.
        # Anything else is a crash.
        if rclpy.ok():
            raise
    finally:
        if parent_watch is not None:
            parent_watch.set()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        signals.done()
        if restore_signal_handlers:
            signals.restore()
        else:
            # An executable is done with signals now. Python's finalization puts the default handler back in
            # place of a Python one, and a late SIGINT (the second of a process-group Ctrl-C) landing there
            # killed the process: exit -2, no traceback (seen under heavy load). Ignored, for the whole process
            # (blocking it in the main thread was not enough: another thread took it), it stays ignored to the end.
            for signum in _ShutdownOnSignal.SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
    return 0
