"""make eval's pictures: each episode's path from above, one episode as a video from the robot's camera with
the plan it followed drawn on it, and the studies' plots. No ROS.

The paths are drawn alone (episodes/seed_N.png) and all on one sheet (paths.png) at one metres-per-pixel
scale, so that a tall map stays as readable as a wide one; each caption is the instruction in full, wrapped
to its panel, Chinese drawn with the CJK font that tools/install_browser.sh installs (a note in its place
without the font).

The video is rendered again from the recorded true trajectory (the renderer is deterministic), so the
evaluation never has to carry raw camera images over the graph to record them.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vln_ros.core.annotate import annotate
from vln_ros.core.control import Plan as ControlPlan
from vln_ros.core.control import Pose2D, Waypoint, plan_path
from vln_ros.eval.metrics import EpisodeRecord, Plan
from vln_ros.sim import scenes
from vln_ros.sim.people import NO_PEOPLE, PeopleView
from vln_ros.sim.render import CameraSpec, render, render_top_down
from vln_ros.sim.scene import Scene

_PATH_START, _PATH_END = np.array([255, 160, 40.0]), np.array([40, 40, 230.0])   # BGR: blue -> red over time
_PEOPLE_BGR = (90, 150, 90)           # people's tracks: muted green
_GUARD_STOP_BGR = (200, 0, 200)        # where the guard began a stop: magenta
PX_PER_M = 40.0          # an episode's own picture; a sheet uses this or less, one scale for all its maps
MAP_MARGIN_M = 0.5       # render_top_down's margin round the walls
CJK_FONT = Path('/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc')   # fonts-wqy-zenhei (tools/install_browser.sh)
TEXT_PX = 15             # the caption's font size
LINE_PX = 20             # the caption's line height
PAD_PX = 6               # the caption's margin
MIN_PANEL_PX = 240       # a sheet's panel is at least this wide, so that its caption wraps into few lines
GAP_PX = 4               # between a sheet's panels
NO_FONT_NOTE = '(the instruction is in Chinese: see results.json; install fonts-wqy-zenhei to draw it)'
_INK, _PAPER = (20, 20, 20), (255, 255, 255)
# CJK ideographs and punctuation, and full-width forms: a line may break between any two of them
_CJK = '\u2e80-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef'
_TOKENS = re.compile(f'[{_CJK}]|[^\\s{_CJK}]+|\\s+')
_NO_LINE_START = set('，。、；：！？）》」』,.;:!?)')


@functools.cache
def _font(path: Path, size_px: int) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, bool]:
    """(the font, whether it draws CJK): the CJK font at path, else Pillow's own (Latin only)."""
    try:
        return ImageFont.truetype(str(path), size_px), True
    except OSError:
        return ImageFont.load_default(size_px), False


def _width_px(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> float:
    return float(font.getlength(text))


def wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width_px: float) -> list[str]:
    """text in lines no wider than width_px: broken at spaces, or between any two CJK characters (Chinese has
    no spaces), never before closing punctuation (which may overhang by its own width); a word wider than a
    line is broken between its letters.
    Nothing is dropped: the lines joined (with the spaces at the breaks) give the text back."""
    lines: list[str] = []
    line = ''
    tokens = _TOKENS.findall(text)
    k = 0
    while k < len(tokens):
        token = tokens[k]
        if not line and token.isspace():
            k += 1
            continue
        if line and _width_px(font, (line + token).rstrip()) > width_px and token not in _NO_LINE_START:
            lines.append(line.rstrip())
            line = ''
            continue            # the same token again, at the start of a line
        if not line and _width_px(font, token) > width_px and len(token) > 1:
            cut = next((i for i in range(len(token) - 1, 0, -1) if _width_px(font, token[:i]) <= width_px), 1)
            tokens[k:k + 1] = [token[:cut], token[cut:]]
            token = token[:cut]
        line += token
        k += 1
    if line.strip():
        lines.append(line.rstrip())
    return lines


def caption(lines: Sequence[str], width_px: int,
            font_path: Path = CJK_FONT) -> tuple[np.ndarray, list[list[str]]]:
    """A white band width_px wide with the lines drawn in it, each wrapped to fit (Chinese too, with a CJK
    font; without one a line that needs it is replaced by NO_FONT_NOTE): (BGR image, each line as drawn)."""
    font, cjk = _font(font_path, TEXT_PX)
    wrapped = [wrap(text if cjk or text.isascii() else NO_FONT_NOTE, font, width_px - 2 * PAD_PX) or ['']
               for text in lines]
    drawn = [line for group in wrapped for line in group]
    band = Image.new('RGB', (width_px, LINE_PX * len(drawn) + 2 * PAD_PX), _PAPER)
    draw = ImageDraw.Draw(band)
    for i, text in enumerate(drawn):
        draw.text((PAD_PX, PAD_PX + LINE_PX * i), text, font=font, fill=_INK)
    return np.ascontiguousarray(np.asarray(band)[:, :, ::-1]), wrapped


def _lines(record: EpisodeRecord, result: dict[str, Any]) -> list[str]:
    verdict = 'SUCCESS' if result['success'] else f"FAIL ({result['end_state']})"
    stats = f"SPL {result['spl']:.2f}  error {result['navigation_error_m']:.2f} m  collisions {result['collisions']}"
    if 'ndtw' in result:
        stats += f"  nDTW {result['ndtw']:.2f}"
    return [record.instruction, f'seed {record.seed} {record.kind}: {verdict}', stats]


def map_extent_m(scene: Scene) -> tuple[float, float]:
    """The width and height (m) of the scene's map from above: its walls and the margin round them."""
    xs = [v for w in scene.walls for v in (w.x0, w.x1)]
    ys = [v for w in scene.walls for v in (w.y0, w.y1)]
    return max(xs) - min(xs) + 2 * MAP_MARGIN_M, max(ys) - min(ys) + 2 * MAP_MARGIN_M


def path_map(scene: Scene, record: EpisodeRecord, px_per_m: float = PX_PER_M) -> np.ndarray:
    """The scene from above at px_per_m with the robot's true path (coloured by time) and where it ended."""
    image, to_px = render_top_down(scene, px_per_m)
    points = [(row[1], row[2]) for row in record.trajectory if row[0] >= record.task_started_s]
    for i, (a, b) in enumerate(zip(points, points[1:], strict=False)):
        colour = _PATH_START + (_PATH_END - _PATH_START) * (i / max(1, len(points) - 2))
        cv2.line(image, to_px(*a), to_px(*b), tuple(int(c) for c in colour), 2, cv2.LINE_AA)
    if points:
        cv2.circle(image, to_px(*points[-1]), max(3, round(0.15 * px_per_m)), (0, 0, 0), 2, cv2.LINE_AA)
    # people's tracks (rows [t, person, x, y]) during the task, thin, muted green; the guard's stops as magenta crosses
    people: dict[int, list[tuple[float, float]]] = {}
    for t, person, x, y in record.people_tracks:
        if t >= record.task_started_s:
            people.setdefault(int(person), []).append((x, y))
    for track in people.values():
        for a, b in zip(track, track[1:], strict=False):
            cv2.line(image, to_px(*a), to_px(*b), _PEOPLE_BGR, 1, cv2.LINE_AA)
    for _, x, y in record.guard_stops:
        cv2.drawMarker(image, to_px(x, y), _GUARD_STOP_BGR, cv2.MARKER_TILTED_CROSS, max(7, round(0.3 * px_per_m)), 2)
    return image


def top_down(record: EpisodeRecord, result: dict[str, Any], scene: Scene | None = None) -> np.ndarray:
    """The scene from above with the robot's true path, where it ended, and under the instruction the verdict."""
    image = path_map(scenes.generate(record.seed) if scene is None else scene, record)
    width = max(image.shape[1], MIN_PANEL_PX)
    band, _ = caption(_lines(record, result), width)
    return np.vstack([band, _pad(image, width, image.shape[0])])


def _pad(image: np.ndarray, width: int, height: int) -> np.ndarray:
    canvas = np.full((height, width, 3), 255, np.uint8)
    canvas[:image.shape[0], :image.shape[1]] = image
    return canvas


@dataclass
class Sheet:
    """A contact sheet of episodes' maps and where each lies on it."""

    image: np.ndarray                             # BGR
    px_per_m: float                               # the one scale of every map on it
    maps: list[tuple[int, int, int, int]]         # each map's x, y, width, height on the image (px)
    captions: list[list[list[str]]]               # each panel's caption lines, each as wrapped


def paths_sheet(records: Sequence[EpisodeRecord], results: Sequence[dict[str, Any]],
                episode_scenes: Sequence[Scene] | None = None, columns: int = 4, cell_px: int = 360,
                max_px_per_m: float = PX_PER_M) -> Sheet:
    """Episodes' maps (scenes generated again from the seeds unless given) in rows of `columns`, each with its
    caption wrapped above it, all at one metres-per-pixel scale: the largest (up to max_px_per_m) at which
    every row fits columns * cell_px, a panel being its map's width or MIN_PANEL_PX if more. A tall map is as
    tall as it is, not squeezed into a square."""
    if columns < 1:
        raise ValueError(f'columns must be at least 1, got {columns}')
    chosen = list(episode_scenes) if episode_scenes is not None else [scenes.generate(r.seed) for r in records]
    extents = [map_extent_m(s) for s in chosen]
    rows = [list(range(i, min(i + columns, len(chosen)))) for i in range(0, len(chosen), columns)]
    sheet_px = columns * cell_px + (columns - 1) * GAP_PX

    def fits(px_per_m: float) -> bool:
        return all(sum(max(_map_px(extents[k][0], px_per_m), MIN_PANEL_PX) for k in row)
                   + GAP_PX * (len(row) - 1) <= sheet_px for row in rows)

    low, high = 1.0, max_px_per_m      # the largest scale that fits, by bisection (fits() is monotone)
    if fits(high):
        low = high
    for _ in range(40):
        if low == high:
            break
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    px_per_m = low
    panels, maps, captions = [], [], []
    for record, result, scene in zip(records, results, chosen, strict=True):
        image = path_map(scene, record, px_per_m)
        width = max(image.shape[1], MIN_PANEL_PX)
        band, lines = caption(_lines(record, result), width)
        panels.append((band, image))
        captions.append(lines)
    out_rows, y, used = [], 0, 1
    for row in rows:
        height = max(panels[k][0].shape[0] + panels[k][1].shape[0] for k in row)
        strip = np.full((height, sheet_px, 3), 255, np.uint8)
        x = 0
        for k in row:
            band, image = panels[k]
            strip[:band.shape[0], x:x + band.shape[1]] = band
            strip[band.shape[0]:band.shape[0] + image.shape[0], x:x + image.shape[1]] = image
            maps.append((x, y + band.shape[0], image.shape[1], image.shape[0]))
            x += band.shape[1] + GAP_PX
        used = max(used, x - GAP_PX)
        out_rows.append(strip)
        out_rows.append(np.full((GAP_PX, sheet_px, 3), 255, np.uint8))
        y += height + GAP_PX
    image = np.vstack(out_rows[:-1]) if out_rows else np.full((1, sheet_px, 3), 255, np.uint8)
    return Sheet(image[:, :used], px_per_m, maps, captions)     # no blank columns right of the widest row


def _map_px(extent_m: float, px_per_m: float) -> int:
    """render_top_down's pixels for extent_m."""
    return int(math.ceil(extent_m * px_per_m)) + 1


def _pose(row: Sequence[float]) -> Pose2D:
    return Pose2D(row[1], row[2], row[3])


PERSON_VIDEO_BGR = (70, 70, 170)   # people in a video drawn from their tracks (the tracks keep no shirt colour)


def people_at(record: EpisodeRecord, t_s: float) -> PeopleView:
    """Where the episode's people were at t_s (each person's latest track row at or before it)."""
    latest: dict[int, tuple[float, float]] = {}
    for t, person, x, y in record.people_tracks:
        if t <= t_s + 1e-9:
            latest[int(person)] = (x, y)
    if not latest:
        return NO_PEOPLE
    return PeopleView(np.array([latest[k] for k in sorted(latest)], float), (PERSON_VIDEO_BGR,) * len(latest))


def video(record: EpisodeRecord, path: Path, camera: CameraSpec, fps: float = 10.0) -> int:
    """The episode from the robot's camera at fps with the plan being followed drawn in (as the controller
    sees it: from the capture pose, re-expressed to the current one) and the people where their tracks put
    them; frames written."""
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
            writer.write(annotate(render(scene, now, camera, people_at(record, t)), lines, drawn, stop))
            frames += 1
            t += 1.0 / fps
    finally:
        writer.release()
    return frames


def rate_error_bars(rows: Sequence[dict[str, Any]], key: str = 'sr') -> np.ndarray:
    """matplotlib's asymmetric yerr (2 x N, in %) for the rate `key` of each row: the distances from the rate
    down and up to its Wilson 95 % interval (<key>_ci95); 0 where a row has none."""
    bars = np.zeros((2, len(rows)))
    for i, row in enumerate(rows):
        low, high = row.get(f'{key}_ci95', (math.nan, math.nan))
        if math.isfinite(low) and math.isfinite(high):
            bars[:, i] = 100 * (row[key] - low), 100 * (high - row[key])
    return np.maximum(bars, 0.0)      # the interval's end at 1.0 can round a hair below the rate


def study_plot(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Success rate (with its Wilson 95 % interval as error bars) and time to goal against model latency,
    one line per controller mode."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    modes = sorted({r['mode'] for r in rows}, key=lambda m: [r['mode'] for r in rows].index(m))
    fig, (ax_sr, ax_time) = plt.subplots(1, 2, figsize=(10, 4))
    for k, mode in enumerate(modes):
        mine = sorted((r for r in rows if r['mode'] == mode), key=lambda r: r['latency_s'])
        x = [r['latency_s'] for r in mine]
        dodge = 1.0 + 0.04 * (k - (len(modes) - 1) / 2)      # the modes' bars side by side, not on each other
        ax_sr.errorbar([v * dodge for v in x], [100 * r['sr'] for r in mine], yerr=rate_error_bars(mine),
                       marker='o', capsize=3, label=mode)
        ax_time.plot(x, [r['time_to_goal_s'] for r in mine], marker='o', label=mode)
    latencies = sorted({r['latency_s'] for r in rows})
    for ax, label in ((ax_sr, 'success rate [%] (bars: Wilson 95 % interval)'),
                      (ax_time, 'time to goal [s] (successful episodes)')):
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
