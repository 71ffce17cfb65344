"""core/keyframe_request: the model-paced keyframe protocol, both sides, with time passed in (no ROS, no sleeps)."""
from __future__ import annotations

from vln_ros.core.keyframe_request import (
    MAX_SEQUENCE,
    REQUEST_RESEND_S,
    KeyframeAnswerer,
    KeyframeAsk,
    KeyframeAsker,
)


# -- the model side ---------------------------------------------------------------------------------------------
def test_a_loaded_model_says_it_paces_the_keyframes_without_asking_for_one():
    asker = KeyframeAsker(first_sequence=41)
    assert asker.loaded() == KeyframeAsk(41, wanted=False, any_frame=False)
    assert not asker.open


def test_a_free_model_asks_once_with_a_new_number_and_any_frame_only_for_a_new_task():
    asker = KeyframeAsker(first_sequence=41)
    asker.loaded()
    asker.task_started()
    first = asker.free(now_s=100.0)
    assert first == KeyframeAsk(42, wanted=True, any_frame=True) and asker.open
    assert asker.free(now_s=100.0 + REQUEST_RESEND_S - 0.01) is None   # still open: not asked again yet
    asker.keyframe_taken()
    assert not asker.open
    assert asker.free(now_s=101.0) == KeyframeAsk(43, wanted=True, any_frame=False)   # any_frame is spent


def test_an_unanswered_request_is_asked_again_with_a_new_number_after_the_resend_time():
    asker = KeyframeAsker(first_sequence=7)
    asker.task_started()
    assert asker.free(now_s=10.0) == KeyframeAsk(8, True, True)
    again = asker.free(now_s=10.0 + REQUEST_RESEND_S)
    assert again == KeyframeAsk(9, True, True)   # the new task still wants any frame


def test_an_open_request_is_withdrawn_once_no_task_runs_and_nothing_is_said_when_none_is_open():
    asker = KeyframeAsker(first_sequence=5)
    assert asker.idle() is None
    asker.free(now_s=1.0)
    assert asker.idle() == KeyframeAsk(6, wanted=False, any_frame=False)
    assert not asker.open and asker.idle() is None


def test_request_numbers_wrap_within_uint32_and_never_become_zero():
    asker = KeyframeAsker(first_sequence=MAX_SEQUENCE)
    ask = asker.free(now_s=0.0)
    assert ask is not None and ask.sequence == 1


def test_request_numbers_start_somewhere_new_for_each_model():
    """A camera that answered request N of an earlier inference node must not take the next one's N as answered."""
    starts = {KeyframeAsker().loaded().sequence for _ in range(20)}
    assert len(starts) > 1 and all(0 < s < MAX_SEQUENCE for s in starts)


# -- the camera side --------------------------------------------------------------------------------------------
def test_without_any_request_every_frame_is_judged_and_none_answers_a_request():
    answerer = KeyframeAnswerer()
    turn = answerer.turn(pace_by_model=True)
    assert (turn.judge, turn.any_frame, turn.request) == (True, False, None)
    assert not answerer.paced(pace_by_model=True)


def test_once_a_model_paces_frames_are_judged_only_while_a_request_is_open():
    answerer = KeyframeAnswerer()
    answerer.on_request(KeyframeAsk(7, wanted=False, any_frame=False))   # a model is here and busy
    assert answerer.paced(pace_by_model=True) and not answerer.turn(pace_by_model=True).judge
    answerer.on_request(KeyframeAsk(8, wanted=True, any_frame=False))
    turn = answerer.turn(pace_by_model=True)
    assert turn.judge and not turn.any_frame and turn.request is not None and turn.request.sequence == 8


def test_one_request_is_answered_by_one_keyframe():
    answerer = KeyframeAnswerer()
    answerer.on_request(KeyframeAsk(8, wanted=True, any_frame=False))
    turn = answerer.turn(pace_by_model=True)
    assert answerer.turn(pace_by_model=True).judge   # no keyframe yet: the next frame is judged too
    answerer.keyframe_sent(turn)
    assert not answerer.turn(pace_by_model=True).judge


def test_a_request_already_answered_stays_answered_when_its_latched_copy_comes_again():
    answerer = KeyframeAnswerer()
    answerer.on_request(KeyframeAsk(9, wanted=True, any_frame=False))
    answerer.keyframe_sent(answerer.turn(pace_by_model=True))
    answerer.on_request(KeyframeAsk(9, wanted=True, any_frame=False))
    assert not answerer.turn(pace_by_model=True).judge
    answerer.on_request(KeyframeAsk(10, wanted=True, any_frame=False))
    assert answerer.turn(pace_by_model=True).judge


def test_a_keyframe_for_an_older_request_does_not_close_a_newer_one():
    answerer = KeyframeAnswerer()
    answerer.on_request(KeyframeAsk(11, wanted=True, any_frame=False))
    old_turn = answerer.turn(pace_by_model=True)
    answerer.on_request(KeyframeAsk(12, wanted=True, any_frame=True))   # re-sent while the frame was judged
    answerer.keyframe_sent(old_turn)
    turn = answerer.turn(pace_by_model=True)
    assert turn.judge and turn.any_frame and turn.request == KeyframeAsk(12, True, True)


def test_a_new_task_asks_for_any_frame_and_a_withdrawn_request_closes_it():
    answerer = KeyframeAnswerer()
    answerer.on_request(KeyframeAsk(20, wanted=True, any_frame=True))
    assert answerer.turn(pace_by_model=True).any_frame
    answerer.on_request(KeyframeAsk(20, wanted=False, any_frame=False))
    assert not answerer.turn(pace_by_model=True).judge


def test_pace_by_model_off_judges_every_frame_even_with_a_model_asking():
    answerer = KeyframeAnswerer()
    answerer.on_request(KeyframeAsk(3, wanted=False, any_frame=False))
    turn = answerer.turn(pace_by_model=False)
    assert turn.judge and turn.request is None and not answerer.paced(pace_by_model=False)
    answerer.keyframe_sent(turn)   # answers nothing
    answerer.on_request(KeyframeAsk(4, wanted=True, any_frame=True))
    assert answerer.turn(pace_by_model=True).request == KeyframeAsk(4, True, True)


def test_the_two_sides_together_one_request_one_keyframe():
    """What the model asks is what the camera answers: a new task's any-frame request, then a busy model."""
    asker, answerer = KeyframeAsker(first_sequence=99), KeyframeAnswerer()
    answerer.on_request(asker.loaded())
    assert not answerer.turn(pace_by_model=True).judge   # loaded, no task: nothing judged
    asker.task_started()
    ask = asker.free(now_s=0.0)
    assert ask is not None
    answerer.on_request(ask)
    turn = answerer.turn(pace_by_model=True)
    assert turn.judge and turn.any_frame
    answerer.keyframe_sent(turn)
    asker.keyframe_taken()
    assert not answerer.turn(pace_by_model=True).judge   # the model works on it: nothing judged
    ask = asker.free(now_s=1.0)
    assert ask is not None and not ask.any_frame
    answerer.on_request(ask)
    assert answerer.turn(pace_by_model=True).judge
