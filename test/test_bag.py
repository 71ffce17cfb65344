"""vln_bag: the playback schedule and QoS rules (no graph, milliseconds), then play and record as real
processes on a real graph: every message arrives with its content, order and timing, /clock follows bag
time, a recorded run reads back with rosbags, and unusable input is one line and exit code 2."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_for
from geometry_msgs.msg import Twist
from hypothesis import given
from hypothesis import strategies as st
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

from vln_ros.core.bags import BagError, MessageDefinitions, Schedule, TopicQos, record_qos, replay_qos
from vln_ros.msg import TaskStatus, Waypoint, WaypointArray

MS = 1_000_000  # ns
START_NS = 1_700_000_000 * 10**9  # bag time of the first message: a realistic epoch stamp
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
BAG = [sys.executable, '-m', 'vln_ros.bag']


# -- the schedule, in milliseconds --------------------------------------------------------------------

def dues_ms(stamps_ms, rate=1.0, offset_s=0.0, pass_index=0):
    schedule = Schedule.for_bag(START_NS, START_NS + max(stamps_ms) * MS, rate, offset_s)
    return [schedule.due_ns(START_NS + s * MS, pass_index) / MS for s in stamps_ms if START_NS + s * MS
            >= schedule.first_ns]


@pytest.mark.parametrize(('rate', 'expected'), [(1.0, [0, 100, 300]), (2.0, [0, 50, 150]), (0.5, [0, 200, 600])])
def test_rate_scales_the_recorded_spacing(rate, expected):
    assert dues_ms([0, 100, 300], rate) == expected


def test_start_offset_skips_the_beginning_and_starts_at_once():
    assert dues_ms([0, 100, 300], offset_s=0.1) == [0, 200]
    assert dues_ms([0, 100, 300], rate=2.0, offset_s=0.05) == [25, 125]


def test_loop_passes_follow_each_other():
    assert dues_ms([0, 100, 300], pass_index=1) == [300, 400, 600]
    assert dues_ms([0, 100, 300], rate=2.0, offset_s=0.1, pass_index=2) == [200, 300]


def test_a_loop_over_one_instant_still_takes_time():
    schedule = Schedule.for_bag(START_NS, START_NS, 1.0, 0.0)
    assert schedule.due_ns(START_NS, 1) > schedule.due_ns(START_NS, 0)


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=50), st.floats(0.01, 100.0), st.integers(0, 3))
def test_playback_order_is_bag_order_across_loop_passes(stamps_ms, rate, passes):
    stamps_ms = sorted(stamps_ms)
    schedule = Schedule.for_bag(START_NS, START_NS + stamps_ms[-1] * MS, rate, 0.0)
    dues = [schedule.due_ns(START_NS + s * MS, k) for k in range(passes + 1) for s in stamps_ms]
    assert dues == sorted(dues)
    assert dues[0] == round(stamps_ms[0] * MS / rate)


def test_clock_follows_bag_time_holds_at_the_end_and_wraps_when_looping():
    schedule = Schedule.for_bag(START_NS, START_NS + 1000 * MS, 2.0, 0.0)
    assert [(schedule.bag_time_ns(w * MS) - START_NS) / MS for w in (0, 100, 500, 900)] == [0, 200, 1000, 1000]
    assert [(schedule.bag_time_ns(w * MS, loop=True) - START_NS) / MS for w in (250, 500, 600)] == [500, 0, 200]


@pytest.mark.parametrize(('rate', 'offset_s', 'message'), [
    (0.0, 0.0, 'rate 0.0 must be a positive number'),
    (float('nan'), 0.0, 'rate nan must be a positive number'),
    (1.0, -1.0, 'start offset -1.0 s must be 0 or more'),
    (1.0, 2.5, 'start offset 2.5 s is beyond the end of the bag (2.000 s long)'),
])
def test_bad_schedule_options_say_what_is_wrong(rate, offset_s, message):
    with pytest.raises(BagError, match=message.replace('(', r'\(').replace(')', r'\)')):
        Schedule.for_bag(START_NS, START_NS + 2000 * MS, rate, offset_s)


# -- QoS and message definitions ----------------------------------------------------------------------

def qos(reliability=QosReliability.RELIABLE, durability=QosDurability.VOLATILE, depth=5):
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, reliability, durability, zero, zero, QosLiveliness.AUTOMATIC, zero, False)


BEST_EFFORT, TRANSIENT = QosReliability.BEST_EFFORT, QosDurability.TRANSIENT_LOCAL


@pytest.mark.parametrize(('offered', 'replayed'), [
    ([], TopicQos(reliable=True, transient_local=False, depth=10)),
    ([qos(BEST_EFFORT, depth=5)], TopicQos(reliable=False, transient_local=False, depth=5)),
    ([qos(BEST_EFFORT), qos()], TopicQos(reliable=True, transient_local=False, depth=5)),
    ([qos(durability=TRANSIENT, depth=1)], TopicQos(reliable=True, transient_local=True, depth=1)),
    ([qos(durability=TRANSIENT), qos(depth=20)], TopicQos(reliable=True, transient_local=False, depth=20)),
])
def test_replay_qos_is_reliable_unless_every_recorded_publisher_agreed_otherwise(offered, replayed):
    assert replay_qos(offered) == replayed


@pytest.mark.parametrize(('offered', 'reliable', 'latched'), [
    ([qos(BEST_EFFORT), qos()], False, False),   # a reliable subscription would miss the best-effort one
    ([qos(durability=TRANSIENT)], True, True),   # latched state published before recording started
    ([qos(durability=TRANSIENT), qos()], True, False),
])
def test_record_qos_hears_every_publisher(offered, reliable, latched):
    chosen = record_qos(offered)
    assert (chosen.reliable, chosen.transient_local) == (reliable, latched)


def test_definitions_of_our_own_messages_hash_like_rosidl():
    definitions = MessageDefinitions(['/nonexistent', sys.prefix])
    definitions.ensure('vln_ros/msg/WaypointArray')
    rosidl = json.loads((Path(sys.prefix) / 'share' / 'vln_ros' / 'msg' / 'WaypointArray.json').read_text())
    expected = {h['type_name']: h['hash_string'] for h in rosidl['type_hashes']}
    for name in ('vln_ros/msg/WaypointArray', 'vln_ros/msg/Waypoint'):
        assert definitions.store.hash_rihs01(name) == expected[name]
    with pytest.raises(BagError, match=r"no message definition for 'nope/msg/Nothing': nope/msg/Nothing.msg"):
        definitions.ensure('nope/msg/Nothing')


# -- play on a real graph -----------------------------------------------------------------------------

def image(i: int) -> Image:
    # 640 x 480 rgb8 (900 kB): larger than what Fast DDS's default transports carry between processes
    return Image(height=480, width=640, encoding='rgb8', step=640 * 3, data=bytes([i]) * (640 * 480 * 3))


def twist(i: int) -> Twist:
    msg = Twist()
    msg.linear.x, msg.angular.z = 0.1 * i, -0.05 * i
    return msg


# (topic, bag time in ms after START_NS, message): 1.8 s of bag, interleaved, every 50 ms at the densest
RECORDED = sorted(
    [('/chatter', 200 * i, String(data=f'hello {i}')) for i in range(10)]
    + [('/cmd_vel', 200 * i + 50, twist(i)) for i in range(10)]
    + [('/image', 400 * i + 100, image(i)) for i in range(5)], key=lambda m: m[1])
TYPES = {'/chatter': 'std_msgs/msg/String', '/cmd_vel': 'geometry_msgs/msg/Twist', '/image': 'sensor_msgs/msg/Image'}
CLASSES = {'/chatter': String, '/cmd_vel': Twist, '/image': Image}


def write_bag(path: Path, storage: StoragePlugin) -> Path:
    typestore = get_typestore(Stores.ROS2_KILTED)
    writer = Writer(path, version=8, storage_plugin=storage)
    writer.open()
    connections = {topic: writer.add_connection(topic, msgtype, typestore=typestore)
                   for topic, msgtype in TYPES.items()}
    for topic, ms, msg in RECORDED:
        writer.write(connections[topic], START_NS + ms * MS, serialize_message(msg))
    writer.close()
    return path


class Listener:
    """Records (monotonic arrival time, message) per topic, /clock included."""

    def __init__(self, graph, topics) -> None:
        self.lock = threading.Lock()
        self.received: dict[str, list] = {topic: [] for topic in topics}
        node = graph.node('bag_listener')
        for topic in topics:
            node.create_subscription(Clock if topic == '/clock' else CLASSES[topic], topic,
                                     lambda msg, t=topic: self._keep(t, msg), RELIABLE)

    def _keep(self, topic, msg) -> None:
        with self.lock:
            self.received[topic].append((time.monotonic(), msg))

    def messages(self, topic) -> list:
        with self.lock:
            return [m for _, m in self.received[topic]]


def run_to_end(command: list[str], timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    assert result.returncode == 0, result.stderr
    return result


PLAY_RATE = 2
MAX_LATE_S = 0.35     # wall seconds a message may arrive after its due time on a loaded machine
CLOCK_SLACK_S = 0.2   # bag seconds: the timing line's own error (median lateness < 0.05 s wall) and a 0.01 s tick


@pytest.mark.parametrize('storage', [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_play_publishes_every_message_in_order_with_the_recorded_timing_and_clock(graph, tmp_path, storage):
    bag = write_bag(tmp_path / 'bag', storage)
    listener = Listener(graph, [*TYPES, '/clock'])
    result = run_to_end([*BAG, 'play', str(bag), '--rate', str(PLAY_RATE), '--wait-for-subscribers', '30'])
    assert wait_for(lambda: all(len(listener.messages(t)) == sum(1 for m in RECORDED if m[0] == t)
                                for t in TYPES), 10.0), {t: len(listener.messages(t)) for t in TYPES}
    assert result.stdout.strip().endswith('(/chatter 10, /cmd_vel 10, /image 5)'), result.stdout
    for topic in TYPES:  # content and per-topic order
        assert listener.messages(topic) == [msg for t, _, msg in RECORDED if t == topic]

    # Timing: (arrival, bag seconds) of each message; arrivals follow bag time / 2 (the player never
    # publishes early, a loaded machine only makes it late).
    with listener.lock:
        arrivals = sorted((arrived, ms / 1000.0) for topic in TYPES for (arrived, _), ms in zip(
            listener.received[topic], [ms for t, ms, _ in RECORDED if t == topic], strict=False))
        clock = [(arrived, c.clock.sec * 10**9 + c.clock.nanosec) for arrived, c in listener.received['/clock']]
    # The least delayed message fixes the line (the first one may itself be late: a stall of this process at
    # the start, under load, once made the whole span look short); every message is on it or late, by little.
    offset = min(arrived - bag_s / PLAY_RATE for arrived, bag_s in arrivals)
    lateness = [arrived - offset - bag_s / PLAY_RATE for arrived, bag_s in arrivals]
    assert max(lateness) < MAX_LATE_S, lateness
    assert sorted(lateness)[len(lateness) // 2] < 0.05, lateness   # most on time: the pace is rate 2
    assert arrivals[-1][0] - arrivals[0][0] <= 1.5, arrivals       # 0.85 s at rate 2, never rate 1's 1.7 s

    # /clock: monotone, from the first to the last message's bag time, and near bag time meanwhile.
    stamps = [stamp for _, stamp in clock]
    assert len(stamps) >= 20, len(stamps)
    assert stamps == sorted(stamps)
    assert stamps[0] >= START_NS and stamps[-1] == START_NS + RECORDED[-1][1] * MS
    # Near bag time in the same terms as the lateness above: a message delivered `late` wall seconds after its
    # due time finds /clock up to RATE * late bag seconds ahead (the player ticked on meanwhile: not an error),
    # plus CLOCK_SLACK_S for the line's own error (the least delayed message fixes it) and one tick. /clock may
    # itself arrive late by as much as a message may (0.35 s wall). A clock at another rate, stuck or ahead of
    # the messages still fails: one at rate 1 lags 0.85 bag s at the last message, one at rate 4 leads by 0.85 midway.
    for (arrived, bag_s), late in zip(arrivals, lateness, strict=True):
        latest = max((stamp for t, stamp in clock if t <= arrived), default=START_NS)
        lead = (latest - START_NS) / 1e9 - bag_s
        assert -PLAY_RATE * MAX_LATE_S < lead <= PLAY_RATE * late + CLOCK_SLACK_S, (lead, late, bag_s)


def test_play_selected_topics_from_an_offset_in_a_loop_until_sigint(graph, tmp_path):
    bag = write_bag(tmp_path / 'bag', StoragePlugin.MCAP)
    listener = Listener(graph, ['/chatter', '/cmd_vel', '/clock'])
    proc = subprocess.Popen([*BAG, 'play', str(bag), '--topics', '/chatter', '--start-offset', '1.0', '--loop',
                             '--rate', '4', '--no-clock', '--wait-for-subscribers', '30'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        looped = wait_for(lambda: len(listener.messages('/chatter')) >= 10 or proc.poll() is not None, 30.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert looped, err
    assert proc.returncode == 0, err
    assert 'stopped after' in out
    once = [f'hello {i}' for i in range(5, 10)]  # bag time >= 1.0 s
    received = [m.data for m in listener.messages('/chatter')]
    assert received[:10] == once + once
    assert listener.messages('/cmd_vel') == [] and listener.messages('/clock') == []


# -- record on a real graph ---------------------------------------------------------------------------

def plan(i: int) -> WaypointArray:
    msg = WaypointArray(task_id=f'task-{i}', action='forward',
                        waypoints=[Waypoint(dx=0.5, dy=0.25 * i, confidence=0.75)])
    msg.header.frame_id = 'base_link'
    return msg


def test_record_writes_an_mcap_bag_that_reads_back_message_for_message(graph, tmp_path):
    node = graph.node('bag_talker')
    status_pub = node.create_publisher(TaskStatus, 'rec/status', LATCHED)
    # latched state, published before the recorder starts
    status_pub.publish(TaskStatus(task_id='before-recording', state=TaskStatus.STATE_ACTIVE))
    pubs = {'/rec/chatter': node.create_publisher(String, 'rec/chatter', RELIABLE),
            '/rec/plan': node.create_publisher(WaypointArray, 'rec/plan', RELIABLE),
            '/rec/image': node.create_publisher(Image, 'rec/image', qos_profile_sensor_data)}
    sent = {'/rec/chatter': [String(data=f'rec {i}') for i in range(20)], '/rec/plan': [plan(i) for i in range(5)],
            '/rec/image': [image(i) for i in range(3)]}
    out = tmp_path / 'recorded'
    began_ns = time.time_ns()
    proc = subprocess.Popen([*BAG, 'record', '-o', str(out), '/rec/chatter', 'rec/plan', '/rec/image', '/rec/status',
                             '/rec/never'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        subscribed = wait_for(lambda: all(p.get_subscription_count() > 0 for p in [status_pub, *pubs.values()])
                              or proc.poll() is not None, 30.0)
        assert subscribed, proc.communicate(timeout=10) if proc.poll() is not None else 'recorder never subscribed'
        for i in range(20):
            for topic, msgs in sent.items():
                if i < len(msgs):
                    pubs[topic].publish(msgs[i])
            time.sleep(0.01)  # pacing, not a condition: best-effort images are not queued by the sender
        for topic in ('/rec/chatter', '/rec/plan'):
            assert pubs[topic].wait_for_all_acked(timeout=Duration(seconds=10))
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    ended_ns = time.time_ns()
    assert proc.returncode == 0, stderr
    assert 'never published: /rec/never' in stdout, stdout

    with Reader(out) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        assert set(by_topic) == {*sent, '/rec/status'}
        read: dict[str, list] = {topic: [] for topic in by_topic}
        stamps = []
        for connection, stamp, data in reader.messages():
            msg_type = TaskStatus if connection.topic == '/rec/status' else type(sent[connection.topic][0])
            read[connection.topic].append(deserialize_message(bytes(data), msg_type))
            stamps.append(stamp)
        assert stamps == sorted(stamps) and began_ns <= stamps[0] and stamps[-1] <= ended_ns  # receive time
        for topic, msgs in sent.items():
            assert read[topic] == msgs, topic
        assert [m.task_id for m in read['/rec/status']] == ['before-recording']
        assert by_topic['/rec/plan'].msgtype == 'vln_ros/msg/WaypointArray'
        # the QoS the publishers offered, for the player (and ros2 bag play)
        assert [q.reliability for q in by_topic['/rec/image'].ext.offered_qos_profiles] == [BEST_EFFORT]
        assert [q.durability for q in by_topic['/rec/status'].ext.offered_qos_profiles] == [TRANSIENT]
        # another tool can decode our own message type from the definition stored in the bag alone
        plan_connection = by_topic['/rec/plan']
        foreign = get_typestore(Stores.EMPTY)
        foreign.register(get_types_from_msg(plan_connection.msgdef.data, plan_connection.msgtype))
        first_plan = next(data for c, _, data in reader.messages([plan_connection]))
        decoded = foreign.deserialize_cdr(bytes(first_plan), 'vln_ros/msg/WaypointArray')
        assert decoded.task_id == 'task-0' and decoded.waypoints[0].dx == pytest.approx(0.5)
    assert 'storage_identifier: mcap' in (out / 'metadata.yaml').read_text()


def test_record_all_discovers_topics_and_leaves_out_infrastructure(graph, tmp_path):
    node = graph.node('bag_all_talker')
    pub = node.create_publisher(String, 'rec_all/chatter', RELIABLE)
    out = tmp_path / 'all'
    proc = subprocess.Popen([*BAG, 'record', '-o', str(out), '--all'], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: pub.get_subscription_count() > 0 or proc.poll() is not None, 30.0)
        for i in range(5):
            pub.publish(String(data=f'all {i}'))
        assert pub.wait_for_all_acked(timeout=Duration(seconds=10))
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    with Reader(out) as reader:
        topics = {c.topic for c in reader.connections}
        assert '/rec_all/chatter' in topics and not topics & {'/rosout', '/parameter_events'}
        assert reader.topics['/rec_all/chatter'].msgcount == 5


def test_record_stops_by_itself_after_its_duration(tmp_path):
    result = run_to_end([*BAG, 'record', '-o', str(tmp_path / 'short'), 'nothing/here', '--duration', '0.5'])
    assert 'vln_bag record: 0 messages' in result.stdout and (tmp_path / 'short' / 'metadata.yaml').is_file()


# -- unusable input: one line, exit code 2 ------------------------------------------------------------

def corrupt_file(tmp_path):
    path = tmp_path / 'corrupt.mcap'
    path.write_bytes(b'\x89MCAP0\r\n' + bytes(range(256)) * 8)
    return str(path)


def corrupt_folder(tmp_path):
    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / 'metadata.yaml').write_text('rosbag2_bagfile_information: [not, a, bag\n')
    return str(tmp_path / 'broken')


@pytest.mark.parametrize(('make_args', 'expected'), [
    (lambda p: ['play', str(p / 'missing')], "vln_bag play: cannot read bag {p}/missing: File '{p}/missing' does "
                                               'not exist.'),
    (lambda p: ['play', corrupt_file(p)], 'vln_bag play: cannot read bag {p}/corrupt.mcap: '),
    (lambda p: ['play', corrupt_folder(p)], 'vln_bag play: cannot read bag {p}/broken: '),
    (lambda p: ['play', str(write_bag(p / 'bag', StoragePlugin.MCAP)), '--topics', '/nope'],
     'vln_bag play: topics not in the bag: /nope (it has: /chatter, /cmd_vel, /image)'),
    (lambda p: ['play', str(write_bag(p / 'bag', StoragePlugin.MCAP)), '--start-offset', '5'],
     'vln_bag play: start offset 5.0 s is beyond the end of the bag (1.850 s long)'),
    (lambda p: ['record', '-o', str(p)], 'vln_bag record: name the topics to record, or --all'),
    (lambda p: ['record', '-o', str(p), '/x'], 'vln_bag record: {p} exists; rosbag2 bags are folders'),
])
def test_unusable_input_is_one_line_and_exit_code_2(tmp_path, make_args, expected):
    result = subprocess.run([*BAG, *make_args(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(expected.format(p=tmp_path)), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and 'Traceback' not in result.stderr
