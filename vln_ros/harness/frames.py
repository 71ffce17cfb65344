"""Synthetic camera frames and message builders for the tests and benchmarks."""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # scene() is also used where ROS is not installed (bench/gpu.py on a GPU machine)
    from sensor_msgs.msg import CompressedImage, Image


def scene(seed: int, height: int = 480, width: int = 640) -> np.ndarray:
    """A BGR frame with structure (blocks, lines, gradient); different seeds are different scenes."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = np.linspace(30, 200, width, dtype=np.uint8)[None, :, None]
    for _ in range(12):
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        w, h = int(rng.integers(20, width // 3)), int(rng.integers(20, height // 3))
        cv2.rectangle(img, (x, y), (x + w, y + h), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
        cv2.line(img, (int(rng.integers(0, width)), 0), (int(rng.integers(0, width)), height - 1),
                 tuple(int(c) for c in rng.integers(0, 256, 3)), 3)
    return img


def image_msg(img: np.ndarray, stamp_s: float, encoding: str = 'bgr8', frame_id: str = 'camera') -> Image:
    from sensor_msgs.msg import Image
    msg = Image(height=img.shape[0], width=img.shape[1], encoding=encoding, is_bigendian=False)
    msg.step = img.shape[1] * (img.shape[2] if img.ndim == 3 else 1) * img.itemsize
    msg.data = img.tobytes()
    msg.header.frame_id = frame_id
    set_stamp(msg, stamp_s)
    return msg


def compressed_msg(img: np.ndarray, stamp_s: float, fmt: str = 'jpeg') -> CompressedImage:
    from sensor_msgs.msg import CompressedImage
    ok, data = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png', img)
    assert ok
    msg = CompressedImage(format=fmt, data=data.tobytes())
    msg.header.frame_id = 'camera'
    set_stamp(msg, stamp_s)
    return msg


def set_stamp(msg: Image | CompressedImage, stamp_s: float) -> None:
    msg.header.stamp.sec = int(stamp_s)
    msg.header.stamp.nanosec = int(round((stamp_s - int(stamp_s)) * 1e9))


def stamp_s(msg: Image | CompressedImage) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
