"""core/keyframe: the sampler's promises, on synthetic frames and on real footage."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from vln_ros.core.config import KeyframeParams
from vln_ros.core.keyframe import KeyframeSampler, Reason, downscale_gray
from vln_ros.demo.keyframes import read_frames
from vln_ros.testing.frames import scene

FPS = 10.0


def run(frames, params: KeyframeParams, fps: float = FPS):
    sampler = KeyframeSampler(params)
    return [sampler.decide(f, i / fps) for i, f in enumerate(frames)]


def test_first_frame_is_always_a_keyframe():
    d = KeyframeSampler(KeyframeParams()).decide(scene(1), 123.0)
    assert d.keyframe and d.reason is Reason.FIRST


def test_identical_frames_never_trigger():
    frame = scene(1)
    decisions = run([frame.copy() for _ in range(100)], KeyframeParams(max_interval_s=600.0))
    assert [d.keyframe for d in decisions] == [True] + [False] * 99
    assert all(d.score == 0.0 and d.reason in (Reason.STILL, Reason.MIN_INTERVAL) for d in decisions[1:])


def test_sensor_noise_does_not_trigger():
    rng = np.random.default_rng(0)
    base = scene(2).astype(np.int16)
    frames = [np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(50)]
    decisions = run(frames, KeyframeParams(max_interval_s=600.0))
    assert sum(d.keyframe for d in decisions) == 1
    assert max(d.score for d in decisions[1:]) < KeyframeParams().change_threshold / 2


def test_a_cut_always_triggers():
    for seed in range(10):
        frames = [scene(seed)] * 10 + [scene(seed + 100)] * 5
        decisions = run(frames, KeyframeParams(max_interval_s=600.0))
        assert decisions[10].keyframe and decisions[10].reason is Reason.CHANGE, (seed, decisions[10])
        assert not any(d.keyframe for d in decisions[1:10] + decisions[11:])


def test_slow_pan_triggers_once_the_accumulated_change_passes_the_threshold():
    panorama = cv2.resize(scene(7, 480, 640), (2400, 480))
    frames = [panorama[:, x:x + 640].copy() for x in range(0, 1200, 4)]  # 4 px per frame
    params = KeyframeParams(max_interval_s=600.0, min_interval_s=0.0)
    decisions = run(frames, params)
    # Frame to frame the pan is far below the threshold...
    step = KeyframeSampler(params)
    step.decide(frames[0], 0.0)
    assert step.decide(frames[1], 0.1).score < params.change_threshold / 2
    # ...but measured against the last keyframe it adds up: keyframes come, and not on every frame.
    keyframes = [i for i, d in enumerate(decisions) if d.keyframe]
    assert len(keyframes) >= 3
    assert min(np.diff(keyframes)) >= 3
    for i in keyframes[1:]:
        assert decisions[i].reason is Reason.CHANGE and decisions[i].score >= params.change_threshold
        assert decisions[i - 1].score < params.change_threshold  # it fired as soon as it crossed


def test_max_interval_forces_a_keyframe_in_a_still_scene():
    frames = [scene(3)] * 61  # 6 s at 10 fps
    decisions = run(frames, KeyframeParams(max_interval_s=2.0, min_interval_s=0.5))
    keyframes = [(i, d.reason) for i, d in enumerate(decisions) if d.keyframe]
    assert keyframes == [(0, Reason.FIRST), (20, Reason.MAX_INTERVAL), (40, Reason.MAX_INTERVAL),
                         (60, Reason.MAX_INTERVAL)]


def test_min_interval_suppresses_changes_that_come_too_soon():
    frames = [scene(i) for i in range(50)]  # a cut on every frame
    decisions = run(frames, KeyframeParams(min_interval_s=1.0, max_interval_s=5.0))
    keyframes = [i for i, d in enumerate(decisions) if d.keyframe]
    assert keyframes == list(range(0, 50, 10))
    assert all(decisions[i].reason is Reason.MIN_INTERVAL and decisions[i].score > 0.12
               for i in range(50) if i % 10)


def test_clock_jump_backwards_starts_over():
    sampler = KeyframeSampler(KeyframeParams())
    sampler.decide(scene(1), 100.0)
    d = sampler.decide(scene(1), 5.0)
    assert d.keyframe and d.reason is Reason.CLOCK_JUMP


def test_decisions_are_deterministic():
    frames = [scene(i // 7) for i in range(40)]
    a = run(frames, KeyframeParams(min_interval_s=0.0))
    b = run(frames, KeyframeParams(min_interval_s=0.0))
    assert a == b


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), channels=st.sampled_from([1, 3, 4]),
       size=st.tuples(st.integers(8, 300), st.integers(8, 300)))
def test_scores_stay_in_unit_range_for_any_image(seed, channels, size):
    rng = np.random.default_rng(seed)
    shape = size if channels == 1 else (*size, channels)
    sampler = KeyframeSampler(KeyframeParams(min_interval_s=0.0))
    sampler.decide(rng.integers(0, 256, shape, dtype=np.uint8), 0.0)
    d = sampler.decide(rng.integers(0, 256, shape, dtype=np.uint8), 1.0)
    for value in (d.score, d.histogram, d.pixel, d.edge):
        assert 0.0 <= value <= 1.0


def test_downscale_keeps_aspect_and_makes_gray():
    small = downscale_gray(np.zeros((1080, 1920, 3), np.uint8), 160)
    assert small.shape == (90, 160) and small.dtype == np.uint8


# Real footage (test/data/README.md): a fixed camera, people walking in and out one by one.
# Clip frame numbers of the events, found by looking at the clip: a woman leaves (~25-35), a man
# walks in to the table (~65-90), stands still (~95-270), leaves (~270-295) after which the empty room's
# auto exposure settles (~300-315, a real lighting change), a woman walks in (~345-365).
EVENTS = [(20, 40), (60, 95), (270, 320), (340, 370)]
STILL = (100, 265)


@pytest.fixture(scope='module')
def clip_decisions():
    frames = read_frames(DATA / 'people_clip.mp4')
    assert len(frames) == 400
    return run(frames, KeyframeParams())


def test_real_footage_keyframes_where_people_enter_or_leave(clip_decisions):
    change = [i for i, d in enumerate(clip_decisions) if d.reason is Reason.CHANGE]
    for start, end in EVENTS:
        assert any(start <= i <= end for i in change), (start, end, change)
    # Every change keyframe belongs to an event: nothing fires on a still scene.
    assert all(any(s <= i <= e for s, e in EVENTS) for i in change), change


def test_real_footage_still_stretch_gets_only_max_interval_keyframes(clip_decisions):
    still = [(i, d.reason) for i, d in enumerate(clip_decisions) if STILL[0] <= i <= STILL[1] and d.keyframe]
    assert still and all(reason is Reason.MAX_INTERVAL for _, reason in still)
    assert len(still) <= (STILL[1] - STILL[0]) / FPS / KeyframeParams().max_interval_s + 1
    assert sum(d.keyframe for d in clip_decisions) <= 0.06 * len(clip_decisions)


def test_a_tall_thin_frame_gets_a_small_analysis_copy():
    small = downscale_gray(np.zeros((10_000, 1, 3), np.uint8), 160)
    assert small.shape == (160, 1)  # longest side bounded: not 1.6 million rows
    portrait = downscale_gray(np.zeros((1920, 1080), np.uint8), 160)
    assert portrait.shape == (160, 90)


def test_one_frame_of_another_aspect_ratio_costs_only_that_frame():
    """Regression: one frame whose analysis copy had another shape made every later comparison fail
    ('Sizes of input arguments do not match'): the camera never published a keyframe again."""
    wide, odd = scene(1, 480, 640), scene(2, 480, 480)
    sampler = KeyframeSampler(KeyframeParams(min_interval_s=0.0))
    assert sampler.decide(wide, 0.0).reason is Reason.FIRST
    d = sampler.decide(odd, 0.1)
    assert not d.keyframe and d.reason is Reason.ODD_SHAPE
    assert sampler.decide(wide, 0.2).reason is Reason.STILL     # compared with the last keyframe again
    assert sampler.decide(scene(3, 480, 640), 0.3).reason is Reason.CHANGE


def test_a_camera_that_changes_resolution_starts_over_on_the_second_frame():
    sampler = KeyframeSampler(KeyframeParams(min_interval_s=0.0))
    sampler.decide(scene(1, 480, 640), 0.0)
    square = scene(1, 480, 480)
    assert sampler.decide(square, 0.1).reason is Reason.ODD_SHAPE
    d = sampler.decide(square, 0.2)
    assert d.keyframe and d.reason is Reason.NEW_SHAPE
    assert sampler.decide(square, 0.3).reason is Reason.STILL
    # the same size at another resolution is no change of shape at all
    assert sampler.decide(cv2.resize(square, (960, 960)), 0.4).reason is Reason.STILL


@settings(max_examples=40, deadline=None)
@given(shapes=st.lists(st.sampled_from([(48, 64), (64, 48), (50, 50), (30, 90), (64, 64)]), min_size=2, max_size=12))
def test_any_sequence_of_frame_shapes_is_decided_without_error(shapes):
    sampler = KeyframeSampler(KeyframeParams(min_interval_s=0.0))
    for i, (h, w) in enumerate(shapes):
        sampler.decide(scene(i, h * 4, w * 4), 0.1 * i)
