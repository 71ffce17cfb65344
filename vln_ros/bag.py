"""vln_bag: play and record rosbag2 bags (MCAP or sqlite3) with rclpy and rosbags, without rosbag2.

    vln_bag play BAG [--topics T ...] [--rate 2] [--start-offset 5] [--loop] [--no-clock]
    vln_bag record -o OUT_DIR TOPIC ... | --all [--duration 60]
    (either may end with --ros-args ..., e.g. -r __ns:=/robot1 or -p use_sim_time:=true)

The bags are ordinary rosbag2 bags: `ros2 bag play --clock` plays what `vln_bag record` writes, and
`vln_bag play` plays what `ros2 bag record` writes. Messages go over the graph as the recorded CDR bytes
(never deserialized), on the recorded topics with the recorded types. The timing, QoS and message
definition rules are in vln_ros/core/bags.py.

Exit codes: 0 after playing the bag (or Ctrl-C / SIGTERM), 2 when the input is unusable (missing or
corrupt bag, bad option, output folder exists), with one line saying why.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import rclpy
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from rosbags.interfaces import Connection, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer, WriterError
from rosgraph_msgs.msg import Clock

from vln_ros import interface
from vln_ros.core.bags import NS_PER_S, BagError, MessageDefinitions, Schedule, TopicQos, record_qos, replay_qos
from vln_ros.nodes.parent import watch_parent

EXIT_BAD_INPUT = 2
# Every node has these; recording them (`--all`) would only replay stale logs and parameter events.
INFRASTRUCTURE_TOPICS = ('/rosout', '/parameter_events')
DISCOVERY_PERIOD_S = 0.5
# Deadline, lifespan and liveliness lease are not recorded (0 = unspecified): playback needs only
# reliability, durability and depth.
UNSPECIFIED = QosTime(0, 0)
FLUSH_TIMEOUT_S = 2.0
ROSBAG2_VERSION: Final = 8  # what Jazzy writes and Kilted still reads


def message_class(msgtype: str) -> Any:
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image; BagError when its package is not installed."""
    package, kind, name = (msgtype.split('/') + ['', ''])[:3]
    try:
        return getattr(importlib.import_module(f'{package}.{kind}'), name)
    except (ImportError, AttributeError, ValueError):
        raise BagError(f'message type {msgtype!r} is not installed here') from None


def qos_profile(qos: TopicQos) -> QoSProfile:
    return QoSProfile(
        depth=qos.depth,
        reliability=ReliabilityPolicy.RELIABLE if qos.reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if qos.transient_local else DurabilityPolicy.VOLATILE)


def offered_qos(profile: QoSProfile) -> Qos:
    """A publisher's QoS as rosbag2 stores it (rclpy's and rosbag2's policy enums share their values)."""
    return Qos(history=QosHistory(int(profile.history)), depth=profile.depth,
               reliability=QosReliability(int(profile.reliability)),
               durability=QosDurability(int(profile.durability)),
               deadline=UNSPECIFIED, lifespan=UNSPECIFIED, liveliness=QosLiveliness(int(profile.liveliness)),
               liveliness_lease_duration=UNSPECIFIED, avoid_ros_namespace_conventions=False)


def summary(counts: Counter[str]) -> str:
    return ', '.join(f'{topic} {n}' for topic, n in sorted(counts.items())) or 'none'


class StopFlag:
    """Set by SIGINT or SIGTERM (launch sends SIGTERM); waits on it return at once when set."""

    def __init__(self) -> None:
        self._event = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._event.set())

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout_s: float) -> bool:
        return self._event.wait(max(0.0, timeout_s))

    @property
    def is_set(self) -> bool:
        return self._event.is_set()


# -- play ---------------------------------------------------------------------------------------------

def open_bag(path: Path) -> Reader:
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises many kinds on a corrupt file; all mean "not a usable bag"
        raise BagError(f'cannot read bag {path}: {" ".join(str(exc).split()) or type(exc).__name__}') from None
    if reader.message_count == 0:
        reader.close()
        raise BagError(f'bag {path} holds no messages')
    return reader


def select_connections(reader: Reader, topics: list[str], exclude: list[str], clock: bool) -> list[Connection]:
    recorded = {c.topic for c in reader.connections}
    missing = [t for t in topics if t not in recorded]
    if missing:
        raise BagError(f'topics not in the bag: {", ".join(missing)} (it has: {", ".join(sorted(recorded))})')
    chosen = [c for c in reader.connections if (not topics or c.topic in topics) and c.topic not in exclude]
    if clock and any(c.topic == interface.CLOCK for c in chosen):
        print(f'vln_bag play: not replaying the recorded {interface.CLOCK}: the player publishes bag time there '
              '(use --no-clock to replay the recorded one)', file=sys.stderr)
        chosen = [c for c in chosen if c.topic != interface.CLOCK]
    if not chosen:
        raise BagError('no topic left to play')
    return chosen


class Player:
    """Publishes the chosen connections on schedule from the main thread, and /clock in between."""

    def __init__(self, node: Node, reader: Reader, connections: list[Connection], schedule: Schedule,
                 args: argparse.Namespace, stop: StopFlag) -> None:
        self.node, self.reader, self.schedule, self.args, self.stop = node, reader, schedule, args, stop
        self.publishers: dict[str, Any] = {}
        self.connections: list[Connection] = []
        for topic in sorted({c.topic for c in connections}):
            on_topic = [c for c in connections if c.topic == topic]
            try:
                cls = message_class(on_topic[0].msgtype)
            except BagError as exc:
                print(f'vln_bag play: skipping {topic}: {exc}', file=sys.stderr)
                continue
            qos = replay_qos([q for c in on_topic for q in getattr(c.ext, 'offered_qos_profiles', [])])
            self.publishers[topic] = node.create_publisher(cls, topic, qos_profile(qos))
            self.connections.extend(on_topic)
        if not self.publishers:
            raise BagError('none of the chosen topics has a message type installed here')
        self.clock_pub = (node.create_publisher(Clock, interface.CLOCK, QoSProfile(depth=1)) if args.clock else None)
        self.counts: Counter[str] = Counter()
        self._start_ns = 0
        self._next_tick_ns = 0

    def wait_for_subscribers(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        lonely = list(self.publishers)
        while lonely and not self.stop.is_set and time.monotonic() < deadline:
            self.stop.wait(0.05)
            lonely = [t for t, pub in self.publishers.items() if pub.get_subscription_count() == 0]
        if lonely and not self.stop.is_set:
            print(f'vln_bag play: no subscriber after {timeout_s:g} s on {", ".join(lonely)}; playing anyway',
                  file=sys.stderr)

    def play(self) -> bool:
        """Play the bag (every pass of a loop); False when stopped by a signal."""
        self._start_ns = time.monotonic_ns()
        self._next_tick_ns = self._start_ns
        passes = range(sys.maxsize) if self.args.loop else range(1)
        for pass_index in passes:
            for connection, stamp_ns, data in self._messages():
                if not self._wait_until(self._start_ns + self.schedule.due_ns(stamp_ns, pass_index)):
                    return False
                self.publishers[connection.topic].publish(data if isinstance(data, bytes) else bytes(data))
                self.counts[connection.topic] += 1
        self._publish_clock(self.schedule.last_ns)
        self._flush()
        return True

    def _flush(self) -> None:
        """Give reliable subscribers the last messages before the process (and its DDS writers) ends."""
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        for pub in self.publishers.values():
            if pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE:
                pub.wait_for_all_acked(Duration(seconds=max(0.0, deadline - time.monotonic())))

    def _messages(self) -> Iterator[tuple[Connection, int, bytes]]:
        try:
            yield from self.reader.messages(self.connections, start=self.schedule.first_ns)
        except Exception as exc:  # a truncated or corrupt chunk
            raise BagError(f'cannot read bag {self.args.bag}: {" ".join(str(exc).split())}') from None

    def _wait_until(self, due_ns: int) -> bool:
        """Sleep until due_ns (monotonic), publishing /clock ticks meanwhile; False when stopped."""
        period_ns = round(NS_PER_S / self.args.clock_hz) if self.clock_pub else 0
        while True:
            now = time.monotonic_ns()
            if self.clock_pub and now >= self._next_tick_ns:
                self._publish_clock(self.schedule.bag_time_ns(now - self._start_ns, self.args.loop))
                # after a stall, carry on from now rather than publishing the missed ticks in a burst
                self._next_tick_ns = max(self._next_tick_ns + period_ns, now)
            if now >= due_ns:
                return not self.stop.is_set
            wake = min(due_ns, self._next_tick_ns) if self.clock_pub else due_ns
            if self.stop.wait((wake - now) / NS_PER_S):
                return False

    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_pub is not None:
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = divmod(bag_ns, NS_PER_S)
            self.clock_pub.publish(msg)


def play(args: argparse.Namespace, ros_args: list[str], stop: StopFlag) -> int:
    if args.clock_hz <= 0:
        raise BagError(f'--clock-hz {args.clock_hz} must be positive (use --no-clock for no clock)')
    reader = open_bag(Path(args.bag))
    try:
        connections = select_connections(reader, args.topics or [], args.exclude_topics or [], args.clock)
        schedule = Schedule.for_bag(reader.start_time, reader.end_time - 1, args.rate, args.start_offset)
        rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node('vln_bag_player')
        try:
            player = Player(node, reader, connections, schedule, args, stop)
            if args.wait_for_subscribers > 0:
                player.wait_for_subscribers(args.wait_for_subscribers)
            started = time.monotonic()
            finished = player.play()
            print(f'vln_bag play: {"played" if finished else "stopped after"} {sum(player.counts.values())} '
                  f'messages in {time.monotonic() - started:.2f} s ({summary(player.counts)})', flush=True)
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    finally:
        reader.close()
    return 0


# -- record -------------------------------------------------------------------------------------------

class Recorder:
    """Subscribes to each wanted topic once it appears on the graph (type and QoS from its publishers)
    and writes what arrives, stamped with this node's clock, to an MCAP rosbag2 bag."""

    def __init__(self, node: Node, writer: Writer, topics: list[str], record_all: bool) -> None:
        self.node, self.writer, self.record_all = node, writer, record_all
        self.wanted = {node.resolve_topic_name(t) for t in topics}
        self.definitions = MessageDefinitions([*os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep),
                                               sys.prefix])
        self.subscribed: dict[str, Any] = {}
        self.refused: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.discover()
        node.create_timer(DISCOVERY_PERIOD_S, self.discover)

    def discover(self) -> None:
        for topic, types in self.node.get_topic_names_and_types():
            if topic in self.subscribed or topic in self.refused:
                continue
            if not (topic in self.wanted or (self.record_all and topic not in INFRASTRUCTURE_TOPICS)):
                continue
            try:
                self._subscribe(topic, types)
            except BagError as exc:
                self.refused.add(topic)
                self.node.get_logger().warning(f'not recording {topic}: {exc}')

    def _subscribe(self, topic: str, types: list[str]) -> None:
        if len(types) > 1:
            self.node.get_logger().warning(f'{topic} has several types {types}; recording {types[0]}')
        msgtype = types[0]
        cls = message_class(msgtype)
        self.definitions.ensure(msgtype)
        offered = [offered_qos(info.qos_profile) for info in self.node.get_publishers_info_by_topic(topic)]
        connection = self.writer.add_connection(topic, msgtype, typestore=self.definitions.store,
                                                offered_qos_profiles=offered)

        def write(data: bytes) -> None:
            self.writer.write(connection, self.node.get_clock().now().nanoseconds, data)
            self.counts[topic] += 1

        # raw=True: the callback gets the CDR bytes as they came, which is what the bag stores.
        self.subscribed[topic] = self.node.create_subscription(cls, topic, write, qos_profile(record_qos(offered)),
                                                               raw=True)
        self.node.get_logger().info(f'recording {topic} ({msgtype})')


def record(args: argparse.Namespace, ros_args: list[str], stop: StopFlag) -> int:
    if not args.topics and not args.all:
        raise BagError('name the topics to record, or --all')
    if args.duration is not None and args.duration <= 0:
        raise BagError(f'--duration {args.duration} must be positive')
    out = Path(args.output)
    if out.exists():
        raise BagError(f'{out} exists; rosbag2 bags are folders and are never overwritten')
    writer = Writer(out, version=ROSBAG2_VERSION, storage_plugin=StoragePlugin.MCAP)
    try:
        writer.open()
    except (OSError, WriterError) as exc:
        raise BagError(f'cannot create {out}: {exc}') from None
    rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('vln_bag_recorder')
    try:
        recorder = Recorder(node, writer, args.topics or [], args.all)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set and (deadline is None or time.monotonic() < deadline):
            executor.spin_once(timeout_sec=0.1)
        # Take what has already arrived before closing: keep spinning while messages keep coming.
        drain_until = time.monotonic() + 2.0
        before = -1
        while before != sum(recorder.counts.values()) and time.monotonic() < drain_until:
            before = sum(recorder.counts.values())
            for _ in range(5):
                executor.spin_once(timeout_sec=0.02)
        never = sorted(recorder.wanted - set(recorder.subscribed))
        print(f'vln_bag record: {sum(recorder.counts.values())} messages to {out} ({summary(recorder.counts)})'
              + (f'; never published: {", ".join(never)}' if never else ''), flush=True)
    finally:
        writer.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# -- command line -------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='vln_bag', description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='command', required=True)
    pl = sub.add_parser('play', help='publish a bag with its recorded timing')
    pl.add_argument('bag', help='rosbag2 folder (with metadata.yaml), or a .mcap or .db3 file')
    pl.add_argument('--topics', nargs='+', metavar='TOPIC', help='play only these topics (default: all)')
    pl.add_argument('--exclude-topics', nargs='+', metavar='TOPIC', help='do not play these topics')
    pl.add_argument('--rate', type=float, default=1.0, help='playback speed factor (default 1.0)')
    pl.add_argument('--start-offset', type=float, default=0.0, metavar='S',
                    help='start this many seconds into the bag (default 0)')
    pl.add_argument('--loop', action='store_true', help='play again from the start until stopped')
    pl.add_argument('--clock', action=argparse.BooleanOptionalAction, default=True,
                    help='publish bag time on /clock for nodes with use_sim_time (default on)')
    pl.add_argument('--clock-hz', type=float, default=100.0, help='/clock messages per second (default 100)')
    pl.add_argument('--wait-for-subscribers', type=float, default=0.0, metavar='S',
                    help='before playing, wait up to S seconds until every topic has a subscriber, so nodes '
                         'started together with the player miss nothing (default 0: do not wait)')
    rec = sub.add_parser('record', help='record topics to an MCAP bag until Ctrl-C or --duration')
    rec.add_argument('-o', '--output', required=True, help='bag folder to create (must not exist)')
    rec.add_argument('topics', nargs='*', help='topics to record (recorded once they appear)')
    rec.add_argument('--all', action='store_true',
                     help=f'record every topic that appears (except {", ".join(INFRASTRUCTURE_TOPICS)})')
    rec.add_argument('--duration', type=float, metavar='S', help='stop after S seconds')
    return p


def main(argv: list[str] | None = None) -> int:
    executable = argv is None
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(remove_ros_args(argv))
    stop = StopFlag()
    if executable:   # like the nodes, the player and recorder end with the process that started them
        watch_parent(stop.set)
    try:
        return (play if args.command == 'play' else record)(args, ['vln_bag', *argv], stop)
    except BagError as exc:
        print(f'vln_bag {args.command}: {exc}', file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT


if __name__ == '__main__':
    raise SystemExit(main())
