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
from vln_ros.harness.frames import scene

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
    for value in (d.score, d.histogram, d.pixel, d.edge, d.local):
        assert 0.0 <= value <= 1.0
    assert abs(d.shift_x) <= 0.5 and abs(d.shift_y) <= 0.5 and 1 / 3 <= d.gain <= 3.0


def test_downscale_keeps_aspect_and_makes_gray():
    small = downscale_gray(np.zeros((1080, 1920, 3), np.uint8), 160)
    assert small.shape == (90, 160) and small.dtype == np.uint8


# Real footage (test/data/README.md): a fixed camera, people walking in and out one by one.
# Clip frame numbers of the events, found by looking at the clip: a woman leaves (~25-35; her shadow
# leaves the floor ~38-45), a man walks in to the table (~65-90) and takes his place (~95-97), stands
# still (~100-270), leaves (~270-291) after which the empty room's auto exposure settles (~300-315), a
# woman walks in (~345-365).
EVENTS = [(20, 45), (60, 100), (270, 320), (340, 370)]
STILL = (100, 265)


@pytest.fixture(scope='module')
def clip_frames():
    frames = read_frames(DATA / 'people_clip.mp4')
    assert len(frames) == 400
    return frames


@pytest.fixture(scope='module')
def clip_decisions(clip_frames):
    return run(clip_frames, KeyframeParams())


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
    # People walking change several grid cells every min_interval_s, so each entry and exit is keyframed
    # at that pace (27 of 400 frames; the old whole-frame scores gave 15 but missed the empty room).
    assert sum(d.keyframe for d in clip_decisions) <= 0.075 * len(clip_decisions)


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


# -- exposure, camera motion and local changes (issue 16) -------------------------------------------------

def gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def exposed(base: np.ndarray, gains, sigma: float = 2.0, seed: int = 0) -> list[np.ndarray]:
    """`base` under each global gain in turn, with sensor noise: a still scene whose exposure changes."""
    rng = np.random.default_rng(seed)
    f = base.astype(np.float32)
    noise = [rng.normal(0, sigma, f.shape).astype(np.float32) for _ in range(8)]
    return [np.clip(f * np.float32(g) + noise[i % 8], 0, 255).astype(np.uint8) for i, g in enumerate(gains)]


RAMPS = {  # a gain per frame at 10 fps
    '+8 % in 1 s': np.r_[np.linspace(1.0, 1.08, 11), [1.08] * 20],
    '-8 % in 1 s': np.r_[np.linspace(1.0, 0.92, 11), [0.92] * 20],
    '+5 % in 0.5 s': np.r_[np.linspace(1.0, 1.05, 6), [1.05] * 20],
    'auto exposure recovering from -35 % (time constant 1.3 s)': 1 - 0.35 * np.exp(-np.arange(60) / 13),
}


def test_exposure_ramps_on_a_still_scene_are_no_change(clip_frames):
    changes = {}
    for still in (50, 150):  # the empty room; the man standing at the table
        for name, gains in RAMPS.items():
            decisions = run(exposed(gray(clip_frames[still]), gains), KeyframeParams(max_interval_s=600.0))
            changes[still, name] = [i for i, d in enumerate(decisions) if d.keyframe][1:]
    assert changes == dict.fromkeys(changes, [])


@pytest.mark.parametrize('factor', [0.4, 2.5])
def test_the_light_changing_more_than_twofold_is_a_change_not_exposure(clip_frames, factor):
    """Lights off, into a dark room: the compensation must not explain a real change of light away (uniform
    dark and bright frames too, which have no spread to compare)."""
    scene = gray(clip_frames[50])
    sampler = KeyframeSampler(KeyframeParams(max_interval_s=600.0, min_interval_s=0.0))
    assert sampler.decide(scene, 0.0).keyframe
    assert sampler.decide(np.clip(scene * factor, 0, 255).astype(np.uint8), 0.1).reason is Reason.CHANGE
    uniform = KeyframeSampler(KeyframeParams(max_interval_s=600.0, min_interval_s=0.0))
    uniform.decide(np.full((240, 320), 40, np.uint8), 0.0)
    assert uniform.decide(np.full((240, 320), 220, np.uint8), 0.1).reason is Reason.CHANGE


def test_exposure_flicker_on_a_still_scene_makes_no_change_keyframes(clip_frames):
    rng = np.random.default_rng(1)
    base = gray(clip_frames[150])
    changes, forced = {}, {}
    for fps in (10.0, 30.0):
        n = int(30 * fps)  # 30 s
        for kind, gains in (('random', 1 + rng.uniform(-0.05, 0.05, n)),
                            ('sine 1.3 Hz', 1 + 0.05 * np.sin(2 * np.pi * 1.3 * np.arange(n) / fps))):
            decisions = run(exposed(base, gains), KeyframeParams(), fps)
            changes[kind, fps] = sum(d.reason is Reason.CHANGE for d in decisions)
            forced[kind, fps] = sum(d.reason is Reason.MAX_INTERVAL for d in decisions)
    assert changes == dict.fromkeys(changes, 0)
    assert forced == dict.fromkeys(forced, 5)  # every max_interval_s (5 s): expected, not spurious


def panned(frame: np.ndarray, shares) -> list[np.ndarray]:
    """Views of `frame` (scaled 2x) 640 px wide, moved right by each share of that width."""
    big = cv2.resize(frame, None, fx=2.0, fy=2.0)
    return [big[:, round(s * 640):round(s * 640) + 640].copy() for s in shares]


def test_a_pan_of_under_2_percent_of_the_width_is_no_change(clip_frames):
    decisions = run(panned(clip_frames[150], [0.0, 0.017]), KeyframeParams(min_interval_s=0.0))
    d = decisions[1]
    assert not d.keyframe and d.reason is Reason.STILL, d
    assert d.shift_x == pytest.approx(-0.017, abs=0.003) and abs(d.shift_y) < 0.003  # the content moved left


def test_a_pan_that_brings_in_30_percent_new_view_is_a_change(clip_frames):
    d = run(panned(clip_frames[150], [0.0, 0.3]), KeyframeParams(min_interval_s=0.0))[1]
    assert d.keyframe and d.reason is Reason.CHANGE and d.score >= 0.3 - 0.01
    assert d.shift_x == pytest.approx(-0.3, abs=0.01)


def test_a_slow_continuous_pan_keyframes_at_a_sensible_rate(clip_frames):
    # 5 % of the width a second for 12 s: each keyframe once ~6 % (change_threshold) of the view is new,
    # not every min_interval_s (0.5 s) as the whole-frame scores did.
    panorama = cv2.resize(clip_frames[150], (1024, 288))
    frames = [panorama[:, round(x):round(x) + 640].copy() for x in np.arange(0, 384, 3.2)]
    decisions = run(frames, KeyframeParams(max_interval_s=600.0))
    keyframes = [i for i, d in enumerate(decisions) if d.keyframe]
    assert all(decisions[i].reason is Reason.CHANGE for i in keyframes[1:])
    assert len(keyframes) >= 6
    assert min(np.diff(keyframes)) / FPS >= 1.0, keyframes


def with_person(img: np.ndarray) -> np.ndarray:
    """A standing figure (head and body) covering ~8 % of the frame."""
    out = img.copy()
    h, w = img.shape[:2]
    x, y, pw, ph = int(0.3 * w), int(0.3 * h), int(0.13 * w), int(0.6 * h)
    cv2.ellipse(out, (x + pw // 2, y + ph // 8), (pw // 3, ph // 8), 0, 0, 360, (140, 160, 200), -1)
    cv2.rectangle(out, (x, y + ph // 4), (x + pw, y + ph), (60, 50, 140), -1)
    return out


def with_door(img: np.ndarray, opened: float) -> np.ndarray:
    """A door covering ~6 % of the frame, `opened` of its width showing the dark room behind it."""
    out = img.copy()
    h, w = img.shape[:2]
    x, y, dw, dh = int(0.6 * w), int(0.3 * h), int(0.11 * w), int(0.55 * h)
    out[y:y + dh, x:x + dw] = (90, 120, 160)
    out[y:y + dh, x:x + int(dw * opened)] = (25, 22, 20)
    return out


@pytest.mark.parametrize('brightness', [1.0, 0.92, 1.08])
@pytest.mark.parametrize('event', ['door opens', 'person leaves', 'person enters'])
def test_a_local_change_is_a_keyframe_even_with_an_exposure_change(event, brightness):
    room = scene(5, 240, 320)
    if event == 'door opens':
        before, during = with_door(room, 0.0), [with_door(room, k / 8) for k in range(1, 9)]
    elif event == 'person leaves':
        before, during = with_person(room), [room] * 8
    else:
        before, during = room, [with_person(room)] * 8
    # 1 s still, the event over 0.8 s while the exposure changes by `brightness`, 1 s still
    frames = [before] * 10 + during + during[-1:] * 10
    gains = np.r_[[1.0] * 10, np.linspace(1.0, brightness, 9)[1:], [brightness] * 10]
    rng = np.random.default_rng(2)
    noisy = [np.clip(f * g + rng.normal(0, 3, f.shape), 0, 255).astype(np.uint8)
             for f, g in zip(frames, gains, strict=True)]
    decisions = run(noisy, KeyframeParams(max_interval_s=600.0))
    keyframes = [(i, d.reason) for i, d in enumerate(decisions) if d.keyframe][1:]
    assert keyframes and all(i >= 10 and reason is Reason.CHANGE for i, reason in keyframes), keyframes


def test_a_local_change_is_measured_by_the_changed_grid_cells():
    room = scene(5, 240, 320)
    sampler = KeyframeSampler(KeyframeParams(min_interval_s=0.0))
    sampler.decide(room, 0.0)
    d = sampler.decide(with_person(room), 0.1)
    # a person of ~8 % of the frame changes ~8-15 % of the cells, dilutes to ~2 % in the whole-frame mean
    assert 0.06 <= d.local <= 0.2 and d.pixel < 0.03 and d.score == d.local
    assert (d.shift_x, d.shift_y, d.gain) == (0.0, 0.0, pytest.approx(1.0, abs=0.05))


def test_real_footage_the_empty_room_becomes_a_keyframe_after_each_person_left(clip_frames, clip_decisions):
    """The old whole-frame scores kept the keyframe with the woman still in view (29) until the man came in
    (68), and the one with the man's foot in view (289) until the exposure settled (312)."""
    keyframes = [i for i, d in enumerate(clip_decisions) if d.keyframe]
    for left, empty_until in ((38, 64), (290, 335)):
        shown = [i for i in keyframes if left <= i <= empty_until]
        assert shown, (left, empty_until, keyframes)
        sampler = KeyframeSampler(KeyframeParams(min_interval_s=0.0))
        sampler.decide(clip_frames[shown[-1]], 0.0)  # the last keyframe before someone comes in
        assert sampler.decide(clip_frames[empty_until], 1.0).score < KeyframeParams().change_threshold / 2


def test_force_makes_a_requested_keyframe_that_becomes_the_reference():
    sampler = KeyframeSampler(KeyframeParams())  # min_interval_s 0.5
    assert sampler.decide(scene(1), 0.0, force=True).reason is Reason.FIRST  # starting over is a keyframe anyway
    d = sampler.decide(scene(1), 0.1, force=True)  # unchanged, and within min_interval_s
    assert d.keyframe and d.reason is Reason.REQUESTED and d.score == 0.0 and d.since_last_s == pytest.approx(0.1)
    d = sampler.decide(scene(2), 0.2, force=True)
    assert d.keyframe and d.reason is Reason.REQUESTED and d.score > 0.5
    d = sampler.decide(scene(2), 0.3)  # compared with the requested keyframe, and min_interval_s counts from it
    assert not d.keyframe and d.reason is Reason.MIN_INTERVAL and d.score == 0.0
    assert sampler.decide(scene(2), 0.8).reason is Reason.STILL
    odd = sampler.decide(scene(3, 480, 480), 0.9, force=True)  # another aspect ratio: never compared
    assert not odd.keyframe and odd.reason is Reason.ODD_SHAPE
    assert sampler.decide(scene(2), 1.0).reason is Reason.STILL  # the reference is still scene(2)
