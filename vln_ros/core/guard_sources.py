"""The collision guard's sensors: their parameters and message-shaped data -> 2D obstacle points. No ROS.

Each converter takes anything shaped like its message (rclpy messages, rosbags messages, plain objects in
tests), checks it completely before touching the buffer, applies the source's static mount transform and
height band, and returns the obstacle points in the base frame as an (N, 2) float32 array (x forward, y
left, REP 103). Everything is vectorized: no Python loop per beam, point or pixel.

A message that cannot be trusted raises SensorRejected with a reason code (RejectReason); the guard counts
it and, for a required source, stops the robot. The rules, chosen for a safety layer (a blind sensor is not
evidence of free space):
- LaserScan (REP 117): a range within [range_min, range_max] is an obstacle; +inf and finite values beyond
  range_max say "nothing within range" (free); -inf says "too close to measure" and becomes an obstacle at
  range_min (REP 117's meaning, not an invalid beam); NaN and finite values below range_min carry no
  information and are dropped. A scan with no informative beam at all is rejected (no_valid_points).
- PointCloud2: x, y and z must be FLOAT32 or FLOAT64 fields inside point_step; the data must be exactly
  row_step * height bytes; NaN/inf points are dropped. An empty cloud or one with no finite point is
  rejected. A cloud with more than max_points points is REJECTED, not decimated: a decimated cloud can lose
  exactly the thin obstacle the guard is for, and a rejection is visible (counted, and a stop for a
  required source) where a silent decimation is not. Raise max_points if the sensor sends more.
- Depth image: 16UC1 (millimetres) or 32FC1 (metres), read every stride_px-th row and column, projected
  with the latest CameraInfo's K (the image is taken as rectified: distortion is not applied); 0, NaN and
  inf depths are dropped; an image with no valid depth is rejected. max_points counts the pixels read.
- Every message's header.frame_id must be the source's frame_id (a leading '/' is ignored): the mount
  transform is only right for that frame.
"""
from __future__ import annotations

import enum
import functools
import math
from typing import Any, Protocol

import numpy as np

from vln_ros.core.schema import StrictModel, param

# sensor_msgs/PointField datatypes the guard reads for x, y and z (the other six are integer types).
FLOAT32 = 7
FLOAT64 = 8
_FLOAT_TYPES = {FLOAT32: 'f4', FLOAT64: 'f8'}


class RejectReason(enum.Enum):
    """Why a sensor message was not used; the value is the counter's name."""

    WRONG_FRAME = 'wrong_frame'
    EMPTY = 'empty'
    TOO_MANY_POINTS = 'too_many_points'
    NO_VALID_POINTS = 'no_valid_points'
    SIZE_MISMATCH = 'size_mismatch'
    MISSING_FIELD = 'missing_field'
    BAD_FIELD = 'bad_field'
    BAD_GEOMETRY = 'bad_geometry'            # scan angles or range limits that are not a scan
    UNKNOWN_ENCODING = 'unknown_encoding'
    NO_CAMERA_INFO = 'no_camera_info'
    BAD_CAMERA_INFO = 'bad_camera_info'
    STALE = 'stale'                          # header stamp older than the source's timeout on arrival
    MALFORMED = 'malformed'                  # not shaped like the message at all (missing attribute...)


class SensorRejected(ValueError):
    """A sensor message the guard must not use; `reason` says which rule it broke."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f'{reason.value}: {detail}')
        self.reason = reason


# --------------------------------------------------------------------------------------------------
# Parameters: guard.laser, guard.pointcloud, guard.depth (ROS parameters cannot be lists of objects, so
# the sources are fixed slots). Fixed while running: what builds subscriptions or decides how much the
# guard trusts (enabled, optional, topics, frame ids) and the mount (a calibration, like a static TF).


class MountParams(StrictModel):
    """Pose of the sensor's frame in the robot's base frame (what `static_transform_publisher --frame-id
    base_link --child-frame-id <sensor frame>` takes; tf2 is not on PyPI, so the guard takes it as
    parameters). Rotation: roll about x, then pitch about y, then yaw about z (fixed axes, as URDF)."""

    x_m: float = param(0.0, 'Sensor frame origin, forward of the base origin', 'm', ge=-10.0, le=10.0)
    y_m: float = param(0.0, 'Sensor frame origin, left of the base origin', 'm', ge=-10.0, le=10.0)
    z_m: float = param(0.0, 'Sensor frame origin, above the base origin', 'm', ge=-10.0, le=10.0)
    roll_rad: float = param(0.0, 'Sensor frame roll (about x)', 'rad', ge=-3.1416, le=3.1416)
    pitch_rad: float = param(0.0, 'Sensor frame pitch (about y; positive tilts x down)', 'rad',
                             ge=-3.1416, le=3.1416)
    yaw_rad: float = param(0.0, 'Sensor frame yaw (about z, CCW)', 'rad', ge=-3.1416, le=3.1416)

    def is_level(self) -> bool:
        return abs(self.roll_rad) < 1e-6 and abs(self.pitch_rad) < 1e-6

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(R, t): p_base = R @ p_sensor + t."""
        return _mount_matrix(self.x_m, self.y_m, self.z_m, self.roll_rad, self.pitch_rad, self.yaw_rad)


class LaserMountParams(MountParams):
    """guard.laser.mount (the default: a level laser 0.2 m above the base origin, looking forward)."""

    z_m: float = param(0.2, 'Sensor frame origin, above the base origin', 'm', ge=-10.0, le=10.0)


class DepthMountParams(MountParams):
    """guard.depth.mount (the default: an optical frame 0.3 m up looking forward, z forward, x right, y down)."""

    z_m: float = param(0.3, 'Sensor frame origin, above the base origin', 'm', ge=-10.0, le=10.0)
    roll_rad: float = param(-math.pi / 2, 'Sensor frame roll (about x)', 'rad', ge=-3.1416, le=3.1416)
    yaw_rad: float = param(-math.pi / 2, 'Sensor frame yaw (about z, CCW)', 'rad', ge=-3.1416, le=3.1416)


@functools.lru_cache(maxsize=16)
def _mount_matrix(x: float, y: float, z: float, roll: float, pitch: float,
                  yaw: float) -> tuple[np.ndarray, np.ndarray]:
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    rot = np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                    [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                    [-sp, cp * sr, cp * cr]])
    rot.flags.writeable = False   # cached and shared
    t = np.array([x, y, z])
    t.flags.writeable = False
    return rot, t


class SourceParams(StrictModel):
    """One sensor the guard watches (GuardParams checks the rules across its fields, naming the source)."""

    enabled: bool = param(False, 'Watch this sensor')
    optional: bool = param(False, 'When false (default) this sensor never heard, silent past timeout_s or whose '
                           'last message was rejected stops the robot; when true its data is used while it '
                           'is fresh and ignored otherwise')
    topic: str = param('', 'Topic the sensor publishes on')
    frame_id: str = param('', "The messages' header.frame_id, the frame `mount` describes; others are rejected")
    min_height_m: float = param(0.05, 'Points lower than this above the base origin are ignored (the floor)', 'm',
                                ge=-5.0, le=5.0, dynamic=True)
    max_height_m: float = param(0.6, 'Points higher than this above the base origin are ignored (ceiling, '
                                'table tops the robot passes under)', 'm', ge=-5.0, le=5.0, dynamic=True)
    timeout_s: float = param(0.5, 'No message accepted for this long counts as silent', 's', gt=0.0, le=10.0,
                             dynamic=True)
    max_points: int = param(100_000, 'Messages with more points (beams, pixels read) than this are rejected, not '
                            'decimated', ge=1, le=10_000_000, dynamic=True)
    mount: MountParams = MountParams()


class LaserParams(SourceParams):
    """guard.laser: a sensor_msgs/LaserScan (a 2D lidar, or a 3D one's scan)."""

    enabled: bool = param(True, 'Watch this sensor')
    topic: str = param('scan', 'Topic the sensor publishes on')
    frame_id: str = param('laser', "The messages' header.frame_id, the frame `mount` describes; others are rejected")
    max_points: int = param(4096, 'Scans with more beams than this are rejected', ge=1, le=1_000_000, dynamic=True)
    mount: LaserMountParams = LaserMountParams()


class PointCloudParams(SourceParams):
    """guard.pointcloud: a sensor_msgs/PointCloud2 (a Go2's L1, a Livox lidar)."""

    topic: str = param('points', 'Topic the sensor publishes on')
    frame_id: str = param('lidar', "The messages' header.frame_id, the frame `mount` describes; others are rejected")


class DepthParams(SourceParams):
    """guard.depth: a depth image (16UC1 mm or 32FC1 m) with its sensor_msgs/CameraInfo."""

    topic: str = param('depth/image_raw', 'Topic the sensor publishes on')
    frame_id: str = param('camera_depth_optical_frame', "The messages' header.frame_id (an optical frame: z "
                          'forward, x right, y down), the frame `mount` describes; others are rejected')
    camera_info_topic: str = param('depth/camera_info', "The depth camera's sensor_msgs/CameraInfo")
    mount: DepthMountParams = DepthMountParams()
    stride_px: int = param(4, 'Read every stride_px-th row and column of the depth image', 'px', ge=1, le=64,
                           dynamic=True)


# --------------------------------------------------------------------------------------------------
# Message shapes (structural: rclpy and rosbags messages and test objects all fit).


class _Header(Protocol):
    frame_id: str


class LaserScanLike(Protocol):
    header: _Header
    angle_min: float
    angle_increment: float
    range_min: float
    range_max: float
    ranges: Any          # float32[]: array.array, list, numpy array


class PointFieldLike(Protocol):
    name: str
    offset: int
    datatype: int
    count: int


class PointCloud2Like(Protocol):
    header: _Header
    height: int
    width: int
    fields: Any          # sequence of PointFieldLike
    is_bigendian: bool
    point_step: int
    row_step: int
    data: Any            # uint8[]: anything with the buffer protocol


class ImageLike(Protocol):
    header: _Header
    height: int
    width: int
    encoding: str
    is_bigendian: Any
    step: int
    data: Any


class CameraInfoLike(Protocol):
    header: _Header
    height: int
    width: int
    k: Any               # 9 floats, row-major 3x3


def check_frame(frame_id: str, src: SourceParams) -> None:
    if frame_id.lstrip('/') != src.frame_id.lstrip('/'):
        raise SensorRejected(RejectReason.WRONG_FRAME,
                             f'frame_id {frame_id!r}, expected {src.frame_id!r} (the frame its mount describes)')


def to_base(xyz: tuple[np.ndarray, np.ndarray, np.ndarray], src: SourceParams) -> np.ndarray:
    """Sensor-frame coordinates -> base-frame (N, 2) float32 points inside the source's height band."""
    rot, t = src.mount.matrix()
    x, y, z = xyz
    zb = rot[2, 0] * x + rot[2, 1] * y + rot[2, 2] * z + t[2]
    keep = (zb >= src.min_height_m) & (zb <= src.max_height_m)
    x, y, z = x[keep], y[keep], z[keep]
    out = np.empty((x.size, 2), np.float32)
    out[:, 0] = rot[0, 0] * x + rot[0, 1] * y + rot[0, 2] * z + t[0]
    out[:, 1] = rot[1, 0] * x + rot[1, 1] * y + rot[1, 2] * z + t[1]
    return out


@functools.lru_cache(maxsize=8)
def _beam_directions(angle_min: float, angle_increment: float, count: int) -> tuple[np.ndarray, np.ndarray]:
    # A scanner's geometry does not change between scans: the sines and cosines are computed once.
    angles = angle_min + angle_increment * np.arange(count, dtype=np.float64)
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    cos.flags.writeable = False
    sin.flags.writeable = False
    return cos, sin


def scan_to_points(msg: LaserScanLike, src: SourceParams) -> np.ndarray:
    """A LaserScan's obstacles as base-frame (N, 2) float32 points (rules in the module docstring)."""
    check_frame(msg.header.frame_id, src)
    ranges = np.asarray(msg.ranges, dtype=np.float32).ravel()
    if ranges.size == 0:
        raise SensorRejected(RejectReason.EMPTY, 'scan without ranges')
    if ranges.size > src.max_points:
        raise SensorRejected(RejectReason.TOO_MANY_POINTS, f'{ranges.size} beams (max_points {src.max_points})')
    angle_min, increment = float(msg.angle_min), float(msg.angle_increment)
    range_min, range_max = float(msg.range_min), float(msg.range_max)
    if not (math.isfinite(angle_min) and math.isfinite(increment) and increment != 0.0
            and abs(increment) * (ranges.size - 1) <= 2.0 * math.pi + 1e-3):
        raise SensorRejected(RejectReason.BAD_GEOMETRY, f'angle_min {angle_min}, angle_increment {increment} '
                             f'for {ranges.size} beams (a scan spans at most 2 pi)')
    if not (math.isfinite(range_min) and math.isfinite(range_max) and 0.0 <= range_min < range_max):
        raise SensorRejected(RejectReason.BAD_GEOMETRY, f'range_min {range_min}, range_max {range_max}')
    too_close = ranges == -np.inf
    # NaN compares false both ways, so it is in neither mask.
    hit = ((ranges >= range_min) & (ranges <= range_max)) | too_close
    if not hit.any() and not (ranges > range_max).any():
        raise SensorRejected(RejectReason.NO_VALID_POINTS, f'none of {ranges.size} beams is a measurement '
                             '(all NaN or below range_min)')
    cos, sin = _beam_directions(angle_min, increment, ranges.size)
    r = np.where(too_close, np.float32(range_min), ranges)[hit]
    x, y = r * cos[hit], r * sin[hit]
    return to_base((x, y, np.zeros_like(x)), src)


def cloud_to_points(msg: PointCloud2Like, src: SourceParams) -> np.ndarray:
    """A PointCloud2's obstacles as base-frame (N, 2) float32 points (rules in the module docstring)."""
    check_frame(msg.header.frame_id, src)
    height, width, point_step, row_step = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    if height < 0 or width < 0:
        raise SensorRejected(RejectReason.SIZE_MISMATCH, f'{width} x {height} points')
    count = height * width
    if count == 0:
        raise SensorRejected(RejectReason.EMPTY, f'{width} x {height} points')
    if count > src.max_points:
        raise SensorRejected(RejectReason.TOO_MANY_POINTS, f'{count} points (max_points {src.max_points})')
    fields = {f.name: f for f in msg.fields}
    names, formats, offsets = [], [], []
    order = '>' if msg.is_bigendian else '<'
    for axis in ('x', 'y', 'z'):
        field = fields.get(axis)
        if field is None:
            raise SensorRejected(RejectReason.MISSING_FIELD, f'no {axis!r} field (fields: {sorted(fields)})')
        if field.datatype not in _FLOAT_TYPES or field.count > 1:
            raise SensorRejected(RejectReason.BAD_FIELD, f'field {axis!r} has datatype {field.datatype}, count '
                                 f'{field.count} (expected one FLOAT32 ({FLOAT32}) or FLOAT64 ({FLOAT64}))')
        size = 4 if field.datatype == FLOAT32 else 8
        if field.offset < 0 or field.offset + size > point_step:
            raise SensorRejected(RejectReason.SIZE_MISMATCH, f'field {axis!r} at offset {field.offset} does not '
                                 f'fit in point_step {point_step}')
        names.append(axis)
        formats.append(order + _FLOAT_TYPES[field.datatype])
        offsets.append(field.offset)
    if row_step < width * point_step:
        raise SensorRejected(RejectReason.SIZE_MISMATCH, f'row_step {row_step} < width {width} x point_step '
                             f'{point_step}')
    data = np.frombuffer(msg.data, np.uint8)
    if data.size != row_step * height:
        raise SensorRejected(RejectReason.SIZE_MISMATCH, f'{data.size} bytes of data, expected row_step '
                             f'{row_step} x height {height} = {row_step * height}')
    dtype = np.dtype({'names': names, 'formats': formats, 'offsets': offsets, 'itemsize': point_step})
    # A strided view: padded rows (row_step > width * point_step) and padded points cost no copy.
    cloud = np.ndarray((height, width), dtype, buffer=data, strides=(row_step, point_step))
    x = cloud['x'].ravel().astype(np.float32)
    y = cloud['y'].ravel().astype(np.float32)
    z = cloud['z'].ravel().astype(np.float32)
    finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    if not finite.any():
        raise SensorRejected(RejectReason.NO_VALID_POINTS, f'none of {count} points is finite')
    if not finite.all():
        x, y, z = x[finite], y[finite], z[finite]
    return to_base((x, y, z), src)


class CameraModel:
    """The pinhole part of a CameraInfo the depth projection needs, checked once per CameraInfo."""

    def __init__(self, info: CameraInfoLike) -> None:
        k = np.asarray(info.k, dtype=np.float64).ravel()
        if k.size != 9 or not np.isfinite(k).all():
            raise SensorRejected(RejectReason.BAD_CAMERA_INFO, f'K = {k.tolist()} (9 finite values needed)')
        self.fx, self.fy, self.cx, self.cy = float(k[0]), float(k[4]), float(k[2]), float(k[5])
        self.width, self.height = int(info.width), int(info.height)
        if self.fx <= 0.0 or self.fy <= 0.0 or self.width <= 0 or self.height <= 0:
            raise SensorRejected(RejectReason.BAD_CAMERA_INFO, f'fx {self.fx}, fy {self.fy}, '
                                 f'{self.width} x {self.height} px (uncalibrated camera?)')
        self.frame_id = info.header.frame_id


@functools.lru_cache(maxsize=4)
def _pixel_rays(width: int, height: int, stride: int, fx: float, fy: float, cx: float,
                cy: float) -> tuple[np.ndarray, np.ndarray]:
    # (u - cx) / fx and (v - cy) / fy of the pixels read: fixed for a camera and a stride.
    u = (np.arange(0, width, stride, dtype=np.float64) - cx) / fx
    v = (np.arange(0, height, stride, dtype=np.float64) - cy) / fy
    rx, ry = np.meshgrid(u.astype(np.float32), v.astype(np.float32))
    rx.flags.writeable = False
    ry.flags.writeable = False
    return rx, ry


_DEPTH_ENCODINGS = {'16UC1': ('u2', 0.001), '32FC1': ('f4', 1.0)}


def depth_to_points(image: ImageLike, camera: CameraModel | None, src: DepthParams) -> np.ndarray:
    """A depth image's obstacles as base-frame (N, 2) float32 points (rules in the module docstring)."""
    check_frame(image.header.frame_id, src)
    if camera is None:
        raise SensorRejected(RejectReason.NO_CAMERA_INFO, 'no CameraInfo received yet')
    width, height, step = int(image.width), int(image.height), int(image.step)
    if width <= 0 or height <= 0:
        raise SensorRejected(RejectReason.EMPTY, f'{width} x {height} image')
    if (width, height) != (camera.width, camera.height):
        raise SensorRejected(RejectReason.SIZE_MISMATCH, f'{width} x {height} image, CameraInfo says '
                             f'{camera.width} x {camera.height}')
    if image.encoding not in _DEPTH_ENCODINGS:
        raise SensorRejected(RejectReason.UNKNOWN_ENCODING, f'encoding {image.encoding!r} (depth images are '
                             f'{" or ".join(_DEPTH_ENCODINGS)})')
    kind, scale = _DEPTH_ENCODINGS[image.encoding]
    itemsize = int(kind[1])
    stride = src.stride_px
    read = -(-width // stride) * -(-height // stride)
    if read > src.max_points:
        raise SensorRejected(RejectReason.TOO_MANY_POINTS, f'{read} pixels at stride {stride} '
                             f'(max_points {src.max_points})')
    if step < width * itemsize:
        raise SensorRejected(RejectReason.SIZE_MISMATCH, f'step {step} < width {width} x {itemsize} bytes')
    data = np.frombuffer(image.data, np.uint8)
    if data.size != step * height:
        raise SensorRejected(RejectReason.SIZE_MISMATCH, f'{data.size} bytes of data, expected step {step} x '
                             f'height {height} = {step * height}')
    dtype = np.dtype(('>' if image.is_bigendian else '<') + kind)
    pixels = np.ndarray((height, width), dtype, buffer=data, strides=(step, itemsize))[::stride, ::stride]
    depth = pixels.astype(np.float32) * np.float32(scale)
    valid = np.isfinite(depth) & (depth > 0.0)
    if not valid.any():
        raise SensorRejected(RejectReason.NO_VALID_POINTS, f'none of {depth.size} pixels read has a depth')
    rx, ry = _pixel_rays(width, height, stride, camera.fx, camera.fy, camera.cx, camera.cy)
    d = depth[valid]
    return to_base((rx[valid] * d, ry[valid] * d, d), src)
