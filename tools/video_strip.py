"""A strip of frames from an episode's video, for the docs (a video does not show on a README page).

    python tools/video_strip.py eval_out/safety/safety_video_seed_0.mp4 docs/images/x.png --times 1,3,5,7,9.9,13

Each frame is taken at the first video frame at or after its time (seconds from the video's start), scaled to
--width pixels, and the frames are put side by side. A development tool (tools/ is not installed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np


def strip(video: Path, times: list[float], width: int) -> np.ndarray:
    """The frames at `times` side by side. ValueError when the video cannot be read or is shorter."""
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not capture.isOpened() or fps <= 0:
        raise ValueError(f'{video}: not a video this OpenCV can read')
    wanted = sorted(round(t * fps) for t in times)
    frames, index = [], 0
    while wanted:
        ok, frame = capture.read()
        if not ok:
            raise ValueError(f'{video}: ends at {index / fps:.1f} s, before {wanted[0] / fps:.1f} s')
        while wanted and index >= wanted[0]:
            frames.append(cv2.resize(frame, (width, round(frame.shape[0] * width / frame.shape[1])),
                                     interpolation=cv2.INTER_AREA))
            wanted.pop(0)
        index += 1
    return np.hstack(frames)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('video', type=Path)
    parser.add_argument('out', type=Path, help='the strip (PNG)')
    parser.add_argument('--times', required=True, help='seconds from the start, comma-separated')
    parser.add_argument('--width', type=int, default=320, help='pixels per frame (default 320)')
    args = parser.parse_args(argv)
    try:
        times = [float(t) for t in args.times.split(',')]
        image = strip(args.video, times, args.width)
    except ValueError as exc:
        print(f'video_strip: {exc}', file=sys.stderr)
        return 2
    cv2.imwrite(str(args.out), image)
    print(f'{args.out}: {len(times)} frames, {image.shape[1]}x{image.shape[0]}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
