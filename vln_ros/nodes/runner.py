"""The one `main` every vln_ros node executable uses: init, spin, shut down, and exit codes.

Exit codes: 0 after a normal shutdown (Ctrl-C, SIGTERM via launch, rclpy shutdown), 2 when the
parameters are invalid (the message names the parameter, the value and the allowed range), 3 when the
node cannot start as configured (e.g. the chosen backend's library is missing; the message says the fix).
Written with try/finally rather than `with rclpy.init()` so it runs on Jazzy as well as Kilted.
"""
from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node

from vln_ros.core.config import ParameterError, StartupError

EXIT_BAD_PARAMETERS = 2
EXIT_CANNOT_START = 3


def run_node(name: str, factory: Callable[[], Node], args: list[str] | None = None,
             threads: int = 1) -> int:
    rclpy.init(args=args)
    # SIGTERM (what launch and process supervisors send) ends the spin like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    node = None
    try:
        node = factory()
        executor = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        executor.spin()
    except ParameterError as exc:
        print(f'[{name}] invalid parameters, not starting: {exc}', file=sys.stderr, flush=True)
        return EXIT_BAD_PARAMETERS
    except StartupError as exc:
        print(f'[{name}] cannot start: {exc}', file=sys.stderr, flush=True)
        return EXIT_CANNOT_START
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # SIGINT/SIGTERM shut the context down from outside while a callback was publishing: that
        # callback's error (the context is gone) is part of a normal shutdown. Anything else is a crash.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
