"""`make demo`: stream a video through the real camera_node process and show which frames became
keyframes and why.

The camera node runs as its own process (the installed `camera_node` executable, config/vln.yaml, with
`publish_decisions` on); this process plays the video as sensor_msgs/Image frames stamped with video
time, records every decision and keyframe that comes back over DDS, prints a summary and writes
<out>/keyframes.png (score timeline + keyframe strip) and <out>/decisions.jsonl.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vln_ros.harness import local_graph
from vln_ros.harness.observer import Observer
from vln_ros.harness.processes import REPO, executable, stop_process
from vln_ros.nodes.conversions import stamp_seconds

if TYPE_CHECKING:
    import numpy as np

DEFAULT_VIDEO = REPO / 'test' / 'data' / 'people_clip.mp4'
STAMP_BASE_S = 1000.0  # video time 0 maps to this capture stamp (0 would read as "unstamped")


@dataclass
class Record:
    frame: int
    reason: str
    keyframe: bool
    score: float
    histogram: float
    pixel: float
    edge: float


def _camera_node_command(params_file: Path) -> list[str]:
    try:
        exe = executable('camera_node')
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None
    return [exe, '--ros-args', '--params-file', str(params_file), '-p', 'publish_decisions:=true',
            '-p', 'diagnostics_period_s:=0.5']


def read_frames(video: Path) -> list[np.ndarray]:
    """Every frame of a video file, BGR uint8, in order."""
    import cv2
    cap = cv2.VideoCapture(str(video))
    frames: list[np.ndarray] = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


def stream(video: Path, params_file: Path, fps: float, speed: float) -> tuple[list[Record], dict, list]:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import CompressedImage, Image

    from vln_ros import interface as ri

    frames = read_frames(video)
    if not frames:
        raise SystemExit(f'no frames could be read from {video}')

    claim = local_graph.use_private_domain()  # this process and the node, on loopback, apart from others
    print(f'# {claim.describe()}', file=sys.stderr, flush=True)
    proc = subprocess.Popen(_camera_node_command(params_file), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    player = Observer('vln_demo_player')
    records: list[Record] = []
    keyframes: list[tuple[int, bytes]] = []
    diagnostics: dict[str, str] = {}

    def frame_of(stamp_s: float) -> int:
        return round((stamp_s - STAMP_BASE_S) * fps)

    def on_decision(msg: DiagnosticStatus) -> None:
        v = {kv.key: kv.value for kv in msg.values}
        if msg.message == 'rejected':
            return
        records.append(Record(frame_of(float(v['stamp'])), v['reason'], v['keyframe'] == 'true',
                              float(v['score']), float(v['histogram']), float(v['pixel']), float(v['edge'])))

    def on_keyframe(msg: CompressedImage) -> None:
        keyframes.append((frame_of(stamp_seconds(msg.header.stamp)), bytes(msg.data)))

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith('camera_node'):
                diagnostics.update({kv.key: kv.value for kv in status.values})

    player.subscribe(DiagnosticStatus, ri.KEYFRAME_DECISIONS, 1000, on_decision)
    player.subscribe(CompressedImage, ri.KEYFRAME, 100, on_keyframe)
    player.subscribe(DiagnosticArray, ri.DIAGNOSTICS, 10, on_diagnostics)
    pub = player.node.create_publisher(Image, ri.IMAGE, ri.SENSOR_QOS)
    try:
        if not player.wait_until(lambda: pub.get_subscription_count() > 0
                                 and player.node.count_publishers(ri.KEYFRAME_DECISIONS) > 0, 30.0,
                                 failed=lambda: proc.poll() is not None):
            raise SystemExit('camera_node did not come up:\n' + (proc.stdout.read() if proc.stdout else ''))
        time.sleep(0.5)  # let the decision/keyframe subscriptions match too
        print(f'streaming {len(frames)} frames of {video.name} ({frames[0].shape[1]}x{frames[0].shape[0]}, '
              f'{fps:g} fps video time) at {speed:g}x through camera_node ...', flush=True)
        period = 1.0 / (fps * speed)
        start = time.monotonic()
        for i, frame in enumerate(frames):
            stamp = STAMP_BASE_S + i / fps
            msg = Image(height=frame.shape[0], width=frame.shape[1], encoding='bgr8', step=frame.shape[1] * 3,
                        data=frame.tobytes())
            msg.header.frame_id = 'camera'
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp), round((stamp % 1) * 1e9)
            pub.publish(msg)
            time.sleep(max(0.0, start + (i + 1) * period - time.monotonic()))
        player.wait_until(lambda: bool(records) and records[-1].frame >= len(frames) - 1, 3.0)
        time.sleep(1.2)  # one more diagnostics period
    finally:
        stop_process(proc)
        player.close()
    with player.lock:
        return sorted(records, key=lambda r: r.frame), dict(diagnostics), sorted(keyframes)


def picture(path: Path, video: Path, records: list[Record], keyframes: list[tuple[int, bytes]],
            threshold: float, fps: float) -> None:
    import cv2
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    t = np.array([r.frame for r in records]) / fps
    fig = plt.figure(figsize=(14, 9.5), dpi=100)
    ax = fig.add_axes((0.06, 0.6, 0.92, 0.35))
    ax.plot(t, [r.histogram for r in records], lw=0.8, color='#9bbbd4', label='histogram distance')
    ax.plot(t, [r.pixel for r in records], lw=0.8, color='#b7d49b', label='pixel difference')
    ax.plot(t, [r.edge for r in records], lw=0.8, color='#e2b88f', label='edge difference')
    ax.plot(t, [r.score for r in records], lw=1.8, color='#333333', label='change score (weighted)')
    ax.axhline(threshold, color='#c0392b', ls='--', lw=1, label=f'threshold {threshold:g}')
    colours = {'first': '#8e44ad', 'change': '#c0392b', 'max_interval': '#2980b9', 'clock_jump': '#7f8c8d'}
    for reason, colour in colours.items():
        ks = [r for r in records if r.keyframe and r.reason == reason]
        if ks:
            ax.scatter([r.frame / fps for r in ks], [min(r.score, 0.6) for r in ks], s=60, color=colour,
                       zorder=5, label=f'keyframe: {reason}')
    ax.set_ylim(0, 0.6)
    ax.set_xlim(0, (records[-1].frame + 1) / fps if records else 1)
    ax.set_xlabel('video time [s]')
    ax.set_ylabel('score vs last keyframe')
    ax.set_title(f'camera_node keyframe sampler on {video.name}: {sum(r.keyframe for r in records)} keyframes '
                 f'from {len(records)} frames')
    ax.legend(loc='upper right', fontsize=8, ncol=3)

    by_frame = {r.frame: r for r in records}
    shown = keyframes[:18]  # three rows of six
    for n, (frame, data) in enumerate(shown):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:  # a keyframe the sampler encoded itself: never expected
            raise RuntimeError(f'keyframe of frame {frame} does not decode')
        sub = fig.add_axes((0.01 + (n % 6) * 0.165, 0.36 - (n // 6) * 0.175, 0.155, 0.14))
        sub.imshow(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        r = by_frame.get(frame)
        label = f't={frame / fps:.1f}s {r.reason} {r.score:.2f}' if r else f't={frame / fps:.1f}s'
        sub.set_title(label, fontsize=8, color=colours.get(r.reason if r else '', 'black'))
        sub.axis('off')
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--video', type=Path, default=DEFAULT_VIDEO)
    parser.add_argument('--params-file', type=Path, default=REPO / 'config' / 'vln.yaml')
    parser.add_argument('--fps', type=float, default=0.0, help='video frame rate (default: from the file)')
    parser.add_argument('--speed', type=float, default=4.0, help='playback speed factor (stamps keep video time)')
    parser.add_argument('--out', type=Path, default=Path('demo_out'))
    args = parser.parse_args(argv)

    from vln_ros.core.config import CameraParams, load_node_yaml, validate_params
    params = validate_params(CameraParams, load_node_yaml(args.params_file, 'camera_node'))
    import cv2
    fps = args.fps or cv2.VideoCapture(str(args.video)).get(cv2.CAP_PROP_FPS) or 10.0

    records, diag, keyframes = stream(args.video, args.params_file, fps, args.speed)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / 'decisions.jsonl').open('w') as f:
        for r in records:
            f.write(json.dumps(r.__dict__) + '\n')
    picture(args.out / 'keyframes.png', args.video, records, keyframes, params.keyframe.change_threshold, fps)

    print(f'\n{"frame":>6} {"time":>7}  {"reason":<13} {"score":>6} {"hist":>6} {"pixel":>6} {"edge":>6}')
    for r in records:
        if r.keyframe:
            print(f'{r.frame:>6} {r.frame / fps:>6.1f}s  {r.reason:<13} {r.score:>6.3f} {r.histogram:>6.3f} '
                  f'{r.pixel:>6.3f} {r.edge:>6.3f}')
    reasons: dict[str, int] = {}
    for r in records:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    print(f'\nframes decided: {len(records)}  keyframes: {sum(r.keyframe for r in records)} '
          f'(received over DDS: {len(keyframes)})  decisions by reason: {reasons}')
    print(f"camera_node diagnostics: received {diag.get('frames_received', '?')}, "
          f"skipped {diag.get('frames_skipped', '?')}, decode errors {diag.get('decode_errors', '?')}, "
          f"frame time p50 {diag.get('frame_time_ms_p50', '?')} ms / p99 {diag.get('frame_time_ms_p99', '?')} ms")
    print(f'picture: {args.out / "keyframes.png"}   every decision: {args.out / "decisions.jsonl"}')
    return 0 if records and keyframes else 1


if __name__ == '__main__':
    raise SystemExit(main())
