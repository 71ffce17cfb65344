"""The annotated keyframe of vln/debug_image: the picture, what the model said, and the plan drawn from
above in an inset (robot at the bottom, forward up, 1 m grid). No ROS."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from vln_ros.core.control import Pose2D

_INK, _SHADOW = (255, 255, 255), (0, 0, 0)
_GO, _STOP = (80, 220, 80), (60, 60, 230)


def _text(image: np.ndarray, line: str, y: int, color: tuple[int, int, int] = _INK) -> None:
    """The line in `color` with a dark outline. The outline is the same text, as thin, drawn around it:
    OpenCV 5 spaces the letters of thicker text wider, so a thick shadow under thin text came apart
    into two overlapping lines."""
    scale = max(0.4, image.shape[1] / 900)
    for dx, dy in ((-1, -1), (-1, 1), (1, -1), (1, 1), (0, 2)):
        cv2.putText(image, line, (6 + dx, y + dy), cv2.FONT_HERSHEY_SIMPLEX, scale, _SHADOW, 1, cv2.LINE_AA)
    cv2.putText(image, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def annotate(bgr: np.ndarray, lines: Sequence[str], path: Sequence[tuple[Pose2D, float]], stop: bool,
             metres_shown: float = 3.0) -> np.ndarray:
    """A copy of `bgr` with `lines` written on top and the path (poses + confidence) drawn in an inset."""
    out = bgr.copy()
    h, w = out.shape[:2]
    step = max(14, int(h / 18))
    for i, line in enumerate(lines):
        _text(out, line[:90], step * (i + 1), _STOP if stop and i == 0 else _INK)
    side = max(48, min(h, w) // 3)
    x0, y0 = w - side - 4, h - side - 4
    inset = out[y0:y0 + side, x0:x0 + side]
    inset[:] = (inset * 0.35).astype(np.uint8)
    px_per_m = side / metres_shown
    origin = np.array([side / 2, side - 6])

    def to_px(p: Pose2D) -> tuple[int, int]:  # body frame (x forward, y left) -> inset pixels
        u, v = origin + px_per_m * np.array([-p.y, -p.x])
        return int(np.clip(u, 0, side - 1)), int(np.clip(v, 0, side - 1))

    for metres in range(1, int(metres_shown) + 1):
        cv2.circle(inset, to_px(Pose2D()), int(metres * px_per_m), (90, 90, 90), 1, cv2.LINE_AA)
    previous = Pose2D()
    for pose, confidence in path:
        colour = tuple(int(c) for c in np.array(_STOP) * (1 - confidence) + np.array(_GO) * confidence)
        cv2.line(inset, to_px(previous), to_px(pose), colour, 2, cv2.LINE_AA)
        cv2.circle(inset, to_px(pose), 3, colour, -1, cv2.LINE_AA)
        previous = pose
    cv2.circle(inset, to_px(Pose2D()), 4, _STOP if stop else _INK, -1, cv2.LINE_AA)
    return out
