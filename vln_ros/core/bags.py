"""Bag playback and recording, the parts that need no ROS graph.

When to publish each recorded message (rate, start offset, loop) and what bag time /clock says
meanwhile; which QoS to replay a topic with, from the profiles its publishers offered when it was
recorded; and the message definitions a rosbag2 file must carry for the types we record (rosbags'
copy of the Kilted types, plus `.msg` files of installed packages such as vln_ros itself).
All times are integer nanoseconds.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rosbags.interfaces import Nodetype, Qos, QosDurability, QosHistory, QosReliability
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

NS_PER_S = 1_000_000_000
# A looped bag whose messages all share one instant would otherwise republish them without pause.
MIN_PASS_NS = 1_000_000
DEFAULT_DEPTH = 10
RECORD_DEPTH = 100


class BagError(Exception):
    """A bag cannot be played or recorded as asked; the message says why (and is shown as is)."""


@dataclass(frozen=True)
class Schedule:
    """Maps bag time to wall time since playback started, for messages at bag time >= first_ns.

    A loop's next pass starts when the previous one ends: pass k of a message at bag time t is due at
    (t - first_ns + k * pass_ns) / rate.
    """

    first_ns: int   # bag time playback starts at (bag start + start offset)
    last_ns: int    # bag time of the last message
    rate: float     # bag seconds per wall second

    @classmethod
    def for_bag(cls, start_ns: int, last_ns: int, rate: float, start_offset_s: float) -> Schedule:
        if not (math.isfinite(rate) and rate > 0.0):
            raise BagError(f'rate {rate} must be a positive number (1.0 = as recorded)')
        if not (math.isfinite(start_offset_s) and start_offset_s >= 0.0):
            raise BagError(f'start offset {start_offset_s} s must be 0 or more')
        first_ns = start_ns + round(start_offset_s * NS_PER_S)
        if first_ns > last_ns:
            raise BagError(f'start offset {start_offset_s} s is beyond the end of the bag '
                           f'({(last_ns - start_ns) / NS_PER_S:.3f} s long)')
        return cls(first_ns, last_ns, rate)

    @property
    def pass_ns(self) -> int:
        """Bag time one pass covers."""
        return max(self.last_ns - self.first_ns, MIN_PASS_NS)

    def due_ns(self, stamp_ns: int, pass_index: int = 0) -> int:
        """Wall time after the start at which the message recorded at stamp_ns is published."""
        return round((stamp_ns - self.first_ns + pass_index * self.pass_ns) / self.rate)

    def bag_time_ns(self, wall_ns: int, loop: bool = False) -> int:
        """Bag time at wall time wall_ns after the start (what /clock says): it holds at the last
        message once a single pass is over, and starts again from first_ns each pass of a loop."""
        progress = max(0, round(wall_ns * self.rate))
        if loop:
            progress %= self.pass_ns
        return self.first_ns + min(progress, self.last_ns - self.first_ns)


@dataclass(frozen=True)
class TopicQos:
    reliable: bool = True
    transient_local: bool = False
    depth: int = DEFAULT_DEPTH


def replay_qos(offered: Sequence[Qos]) -> TopicQos:
    """Reliable, volatile, depth 10 unless every publisher recorded on the topic agreed otherwise.

    A reliable publisher reaches reliable and best-effort subscribers alike, so it is the default; a topic
    recorded best-effort only (a camera) is replayed best-effort as it was live, and one recorded latched
    (transient local, e.g. vln/task_status) stays latched so that late subscribers get it.
    """
    known = [q for q in offered if q.reliability in (QosReliability.RELIABLE, QosReliability.BEST_EFFORT)]
    best_effort = bool(known) and all(q.reliability == QosReliability.BEST_EFFORT for q in known)
    latched = bool(offered) and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
    depths = [q.depth for q in offered if q.history == QosHistory.KEEP_LAST and q.depth > 0]
    return TopicQos(reliable=not best_effort, transient_local=latched,
                    depth=max(depths) if depths else DEFAULT_DEPTH)


def record_qos(offered: Sequence[Qos]) -> TopicQos:
    """The subscription that hears every publisher now on the topic: best effort if any of them is (a
    reliable subscription cannot match a best-effort publisher), transient local only if all of them are
    (so latched state published before recording started is recorded too). Deep, so that a burst is not
    overwritten while the writer catches up."""
    best_effort = any(q.reliability == QosReliability.BEST_EFFORT for q in offered)
    latched = bool(offered) and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
    return TopicQos(reliable=not best_effort, transient_local=latched, depth=RECORD_DEPTH)


def _referenced_types(fields: Iterable[tuple[str, tuple]]) -> Iterable[str]:
    for _, (kind, detail) in fields:
        if kind == Nodetype.NAME:
            yield detail
        elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE) and detail[0][0] == Nodetype.NAME:
            yield detail[0][1]


class MessageDefinitions:
    """The typestore a bag writer takes message definitions and type hashes from.

    Standard types come from rosbags' copy of ROS 2 Kilted; any other type (vln_ros/msg/WaypointArray)
    from `share/<package>/msg/<Name>.msg` under the given install prefixes, with the types it uses.
    """

    def __init__(self, prefixes: Sequence[str | Path]) -> None:
        self.store: Typestore = get_typestore(Stores.ROS2_KILTED)
        self._prefixes = [Path(p) for p in prefixes if str(p)]

    def ensure(self, msgtype: str) -> None:
        """Make msgtype ('pkg/msg/Name') known to the store; BagError if no definition is found."""
        pending = [msgtype]
        while pending:
            name = pending.pop()
            if name in self.store.fielddefs:
                continue
            text = self._msg_file_text(name)
            types = get_types_from_msg(text, name)
            pending.extend(_referenced_types(types[name][1]))
            self.store.register(types)

    def _msg_file_text(self, msgtype: str) -> str:
        package, kind, name = (msgtype.split('/') + ['', ''])[:3]
        if kind != 'msg' or not name:
            raise BagError(f"cannot record type {msgtype!r}: only messages ('pkg/msg/Name') can be recorded")
        for prefix in self._prefixes:
            path = prefix / 'share' / package / 'msg' / f'{name}.msg'
            if path.is_file():
                return path.read_text()
        raise BagError(f'no message definition for {msgtype!r}: {package}/msg/{name}.msg is not under '
                       f'share/ of {", ".join(map(str, self._prefixes)) or "any prefix"} (is its package sourced?)')
