"""The ROS environment of a graph that stays on this machine: tests, `make demo`, `make bench`.

Discovery and data stay on loopback, raw camera frames of any size pass (shared memory), and each run
gets a private DDS domain of its own (`use_private_domain`). See config/fastdds_localhost_large_data.xml for
why ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST cannot be used for this (it silently drops messages over ~0.5 MB).
Robots use their own network settings instead (README, "Large images over Fast DDS").

Why a private domain, and why it is checked: loopback keeps the graph off the network, not away from the other
ROS programs on this machine. A demo that joined the exported ROS_DOMAIN_ID of a robot computer published
its velocity commands to the robot's base driver (measured: a default-config /cmd_vel subscriber received
1,221 Twists up to 0.45 m/s), and two demos in one domain heard each other's nodes. So a run takes a domain
(1) that no other run of ours holds (a lock file, held for the life of the process), (2) whose RTPS unicast
ports no other program on this machine has bound, and (3) in which a probe participant with this profile sees
nobody else within a bounded wait. A program with Fast DDS's default configuration is found by both checks
(this profile's initial peers reach its unicast discovery port; test/test_local_graph.py). The exported
ROS_DOMAIN_ID is never used for this, nor domain 0; each run says which domain it took.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # rclpy is imported when a probe runs, after the environment is set
    from rclpy.node import Node

FASTDDS_PROFILE = Path(__file__).resolve().parents[2] / 'config' / 'fastdds_localhost_large_data.xml'
# 0-101: Fast DDS's ports for a domain are 7400 + 250 x domain + ...; above 101 they reach into Linux's ephemeral
# port range (32768+) and can collide with other programs' sockets (the ROS 2 documentation's advice).
DOMAIN_IDS = range(0, 102)
AVOIDED_DOMAIN_IDS = (0,)    # the domain of every ROS 2 program started without ROS_DOMAIN_ID: never private
LOCK_DIR = Path(tempfile.gettempdir()) / 'vln_ros_domains'
PROBE_S = 1.0                # discovery on loopback: 0.2-0.5 s typically, up to ~3 s on a loaded machine
MAX_PROBES = 10              # occupied domains probed before giving up
PROBE_NODE = 'vln_domain_probe'
# RTPS's well-known ports (what Fast DDS and most DDS use): discovery and user unicast of participant p in domain d.
PORT_BASE, DOMAIN_GAIN, PARTICIPANT_GAIN, DISCOVERY_OFFSET, USER_OFFSET = 7400, 250, 2, 10, 11
PARTICIPANT_IDS = range(120)   # every id whose ports stay within the domain's block of 250


class DomainUnavailable(RuntimeError):
    """No private domain could be claimed; the message says what was tried and why each one was refused."""


@dataclass
class DomainClaim:
    """A domain this process holds (the lock file stays locked until the process ends or `release()`)."""
    domain_id: int
    lock_file: Path
    probe_s: float
    refused: list[str] = field(default_factory=list)   # the candidates passed over, each with its reason
    exported: str = ''                                  # the ROS_DOMAIN_ID this process had, if any (unused)
    _fd: int | None = field(default=None, repr=False)

    def describe(self) -> str:
        """One line for the run's output: which domain, and why it is private."""
        ignored = f'; the exported ROS_DOMAIN_ID={self.exported} is not used' if self.exported else ''
        passed = f'; passed over: {"; ".join(self.refused[-5:])}' if self.refused else ''
        return (f'ROS graph: private DDS domain {self.domain_id} (loopback only; its ports were free and a probe '
                f'saw no other participant in {self.probe_s:g} s; held through {self.lock_file}{ignored}{passed})')

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing the descriptor releases the flock
            self._fd = None


def environment(domain_id: int) -> dict[str, str]:
    """The variables of a local graph in `domain_id` (exactly that domain, whatever the environment says)."""
    if not FASTDDS_PROFILE.is_file():
        raise FileNotFoundError(f'{FASTDDS_PROFILE} is missing: the local graph needs the source tree')
    if not 0 <= domain_id <= 232:
        raise ValueError(f'domain_id {domain_id}: a DDS domain is 0-232')
    return {
        'ROS_DOMAIN_ID': str(domain_id),
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SYSTEM_DEFAULT',  # let the profile decide the transports
        'FASTDDS_DEFAULT_PROFILES_FILE': str(FASTDDS_PROFILE),
        'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
    }


def use(domain_id: int) -> dict[str, str]:
    """Set the environment for this process (before rclpy.init) and its children; returns it. Prefer
    `use_private_domain()`, which also makes sure nobody else is in the domain."""
    env = environment(domain_id)
    os.environ.pop('FASTDDS_BUILTIN_TRANSPORTS', None)  # ignored with the profile; avoid confusion
    os.environ.update(env)
    return env


def _use_profile() -> None:
    """The profile's variables without touching ROS_DOMAIN_ID (Fast DDS reads the profile file once per process,
    at its first participant, so this must precede the probe)."""
    env = environment(DOMAIN_IDS.start)
    del env['ROS_DOMAIN_ID']
    os.environ.pop('FASTDDS_BUILTIN_TRANSPORTS', None)
    os.environ.update(env)


def bound_ports(domain_id: int) -> list[str]:
    """The domain's unicast ports (RTPS well-known ports) that another program on this machine holds: every
    participant with a UDP transport binds its participant id's pair without sharing it, default Fast DDS
    configuration, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and this profile alike. Instant and certain for
    them, where discovery can take a second or more on a loaded machine (measured up to 2.7 s)."""
    taken = []
    for participant in PARTICIPANT_IDS:
        for offset in (DISCOVERY_OFFSET, USER_OFFSET):
            port = PORT_BASE + DOMAIN_GAIN * domain_id + PARTICIPANT_GAIN * participant + offset
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                try:
                    sock.bind(('0.0.0.0', port))
                except OSError as e:
                    if e.errno == errno.EADDRINUSE:
                        taken.append(f'UDP port {port} (participant {participant}) is bound')
                        break
    return taken


def other_participants(domain_id: int, wait_s: float = PROBE_S) -> list[str]:
    """Who else is in `domain_id`, as seen by a probe participant with this profile within wait_s: each other
    participant once, by its ROS node names ('a participant without ROS nodes' for plain DDS programs, ROS
    contexts without nodes, and nodes whose names have not arrived yet). Returns as soon as one is seen; []
    after wait_s of nobody. Participants it cannot see cannot reach a graph on this profile either (measured:
    FASTDDS_BUILTIN_TRANSPORTS=SHM or LARGE_DATA; neither side discovers the other)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    _use_profile()
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    name = f'{PROBE_NODE}_{os.getpid()}'
    try:
        node = Node(name, context=context, enable_rosout=False, start_parameter_services=False)
        deadline = time.monotonic() + wait_s
        while True:
            found = _others(node, name)
            if found or time.monotonic() >= deadline:
                node.destroy_node()
                if found is None:
                    raise RuntimeError(f'the domain probe did not see its own node {name} in {wait_s:g} s')
                return found
            time.sleep(0.05)
    finally:
        rclpy.try_shutdown(context=context)


def _others(node: Node, own_name: str) -> list[str] | None:
    """Every participant the probe's graph cache knows besides its own, grouped by GUID prefix (12 bytes):
    all endpoints count, ROS or not (no_demangle), and every rmw participant has ros_discovery_info.
    None until the probe's own endpoints are listed (they tell which participant is ours)."""
    endpoints = []
    for topic, _ in node.get_topic_names_and_types(no_demangle=True):
        endpoints += node.get_publishers_info_by_topic(topic, no_mangle=True)
        endpoints += node.get_subscriptions_info_by_topic(topic, no_mangle=True)
    own = {bytes(e.endpoint_gid[:12]) for e in endpoints if e.node_name == own_name}
    if not own:
        return None
    nodes: dict[bytes, set[str]] = {}
    for e in endpoints:
        prefix = bytes(e.endpoint_gid[:12])
        if prefix not in own:
            names = nodes.setdefault(prefix, set())
            if e.node_name != '_NODE_NAME_UNKNOWN_':
                names.add(e.node_namespace.rstrip('/') + '/' + e.node_name)
    return [', '.join(sorted(names)) if names else f'a participant without ROS nodes ({prefix.hex()})'
            for prefix, names in nodes.items()]


def _lock(domain_id: int) -> tuple[int | None, Path, str]:
    """(descriptor holding the domain's lock, lock file, '') or (None, lock file, who holds it)."""
    try:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):   # shared by every user of this machine, like /tmp itself
            os.chmod(LOCK_DIR, 0o1777)
        path = LOCK_DIR / f'domain_{domain_id}.lock'
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:          # another user's file: flock works on a read-only descriptor too
            fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise DomainUnavailable(f'cannot use the domain lock folder {LOCK_DIR}: {e.strerror}') from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors='replace').strip() or 'another process'
        os.close(fd)
        return None, path, holder
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'pid {os.getpid()} ({" ".join(sys.argv)[:150]})\n'.encode(), 0)
    return fd, path, ''


def candidates() -> list[int]:
    """Every domain a run may take, in a random order (concurrent runs rarely try the same one first); never 0
    (every ROS 2 program without ROS_DOMAIN_ID is there) nor the exported ROS_DOMAIN_ID."""
    exported = os.environ.get('ROS_DOMAIN_ID', '')
    avoid = set(AVOIDED_DOMAIN_IDS) | ({int(exported)} if exported.strip().isdigit() else set())
    ids = [d for d in DOMAIN_IDS if d not in avoid]
    random.SystemRandom().shuffle(ids)
    return ids


def claim_domain(domain_ids: list[int] | None = None, probe_s: float = PROBE_S,
                 max_probes: int = MAX_PROBES) -> DomainClaim:
    """Lock, then probe, the first domain of `domain_ids` (default: `candidates()`) that no run of ours holds
    and nobody is in. Does not change this process's environment (see use_private_domain)."""
    refused: list[str] = []
    held, probed = 0, 0
    for domain_id in (candidates() if domain_ids is None else domain_ids):
        fd, path, holder = _lock(domain_id)
        if fd is None:
            held += 1
            refused.append(f'{domain_id} held by {holder}')
            continue
        try:
            others = bound_ports(domain_id) or other_participants(domain_id, probe_s)
        except BaseException:
            os.close(fd)
            raise
        if not others:
            return DomainClaim(domain_id, path, probe_s, refused, os.environ.get('ROS_DOMAIN_ID', ''), fd)
        os.close(fd)
        probed += 1
        refused.append(f'{domain_id} in use by {"; ".join(others)[:120]}')
        if probed >= max_probes:
            break
    raise DomainUnavailable(
        f'no private ROS domain: {probed} domain(s) had other participants and {held} were held by other runs '
        f'(lock files in {LOCK_DIR}): {"; ".join(refused[-6:]) or "no candidate"}')


_claim: tuple[int, DomainClaim] | None = None   # (pid, claim): one private domain per process


def use_private_domain(probe_s: float = PROBE_S, max_probes: int = MAX_PROBES) -> DomainClaim:
    """The demo's, the tests' and the benchmarks' one way into a graph: claim a private domain (claim_domain)
    and set this process's environment for it (children inherit it). Once per process; later calls return
    the same claim. Raises DomainUnavailable (its message is the whole explanation)."""
    global _claim
    if _claim is not None and _claim[0] == os.getpid():
        return _claim[1]
    claim = claim_domain(probe_s=probe_s, max_probes=max_probes)
    use(claim.domain_id)
    _claim = (os.getpid(), claim)
    return claim
