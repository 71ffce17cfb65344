"""tools/video_strip.py: the docs' strip of an episode's frames takes the frame at each time, in order."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import load_tool

video_strip = load_tool('video_strip')


def grey_ramp_video(path: Path, frames: int = 20, fps: float = 10.0) -> None:
    """Frame i is uniformly grey at 10 * i: its time can be read back from its colour."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*'mp4v'), fps, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()


def test_each_time_gives_its_frame_side_by_side(tmp_path):
    video = tmp_path / 'v.mp4'
    grey_ramp_video(video)
    image = video_strip.strip(video, [1.5, 0.5], width=32)
    assert image.shape == (24, 64, 3)
    assert abs(float(image[:, :32].mean()) - 50) < 6, 'the earlier time first: frame 5'
    assert abs(float(image[:, 32:].mean()) - 150) < 6, 'then frame 15'


def test_a_time_past_the_end_or_a_file_that_is_no_video_is_refused(tmp_path):
    video = tmp_path / 'v.mp4'
    grey_ramp_video(video)
    with pytest.raises(ValueError, match='ends at 2.0 s, before 5.0 s'):
        video_strip.strip(video, [5.0], width=32)
    text = tmp_path / 'notes.txt'
    text.write_text('not a video')
    with pytest.raises(ValueError, match='not a video'):
        video_strip.strip(text, [0.0], width=32)
    assert video_strip.main([str(text), str(tmp_path / 'x.png'), '--times', '0']) == 2
