"""camera_node: camera frames in, keyframes at inference resolution out (vln/keyframe, JPEG).

Subscribes `image` (sensor_msgs/Image) or `image/compressed` (sensor_msgs/CompressedImage) with sensor-data
QoS. The subscription callback only drops the frame into a size-1 latest-wins slot; one worker thread
decodes it, asks the keyframe sampler, and for a keyframe resizes, JPEG-encodes and publishes it with the
frame's own capture stamp. When the worker falls behind, frames in between are skipped (and counted),
never queued. Malformed frames are logged (throttled), counted by reason and dropped.

Model-paced keyframes (pace_by_model, on by default; the protocol's rules: core/keyframe_request): once an
inference node has said on vln/keyframe_request that it paces the keyframes, a keyframe is sent only to answer
its open request: the first frame the sampler passes after the model became free (the sampler compares with
the last keyframe sent, which is the one the model saw), or the very next frame when a task has just started.
Frames that arrive while no request is open are decoded (so broken ones are counted) but not judged. Without
an inference node (or with pace_by_model false) every keyframe the sampler passes is sent, as before.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from vln_ros import interface
from vln_ros.core import images
from vln_ros.core.config import CameraParams
from vln_ros.core.keyframe import Decision, KeyframeSampler, Reason
from vln_ros.core.keyframe_request import KeyframeAnswerer, KeyframeAsk
from vln_ros.core.latest import LatestSlot
from vln_ros.core.stats import EventCounters, LatencyWindow, Throttle
from vln_ros.msg import KeyframeRequest
from vln_ros.nodes import diagnostics
from vln_ros.nodes.conversions import stamp_seconds
from vln_ros.nodes.parameters import declare_params
from vln_ros.nodes.runner import run_node


class CameraNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__('camera_node', **node_kwargs)
        self.params: CameraParams = declare_params(self, CameraParams, self._apply_params,
                                                   cli_args=node_kwargs.get('cli_args'))
        p = self.params
        self._sampler = KeyframeSampler(p.keyframe)
        self._slot: LatestSlot[Image | CompressedImage] = LatestSlot()
        self._counters = EventCounters(time.monotonic())
        self._frame_time = LatencyWindow()
        self._last_decision: Decision | None = None
        self._last_frame_time_s = time.monotonic()
        # Our own throttles, not rclpy's: log_throttle_s may change live (core/stats.Throttle says why).
        self._reject_log, self._error_log = Throttle(), Throttle()
        # Model pacing: the executor thread hands requests over, the worker asks which frames to judge.
        self._requests = KeyframeAnswerer()

        msg_type, topic = ((Image, interface.IMAGE) if p.input_transport == 'raw'
                           else (CompressedImage, interface.IMAGE_COMPRESSED))
        self._input_topic = self.resolve_topic_name(topic)
        self.create_subscription(msg_type, topic, self._on_frame, interface.SENSOR_QOS)
        self._keyframe_pub = self.create_publisher(CompressedImage, interface.KEYFRAME, interface.KEYFRAME_QOS)
        self.create_subscription(KeyframeRequest, interface.KEYFRAME_REQUEST, self._on_request,
                                 interface.KEYFRAME_REQUEST_QOS)
        self._decision_pub = (self.create_publisher(DiagnosticStatus, interface.KEYFRAME_DECISIONS,
                                                    interface.DECISIONS_QOS)
                              if p.publish_decisions else None)
        self._diag_pub = self.create_publisher(DiagnosticArray, interface.DIAGNOSTICS, interface.DIAGNOSTICS_QOS)
        diagnostics.start_timer(self, p.diagnostics_period_s, self._publish_diagnostics)

        self._worker = threading.Thread(target=self._work, name='camera_node_worker', daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'{self._input_topic} ({p.input_transport}) -> {self.resolve_topic_name(interface.KEYFRAME)} '
            f'(JPEG q{p.jpeg_quality}, max side {p.max_side_px} px, max pixels {p.max_pixels or "any"}); '
            f'keyframe threshold {p.keyframe.change_threshold}, interval '
            f'{p.keyframe.min_interval_s}-{p.keyframe.max_interval_s} s')

    def _apply_params(self, params: CameraParams) -> None:
        """A change through the parameter services, validated by the model (parameters.LiveParameters). The
        worker reads self.params for every keyframe; a changed keyframe.* setting starts a new sampler, so
        its next frame is a keyframe (the reference the scores compare with). input_transport,
        publish_decisions and diagnostics_period_s are read-only."""
        if params.keyframe != self.params.keyframe:
            self._sampler = KeyframeSampler(params.keyframe)
        self.params = params

    # -- executor thread: nothing here may take time ------------------------------------------------
    def _on_frame(self, msg: Image | CompressedImage) -> None:
        self._counters.add('frames_received')
        if msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0:
            # An unstamped driver: the receive time is the best capture time there is (and without it
            # the interval logic would see no time pass).
            self._counters.add('unstamped_frames')
            msg.header.stamp = self.get_clock().now().to_msg()
        try:   # over the decode budget: refused here, before it can push a good frame out of the slot
            images.check_budget(msg, self.params.max_decode_pixels)
        except images.ImageRejected as exc:
            self._rejected(exc)
            return
        if self._slot.put(msg):
            self._counters.add('frames_skipped')

    def _on_request(self, msg: KeyframeRequest) -> None:
        self._counters.add('keyframe_requests')
        self._requests.on_request(KeyframeAsk(msg.sequence, msg.wanted, msg.any_frame))

    # -- worker thread ------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            msg = self._slot.take(timeout_s=0.5)
            if msg is None:
                if self._slot.closed:
                    return
                continue
            try:
                self._process(msg)
            except Exception as exc:  # the worker must outlive any bug a frame can trigger
                self._counters.add('internal_errors')
                if self._error_log.ready(time.monotonic(), self.params.log_throttle_s):
                    self.get_logger().error(f'frame processing failed: {exc!r}')

    def _rejected(self, exc: images.ImageRejected) -> None:
        """A frame that cannot be decoded: counted by reason, logged (throttled), and shown as a decision."""
        self._counters.add('rejected_' + exc.reason)
        self._counters.add('decode_errors')
        if self._reject_log.ready(time.monotonic(), self.params.log_throttle_s):
            self.get_logger().warning(f'dropped a frame from {self._input_topic}: {exc}')
        if self._decision_pub is not None:
            self._decision_pub.publish(DiagnosticStatus(
                level=DiagnosticStatus.WARN, name='keyframe_decision', message='rejected',
                values=[KeyValue(key='reason', value=exc.reason), KeyValue(key='detail', value=str(exc))]))

    def _process(self, msg: Image | CompressedImage) -> None:
        started = time.perf_counter()
        self._last_frame_time_s = time.monotonic()
        try:  # every frame, asked for or not: a camera sending broken frames shows in /diagnostics at once
            image = images.decode(msg, self.params.max_decode_pixels)
        except images.ImageRejected as exc:
            self._rejected(exc)
            return
        header = msg.header
        turn = self._requests.turn(self.params.pace_by_model)
        if not turn.judge:  # the model is busy (or has no task): nothing to judge for it
            self._counters.add('frames_unrequested')
            self._frame_time.add(time.perf_counter() - started)
            return
        decision = self._sampler.decide(image, stamp_seconds(header.stamp), force=turn.any_frame)
        self._last_decision = decision
        self._counters.add('frames_processed')
        if decision.reason is Reason.ODD_SHAPE:  # skipped: another aspect ratio than the last keyframe
            self._counters.add('frames_odd_shape')
        if decision.keyframe:
            p = self.params
            small = images.resize_for_inference(image, p.max_side_px, p.max_pixels, p.align_px)
            out = CompressedImage(format='jpeg', data=images.encode_jpeg(small, p.jpeg_quality))
            out.header.stamp = header.stamp
            out.header.frame_id = p.frame_id or header.frame_id
            self._keyframe_pub.publish(out)
            self._counters.add('keyframes_published')
            self._requests.keyframe_sent(turn)
        if self._decision_pub is not None:
            self._decision_pub.publish(self._decision_status(decision, header.stamp))
        self._frame_time.add(time.perf_counter() - started)

    @staticmethod
    def _decision_status(d: Decision, stamp: Any) -> DiagnosticStatus:
        values = {'stamp': f'{stamp.sec}.{stamp.nanosec:09d}', 'keyframe': str(d.keyframe).lower(),
                  'reason': d.reason.value, 'score': f'{d.score:.5f}', 'histogram': f'{d.histogram:.5f}',
                  'pixel': f'{d.pixel:.5f}', 'edge': f'{d.edge:.5f}', 'since_last_s': f'{d.since_last_s:.3f}',
                  'local': f'{d.local:.5f}', 'shift_x': f'{d.shift_x:.4f}', 'shift_y': f'{d.shift_y:.4f}',
                  'gain': f'{d.gain:.3f}'}
        return DiagnosticStatus(name='keyframe_decision', message=d.reason.value,
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    # -- diagnostics (timer, executor thread) -------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        totals = self._counters.totals()
        rates = self._counters.rates(time.monotonic())
        decision = self._last_decision
        values: dict[str, object] = {
            'input_topic': self._input_topic,
            'input_rate_hz': rates.get('frames_received', 0.0),
            'processed_rate_hz': rates.get('frames_processed', 0.0),
            'keyframe_rate_hz': rates.get('keyframes_published', 0.0),
            'frame_time_ms_p50': self._frame_time.percentile_ms(50),
            'frame_time_ms_p99': self._frame_time.percentile_ms(99),
            'last_reason': decision.reason.value if decision else 'none',
            'last_score': decision.score if decision else float('nan'),
        }
        values['paced_by_model'] = str(self._requests.paced(self.params.pace_by_model)).lower()
        for name in ('frames_received', 'frames_processed', 'frames_skipped', 'keyframes_published',
                     'decode_errors', 'unstamped_frames', 'internal_errors', 'frames_odd_shape',
                     'keyframe_requests', 'frames_unrequested'):
            values[name] = totals.get(name, 0)
        values.update({k: v for k, v in sorted(totals.items()) if k.startswith('rejected_')})

        if rates.get('frames_received', 0.0) == 0.0:
            level, message = diagnostics.STALE, f'no frames on {self._input_topic}'
        elif rates.get('decode_errors', 0.0) > 0.0 or rates.get('internal_errors', 0.0) > 0.0:
            level, message = diagnostics.WARN, 'dropping malformed frames'
        else:
            level, message = diagnostics.OK, 'ok'
        self._diag_pub.publish(diagnostics.array(self, diagnostics.status(self, level, message, values)))

    def destroy_node(self) -> None:
        if hasattr(self, '_worker'):  # absent when the parameters failed validation in __init__
            self._slot.close()
            self._worker.join(timeout=2.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node('camera_node', CameraNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
