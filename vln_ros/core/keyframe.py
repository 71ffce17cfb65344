"""The keyframe sampler: which camera frames are worth a (slow, costly) VLM call.

Every frame is reduced to a small grayscale copy and compared with the last keyframe (the reference),
after taking out what the camera does on its own:
- motion: the global translation since the reference is estimated (phase correlation, windowed) and
  undone; the part of the frame the shifted reference does not cover is new content. The shift is used
  only where it lowers the score, so a wrong estimate (on a cut, say) cannot make a still scene change;
- exposure: on the overlap, the frame's mean and spread are matched to the reference's (a global gain,
  1/3x-3x, and offset), so auto-exposure ramps and flicker are no change; the mean brightness changing
  by more than 2x is the light changing, and a change.
Then, on the overlap:
- local: the share of the cells of an 8 x 8 grid whose mean difference reaches cell_level (gray levels).
  A pixel's difference is its distance to the range of the other frame's 3 x 3 neighbourhood, both ways,
  so misalignment of up to 1 px (sub-pixel motion, a little roll) is none. A person or a door, a small
  part of the frame, changes a few cells fully where a whole-frame mean dilutes it into nothing;
- histogram (total-variation distance of the intensity histograms), pixel (mean absolute difference /
  255) and edge (share of edge pixels with no counterpart within 1 px in the other frame; Canny with
  thresholds relative to the image's standard deviation, so edges do not depend on brightness), each in
  [0, 1]: their weighted sum is the global score.
The change score is the changed share of the frame, new + (1 - new) * local, or the global score where
that is larger. A frame becomes a keyframe when the score reaches the threshold (no sooner than
min_interval_s after the last keyframe), when max_interval_s has passed without one, or when the caller
asks (force); the first frame always is. Comparing with the last keyframe, not the previous frame, makes
a slow pan trigger once the new content it brought in passes the threshold. A frame of another aspect
ratio than the last keyframe is skipped; a second one in a row (the camera changed its mode) starts over
from it.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import cv2
import numpy as np

from vln_ros.core.config import KeyframeParams
from vln_ros.core.images import shrink

_DILATE = _NEAR = np.ones((3, 3), np.uint8)
# Canny thresholds in standard deviations of the image (gain invariant: Sobel is linear), with floors in
# gray levels so that the sensor noise of a nearly blank frame does not become edges.
_CANNY_LOW, _CANNY_HIGH = 1.0, 2.5
_CANNY_FLOOR_LOW, _CANNY_FLOOR_HIGH = 15.0, 40.0
# Edge scores divide by the edge count; this floor (share of pixels) keeps a few noise edges in a
# nearly blank frame from reading as a total change.
_MIN_EDGE_SHARE = 0.01
_GRID = 8              # cells per side of the local-change grid
_MAX_GAIN = 3.0        # exposure compensation stays within 1/_MAX_GAIN .. _MAX_GAIN; beyond it is a change
# Mean brightness changing by more than this factor is the light changing (lights off, into a dark room), not
# the camera's exposure settling (ramps of 5-35 %): a change, whatever the compensation makes of it.
_MAX_BRIGHTNESS_RATIO = 2.0
_MIN_STD = 1.0         # gray levels: a flatter frame (or reference) gets no gain compensation
_MIN_MOTION_SIDE = 16  # px: analysis copies thinner than this get no motion estimate
_MIN_SHIFT_PX = 0.25   # px: smaller motion estimates are not tried


class Reason(enum.Enum):
    FIRST = 'first'                # nothing to compare with yet
    CHANGE = 'change'              # score reached the threshold
    MAX_INTERVAL = 'max_interval'  # still scene, but too long since the last keyframe
    REQUESTED = 'requested'        # the caller asked for a keyframe (decide(..., force=True))
    CLOCK_JUMP = 'clock_jump'      # stamp went backwards (bag loop, clock reset): start over
    NEW_SHAPE = 'new_shape'        # second frame in a row of another aspect ratio (camera reconfigured): start over
    ODD_SHAPE = 'odd_shape'        # not a keyframe: another aspect ratio than the last keyframe, not compared
    STILL = 'still'                # not a keyframe: score below the threshold
    MIN_INTERVAL = 'min_interval'  # not a keyframe: too soon after the last one


@dataclass(frozen=True, slots=True)
class Decision:
    """One frame's verdict with the numbers behind it (module docstring). local: share of the grid cells
    that changed; shift_x, shift_y: how far the content moved since the last keyframe, as a share of the
    frame's width and height (0 where the motion estimate did not lower the score); gain: the exposure
    compensation applied (reference's spread / frame's). NaN where the frame was not compared."""

    keyframe: bool
    reason: Reason
    score: float
    histogram: float
    pixel: float
    edge: float
    since_last_s: float
    local: float = math.nan
    shift_x: float = math.nan
    shift_y: float = math.nan
    gain: float = math.nan


@dataclass(frozen=True, slots=True)
class _Signature:
    gray: np.ndarray       # uint8, analysis size
    gray_f: np.ndarray     # the same, float32
    windowed: np.ndarray | None  # zero mean, times a Hanning window: the motion estimate's input (None: too small)
    edges: np.ndarray      # uint8 0/255
    edges_dilated: np.ndarray


@dataclass(frozen=True, slots=True)
class _Scores:
    score: float
    histogram: float
    pixel: float
    edge: float
    local: float
    shift_x: float
    shift_y: float
    gain: float


def downscale_gray(image: np.ndarray, side: int) -> np.ndarray:
    """Small grayscale copy (longest side `side`) of a BGR/BGRA/gray uint8 image; ~0.15 ms from 1080p.
    Bounding the longest side, not the width, keeps a tall thin frame from becoming a huge copy."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    small = shrink(image, (max(1, round(w * scale)), max(1, round(h * scale))))
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGRA2GRAY if small.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    return small


def _overlap(size: int, shift: int) -> tuple[int, int]:
    """Range [start, end) of the frame's pixels that the reference, moved by `shift`, covers."""
    return max(0, shift), min(size, size + shift)


class KeyframeSampler:
    """Stateful, deterministic: the same frames and stamps always give the same decisions."""

    def __init__(self, params: KeyframeParams) -> None:
        self.params = params
        total = params.weight_histogram + params.weight_pixel + params.weight_edge
        # Normalised so the score stays in [0, 1] whatever weights a user sets.
        self._weights = (params.weight_histogram / total, params.weight_pixel / total, params.weight_edge / total)
        self._last: _Signature | None = None
        self._last_stamp_s = 0.0
        self._odd_shape: tuple[int, ...] | None = None  # analysis shape of the previous frame, if it was odd
        self._windows: dict[tuple[int, ...], np.ndarray] = {}  # Hanning windows by analysis shape

    def reset(self) -> None:
        self._last = None
        self._odd_shape = None

    def _signature(self, image: np.ndarray) -> _Signature:
        gray = downscale_gray(image, self.params.analysis_side_px)
        gray_f = gray.astype(np.float32)
        mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(gray))
        edges = cv2.Canny(gray, max(_CANNY_FLOOR_LOW, _CANNY_LOW * std), max(_CANNY_FLOOR_HIGH, _CANNY_HIGH * std))
        windowed = None
        if min(gray.shape) >= _MIN_MOTION_SIDE:
            window = self._windows.get(gray.shape)
            if window is None:
                window = self._windows[gray.shape] = cv2.createHanningWindow(gray.shape[::-1], cv2.CV_32F)
            # Windowed here, not by phaseCorrelate's own window argument: OpenCV 5.0 applies that one to
            # its inputs in place.
            windowed = (gray_f - np.float32(mean)) * window
        return _Signature(gray, gray_f, windowed, edges, cv2.dilate(edges, _DILATE))

    def _motion(self, cur: _Signature, ref: _Signature) -> tuple[float, float]:
        """Translation (px) of the frame's content since the reference: cur(x) ~ ref(x - shift)."""
        if cur.windowed is None or ref.windowed is None:
            return 0.0, 0.0
        (dx, dy), _ = cv2.phaseCorrelate(ref.windowed, cur.windowed)
        return float(dx), float(dy)

    def _histogram(self, gray: np.ndarray) -> np.ndarray:
        bins = self.params.histogram_bins
        return cv2.calcHist([gray], [0], None, [bins], [0, 256]).ravel() / gray.size

    def _compare(self, cur: _Signature, ref: _Signature, dx: float, dy: float) -> _Scores:
        h, w = cur.gray.shape
        rx, ry = round(dx), round(dy)
        x0, x1 = _overlap(w, rx)
        y0, y1 = _overlap(h, ry)
        if x1 - x0 < 1 or y1 - y0 < 1:
            return _Scores(1.0, 1.0, 1.0, 1.0, 1.0, dx / w, dy / h, 1.0)
        a = cur.gray_f[y0:y1, x0:x1]
        if rx or ry or dx or dy:
            moved = cv2.warpAffine(ref.gray_f, np.array([[1, 0, dx], [0, 1, dy]], np.float32), (w, h),
                                   flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            b = moved[y0:y1, x0:x1]
        else:
            b = ref.gray_f
        mean_a, std_a = (float(v[0, 0]) for v in cv2.meanStdDev(a))
        mean_b, std_b = (float(v[0, 0]) for v in cv2.meanStdDev(b))
        gain = 1.0 if std_a < _MIN_STD or std_b < _MIN_STD else min(_MAX_GAIN, max(1 / _MAX_GAIN, std_b / std_a))
        # a * gain + offset, not (a - mean_a) * gain + mean_b: identical frames stay exactly identical.
        a = a * np.float32(gain) + np.float32(mean_b - mean_a * gain)
        diff = cv2.absdiff(a, b)
        histogram = 0.5 * float(np.abs(self._histogram(np.clip(a, 0, 255)) - self._histogram(b)).sum())
        pixel = min(1.0, float(diff.mean()) / 255.0)
        # A pixel differs by its distance to the range of the other frame's 3 x 3 neighbourhood, both ways:
        # residual misalignment of up to 1 px (sub-pixel motion, a little roll or zoom) is no change.
        lo_b, hi_b, lo_a, hi_a = cv2.erode(b, _NEAR), cv2.dilate(b, _NEAR), cv2.erode(a, _NEAR), cv2.dilate(a, _NEAR)
        near = cv2.max(cv2.max(cv2.subtract(a, hi_b), cv2.subtract(lo_b, a)),
                       cv2.max(cv2.subtract(b, hi_a), cv2.subtract(lo_a, b)))
        near = np.maximum(near, np.float32(0.0))  # (negative: inside the range)
        cells = cv2.resize(near, (min(_GRID, x1 - x0), min(_GRID, y1 - y0)), interpolation=cv2.INTER_AREA)
        local = float(np.count_nonzero(cells >= self.params.cell_level)) / cells.size
        # Edges of one frame with no edge within 1 px in the other, counted both ways, on the overlap.
        ea, da = cur.edges[y0:y1, x0:x1], cur.edges_dilated[y0:y1, x0:x1]
        eb, db = (ref.edges[y0 - ry:y1 - ry, x0 - rx:x1 - rx], ref.edges_dilated[y0 - ry:y1 - ry, x0 - rx:x1 - rx])
        unmatched = (cv2.countNonZero(cv2.bitwise_and(ea, cv2.bitwise_not(db)))
                     + cv2.countNonZero(cv2.bitwise_and(eb, cv2.bitwise_not(da))))
        floor = _MIN_EDGE_SHARE * a.size
        edge = min(1.0, unmatched / max(cv2.countNonZero(ea) + cv2.countNonZero(eb), floor))
        wh, wp, we = self._weights
        new = 1.0 - (1.0 - min(1.0, abs(dx) / w)) * (1.0 - min(1.0, abs(dy) / h))
        score = max(wh * histogram + wp * pixel + we * edge, new + (1.0 - new) * local)
        if max(mean_a, mean_b, 1.0) > _MAX_BRIGHTNESS_RATIO * max(min(mean_a, mean_b), 1.0):
            score = 1.0
        return _Scores(min(1.0, score), min(1.0, histogram), pixel, edge, local, dx / w, dy / h, gain)

    def _scores(self, cur: _Signature, ref: _Signature) -> _Scores:
        still = self._compare(cur, ref, 0.0, 0.0)
        dx, dy = self._motion(cur, ref)
        if math.hypot(dx, dy) < _MIN_SHIFT_PX or still.score == 0.0:
            return still
        moved = self._compare(cur, ref, dx, dy)
        return moved if moved.score < still.score else still

    def decide(self, image: np.ndarray, stamp_s: float, force: bool = False) -> Decision:
        """Judge one frame (uint8 gray, BGR or BGRA) captured at stamp_s (seconds, any epoch).

        force=True makes it a keyframe at once, whatever its score and min_interval_s (reason REQUESTED; a
        frame that starts over keeps FIRST, CLOCK_JUMP or NEW_SHAPE), unless it is ODD_SHAPE; like every
        keyframe it becomes the reference."""
        signature = self._signature(image)
        last = self._last
        odd_shape = last is not None and signature.gray.shape != last.gray.shape
        if odd_shape and signature.gray.shape != self._odd_shape:
            # Frames of another aspect ratio cannot be compared with the last keyframe. One odd frame costs
            # only itself; a camera that really changed its resolution starts over on its second frame.
            self._odd_shape = signature.gray.shape
            return Decision(False, Reason.ODD_SHAPE, math.nan, math.nan, math.nan, math.nan,
                            stamp_s - self._last_stamp_s)
        self._odd_shape = None
        if last is None or stamp_s < self._last_stamp_s or odd_shape:
            reason = Reason.FIRST if last is None else Reason.NEW_SHAPE if odd_shape else Reason.CLOCK_JUMP
            self._last, self._last_stamp_s = signature, stamp_s
            return Decision(True, reason, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0)

        s = self._scores(signature, last)
        since = stamp_s - self._last_stamp_s
        p = self.params
        if force:
            reason = Reason.REQUESTED
        elif since < p.min_interval_s:
            reason = Reason.MIN_INTERVAL
        elif s.score >= p.change_threshold:
            reason = Reason.CHANGE
        elif since >= p.max_interval_s:
            reason = Reason.MAX_INTERVAL
        else:
            reason = Reason.STILL
        keyframe = reason in (Reason.CHANGE, Reason.MAX_INTERVAL, Reason.REQUESTED)
        if keyframe:
            self._last, self._last_stamp_s = signature, stamp_s
        return Decision(keyframe, reason, s.score, s.histogram, s.pixel, s.edge, since, s.local, s.shift_x,
                        s.shift_y, s.gain)
