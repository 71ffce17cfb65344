"""What the simulated robot's camera sees, and a map of a scene from above. No ROS; numpy and OpenCV only.

A 2.5D ray caster, as classic ones are: the world is vertical walls and boxes on a flat floor under a flat ceiling
and the camera is level, so one ray per image column finds the nearest wall and the box faces in front of it, and
which of wall, box, floor or ceiling a pixel shows depends on its row alone. A row meets the floor (or ceiling) at
a depth fixed by the camera, so the floor and ceiling need no ray tracing either. Each pixel gets an index into a
palette of colours already fogged for their depth (per column for walls and boxes, per row for floor and ceiling)
and one gather makes the picture: about 5 ms per 448 x 336 frame on one core of a 2-core development machine.
The look is vln_ros/demo/corridor.py's: walls with a baseboard, doors in a dark frame with a handle, a floor
checker and ceiling lights that move past (motion cues for the model), and fog that greys and darkens with
distance.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from vln_ros.core.control import Pose2D
from vln_ros.sim.geometry import sample_polyline
from vln_ros.sim.people import NO_PEOPLE, PERSON_HEIGHT_M, PERSON_RADIUS_M, PeopleView
from vln_ros.sim.scene import BGR, CEILING_M, DOOR_HEIGHT_M, Landmark, Scene

FLOOR_A: BGR = (150, 155, 160)
FLOOR_B: BGR = (118, 124, 130)
CEILING: BGR = (225, 225, 225)
LIGHT: BGR = (255, 255, 250)
BASEBOARD: BGR = (70, 80, 90)
FRAME: BGR = (60, 60, 60)
HANDLE: BGR = (30, 30, 30)
FOG: BGR = (200, 200, 200)
FOG_M = 18.0                  # depth at which 63 % of a colour has turned to fog
DARKEN_PER_M = 0.015
CHECKER_M = 0.6
LIGHT_PITCH_M, LIGHT_HALF_M = 2.0, 0.3
BASEBOARD_M, FRAME_M = 0.12, 0.06
HANDLE_Z_M, HANDLE_HALF_HEIGHT_M, HANDLE_HALF_WIDTH_M, HANDLE_INSET_M = 1.0, 0.03, 0.04, 0.13
SHADE_ALONG_X = 0.85          # faces whose normal is +-y are a little darker: corners read as corners
FAR_M = 100.0                 # beyond any scene; also where a ray that hits nothing stops

_BANDS = 5                    # per wall column: up to five colours stacked in height (door, handle, door, frame, wall)
_POT: BGR = (60, 95, 150)
_GLOW: BGR = (235, 225, 200)
_CAP: BGR = (25, 25, 25)
_TROUSERS: BGR = (70, 55, 45)
_SKIN: BGR = (140, 170, 215)
_WAIST_M, _NECK_M = 0.85, 1.45
_ROBOT_BODY: BGR = (45, 45, 50)
_ROBOT_BAND: BGR = (40, 200, 240)   # a yellow stripe: another robot reads as a machine, not a person or a box
ROBOT_HEIGHT_M = 0.55               # a quadruped's back


@dataclass(frozen=True)
class CameraSpec:
    width: int = 448
    height: int = 336
    hfov_deg: float = 80.0
    height_m: float = 0.45    # a quadruped's head


DEFAULT_CAMERA = CameraSpec()


@dataclass(frozen=True)
class _Optics:
    """What depends on the camera only: each column's ray and each row's floor or ceiling depth, and the fogged
    floor and ceiling colours of every row (palette entries 2r, 2r + 1)."""

    a: np.ndarray            # (W,) column's rightward offset per unit forward: the ray is (1, -a) in the body frame
    b: np.ndarray            # (H,) row's downward offset per unit forward
    row_depth: np.ndarray    # (H,) depth (along the optical axis) where the row's ray meets the floor or ceiling
    ceiling_rows: int        # rows [0, ceiling_rows) look up, rows [floor_from, H) look down
    floor_from: int
    palette: np.ndarray      # (2H, 3) float32


def _fogged(bgr: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Colours (..., 3) seen through `depth` metres (...) of fog, darkened with distance as corridor.py does."""
    keep = np.exp(-depth / FOG_M)[..., None]
    return (bgr * keep + np.asarray(FOG, np.float32) * (1.0 - keep)) / (1.0 + DARKEN_PER_M * depth)[..., None]


@lru_cache(maxsize=8)
def _optics(camera: CameraSpec) -> _Optics:
    f = (camera.width / 2) / math.tan(math.radians(camera.hfov_deg) / 2)
    a = (np.arange(camera.width) - camera.width / 2 + 0.5) / f
    b = (np.arange(camera.height) - camera.height / 2 + 0.5) / f
    with np.errstate(divide='ignore'):
        row_depth = np.where(b > 0, camera.height_m / b, np.where(b < 0, (CEILING_M - camera.height_m) / -b, np.inf))
    texture_depth = np.minimum(row_depth, FAR_M)[:, None]
    pairs = np.where((b > 0)[:, None, None], np.array([FLOOR_A, FLOOR_B], np.float32),
                     np.array([CEILING, LIGHT], np.float32))
    palette = _fogged(pairs, np.broadcast_to(texture_depth, (camera.height, 2))).reshape(-1, 3).astype(np.float32)
    return _Optics(a, b, row_depth, int((b < 0).sum()), int(np.argmax(b > 0)), palette)


@dataclass(frozen=True)
class _Geometry:
    """A scene as arrays: wall segments then four faces per landmark; doors by the wall they are on."""

    segments: np.ndarray     # (S, 4): x0, y0, dx, dy
    n_walls: int
    wall_length: np.ndarray  # (n_walls,)
    wall_bgr: np.ndarray     # (n_walls, 3), shaded by orientation
    wall_shade: np.ndarray   # (n_walls,)
    door_wall: np.ndarray    # (n_doors,) index of the wall each door is on
    door_s: np.ndarray       # (n_doors,) its middle, metres along that wall from (x0, y0)
    door_half: np.ndarray    # (n_doors,)
    door_bgr: np.ndarray     # (n_doors, 3)
    landmark_cuts: np.ndarray     # (n_landmarks, 3): heights where its colour changes, and its top
    landmark_bgr: np.ndarray      # (n_landmarks, 3 bands, 3)


def _landmark_bands(m: Landmark) -> tuple[tuple[float, float], tuple[BGR, BGR, BGR]]:
    """Where a landmark's colour changes with height, bottom up, so that a plant has a pot and a cabinet a plinth."""
    dark = (int(m.bgr[0] * 0.55), int(m.bgr[1] * 0.55), int(m.bgr[2] * 0.55))
    if m.name == 'plant':
        return (0.35, m.height), (_POT, m.bgr, m.bgr)
    if m.name == 'fire extinguisher':
        return (m.height - 0.12, m.height), (m.bgr, _CAP, _CAP)
    if m.name == 'vending machine':
        return (0.8, 1.55), (m.bgr, _GLOW, m.bgr)
    if m.name == 'bench':
        return (0.3, m.height), (dark, m.bgr, m.bgr)
    return (0.06, m.height), (dark, m.bgr, m.bgr)


@lru_cache(maxsize=16)
def _geometry(scene: Scene) -> _Geometry:
    walls = np.array([(w.x0, w.y0, w.x1 - w.x0, w.y1 - w.y0) for w in scene.walls], float)
    length = np.hypot(walls[:, 2], walls[:, 3])
    shade = np.where(np.abs(walls[:, 2]) > np.abs(walls[:, 3]), SHADE_ALONG_X, 1.0)
    faces = []
    for m in scene.landmarks:
        x0, x1, y0, y1 = m.x - m.size_x / 2, m.x + m.size_x / 2, m.y - m.size_y / 2, m.y + m.size_y / 2
        faces += [(x0, y0, 0.0, y1 - y0), (x1, y0, 0.0, y1 - y0), (x0, y0, x1 - x0, 0.0), (x0, y1, x1 - x0, 0.0)]
    door_wall, door_s = [], []
    for d in scene.doors:
        rel = np.stack([d.x - walls[:, 0], d.y - walls[:, 1]], axis=1)
        s = (rel * walls[:, 2:]).sum(1) / length
        off_line = np.abs(rel[:, 0] * walls[:, 3] - rel[:, 1] * walls[:, 2]) / length
        on = np.flatnonzero((off_line < 1e-6) & (s > 0) & (s < length))
        if not len(on):
            raise ValueError(f'scene {scene.seed}: the door at ({d.x:.2f}, {d.y:.2f}) is on no wall')
        door_wall.append(int(on[0]))
        door_s.append(float(s[on[0]]))
    bands = [_landmark_bands(m) for m in scene.landmarks]
    return _Geometry(
        segments=np.concatenate([walls, np.array(faces, float).reshape(-1, 4)]),
        n_walls=len(walls), wall_length=length,
        wall_bgr=np.array([w.bgr for w in scene.walls], np.float32) * shade[:, None].astype(np.float32),
        wall_shade=shade,
        door_wall=np.array(door_wall, int), door_s=np.array(door_s, float),
        door_half=np.array([d.width / 2 for d in scene.doors], float),
        door_bgr=np.array([d.bgr for d in scene.doors], np.float32).reshape(-1, 3),
        landmark_cuts=np.array([(*cuts, m.height) for (cuts, _), m in zip(bands, scene.landmarks, strict=True)],
                               float).reshape(-1, 3),
        landmark_bgr=np.array([colours for _, colours in bands], np.float32).reshape(-1, 3, 3))


def _cast(segments: np.ndarray, ox: float, oy: float, dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's ray (ox, oy) + t (dx, dy) against each segment: (t, u), t = inf where it misses; u is the
    fraction along the segment."""
    rx, ry = segments[:, 0] - ox, segments[:, 1] - oy
    ex, ey = segments[:, 2], segments[:, 3]
    denom = dx[:, None] * ey - dy[:, None] * ex
    with np.errstate(divide='ignore', invalid='ignore'):
        t = (rx * ey - ry * ex) / denom
        u = (rx * dy[:, None] - ry * dx[:, None]) / denom
    hit = (t > 1e-6) & (u >= -1e-9) & (u <= 1.0 + 1e-9)
    return np.where(hit, t, np.inf), u


@dataclass(frozen=True)
class RobotsView:
    """Other robots at one instant, as a camera draws them: centres (K, 2) of dark cylinders of radius_m."""

    positions: np.ndarray
    radius_m: float = 0.3

    def __len__(self) -> int:
        return len(self.positions)


NO_ROBOTS = RobotsView(np.zeros((0, 2)))


def render(scene: Scene, pose: Pose2D, camera: CameraSpec = DEFAULT_CAMERA,
           people: PeopleView = NO_PEOPLE, robots: RobotsView = NO_ROBOTS) -> np.ndarray:
    """The camera picture (BGR uint8, height x width x 3) from `pose`, looking along pose.yaw, level, with the
    people standing where `people` says (vertical cylinders, sim/people.py) and the other robots where `robots`
    says (low dark cylinders with a light band, in front of or behind the people as their depths say)."""
    image = _render_scene(scene, pose, camera)
    if len(people):
        _draw_people(image, scene, pose, camera, people)
    if len(robots):
        _draw_robots(image, scene, pose, camera, people, robots)
    return image


def _draw_robots(image: np.ndarray, scene: Scene, pose: Pose2D, camera: CameraSpec, people: PeopleView,
                 robots: RobotsView) -> None:
    """Paint the robots over the picture where they are nearer than the scene and the people."""
    seen = _bodies_in_view(scene, pose, camera, robots.positions, robots.radius_m, ROBOT_HEIGHT_M, people)
    if seen is None:
        return
    columns, d, _, z, inside = seen
    bands = np.broadcast_to(np.array([_ROBOT_BODY, _ROBOT_BAND], np.float32), (len(columns), 2, 3))
    colours = _fogged(bands, np.broadcast_to(d[:, None], (len(columns), 2)))
    band = ((z >= ROBOT_HEIGHT_M - 0.12) & (z <= ROBOT_HEIGHT_M - 0.06)).astype(np.int32)
    _paint(image, columns, inside, colours[np.arange(len(columns))[None, :], band])


def _bodies_in_view(scene: Scene, pose: Pose2D, camera: CameraSpec, centres: np.ndarray, radius_m: float,
                    height_m: float, occluders: PeopleView
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Upright cylinders (centres (K, 2), radius_m, height_m: people or robots) as the camera sees them: the
    columns where one is nearest (C,), its depth there (C,) and which one (C,), each row's height on it (H, C),
    and which of those pixels it covers, nothing of the scene or the occluders being nearer (H, C); None when
    none is in view."""
    optics = _optics(camera)
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    dx, dy = c + s * optics.a, s - c * optics.a
    d, who = _people_depth(centres, pose, dx, dy, radius_m)
    columns = np.flatnonzero(np.isfinite(d))
    if not len(columns):
        return None
    behind = _depth(scene, pose, camera, occluders, columns)
    dc = d[columns].astype(np.float32)[None, :]
    z = camera.height_m - optics.b[:, None].astype(np.float32) * dc
    inside = (z >= 0.0) & (z <= height_m) & (dc < behind)
    return columns, d[columns], who[columns], z, inside


def _paint(image: np.ndarray, columns: np.ndarray, inside: np.ndarray, pixels: np.ndarray) -> None:
    """Set the covered pixels (inside, (H, C)) of those columns to pixels (H, C, 3)."""
    view = image[:, columns]
    view[inside] = np.clip(pixels[inside], 0, 255).astype(np.uint8)
    image[:, columns] = view


def depth_image(scene: Scene, pose: Pose2D, camera: CameraSpec, people: PeopleView = NO_PEOPLE,
                robots: RobotsView = NO_ROBOTS) -> np.ndarray:
    """What a depth camera at `pose` (camera.height_m up, level, along pose.yaw) measures: (H, W) float32, each
    pixel's depth along the optical axis in metres (z of the optical frame), FAR_M where nothing is nearer;
    the same walls, boxes, floor, ceiling, people and other robots as render() draws."""
    return _depth(scene, pose, camera, people, np.arange(camera.width), robots)


def _depth(scene: Scene, pose: Pose2D, camera: CameraSpec, people: PeopleView, columns: np.ndarray,
           robots: RobotsView = NO_ROBOTS) -> np.ndarray:
    """depth_image() of the given columns only, (H, len(columns))."""
    optics, geo = _optics(camera), _geometry(scene)
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    a = optics.a[columns]
    dx, dy = c + s * a, s - c * a
    t, _ = _cast(geo.segments, pose.x, pose.y, dx, dy)
    wall_depth = np.minimum(t[:, :geo.n_walls].min(axis=1), FAR_M)
    depth = np.minimum(np.minimum(optics.row_depth, FAR_M)[:, None], wall_depth[None, :]).astype(np.float32)
    z_per_depth = optics.b[:, None].astype(np.float32)                   # z = height_m - b * depth
    n = len(geo.landmark_cuts)
    if n:
        faces = t[:, geo.n_walls:].reshape(len(dx), n, 4).min(axis=2)    # (W, n)
        for i in range(n):
            seen = np.flatnonzero(faces[:, i] < wall_depth)
            if not len(seen):
                continue
            span = slice(seen[0], seen[-1] + 1)
            d = np.minimum(faces[span, i], FAR_M).astype(np.float32)[None, :]
            z = camera.height_m - z_per_depth * d
            inside = (z >= 0.0) & (z <= geo.landmark_cuts[i, 2]) & (d < depth[:, span])
            depth[:, span] = np.where(inside, np.broadcast_to(d, inside.shape), depth[:, span])
    if len(people):
        d = _people_depth(people.positions, pose, dx, dy)[0].astype(np.float32)[None, :]
        z = camera.height_m - z_per_depth * d
        inside = (z >= 0.0) & (z <= PERSON_HEIGHT_M) & (d < depth)
        depth = np.where(inside, np.broadcast_to(d, depth.shape), depth)
    if len(robots):
        d = _people_depth(robots.positions, pose, dx, dy, robots.radius_m)[0].astype(np.float32)[None, :]
        z = camera.height_m - z_per_depth * d
        inside = (z >= 0.0) & (z <= ROBOT_HEIGHT_M) & (d < depth)
        depth = np.where(inside, np.broadcast_to(d, depth.shape), depth)
    return depth


def intrinsics(camera: CameraSpec) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels of the pictures render() and depth_image() draw: square pixels, each pixel's
    ray through its centre (so cx, cy are half a pixel short of the middle)."""
    f = (camera.width / 2) / math.tan(math.radians(camera.hfov_deg) / 2)
    return f, f, camera.width / 2 - 0.5, camera.height / 2 - 0.5


def encode_depth(depth_m: np.ndarray, encoding: str, range_max_m: float) -> np.ndarray:
    """A depth image as a sensor_msgs/Image carries it (REP 118): '32FC1' metres with +inf beyond range_max_m,
    '16UC1' millimetres with 0 (no reading) beyond range_max_m or 65.535 m."""
    beyond = depth_m > range_max_m
    if encoding == '32FC1':
        return np.where(beyond, np.float32(np.inf), depth_m).astype(np.float32)
    if encoding == '16UC1':
        mm = np.rint(depth_m * 1000.0)
        return np.where(beyond | (mm > 65535), 0, mm).astype(np.uint16)
    raise ValueError(f'depth encoding {encoding!r} is neither 32FC1 nor 16UC1')


def _people_depth(centres: np.ndarray, pose: Pose2D, dx: np.ndarray, dy: np.ndarray,
                  radius_m: float = PERSON_RADIUS_M) -> tuple[np.ndarray, np.ndarray]:
    """Each column's depth to the nearest cylinder of radius_m (a person's unless told; inf where it sees none)
    and which one (W,)."""
    a2 = dx * dx + dy * dy                                                # the rays are not unit: t is depth
    mx, my = pose.x - centres[:, 0], pose.y - centres[:, 1]
    b = dx[:, None] * mx + dy[:, None] * my                               # (W, P)
    disc = b * b - a2[:, None] * (mx * mx + my * my - radius_m ** 2)
    root = np.sqrt(np.maximum(disc, 0.0))
    near = (-b - root) / a2[:, None]
    hit = (disc >= 0.0) & (near > 1e-6)
    t = np.where(hit, near, np.inf)
    who = np.argmin(t, axis=1)
    return t[np.arange(len(dx)), who], who


def _draw_people(image: np.ndarray, scene: Scene, pose: Pose2D, camera: CameraSpec, people: PeopleView) -> None:
    """Paint the people over the picture where they are nearer than what it shows: trousers, shirt, head."""
    seen = _bodies_in_view(scene, pose, camera, people.positions, PERSON_RADIUS_M, PERSON_HEIGHT_M, NO_PEOPLE)
    if seen is None:
        return
    columns, d, who, z, inside = seen
    shirts = np.array(people.bgr, np.float32)[who]                                  # (C, 3)
    bands = np.stack([np.broadcast_to(np.asarray(_TROUSERS, np.float32), shirts.shape), shirts,
                      np.broadcast_to(np.asarray(_SKIN, np.float32), shirts.shape)], axis=1)   # (C, 3, 3)
    colours = _fogged(bands, np.broadcast_to(d[:, None], (len(columns), 3)))
    band = (z >= _WAIST_M).astype(np.int32) + (z >= _NECK_M)
    _paint(image, columns, inside, colours[np.arange(len(columns))[None, :], band])                 # (H, C, 3)


def _render_scene(scene: Scene, pose: Pose2D, camera: CameraSpec) -> np.ndarray:
    optics, geo = _optics(camera), _geometry(scene)
    width, height = camera.width, camera.height
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    dx, dy = c + s * optics.a, s - c * optics.a        # the body ray (1, -a) turned by yaw: t is depth
    t, u = _cast(geo.segments, pose.x, pose.y, dx, dy)
    columns = np.arange(width)

    # Walls: the nearest wall per column, and its colours stacked in height (baseboard or door, frame, wall).
    wall = np.argmin(t[:, :geo.n_walls], axis=1)
    wall_depth = np.minimum(t[columns, wall], FAR_M)
    along = u[columns, wall] * geo.wall_length[wall]
    cuts = np.full((width, _BANDS - 1), BASEBOARD_M, np.float32)
    colours = np.empty((width, _BANDS, 3), np.float32)
    colours[:] = geo.wall_bgr[wall][:, None]
    colours[:, 0] = np.asarray(BASEBOARD, np.float32) * geo.wall_shade[wall][:, None]
    if len(geo.door_wall):
        _draw_doors(geo, wall, along, cuts, colours)
    colours = _fogged(colours, wall_depth[:, None])

    # Every pixel: wall where the wall is nearer than the row's floor or ceiling, else floor or ceiling.
    z = (camera.height_m - optics.b[:, None] * wall_depth[None, :]).astype(np.float32)
    band = (z >= cuts[:, 0]).astype(np.int32)
    for k in range(1, _BANDS - 1):
        band += z >= cuts[:, k]
    index = np.where(optics.row_depth[:, None] > wall_depth[None, :], 2 * height + columns * _BANDS + band,
                     _floor_and_ceiling(optics, pose, dx, dy))
    palettes = [optics.palette, colours.reshape(-1, 3)]
    if len(scene.landmarks):
        palettes += _draw_landmarks(geo, optics, camera, t, wall_depth, index, base=2 * height + width * _BANDS)
    palette = np.clip(np.concatenate(palettes), 0, 255).astype(np.uint8)
    return palette[index]


def _draw_doors(geo: _Geometry, wall: np.ndarray, along: np.ndarray, cuts: np.ndarray, colours: np.ndarray) -> None:
    """Door columns: the leaf up to DOOR_HEIGHT_M (with a handle band in the handle's columns) under the frame's
    top bar; frame columns: the frame from the floor up."""
    on = (geo.door_wall[None, :] == wall[:, None]) & \
        (np.abs(along[:, None] - geo.door_s[None, :]) < geo.door_half[None, :] + FRAME_M)
    columns = np.flatnonzero(on.any(axis=1))
    if not len(columns):
        return
    door = np.argmax(on[columns], axis=1)
    offset = along[columns] - geo.door_s[door]
    leaf = np.abs(offset) < geo.door_half[door]
    handle = leaf & (np.abs(offset - (geo.door_half[door] - HANDLE_INSET_M)) < HANDLE_HALF_WIDTH_M)
    shade = geo.wall_shade[wall[columns]][:, None]
    frame, knob = np.asarray(FRAME, np.float32) * shade, np.asarray(HANDLE, np.float32) * shade
    leaf_bgr = geo.door_bgr[door] * shade
    top = DOOR_HEIGHT_M + FRAME_M
    for mask, column_cuts, column_colours in (
            (~leaf, (top, top, top, top), (frame,)),
            (leaf & ~handle, (DOOR_HEIGHT_M, top, top, top), (leaf_bgr, frame)),
            (handle, (HANDLE_Z_M - HANDLE_HALF_HEIGHT_M, HANDLE_Z_M + HANDLE_HALF_HEIGHT_M, DOOR_HEIGHT_M, top),
             (leaf_bgr, knob, leaf_bgr, frame))):
        picked = columns[mask]
        cuts[picked] = column_cuts
        for k, bgr in enumerate(column_colours):
            colours[picked, k] = bgr[mask]


def _floor_and_ceiling(optics: _Optics, pose: Pose2D, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Palette indices of the floor checker and the ceiling lights (rows near the horizon get either: a wall
    is always nearer there)."""
    height = len(optics.b)
    out = np.empty((height, len(dx)), np.int32)
    out[:] = (2 * np.arange(height, dtype=np.int32))[:, None]
    depth = np.minimum(optics.row_depth, FAR_M).astype(np.float32)[:, None]
    floor = slice(optics.floor_from, height)
    # +1e4 keeps the numbers positive so that truncation floors; the parity of the sum is unchanged.
    ix = (depth[floor] * (dx / CHECKER_M).astype(np.float32) + (pose.x / CHECKER_M + 1e4)).astype(np.int32)
    iy = (depth[floor] * (dy / CHECKER_M).astype(np.float32) + (pose.y / CHECKER_M + 1e4)).astype(np.int32)
    out[floor] += (ix + iy) & 1
    ceiling = slice(0, optics.ceiling_rows)
    fx = depth[ceiling] * (dx / LIGHT_PITCH_M).astype(np.float32) + pose.x / LIGHT_PITCH_M
    fy = depth[ceiling] * (dy / LIGHT_PITCH_M).astype(np.float32) + pose.y / LIGHT_PITCH_M
    near = LIGHT_HALF_M / LIGHT_PITCH_M
    lit = (np.abs(fx - np.floor(fx) - 0.5) < near) & (np.abs(fy - np.floor(fy) - 0.5) < near)
    out[ceiling] += lit
    return out


def _draw_landmarks(geo: _Geometry, optics: _Optics, camera: CameraSpec, t: np.ndarray, wall_depth: np.ndarray,
                    index: np.ndarray, base: int) -> list[np.ndarray]:
    """Paint each landmark box that is nearer than the wall into `index` (nearest box wins per pixel); returns the
    palette entries they use, (column, band) per landmark from `base` on."""
    width = camera.width
    n = len(geo.landmark_cuts)
    faces = t[:, geo.n_walls:].reshape(width, n, 4)
    face = np.argmin(faces, axis=2)
    depth = np.take_along_axis(faces, face[..., None], axis=2)[..., 0]       # (W, n)
    shade = np.where(face >= 2, SHADE_ALONG_X, 1.0).astype(np.float32)    # faces 2, 3 run along x
    nearest = np.full(index.shape, np.inf, np.float32) if n > 1 else None
    palettes = []
    for i in range(n):
        seen = depth[:, i] < wall_depth
        colours = geo.landmark_bgr[i][None] * shade[:, i, None, None]      # (W, 3 bands, 3)
        palettes.append(_fogged(colours, np.minimum(depth[:, i], FAR_M)[:, None]).reshape(-1, 3))
        columns = np.flatnonzero(seen)
        if not len(columns):
            continue
        span = slice(columns[0], columns[-1] + 1)
        d = np.where(seen[span], depth[span, i], FAR_M).astype(np.float32)
        z = camera.height_m - optics.b[:, None].astype(np.float32) * d[None, :]
        z1, z2, top = geo.landmark_cuts[i]
        inside = seen[None, span] & (z >= 0.0) & (z <= top)
        if nearest is not None:
            inside &= d[None, :] < nearest[:, span]
            nearest[:, span][inside] = np.broadcast_to(d[None, :], inside.shape)[inside]
        band = (z >= z1).astype(np.int32) + (z >= z2)
        entry = base + i * width * 3 + np.arange(span.start, span.stop, dtype=np.int32)[None, :] * 3 + band
        index[:, span][inside] = entry[inside]
    return palettes


# -- the map ------------------------------------------------------------------------------------------------------

_OUTSIDE, _FREE, _WALL = (95, 95, 95), (238, 238, 234), (40, 40, 40)
_ROUTE, _START, _GOAL = (200, 120, 0), (0, 150, 0), (0, 0, 210)


def render_top_down(scene: Scene,
                    px_per_m: float = 40.0) -> tuple[np.ndarray, Callable[[float, float], tuple[int, int]]]:
    """A map of the scene from above (BGR uint8): free space light, walls dark, doors as ticks in their colour,
    landmarks as boxes, the route dashed, the start (green) and goal (red) as arrows; and the world -> pixel
    function, for drawing a robot's path on it."""
    xs = [v for w in scene.walls for v in (w.x0, w.x1)]
    ys = [v for w in scene.walls for v in (w.y0, w.y1)]
    margin = 0.5
    x_min, y_max = min(xs) - margin, max(ys) + margin
    width = int(math.ceil((max(xs) - min(xs) + 2 * margin) * px_per_m)) + 1
    height = int(math.ceil((max(ys) - min(ys) + 2 * margin) * px_per_m)) + 1

    def to_px(x: float, y: float) -> tuple[int, int]:
        return int(round((x - x_min) * px_per_m)), int(round((y_max - y) * px_per_m))

    line = max(1, round(px_per_m / 20))
    img = np.full((height, width, 3), _OUTSIDE, np.uint8)
    for w in scene.walls:
        cv2.line(img, to_px(w.x0, w.y0), to_px(w.x1, w.y1), _WALL, line + 1)
    cv2.floodFill(img, None, to_px(scene.start.x, scene.start.y), _FREE)
    for d in scene.doors:
        ux, uy = -math.sin(d.facing) * d.width / 2, math.cos(d.facing) * d.width / 2
        ends = to_px(d.x - ux, d.y - uy), to_px(d.x + ux, d.y + uy)
        cv2.line(img, *ends, _WALL, 3 * line + 2)
        cv2.line(img, *ends, d.bgr, 3 * line)
    for m in scene.landmarks:
        corners = to_px(m.x - m.size_x / 2, m.y + m.size_y / 2), to_px(m.x + m.size_x / 2, m.y - m.size_y / 2)
        cv2.rectangle(img, *corners, m.bgr, -1)
        cv2.rectangle(img, *corners, _WALL, 1)
    dots = sample_polyline(scene.route, 0.1)
    for k in range(0, len(dots) - 1, 2):
        cv2.line(img, to_px(*dots[k]), to_px(*dots[k + 1]), _ROUTE, line, cv2.LINE_AA)
    for pose, colour in ((scene.start, _START), (scene.goal, _GOAL)):
        tip = to_px(pose.x + 0.5 * math.cos(pose.yaw), pose.y + 0.5 * math.sin(pose.yaw))
        cv2.circle(img, to_px(pose.x, pose.y), max(3, round(0.15 * px_per_m)), colour, line + 1, cv2.LINE_AA)
        cv2.arrowedLine(img, to_px(pose.x, pose.y), tip, colour, line + 1, cv2.LINE_AA, tipLength=0.35)
    return img, to_px
