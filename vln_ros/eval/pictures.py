"""make eval's pictures: each episode's path from above, one episode as a video from the robot's camera with
the plan it followed drawn on it, and the studies' plots. No ROS.

The video is rendered again from the recorded true trajectory (the renderer is deterministic), so the
evaluation never has to carry raw camera images over the graph to record them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vln_ros.core.annotate import annotate
from vln_ros.core.control import Plan as ControlPlan
from vln_ros.core.control import Pose2D, Waypoint, plan_path
from vln_ros.eval.metrics import EpisodeRecord, Plan
from vln_ros.sim import scenes
from vln_ros.sim.render import CameraSpec, render, render_top_down

_PATH_START, _PATH_END = np.array([255, 160, 40.0]), np.array([40, 40, 230.0])   # BGR: blue -> red over time


def top_down(record: EpisodeRecord, result: dict[str, Any]) -> np.ndarray:
    """The scene from above with the robot's true path (coloured by time), where it ended, and the verdict."""
    scene = scenes.generate(record.seed)
    image, to_px = render_top_down(scene)
    points = [(row[1], row[2]) for row in record.trajectory if row[0] >= record.task_started_s]
    for i, (a, b) in enumerate(zip(points, points[1:], strict=False)):
        colour = _PATH_START + (_PATH_END - _PATH_START) * (i / max(1, len(points) - 2))
        cv2.line(image, to_px(*a), to_px(*b), tuple(int(c) for c in colour), 2, cv2.LINE_AA)
    if points:
        cv2.circle(image, to_px(*points[-1]), 6, (0, 0, 0), 2, cv2.LINE_AA)
    verdict = 'SUCCESS' if result['success'] else f"FAIL ({result['end_state']})"
    lines = [f"seed {record.seed} {record.kind}: {verdict}",
             f"SPL {result['spl']:.2f}  error {result['navigation_error_m']:.2f} m  collisions {result['collisions']}"]
    if record.language == 'en':   # cv2 cannot draw Chinese; the JSON keeps every instruction
        lines.insert(0, record.instruction[:70])
    banner = np.full((22 * len(lines) + 8, image.shape[1], 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(banner, line, (6, 20 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    return np.vstack([banner, image])


def contact_sheet(images: Sequence[np.ndarray], columns: int = 4, cell: int = 360) -> np.ndarray:
    """Episodes' pictures side by side, each scaled into a cell x cell square."""
    cells = []
    for image in images:
        scale = cell / max(image.shape[:2])
        small = cv2.resize(image, (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        canvas = np.full((cell, cell, 3), 255, np.uint8)
        canvas[:small.shape[0], :small.shape[1]] = small
        cells.append(canvas)
    while len(cells) % columns:
        cells.append(np.full((cell, cell, 3), 255, np.uint8))
    rows = [np.hstack(cells[i:i + columns]) for i in range(0, len(cells), columns)]
    return np.vstack(rows)


def _pose(row: Sequence[float]) -> Pose2D:
    return Pose2D(row[1], row[2], row[3])


def video(record: EpisodeRecord, path: Path, camera: CameraSpec, fps: float = 10.0) -> int:
    """The episode from the robot's camera at fps with the plan being followed drawn in (as the controller
    sees it: from the capture pose, re-expressed to the current one); frames written."""
    scene = scenes.generate(record.seed)
    trajectory = [row for row in record.trajectory if row[0] >= record.task_started_s - 1.0]
    if not trajectory:
        return 0
    times = [row[0] for row in record.trajectory]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*'mp4v'), fps, (camera.width, camera.height))
    plans = sorted(record.plans, key=lambda p: p.received_s)
    frames, t, end = 0, trajectory[0][0], trajectory[-1][0]
    try:
        while t <= end:
            row = record.trajectory[min(len(times) - 1, int(np.searchsorted(times, t)))]
            now = _pose(row)
            current: Plan | None = None
            for plan in plans:
                if plan.received_s <= t:
                    current = plan
            lines = [f't {t - record.task_started_s:5.1f} s   v {math.hypot(row[4], row[5]):.2f} m/s']
            drawn: list[tuple[Pose2D, float]] = []
            stop = True
            if current is not None:
                lines.append(f'{current.action}, plan {t - current.stamp_s:.1f} s old')
                then_row = record.trajectory[min(len(times) - 1, int(np.searchsorted(times, current.stamp_s)))]
                to_now = now.inverse().compose(_pose(then_row))
                steps = tuple(Waypoint(*s) for s in current.steps)
                drawn = [(to_now.compose(p), c) for p, c in plan_path(ControlPlan(current.stamp_s, steps))]
                stop = current.stop
            writer.write(annotate(render(scene, now, camera), lines, drawn, stop))
            frames += 1
            t += 1.0 / fps
    finally:
        writer.release()
    return frames


def study_plot(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Success rate and time to goal against model latency, one line per controller mode."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    modes = sorted({r['mode'] for r in rows}, key=lambda m: [r['mode'] for r in rows].index(m))
    fig, (ax_sr, ax_time) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in modes:
        mine = sorted((r for r in rows if r['mode'] == mode), key=lambda r: r['latency_s'])
        x = [r['latency_s'] for r in mine]
        ax_sr.plot(x, [100 * r['sr'] for r in mine], marker='o', label=mode)
        ax_time.plot(x, [r['time_to_goal_s'] for r in mine], marker='o', label=mode)
    latencies = sorted({r['latency_s'] for r in rows})
    for ax, label in ((ax_sr, 'success rate [%]'), (ax_time, 'time to goal [s] (successful episodes)')):
        ax.set_xscale('log')
        ax.minorticks_off()
        ax.set_xticks(latencies, [f'{x:g}' for x in latencies])
        ax.set_xlabel('model latency [s] (simulated time)')
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    ax_sr.set_ylim(-5, 105)
    ax_sr.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
