"""The keyframe sampler: which camera frames are worth a (slow, costly) VLM call.

Every frame is reduced to a small grayscale copy and compared with the last keyframe by three scores,
each in [0, 1]:
- histogram: total-variation distance of the intensity histograms (lighting, large objects);
- pixel: mean absolute difference / 255 (anything that moved or changed);
- edge: share of edge pixels that have no counterpart within 1 px in the other frame (structure).
Their weighted sum is the change score. A frame becomes a keyframe when the score reaches the threshold
(no sooner than min_interval_s after the last keyframe), or when max_interval_s has passed without one;
the first frame always is. Comparing with the last keyframe, not the previous frame, makes a slow pan
trigger once its accumulated change passes the threshold. A frame of another aspect ratio than the last
keyframe is skipped; a second one in a row (the camera changed its mode) starts over from it.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import cv2
import numpy as np

from vln_ros.core.config import KeyframeParams
from vln_ros.core.images import shrink

_DILATE = np.ones((3, 3), np.uint8)
_CANNY_LOW, _CANNY_HIGH = 60, 160
# Edge scores divide by the edge count; this floor (share of pixels) keeps a few noise edges in a
# nearly blank frame from reading as a total change.
_MIN_EDGE_SHARE = 0.01


class Reason(enum.Enum):
    FIRST = 'first'                # nothing to compare with yet
    CHANGE = 'change'              # score reached the threshold
    MAX_INTERVAL = 'max_interval'  # still scene, but too long since the last keyframe
    CLOCK_JUMP = 'clock_jump'      # stamp went backwards (bag loop, clock reset): start over
    NEW_SHAPE = 'new_shape'        # second frame in a row of another aspect ratio (camera reconfigured): start over
    ODD_SHAPE = 'odd_shape'        # not a keyframe: another aspect ratio than the last keyframe, not compared
    STILL = 'still'                # not a keyframe: score below the threshold
    MIN_INTERVAL = 'min_interval'  # not a keyframe: too soon after the last one


@dataclass(frozen=True, slots=True)
class Decision:
    """One frame's verdict with the numbers behind it."""

    keyframe: bool
    reason: Reason
    score: float
    histogram: float
    pixel: float
    edge: float
    since_last_s: float


@dataclass(frozen=True, slots=True)
class _Signature:
    gray: np.ndarray       # uint8, analysis size
    histogram: np.ndarray  # float32, sums to 1
    edges: np.ndarray      # uint8 0/255
    edges_dilated: np.ndarray
    edge_count: int


def downscale_gray(image: np.ndarray, side: int) -> np.ndarray:
    """Small grayscale copy (longest side `side`) of a BGR/BGRA/gray uint8 image; ~0.15 ms from 1080p.
    Bounding the longest side, not the width, keeps a tall thin frame from becoming a huge copy."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    small = shrink(image, (max(1, round(w * scale)), max(1, round(h * scale))))
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGRA2GRAY if small.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    return small


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

    def reset(self) -> None:
        self._last = None
        self._odd_shape = None

    def _signature(self, image: np.ndarray) -> _Signature:
        gray = downscale_gray(image, self.params.analysis_side_px)
        counts = cv2.calcHist([gray], [0], None, [self.params.histogram_bins], [0, 256]).ravel()
        hist = counts.astype(np.float32, copy=False)  # float32 already (no copy); says so for the type checker
        hist /= gray.size
        edges = cv2.Canny(gray, _CANNY_LOW, _CANNY_HIGH)
        return _Signature(gray, hist, edges, cv2.dilate(edges, _DILATE), int(cv2.countNonZero(edges)))

    def _scores(self, a: _Signature, b: _Signature) -> tuple[float, float, float]:
        histogram = 0.5 * float(np.abs(a.histogram - b.histogram).sum())
        pixel = float(cv2.absdiff(a.gray, b.gray).mean()) / 255.0
        # Edges of one frame with no edge within 1 px in the other, counted both ways.
        unmatched = (cv2.countNonZero(cv2.bitwise_and(a.edges, cv2.bitwise_not(b.edges_dilated)))
                     + cv2.countNonZero(cv2.bitwise_and(b.edges, cv2.bitwise_not(a.edges_dilated))))
        floor = _MIN_EDGE_SHARE * a.gray.size
        edge = min(1.0, unmatched / max(a.edge_count + b.edge_count, floor))
        return histogram, pixel, edge

    def decide(self, image: np.ndarray, stamp_s: float) -> Decision:
        """Judge one frame (uint8 gray, BGR or BGRA) captured at stamp_s (seconds, any epoch)."""
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
            return Decision(True, reason, 1.0, 1.0, 1.0, 1.0, 0.0)

        histogram, pixel, edge = self._scores(signature, last)
        wh, wp, we = self._weights
        score = wh * histogram + wp * pixel + we * edge
        since = stamp_s - self._last_stamp_s
        p = self.params
        if since < p.min_interval_s:
            reason = Reason.MIN_INTERVAL
        elif score >= p.change_threshold:
            reason = Reason.CHANGE
        elif since >= p.max_interval_s:
            reason = Reason.MAX_INTERVAL
        else:
            reason = Reason.STILL
        keyframe = reason in (Reason.CHANGE, Reason.MAX_INTERVAL)
        if keyframe:
            self._last, self._last_stamp_s = signature, stamp_s
        return Decision(keyframe, reason, score, histogram, pixel, edge, since)
