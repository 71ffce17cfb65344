"""`make demo-keyframes` (faster playback): the real camera_node process on a video, the summary, the picture."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import DATA


def test_demo_streams_the_clip_and_writes_its_picture(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'vln_ros.demo.keyframes', '--speed', '8', '--out', str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    decisions = [json.loads(line) for line in (tmp_path / 'decisions.jsonl').read_text().splitlines()]
    assert len(decisions) >= 390  # every frame decided but for rare best-effort losses
    keyframes = [d for d in decisions if d['keyframe']]
    assert 10 <= len(keyframes) <= 24
    assert {d['reason'] for d in keyframes} == {'first', 'change', 'max_interval'}
    assert (tmp_path / 'keyframes.png').stat().st_size > 50_000
    assert 'keyframes:' in result.stdout and (DATA / 'people_clip.mp4').name in result.stdout
