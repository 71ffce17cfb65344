"""Camera messages to OpenCV images and back, with every malformed input turned into ImageRejected.

Works on anything shaped like sensor_msgs/Image (encoding, width, height, step, is_bigendian, data) or
sensor_msgs/CompressedImage (format, data): rclpy messages, rosbags messages, or plain objects in tests.
Colour conversions are rosbags-image's (every encoding it knows: rgb8, bgr8, rgba8, bgra8, mono8, mono16,
yuv422 variants, nv12/nv21, Bayer, 16-bit colour, generic 8UC3...). This module adds what the camera node
needs beyond it: honouring `step` (padded rows), checking sizes before touching the buffer, and the
NV12/NV21 plane layout. Output is uint8, either gray (H, W) or BGR (H, W, 3).
"""
from __future__ import annotations

import io
import math
from typing import Any

import cv2
import numpy as np
import PIL.Image
from rosbags.image import ImageError

# rosbags-image's encoding table and colour conversion; its public image_to_cvimage ignores `step`.
from rosbags.image.image import Format, convert_color, to_cvtype

from vln_ros import MAX_IMAGE_PIXELS

# Reasons a frame is rejected; the camera node counts each separately.
EMPTY = 'empty'
UNSUPPORTED_ENCODING = 'unsupported_encoding'
BAD_STEP = 'bad_step'
BAD_LENGTH = 'bad_length'
CORRUPT_COMPRESSED = 'corrupt_compressed'
UNSUPPORTED_FORMAT = 'unsupported_format'
TOO_LARGE = 'too_large'
IMPLAUSIBLE_SIZE = 'implausible_size'

# No JPEG or PNG packs more pixels into a byte than this: deflate's best ratio is ~1032:1 on the raw rows,
# which for a 1-bit PNG is ~8,300 pixels a byte; a JPEG needs a few bits for every 8x8 block (~400 px a byte
# for a uniform image). A header claiming more pixels than this times the data size is a broken or hostile
# image, and decoding it would still allocate the full claimed size.
MAX_PIXELS_PER_BYTE = 16_384

_GRAY_FORMATS = {Format.GRAY, Format.GENERIC}


class ImageRejected(ValueError):
    """A camera message that cannot be turned into an image; `reason` is one of the constants above."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f'{reason}: {detail}')
        self.reason = reason


def decode(msg: Any, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """A uint8 gray or BGR image from an Image or CompressedImage message (zero copy for bgr8/mono8). A frame of
    more than max_pixels (the decode budget) is refused before any decoding or copying, whatever its format."""
    if hasattr(msg, 'format'):
        return decode_compressed(msg.format, msg.data, max_pixels)
    return decode_raw(msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian, msg.data, max_pixels)


def check_budget(msg: Any, max_pixels: int) -> None:
    """The decode budget alone, from the message's size fields or its compressed header (tens of microseconds):
    camera_node runs it as a frame arrives, so a flood of frames over the budget never takes the place of a
    good frame waiting to be decoded."""
    if hasattr(msg, 'format'):
        if len(msg.data) and 'compressedDepth' not in msg.format:
            check_declared_size(np.frombuffer(msg.data, np.uint8), min(max_pixels, MAX_IMAGE_PIXELS))
    elif msg.width * msg.height > max_pixels:
        raise ImageRejected(TOO_LARGE, f'{msg.width}x{msg.height} image (decode budget {max_pixels} pixels)')


def decode_raw(encoding: str, width: int, height: int, step: int, is_bigendian: bool, data: Any,
               max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    if width <= 0 or height <= 0:
        raise ImageRejected(EMPTY, f'{width}x{height} image')
    if width * height > max_pixels:
        raise ImageRejected(TOO_LARGE, f'{width}x{height} image (decode budget {max_pixels} pixels)')
    try:
        depth_bits, fmt, typestr, channels = to_cvtype(encoding)
    except ImageError:
        raise ImageRejected(UNSUPPORTED_ENCODING, f'encoding {encoding!r}') from None
    itemsize = depth_bits // 8
    row_bytes = width * channels * itemsize
    rows = height
    if fmt in (Format.YUV_NV12, Format.YUV_NV21):
        if width % 2 or height % 2:
            raise ImageRejected(BAD_STEP, f'{encoding} needs even width and height, got {width}x{height}')
        rows = height * 3 // 2  # full-size Y plane, then half-size interleaved UV
    if step < row_bytes or step % itemsize:
        raise ImageRejected(BAD_STEP, f'step {step} for {width} px of {encoding} (needs >= {row_bytes})')
    buffer = np.frombuffer(data, np.uint8)
    if buffer.size != step * rows:
        raise ImageRejected(BAD_LENGTH, f'{buffer.size} bytes of data, expected step {step} x {rows} rows '
                                        f'= {step * rows}')

    dtype = np.dtype(typestr).newbyteorder('>' if is_bigendian else '<')
    image = buffer.reshape(rows, step)[:, :row_bytes].view(dtype)
    image = image.reshape((rows, width) if channels == 1 else (rows, width, channels))
    if not dtype.isnative:
        image = image.astype(dtype.newbyteorder('='))
    if encoding in ('bgr8', 'mono8'):
        return image
    target = 'mono8' if fmt in _GRAY_FORMATS and channels == 1 else 'bgr8'
    try:
        converted = convert_color(image, encoding, target)
    except (ImageError, cv2.error) as exc:
        raise ImageRejected(UNSUPPORTED_ENCODING, f'{encoding} -> {target}: {exc}') from None
    return np.ascontiguousarray(converted, dtype=np.uint8)


def decode_compressed(fmt: str, data: Any, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    buffer = np.frombuffer(data, np.uint8)
    if buffer.size == 0:
        raise ImageRejected(EMPTY, 'no compressed data')
    if 'compressedDepth' in fmt:
        raise ImageRejected(UNSUPPORTED_FORMAT, f'format {fmt!r} (depth images are not camera frames)')
    check_declared_size(buffer, min(max_pixels, MAX_IMAGE_PIXELS))
    # IMREAD_ANYCOLOR keeps gray JPEGs gray (no 3x copy) and gives BGR otherwise; 16-bit PNGs become 8-bit.
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_ANYCOLOR)
    except cv2.error as exc:  # OpenCV raises (not returns None) for images over its pixel limit
        reason = TOO_LARGE if 'MAX_IMAGE_PIXELS' in str(exc) else CORRUPT_COMPRESSED
        raise ImageRejected(reason, f'{buffer.size} bytes of {fmt or "unnamed format"}: {exc.err}') from None
    if image is None or image.size == 0:
        raise ImageRejected(CORRUPT_COMPRESSED, f'{buffer.size} bytes of {fmt or "unnamed format"} '
                                                'that OpenCV cannot decode')
    return image


def declared_size(data: Any) -> tuple[int, int] | None:
    """(width, height) that a compressed image's header claims, read without decoding the pixels; None when no
    Pillow plugin reads the header. Pillow's plugins parse only the header when built; Image.open is not used
    because its decompression-bomb check raises for a huge claim instead of telling its size (a JPEG claiming
    60000x60000 was logged as 67108865x1)."""
    PIL.Image.init()   # every plugin, once (PNG, JPEG, WebP, TIFF, BMP, ...)
    buffer = io.BytesIO(memoryview(data))
    prefix = buffer.read(16)
    for name in PIL.Image.ID:
        factory, accept = PIL.Image.OPEN[name]
        try:
            if accept is not None and accept(prefix) is not True:
                continue
            buffer.seek(0)
            with factory(buffer, '') as image:
                return image.size
        except Exception:  # Pillow raises many types for broken headers: try the next plugin
            continue
    return None


def check_declared_size(data: Any, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse, before decoding, a compressed image whose size is unknown, whose header claims more than
    max_pixels (the node's decode budget), or more than its data size can plausibly hold (a 631-byte JPEG
    claiming 8000x4500 cost 200 ms and 85 MB; a 35 KB all-black PNG of 8000x4500 is plausible, so only the
    budget stops it). Unknown size (a broken header, or a format no header reader here knows): never decoded on
    trust, so no format escapes the budget."""
    size = declared_size(data)
    length = len(memoryview(data))
    if size is None:
        raise ImageRejected(CORRUPT_COMPRESSED, f'{length} bytes whose header gives no image size (broken, or not '
                                                'JPEG, PNG, WebP, TIFF, BMP or another known format): not decoded')
    width, height = size
    if width * height > max_pixels:
        raise ImageRejected(TOO_LARGE, f'header claims {width}x{height} (decode budget {max_pixels} pixels)')
    if width * height > MAX_PIXELS_PER_BYTE * length:
        raise ImageRejected(IMPLAUSIBLE_SIZE, f'header claims {width}x{height} in {length} bytes '
                                              f'(more than {MAX_PIXELS_PER_BYTE} pixels a byte)')


def fit_size(width: int, height: int, max_side: int, max_pixels: int, align: int) -> tuple[int, int]:
    """Largest size within max_side and max_pixels (0 = no limit), aspect kept, never upscaled,
    each side rounded down to a multiple of `align` when it is at least that big."""
    scale = 1.0
    if max_side:
        scale = min(scale, max_side / max(width, height))
    if max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (width * height)))
    w, h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    while max_pixels and w * h > max_pixels and max(w, h) > 1:  # a 1 px floor on a thin image's short side
        if w >= h:
            w -= 1
        else:
            h -= 1
    if w >= align:
        w -= w % align
    if h >= align:
        h -= h % align
    return w, h


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Downscale to size (width, height) with area averaging, fast.

    INTER_AREA straight from 1080p costs ~1.5-3 ms on one core; bilinear to twice the target first and
    then area averaging is several times cheaper and still averages enough pixels (no aliasing, quiet
    sensor noise) for both the keyframe scores and the model's input.
    """
    w, h = size
    if image.shape[1] > 2 * w and image.shape[0] > 2 * h:
        image = cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def resize_for_inference(image: np.ndarray, max_side: int, max_pixels: int, align: int) -> np.ndarray:
    h, w = image.shape[:2]
    size = fit_size(w, h, max_side, max_pixels, align)
    return image if size == (w, h) else shrink(image, size)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, encoded = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # only for images OpenCV cannot write at all; decode() never returns one
        raise ValueError(f'JPEG encoding failed for an image of shape {image.shape}')
    return encoded.tobytes()
