"""What a development run (make demo, make eval, make bench) does before anything starts: its output folders
writable, a private ROS domain claimed (local_graph.py), SIGTERM ending it like Ctrl-C.

A problem is printed as one line naming the program, and the run exits 2 without a traceback: a read-only
checkout or a machine with no free domain is a fact about the machine, not a bug.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from vln_ros.harness import local_graph
from vln_ros.harness.processes import stop_on_sigterm


def unwritable(folder: Path) -> str:
    """Why `folder` cannot be created or written to, in one line ('' when it can): checked before anything
    starts, so that a read-only checkout fails at once and without a traceback."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        where = f' ({e.filename})' if e.filename and Path(e.filename) != folder else ''
        return f'cannot write to the output folder {folder}{where}: {e.strerror or e}; choose another with --out'
    return ''


def claim_private_run(program: str, *folders: Path) -> local_graph.DomainClaim | None:
    """The output folders writable and a private ROS domain claimed for this process (never the exported
    ROS_DOMAIN_ID: this cmd_vel must not reach a robot). None, with the reason printed, when the run cannot
    start. Called before rclpy starts: the domain is set in this process's environment."""
    problem = next((p for p in map(unwritable, folders) if p), '')
    if problem:
        print(f'{program}: {problem}', file=sys.stderr)
        return None
    try:
        return local_graph.use_private_domain()
    except local_graph.DomainUnavailable as e:
        print(f'{program}: {e}', file=sys.stderr)
        return None


def begin_run(program: str, *folders: Path) -> local_graph.DomainClaim | None:
    """What make demo and make eval do before anything starts: claim_private_run, the domain named on stdout,
    SIGTERM set to end the run like Ctrl-C. None, with the reason printed, when the run cannot start (exit 2)."""
    claim = claim_private_run(program, *folders)
    if claim is None:
        return None
    print(claim.describe(), flush=True)
    stop_on_sigterm()
    return claim
