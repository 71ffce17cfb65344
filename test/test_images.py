"""core/images: every camera encoding in, every malformed message rejected with its reason."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vln_ros.core import images
from vln_ros.core.config import CameraParams
from vln_ros.harness.frames import compressed_msg, image_msg, scene

H, W = 48, 64
BGR = (40, 120, 200)


def _yuv() -> tuple[int, int, int]:
    """Y, U, V of the test colour as OpenCV's YUV 4:2:0 conversions define them."""
    i420 = cv2.cvtColor(np.full((H, W, 3), BGR, np.uint8), cv2.COLOR_BGR2YUV_I420)
    return int(i420[0, 0]), int(i420[H, 0]), int(i420[H + H // 4, 0])


def _bayer(pattern: str, scale: int = 1, dtype=np.uint8) -> np.ndarray:
    value = {'b': BGR[0], 'g': BGR[1], 'r': BGR[2]}
    tile = np.array([[value[pattern[0]], value[pattern[1]]], [value[pattern[2]], value[pattern[3]]]]) * scale
    return np.tile(tile, (H // 2, W // 2)).astype(dtype)


def _packed_422(order: str) -> np.ndarray:
    y, u, v = _yuv()
    quad = {'uyvy': [u, y, v, y], 'yuyv': [y, u, y, v]}[order]
    return np.tile(np.array(quad, np.uint8), (H, W // 2)).reshape(H, W, 2)


def _nv(order: str) -> np.ndarray:
    y, u, v = _yuv()
    uv = [u, v] if order == 'nv12' else [v, u]
    return np.vstack([np.full((H, W), y, np.uint8), np.tile(np.array(uv, np.uint8), (H // 2, W // 2))])


GRAY = round(0.299 * BGR[2] + 0.587 * BGR[1] + 0.114 * BGR[0])
COLOUR_CASES = {
    'bgr8': np.full((H, W, 3), BGR, np.uint8),
    'rgb8': np.full((H, W, 3), BGR[::-1], np.uint8),
    'bgra8': np.full((H, W, 4), (*BGR, 255), np.uint8),
    'rgba8': np.full((H, W, 4), (*BGR[::-1], 255), np.uint8),
    'bgr16': np.full((H, W, 3), BGR, np.uint16) * 257,
    'rgb16': np.full((H, W, 3), BGR[::-1], np.uint16) * 257,
    'bgra16': np.full((H, W, 4), (*BGR, 255), np.uint16) * 257,
    '8UC3': np.full((H, W, 3), BGR, np.uint8),
    'bayer_rggb8': _bayer('rggb'), 'bayer_bggr8': _bayer('bggr'),
    'bayer_gbrg8': _bayer('gbrg'), 'bayer_grbg8': _bayer('grbg'),
    'bayer_rggb16': _bayer('rggb', 257, np.uint16), 'bayer_grbg16': _bayer('grbg', 257, np.uint16),
    'uyvy': _packed_422('uyvy'), 'yuv422': _packed_422('uyvy'),
    'yuyv': _packed_422('yuyv'), 'yuv422_yuy2': _packed_422('yuyv'),
    'nv12': _nv('nv12'), 'nv21': _nv('nv21'),
}
GRAY_CASES = {
    'mono8': np.full((H, W), GRAY, np.uint8),
    'mono16': np.full((H, W), GRAY * 257, np.uint16),
    '8UC1': np.full((H, W), GRAY, np.uint8),
}


def _raw(encoding: str, data: np.ndarray, step: int | None = None, big_endian: bool = False):
    class Msg:  # core/images works on anything shaped like sensor_msgs/Image
        pass
    m = Msg()
    m.encoding, m.width, m.height, m.is_bigendian = encoding, W, H, big_endian
    row_bytes = data.nbytes // data.shape[0]
    m.step = step or row_bytes
    m.data = data.tobytes()
    return m


@pytest.mark.parametrize('encoding', sorted(COLOUR_CASES))
def test_colour_encodings_decode_to_bgr(encoding):
    out = images.decode(_raw(encoding, COLOUR_CASES[encoding]))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    centre = out[8:-8, 8:-8].reshape(-1, 3).mean(axis=0)  # Bayer borders are interpolated
    assert np.allclose(centre, BGR, atol=4), centre


@pytest.mark.parametrize('encoding', sorted(GRAY_CASES))
def test_gray_encodings_decode_to_mono8(encoding):
    out = images.decode(_raw(encoding, GRAY_CASES[encoding]))
    assert out.shape == (H, W) and out.dtype == np.uint8
    assert abs(int(out.mean()) - GRAY) <= 1


def test_big_endian_mono16():
    data = GRAY_CASES['mono16'].astype('>u2')
    assert abs(int(images.decode(_raw('mono16', data, big_endian=True)).mean()) - GRAY) <= 1


def test_bgr8_is_zero_copy_and_rclpy_messages_work():
    img = scene(1)
    msg = image_msg(img, 1.0)
    out = images.decode(msg)
    assert np.array_equal(out, img)
    assert not out.flags.owndata  # a view into the message buffer: no 6 MB copy per 1080p frame


def test_padded_rows_honour_step():
    img = COLOUR_CASES['bgr8'].copy()
    img[::2] = (1, 2, 3)
    padded = np.zeros((H, W * 3 + 16), np.uint8)
    padded[:, :W * 3] = img.reshape(H, -1)
    padded[:, W * 3:] = 255  # garbage in the padding must not leak into the image
    assert np.array_equal(images.decode(_raw('bgr8', padded, step=W * 3 + 16)), img)


@pytest.mark.parametrize(('mutate', 'reason'), [
    (lambda m: setattr(m, 'width', 0), images.EMPTY),
    (lambda m: setattr(m, 'height', 0), images.EMPTY),
    (lambda m: setattr(m, 'encoding', 'h264'), images.UNSUPPORTED_ENCODING),
    (lambda m: setattr(m, 'encoding', ''), images.UNSUPPORTED_ENCODING),
    (lambda m: setattr(m, 'step', W * 3 - 1), images.BAD_STEP),
    (lambda m: setattr(m, 'step', 0), images.BAD_STEP),
    (lambda m: setattr(m, 'data', m.data[:-1]), images.BAD_LENGTH),
    (lambda m: setattr(m, 'data', m.data + b'\0'), images.BAD_LENGTH),
    (lambda m: setattr(m, 'data', b''), images.BAD_LENGTH),
    (lambda m: setattr(m, 'width', W * 2), images.BAD_STEP),
    (lambda m: setattr(m, 'height', H + 1), images.BAD_LENGTH),
])
def test_malformed_raw_images_are_rejected_with_a_reason(mutate, reason):
    msg = _raw('bgr8', COLOUR_CASES['bgr8'])
    mutate(msg)
    with pytest.raises(images.ImageRejected) as info:
        images.decode(msg)
    assert info.value.reason == reason


def test_oversized_frames_are_rejected_before_decoding():
    msg = _raw('bgr8', COLOUR_CASES['bgr8'])
    msg.width, msg.height, msg.step = 100_000, 100_000, 300_000
    with pytest.raises(images.ImageRejected) as info:
        images.decode(msg)
    assert info.value.reason == images.TOO_LARGE
    # a PNG that claims 20000 x 20000 pixels (a decompression bomb) is refused by OpenCV's limit
    ok, png = cv2.imencode('.png', np.zeros((20_000, 20_000), np.uint8))
    with pytest.raises(images.ImageRejected) as info:
        images.decode_compressed('png', png.tobytes())
    assert info.value.reason == images.TOO_LARGE


def test_odd_sized_nv12_is_rejected():
    msg = _raw('nv12', _nv('nv12'))
    msg.width = W - 1
    with pytest.raises(images.ImageRejected, match='even'):
        images.decode(msg)


def test_unconvertible_generic_encoding_is_rejected():
    msg = _raw('32FC2', np.zeros((H, W, 2), np.float32))
    with pytest.raises(images.ImageRejected) as info:
        images.decode(msg)
    assert info.value.reason == images.UNSUPPORTED_ENCODING


def test_jpeg_and_png_compressed():
    img = scene(3, H * 4, W * 4)
    jpeg = images.decode(compressed_msg(img, 0.0, 'jpeg'))
    assert jpeg.shape == img.shape and np.abs(jpeg.astype(int) - img).mean() < 6
    png = images.decode(compressed_msg(img, 0.0, 'png'))
    assert np.array_equal(png, img)
    gray = images.decode(compressed_msg(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), 0.0))
    assert gray.ndim == 2
    ok, png16 = cv2.imencode('.png', np.full((H, W), 40000, np.uint16))
    assert images.decode_compressed('png', png16.tobytes()).dtype == np.uint8


@pytest.mark.parametrize(('fmt', 'data', 'reason'), [
    ('jpeg', b'', images.EMPTY),
    ('jpeg', b'\xff\xd8\xff\xe0 this is not a jpeg', images.CORRUPT_COMPRESSED),
    ('png', bytes(range(256)) * 4, images.CORRUPT_COMPRESSED),
    ('16UC1; compressedDepth png', b'\0' * 64, images.UNSUPPORTED_FORMAT),
])
def test_malformed_compressed_images_are_rejected(fmt, data, reason):
    with pytest.raises(images.ImageRejected) as info:
        images.decode_compressed(fmt, data)
    assert info.value.reason == reason


@given(width=st.integers(1, 5000), height=st.integers(1, 5000), max_side=st.integers(0, 2000),
       max_pixels=st.integers(0, 4_000_000), align=st.sampled_from([1, 14, 28, 32]))
def test_fit_size_limits_keep_aspect_and_never_upscale(width, height, max_side, max_pixels, align):
    w, h = images.fit_size(width, height, max_side, max_pixels, align)
    assert 1 <= w <= width and 1 <= h <= height
    if max_side:
        assert max(w, h) <= max(max_side, 1)
    if max_pixels and max_pixels >= align * align:
        assert w * h <= max(max_pixels, 1)
    for side in (w, h):
        assert side % align == 0 or side < align
    if min(w, h) >= 4 * align:
        # each side loses less than one alignment cell (plus a pixel of flooring) to rounding down
        bound = (align + 1) / w + (align + 1) / h
        assert abs((w / h) / (width / height) - 1.0) <= bound * 1.05


def test_resize_and_jpeg_roundtrip():
    img = scene(5, 1080, 1920)
    small = images.resize_for_inference(img, 448, 0, 32)
    assert small.shape == (224, 448, 3)
    decoded = cv2.imdecode(np.frombuffer(images.encode_jpeg(small, 85), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == small.shape


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose frame header (SOF0) is edited to claim width x height."""
    data = bytearray(cv2.imencode('.jpg', np.full((16, 16, 3), 128, np.uint8))[1].tobytes())
    sof = data.find(b'\xff\xc0')
    data[sof + 5:sof + 7], data[sof + 7:sof + 9] = height.to_bytes(2, 'big'), width.to_bytes(2, 'big')
    return bytes(data)


def test_a_small_jpeg_claiming_a_huge_size_is_refused_from_its_header_without_decoding(monkeypatch):
    """Regression: 631 bytes claiming 8000x4500 were decoded (200 ms, +85 MB) before anything was checked."""
    data = jpeg_claiming(8000, 4500)
    assert len(data) < 1000 and images.declared_size(data) == (8000, 4500)
    monkeypatch.setattr(images.cv2, 'imdecode', lambda *a: pytest.fail('decoded a refused image'))
    with pytest.raises(images.ImageRejected) as info:
        images.decode_compressed('jpeg', data)
    assert info.value.reason == images.IMPLAUSIBLE_SIZE
    assert '8000x4500 in' in str(info.value)
    with pytest.raises(images.ImageRejected) as info:
        images.decode_compressed('jpeg', jpeg_claiming(65_000, 65_000))
    assert info.value.reason == images.TOO_LARGE


@pytest.mark.parametrize(('fmt', 'image'), [
    ('.png', np.zeros((3000, 4000), np.uint8)),           # deflate's best case
    ('.png', np.zeros((2000, 3000, 3), np.uint8)),
    ('.jpg', np.full((2160, 3840, 3), 128, np.uint8)),    # a uniform 4K frame
    ('.jpg', np.full((9, 7), 3, np.uint8)),
])
def test_real_images_compressed_as_far_as_they_go_pass_the_header_check(fmt, image):
    params = [cv2.IMWRITE_PNG_COMPRESSION, 9] if fmt == '.png' else [cv2.IMWRITE_JPEG_QUALITY, 1]
    data = cv2.imencode(fmt, image, params)[1].tobytes()
    images.check_declared_size(data)
    assert images.decode_compressed(fmt[1:], data).shape[:2] == image.shape[:2]


def test_unknown_formats_are_left_to_opencv():
    assert images.declared_size(b'\x00' * 64) is None


# -- the decode budget: no format escapes it (issue: lossless bombs) -------------------------------------

def black_png(width: int, height: int) -> bytes:
    """An all-zero PNG: deflate packs 8000x4500 of it into ~35 KB, a plausible size for its claim."""
    ok, png = cv2.imencode('.png', np.zeros((height, width), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return png.tobytes()


def test_a_lossless_bomb_within_the_plausibility_ratio_is_refused_by_the_budget_before_decoding(monkeypatch):
    png = black_png(8000, 4500)
    assert len(png) * images.MAX_PIXELS_PER_BYTE > 8000 * 4500   # the ratio check alone lets it through
    budget = CameraParams().max_decode_pixels
    assert budget < 8000 * 4500

    def no_decoding(*_args):
        raise AssertionError('decoded an image over the budget')
    monkeypatch.setattr(images.cv2, 'imdecode', no_decoding)
    with pytest.raises(images.ImageRejected) as info:
        images.decode_compressed('png', png, budget)
    assert info.value.reason == images.TOO_LARGE
    assert f'header claims 8000x4500 (decode budget {budget} pixels)' in str(info.value)


def test_a_raw_frame_over_the_budget_is_refused_before_its_data_is_looked_at():
    with pytest.raises(images.ImageRejected) as info:
        images.decode_raw('bgr8', 8000, 4500, 8000 * 3, False, b'', max_pixels=16_000_000)
    assert info.value.reason == images.TOO_LARGE


def test_a_huge_claim_is_logged_with_the_size_the_header_claims():
    with pytest.raises(images.ImageRejected) as info:
        images.decode_compressed('jpeg', jpeg_claiming(60000, 60000))
    assert info.value.reason == images.TOO_LARGE
    assert 'header claims 60000x60000' in str(info.value), str(info.value)


def test_a_frame_within_the_budget_still_decodes():
    image = images.decode_compressed('png', black_png(640, 480), 640 * 480)
    assert image.shape[:2] == (480, 640)
