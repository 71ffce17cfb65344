"""The demo's pictures, from what a run recorded (vln_ros/demo/stack.py's Recording, as run.json holds it).

timeline.png: the velocity commands over bag time with their limits, every plan (its inference latency,
coloured by action) over the keyframes it came from, and the corridor from above with the camera's
recorded walk, each plan drawn from where its keyframe was taken, and the path the commands would drive.
keyframes.png: a strip of the inference node's annotated keyframes (vln/debug_image) across the run.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vln_ros.core.control import Pose2D
from vln_ros.demo import corridor

ACTION_COLOURS = {'forward': '#27ae60', 'turn_left': '#2980b9', 'turn_right': '#8e44ad', 'left': '#16a085',
                  'right': '#16a085', 'backward': '#d35400', 'arrived': '#c0392b', 'stop': '#7f8c8d',
                  'new_task': '#bdc3c7'}


def _colour(action: str) -> str:
    return ACTION_COLOURS.get(action, '#7f8c8d')


def _pyplot() -> Any:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def commanded_path(commands: list[dict]) -> np.ndarray:
    """The path the velocity commands would drive from the origin (x, y per command), integrated over
    bag time: what a robot that executes cmd_vel exactly would do."""
    pose, points, last_t = Pose2D(), [(0.0, 0.0)], None
    for c in commands:
        if last_t is not None:
            dt = c['t'] - last_t
            pose = pose.compose(Pose2D(c['vx'] * dt, c['vy'] * dt, c['wz'] * dt))
            points.append((pose.x, pose.y))
        last_t = c['t']
    return np.array(points)


def timeline(path: Path, run: dict) -> None:
    plt = _pyplot()
    start, limits = run['bag_start_s'], run['limits']
    commands = run['commands']
    t = np.array([c['t'] for c in commands]) - start
    fig = plt.figure(figsize=(15, 9.5), dpi=90)
    fig.suptitle(run['title'], fontsize=12)

    ax = fig.add_axes((0.05, 0.56, 0.6, 0.36))
    for key, label, colour, limit in (('vx', 'forward vx [m/s]', '#27ae60', limits['max_linear_x']),
                                      ('vy', 'left vy [m/s]', '#e67e22', limits['max_linear_y']),
                                      ('wz', 'yaw rate wz [rad/s]', '#2980b9', limits['max_angular_z'])):
        ax.plot(t, [c[key] for c in commands], color=colour, lw=1.4, label=label)
        ax.axhline(limit, color=colour, ls=':', lw=0.9)
        ax.axhline(-limit, color=colour, ls=':', lw=0.9)
    for event in run['events']:
        ax.axvline(event['t'] - start, color='#444444', ls='--', lw=0.8)
        ax.text(event['t'] - start, ax.get_ylim()[1] * 0.95, ' ' + event['label'], fontsize=8, va='top')
    ax.set_ylabel('cmd_vel (dotted: limits)')
    ax.set_title(f"controller_node: {run['control_rate_hz']:.1f} Hz of cmd_vel while moving "
                 f"(bag time), every sample within limits: {run['within_limits']}", fontsize=10)
    ax.legend(loc='lower left', fontsize=8, ncol=3)
    ax.grid(alpha=0.3)

    ax2 = fig.add_axes((0.05, 0.08, 0.6, 0.38), sharex=ax)
    for k in run['keyframes']:
        ax2.axvline(k['stamp'] - start, ymin=0, ymax=0.04, color='#888888', lw=1)
    for p in run['plans']:
        x = p['received'] - start
        ax2.plot([p['stamp'] - start, x], [p['latency']] * 2, color=_colour(p['action']), lw=0.8, alpha=0.5)
        ax2.scatter([x], [p['latency']], color=_colour(p['action']), s=28, zorder=3)
    for action in sorted({p['action'] for p in run['plans']}):
        ax2.scatter([], [], color=_colour(action), label=action)
    ax2.set_xlabel('bag time [s]')
    ax2.set_ylabel('keyframe -> plan [s]')
    ax2.set_title('inference_node: each plan at the time it arrived, its line back to its keyframe\'s capture '
                  '(grey ticks: keyframes)', fontsize=10)
    ax2.legend(loc='upper left', fontsize=8, ncol=4)
    ax2.set_ylim(0, max([p['latency'] for p in run['plans']] + [0.5]) * 1.5)
    ax2.grid(alpha=0.3)

    walk = corridor.walk()
    driven = commanded_path(commands)
    _map_upright(fig.add_axes((0.69, 0.08, 0.29, 0.84)), run, walk, driven)
    fig.savefig(path)
    plt.close(fig)


def _map_upright(ax: Any, run: dict, walk: corridor.Walk, driven: np.ndarray) -> None:
    """The corridor from above, walked up the page (x up, y to the left)."""
    hw, start = corridor.HALF_WIDTH_M, run['bag_start_s']

    def plot(xs: Any, ys: Any, **kw: Any) -> None:
        ax.plot(-np.asarray(ys), np.asarray(xs), **kw)

    ax.fill_betweenx([corridor.X_BACK, corridor.X_END], -hw, hw, color='#f4f1ea', zorder=0)
    for y in (-hw, hw):
        plot([corridor.X_BACK, corridor.X_END], [y, y], color='#555555', lw=2)
    for side, x, bgr in corridor.DOORS:
        blue, green, red = bgr
        colour = f'#{red:02x}{green:02x}{blue:02x}'
        plot([x - corridor.DOOR_WIDTH_M / 2, x + corridor.DOOR_WIDTH_M / 2], [side * hw] * 2, color=colour, lw=6,
             solid_capstyle='butt')
    ax.text(-hw - 0.1, corridor.RED_DOOR_X, 'red\ndoor', ha='right', va='center', color='#c0392b', fontsize=9)
    plot(driven[:, 0], driven[:, 1], color='#e67e22', lw=4, alpha=0.5, label='cmd_vel integrated (open loop)')
    plot(walk.x, walk.y, color='#333333', lw=1, ls='--', label='camera: the recorded walk')
    for p in run['plans']:
        pose = walk.pose_at(p['stamp'] - start)
        xs, ys = [pose.x], [pose.y]
        for dx, dy, dtheta, _ in p['waypoints']:
            pose = pose.compose(Pose2D(dx, dy, dtheta))
            xs.append(pose.x)
            ys.append(pose.y)
        plot(xs, ys, color=_colour(p['action']), lw=1, marker='.', ms=4, alpha=0.8)
    ax.plot([], [], color=_colour('forward'), marker='.', label='each plan from its keyframe\'s pose')
    ax.set_aspect('equal')
    ax.set_xlim(-2.2, 2.2)
    ax.set_ylim(-1.0, 11.5)
    ax.set_xlabel('left <- y [m] -> right')
    ax.set_ylabel('x [m]')
    ax.set_title('the corridor from above', fontsize=10)
    ax.legend(loc='lower right', fontsize=8, framealpha=0.9)


def keyframe_strip(path: Path, run: dict, images: list[tuple[float, str, np.ndarray]], count: int = 12) -> None:
    """Up to `count` annotated keyframes (bag time, action, BGR) spread over the run, the last one included."""
    plt = _pyplot()
    if not images:
        return
    picks = sorted({round(i) for i in np.linspace(0, len(images) - 1, min(count, len(images)))})
    columns = 4
    rows = math.ceil(len(picks) / columns)
    fig = plt.figure(figsize=(15, 2.9 * rows + 0.6), dpi=80)
    fig.suptitle('vln/debug_image: keyframes as the inference node annotated them (its answer on top, the plan '
                 'from above in the inset)', fontsize=11)
    for n, index in enumerate(picks):
        t, action, bgr = images[index]
        height = 0.9 / rows
        ax = fig.add_axes((0.01 + (n % columns) * 0.2475, 0.92 - (n // columns + 1) * height, 0.24, height - 0.04))
        ax.imshow(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        ax.set_title(f'{t - run["bag_start_s"]:.1f} s: {action}', fontsize=9, color=_colour(action))
        ax.axis('off')
    fig.savefig(path)
    plt.close(fig)
