"""camera_node on a real graph (rclpy over Fast DDS): keyframes, stamps, sizes, malformed input."""
from __future__ import annotations

import threading

import cv2
import numpy as np
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from vln_ros import interface
from vln_ros.harness.frames import compressed_msg, image_msg, scene, stamp_s
from vln_ros.msg import KeyframeRequest
from vln_ros.nodes.camera_node import CameraNode
from vln_ros.nodes.diagnostics import values_of


class Probe:
    """A test node that feeds the camera node and records what it publishes."""

    def __init__(self, graph, input_type=Image, topic=interface.IMAGE):
        self.node = graph.node('probe')
        self.keyframes: list[CompressedImage] = []
        self.decisions: list[DiagnosticStatus] = []
        self.diagnostics: list[DiagnosticStatus] = []
        self._lock = threading.Lock()
        self.pub = self.node.create_publisher(input_type, topic, qos_profile_sensor_data)
        self.node.create_subscription(CompressedImage, interface.KEYFRAME, self._keep(self.keyframes), 10)
        self.node.create_subscription(DiagnosticStatus, interface.KEYFRAME_DECISIONS, self._keep(self.decisions), 100)
        self.node.create_subscription(
            DiagnosticArray, interface.DIAGNOSTICS,
            lambda m: self.diagnostics.extend(s for s in m.status if s.name == '/camera_node'), 10)

    def _keep(self, into):
        def callback(msg):
            with self._lock:
                into.append(msg)
        return callback

    def connected(self) -> bool:
        return self.pub.get_subscription_count() > 0

    def send_paced(self, msgs, timeout_s=5.0):
        """Publish one at a time, each after the previous one was decided (no best-effort loss race)."""
        for msg in msgs:
            before = len(self.decisions)
            self.pub.publish(msg)
            assert wait_for(lambda before=before: len(self.decisions) > before, timeout_s), 'frame never decided'


def camera(graph, **params):
    overrides = [Parameter(k, value=v) for k, v in {'publish_decisions': True, **params}.items()]
    return graph.add(CameraNode(context=graph.context, parameter_overrides=overrides))


def test_keyframes_carry_capture_stamp_frame_id_and_inference_size(graph):
    camera(graph, max_side_px=448, frame_id='', **{'keyframe.min_interval_s': 0.0})
    probe = Probe(graph)
    assert wait_for(probe.connected, 5.0)
    # 3 scenes x 4 frames at 10 Hz capture stamps: a keyframe at each cut.
    frames = [image_msg(scene(i // 4, 480, 640), 1000.0 + i * 0.1, frame_id='front_cam') for i in range(12)]
    probe.send_paced(frames)
    assert wait_for(lambda: len(probe.keyframes) == 3, 5.0), len(probe.keyframes)
    assert [round(stamp_s(k), 3) for k in probe.keyframes] == [1000.0, 1000.4, 1000.8]
    assert [d.values[2].value for d in probe.decisions] == (['first'] + ['still'] * 3 + ['change'] + ['still'] * 3
                                                           + ['change'] + ['still'] * 3)
    for kf in probe.keyframes:
        assert kf.format == 'jpeg' and kf.header.frame_id == 'front_cam'
        img = cv2.imdecode(np.frombuffer(kf.data, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (320, 448, 3)  # 640x480 -> 448x336 -> 448x320 (multiples of 32)
    # the keyframe is the same picture as the frame it came from
    sent = cv2.resize(scene(1, 480, 640), (448, 320), interpolation=cv2.INTER_AREA)
    got = cv2.imdecode(np.frombuffer(probe.keyframes[1].data, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(got.astype(int) - sent).mean() < 6


def test_compressed_input_and_frame_id_override(graph):
    camera(graph, input_transport='compressed', frame_id='base_camera', max_side_px=0, max_pixels=64 * 64,
           align_px=1, **{'keyframe.min_interval_s': 0.0})
    probe = Probe(graph, CompressedImage, interface.IMAGE_COMPRESSED)
    assert wait_for(probe.connected, 5.0)
    probe.send_paced([compressed_msg(scene(1), 5.0, 'jpeg'), compressed_msg(scene(2), 5.5, 'png')])
    assert wait_for(lambda: len(probe.keyframes) == 2, 5.0)
    for kf in probe.keyframes:
        img = cv2.imdecode(np.frombuffer(kf.data, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape[0] * img.shape[1] <= 64 * 64 and kf.header.frame_id == 'base_camera'


def test_malformed_frames_are_counted_and_the_node_keeps_working(graph):
    camera(graph, diagnostics_period_s=0.2, **{'keyframe.min_interval_s': 0.0})
    probe = Probe(graph)
    assert wait_for(probe.connected, 5.0)
    good = image_msg(scene(1, 120, 160), 1.0)
    bad = []
    for field, value in (('width', 0), ('step', 5), ('encoding', 'h264'), ('height', 121)):
        msg = image_msg(scene(1, 120, 160), 1.0)
        setattr(msg, field, value)
        bad.append(msg)
    short = image_msg(scene(1, 120, 160), 1.0)
    short.data = short.data[:100]
    bad.append(short)
    probe.send_paced(bad * 3)
    assert [d.message for d in probe.decisions] == ['rejected'] * 15
    assert wait_for(lambda: probe.diagnostics and int(values_of(probe.diagnostics[-1])['decode_errors']) == 15,
                    5.0)
    probe.send_paced([good, image_msg(scene(2, 120, 160), 2.0)])
    assert wait_for(lambda: len(probe.keyframes) == 2, 5.0)
    assert wait_for(lambda: int(values_of(probe.diagnostics[-1])['keyframes_published']) == 2, 5.0)
    values = values_of(probe.diagnostics[-1])
    assert values['rejected_empty'] == '3' and values['rejected_bad_step'] == '3'
    assert values['rejected_unsupported_encoding'] == '3' and values['rejected_bad_length'] == '6'
    assert values['internal_errors'] == '0'


def test_corrupt_compressed_frames_are_dropped(graph):
    camera(graph, input_transport='compressed', diagnostics_period_s=0.2, **{'keyframe.min_interval_s': 0.0})
    probe = Probe(graph, CompressedImage, interface.IMAGE_COMPRESSED)
    assert wait_for(probe.connected, 5.0)
    probe.send_paced([CompressedImage(format='jpeg', data=data) for data in (b'', b'\xff\xd8garbage', bytes(1000))])
    assert wait_for(lambda: probe.diagnostics and values_of(probe.diagnostics[-1])['decode_errors'] == '3', 5.0)
    # the period in which they came in is a warning; once the input stops it reads stale
    assert any(s.level == DiagnosticStatus.WARN and s.message == 'dropping malformed frames'
               for s in probe.diagnostics)
    assert wait_for(lambda: probe.diagnostics[-1].level == DiagnosticStatus.STALE, 5.0)
    probe.send_paced([compressed_msg(scene(4), 3.0)])
    assert wait_for(lambda: len(probe.keyframes) == 1, 5.0)


def test_full_hd_raw_frames_arrive_and_diagnostics_report_rates(graph):
    camera(graph, diagnostics_period_s=0.5, **{'keyframe.min_interval_s': 0.0})
    probe = Probe(graph)
    assert wait_for(probe.connected, 5.0)
    frames = [image_msg(scene(i, 1080, 1920), 10.0 + i) for i in range(4)]
    probe.send_paced(frames)
    assert wait_for(lambda: len(probe.keyframes) == 4, 5.0)
    assert wait_for(lambda: any(float(values_of(s)['frame_time_ms_p50']) > 0 for s in probe.diagnostics), 5.0)
    keys = values_of(probe.diagnostics[-1])
    for key in ('input_rate_hz', 'keyframe_rate_hz', 'decode_errors', 'frame_time_ms_p99', 'frames_skipped'):
        assert key in keys


def test_unstamped_frames_get_receive_time(graph):
    camera(graph, **{'keyframe.min_interval_s': 0.0})
    probe = Probe(graph)
    assert wait_for(probe.connected, 5.0)
    probe.send_paced([image_msg(scene(1), 0.0)])
    assert wait_for(lambda: len(probe.keyframes) == 1, 5.0)
    assert stamp_s(probe.keyframes[0]) > 1e9  # wall-clock seconds, not zero


def test_a_burst_is_skipped_to_the_newest_frame_and_every_frame_is_accounted_for(graph):
    camera(graph, diagnostics_period_s=0.2, **{'keyframe.min_interval_s': 0.0})
    probe = Probe(graph)
    assert wait_for(probe.connected, 5.0)
    frames = [image_msg(scene(i % 3, 1080, 1920), 50.0 + i * 0.01) for i in range(40)]
    for msg in frames:  # as fast as rclpy publishes: faster than the node decides 1080p frames
        probe.pub.publish(msg)

    def settled():
        if not probe.diagnostics:
            return False
        v = {k: int(x) for k, x in values_of(probe.diagnostics[-1]).items() if k.startswith('frames_')}
        return v['frames_received'] > 0 and v['frames_received'] == v['frames_processed'] + v['frames_skipped']
    assert wait_for(settled, 10.0)
    # latest wins: the newest frame is never the one skipped, and nothing is left queued
    assert wait_for(lambda: probe.decisions and probe.decisions[-1].values[0].value == '50.390000000', 5.0)

    def each_processed_frame_decided_once() -> bool:
        # from a diagnostics message after the last decision: under load frames were still arriving after the
        # first settled one (seen: 7 decisions against a snapshot's 6 processed)
        v = {k: int(x) for k, x in values_of(probe.diagnostics[-1]).items() if k.startswith('frames_')}
        return (v['frames_received'] == v['frames_processed'] + v['frames_skipped']
                and v['frames_processed'] == len(probe.decisions))
    assert wait_for(each_processed_frame_decided_once, 5.0), (values_of(probe.diagnostics[-1]), len(probe.decisions))


def test_changing_log_throttle_s_live_keeps_rejections_logged_and_the_node_working(graph):
    """rclpy fixes a call site's throttle on first use and raises if it changes: with log_throttle_s
    settable live, the rejection log must not depend on it (the worker would die on the next bad frame)."""
    node = camera(graph, log_throttle_s=5.0, diagnostics_period_s=0.2, **{'keyframe.min_interval_s': 0.0})
    probe = Probe(graph)
    assert wait_for(probe.connected, 5.0)
    bad = image_msg(scene(1, 120, 160), 1.0)
    bad.encoding = 'h264'
    probe.send_paced([bad])
    assert node.set_parameters([Parameter('log_throttle_s', value=0.0)])[0].successful
    probe.send_paced([bad, bad])
    probe.send_paced([image_msg(scene(1, 120, 160), 2.0), image_msg(scene(2, 120, 160), 3.0)])
    assert wait_for(lambda: len(probe.keyframes) == 2, 5.0)
    assert wait_for(lambda: probe.diagnostics
                    and values_of(probe.diagnostics[-1]).get('rejected_unsupported_encoding') == '3', 5.0)
    assert values_of(probe.diagnostics[-1])['internal_errors'] == '0'


def test_one_frame_of_another_aspect_ratio_is_skipped_and_keyframes_go_on(graph):
    """Regression: one odd-sized frame broke every later comparison; the camera never published again."""
    camera(graph, diagnostics_period_s=0.2, **{'keyframe.min_interval_s': 0.0})
    probe = Probe(graph)
    assert wait_for(probe.connected, 5.0)
    probe.send_paced([image_msg(scene(1, 120, 160), 1.0), image_msg(scene(1, 120, 120), 1.1),
                      image_msg(scene(2, 120, 160), 1.2), image_msg(scene(3, 120, 160), 1.3)])
    assert [d.message for d in probe.decisions] == ['first', 'odd_shape', 'change', 'change']
    assert wait_for(lambda: len(probe.keyframes) == 3, 5.0)
    assert wait_for(lambda: probe.diagnostics and values_of(probe.diagnostics[-1])['frames_odd_shape'] == '1', 5.0)
    assert values_of(probe.diagnostics[-1])['internal_errors'] == '0'


def test_model_paced_keyframes_one_per_request_and_none_while_the_model_is_busy(graph):
    """Once an inference node paces the keyframes (vln/keyframe_request), a keyframe answers an open request:
    any frame for a new task, else the first that passes the sampler against the last keyframe sent; frames
    that arrive while no request is open are not judged, and a request already answered stays answered."""
    camera(graph, diagnostics_period_s=0.2, **{'keyframe.min_interval_s': 0.0})
    probe = Probe(graph)
    requests = probe.node.create_publisher(KeyframeRequest, interface.KEYFRAME_REQUEST,
                                           interface.KEYFRAME_REQUEST_QOS)
    assert wait_for(lambda: probe.connected() and requests.get_subscription_count() > 0, 5.0)
    stamp = iter(1000.0 + 0.1 * i for i in range(1000))

    def ask(sequence: int, wanted: bool = True, any_frame: bool = False) -> None:
        requests.publish(KeyframeRequest(sequence=sequence, wanted=wanted, any_frame=any_frame))

    def diagnostics() -> dict[str, str]:
        return values_of(probe.diagnostics[-1]) if probe.diagnostics else {}

    def send_unjudged(scenes) -> None:
        for i in scenes:
            probe.pub.publish(image_msg(scene(i, 240, 320), next(stamp)))
            threading.Event().wait(0.05)

    ask(7, wanted=False)  # a model is here and busy
    assert wait_for(lambda: diagnostics().get('paced_by_model') == 'true', 5.0), diagnostics()
    send_unjudged(range(6))  # every frame a cut, but nobody asked
    assert wait_for(lambda: int(diagnostics().get('frames_unrequested', 0)) >= 3, 5.0)
    assert probe.keyframes == [] and probe.decisions == []

    ask(8)  # the model is free: the first frame is always a keyframe
    probe.send_paced([image_msg(scene(5, 240, 320), next(stamp))])
    assert wait_for(lambda: len(probe.keyframes) == 1, 5.0)
    assert probe.decisions[-1].message == 'first'
    send_unjudged([1, 2, 3])  # answered: the model is busy with it
    threading.Event().wait(0.3)
    assert len(probe.keyframes) == 1 and len(probe.decisions) == 1

    ask(9)  # free again: the first frame that changed against the keyframe the model saw (scene 5)
    probe.send_paced([image_msg(scene(5, 240, 320), next(stamp)) for _ in range(3)])
    assert len(probe.keyframes) == 1 and [d.message for d in probe.decisions[1:]] == ['still'] * 3
    probe.send_paced([image_msg(scene(6, 240, 320), next(stamp))])
    assert wait_for(lambda: len(probe.keyframes) == 2, 5.0)
    assert probe.decisions[-1].message == 'change'

    ask(9)  # the same request again (a latched copy): already answered
    send_unjudged([7, 8, 9])
    threading.Event().wait(0.3)
    assert len(probe.keyframes) == 2

    ask(10, any_frame=True)  # a task started: the next frame, changed or not
    probe.send_paced([image_msg(scene(6, 240, 320), next(stamp))])
    assert wait_for(lambda: len(probe.keyframes) == 3, 5.0)
    assert probe.decisions[-1].message == 'requested'
    assert wait_for(lambda: int(diagnostics().get('keyframe_requests', 0)) == 5, 5.0), diagnostics()


def test_a_flood_of_lossless_bombs_keeps_the_node_small_and_good_frames_still_make_keyframes(graph):
    """150 Hz of all-black 8000x4500 PNGs (35 KB each, 36 MP: over the default decode budget) into the real
    executable, with a changing good frame every 0.3 s: the bombs are refused from their headers, the node stays
    under 250 MB RSS, and the good frames still become keyframes (regression: each bomb was decoded, 202-636 ms
    and +68 MB, frame time p99 ~1 s, RSS 312 MB)."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil

    ok, bomb = cv2.imencode('.png', np.zeros((4500, 8000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    exe = str(Path(sys.executable).parent / 'camera_node')
    proc = subprocess.Popen([exe, '--ros-args', '-p', 'input_transport:=compressed', '-p', 'publish_decisions:=true',
                             '-p', 'pace_by_model:=false', '-p', 'keyframe.min_interval_s:=0.0'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        probe = Probe(graph, CompressedImage, interface.IMAGE + '/compressed')
        assert wait_for(probe.connected, 30.0), 'camera_node never subscribed'
        node = psutil.Process(proc.pid)
        peak_rss, t0, sent_good = 0, time.monotonic(), 0
        while time.monotonic() - t0 < 4.0:
            now = time.monotonic() - t0
            if now >= 0.3 * sent_good:
                probe.pub.publish(compressed_msg(scene(sent_good, 480, 640), 100.0 + now))
                sent_good += 1
            msg = CompressedImage(format='png', data=bomb.tobytes())
            msg.header.stamp.sec = 100 + int(now)
            probe.pub.publish(msg)
            peak_rss = max(peak_rss, node.memory_info().rss)
            time.sleep(1 / 150)
        assert peak_rss < 250 * 2**20, f'camera_node grew to {peak_rss / 2**20:.0f} MB'
        assert wait_for(lambda: len(probe.keyframes) >= sent_good // 2, 5.0), (len(probe.keyframes), sent_good)
        with probe._lock:
            reasons = [v.value for d in probe.decisions for v in d.values if v.key == 'reason']
        assert 'too_large' in reasons, reasons[:20]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
