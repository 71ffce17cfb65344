"""core/parser: realistic answers, validation and clamping, and no input that can make it raise."""
from __future__ import annotations

import json
import math

import pytest
from answers import CORPUS
from hypothesis import given, settings
from hypothesis import strategies as st

from vln_ros.core.config import ParserParams
from vln_ros.core.parser import MAX_ANSWER_CHARS, StreamParser, parse_answer, plan_from_stream

LIMITS = ParserParams()


@pytest.mark.parametrize(('text', 'action', 'stop', 'n_waypoints', 'rejection'), CORPUS)
def test_realistic_answers(text, action, stop, n_waypoints, rejection):
    parsed = parse_answer(text, LIMITS)
    assert (parsed.action, parsed.stop, len(parsed.waypoints), parsed.rejection) == (action, stop, n_waypoints,
                                                                                     rejection), parsed
    if rejection is not None:
        assert parsed.stop and not parsed.waypoints and not parsed.arrived


def test_the_asked_format_becomes_radians_and_keeps_every_number():
    parsed = parse_answer('{"env":"corridor","act":"forward","wp":[[0.8,0.1,20,0.9],[0.6,-0.2,-45,0.7]]}',
                          LIMITS)
    assert parsed.source == 'json' and parsed.environment == 'corridor' and not parsed.adjustments
    (a, b) = parsed.waypoints
    assert (a.dx, a.dy, a.confidence) == (0.8, 0.1, 0.9) and a.dtheta == pytest.approx(math.radians(20))
    assert (b.dx, b.dy, b.confidence) == (0.6, -0.2, 0.7) and b.dtheta == pytest.approx(math.radians(-45))


@pytest.mark.parametrize('cut', ['[0.5,0.0,0', '[0.5,0.0,0,', '[0.5,0.0,0,0', '[0.5,'])
def test_an_answer_cut_inside_its_last_step_keeps_the_whole_steps_before_it(cut):
    """The step being written when generation stopped is dropped, however much of it was written (three
    numbers and a comma were a rejection of the whole answer: found by the oracle's fault tests)."""
    parsed = parse_answer('{"env":"corridor","act":"forward","wp":[[0.5,0,0,0.9],' + cut, LIMITS)
    assert parsed.rejection is None and parsed.source == 'partial_json', parsed
    assert [(w.dx, w.confidence) for w in parsed.waypoints] == [(0.5, 0.9)]


def test_a_complete_step_without_confidence_is_still_a_rejection():
    parsed = parse_answer('{"env":"c","act":"forward","wp":[[0.5,0,0,0.9],[0.5,0,0]]}', LIMITS)
    assert parsed.rejection == 'bad_waypoint' and parsed.stop


def test_free_text_numbers_units_and_directions():
    parsed = parse_answer('turn 45 degrees to the right and go ahead 50 cm, then strafe left 0.2 m', LIMITS)
    assert [(round(w.dx, 3), round(w.dy, 3), round(math.degrees(w.dtheta))) for w in parsed.waypoints] == [
        (0.0, 0.0, -45), (0.5, 0.0, 0), (0.0, 0.2, 0)]
    assert all(w.confidence == LIMITS.text_confidence for w in parsed.waypoints)
    chinese = parse_answer('后退三十厘米，然后右转', LIMITS)
    assert [(round(w.dx, 3), round(math.degrees(w.dtheta))) for w in chinese.waypoints] == [
        (-0.3, 0), (0.0, -round(math.degrees(LIMITS.text_turn_rad)))]


def test_text_fallback_can_be_switched_off():
    parsed = parse_answer('Move forward 1 meter.', ParserParams(text_fallback=False))
    assert parsed.rejection == 'no_answer' and parsed.stop


def test_out_of_range_values_are_clamped_and_reported():
    limits = ParserParams(max_waypoints=2, max_step_m=1.0, max_turn_rad=0.5)
    parsed = parse_answer('{"env":"x","act":"forward","wp":[[3,4,90,1.7],[0.1,0,-90,-0.2],[1,0,0,1]]}', limits)
    first, second = parsed.waypoints
    assert (first.dx, first.dy) == pytest.approx((0.6, 0.8))  # direction kept, length clamped
    assert first.dtheta == 0.5 and second.dtheta == -0.5
    assert first.confidence == 1.0 and second.confidence == 0.0
    assert set(parsed.adjustments) == {'truncated', 'clamped_step', 'clamped_turn', 'clamped_confidence'}


def test_stop_wins_in_free_text():
    parsed = parse_answer('Go forward 1 m... no wait, a person is crossing: stop!', LIMITS)
    assert parsed.stop and parsed.action == 'stop' and not parsed.waypoints


@pytest.mark.parametrize('value', [None, 42, b'{"act":"stop"}', ['forward'], 'x' * (MAX_ANSWER_CHARS + 1),
                                   '[' * 10_000, '{"a":' * 10_000, '{"wp":' + '[' * 5000])
def test_hostile_inputs_end_in_a_counted_stop(value):
    parsed = parse_answer(value, LIMITS)
    assert parsed.stop and not parsed.waypoints
    assert parsed.rejection is not None and parsed.rejection != 'internal_error'


def _check_safe(parsed):
    assert parsed.rejection != 'internal_error', parsed.detail
    assert len(parsed.waypoints) <= LIMITS.max_waypoints
    for w in parsed.waypoints:
        assert all(math.isfinite(v) for v in (w.dx, w.dy, w.dtheta, w.confidence))
        assert math.hypot(w.dx, w.dy) <= LIMITS.max_step_m + 1e-9
        assert abs(w.dtheta) <= LIMITS.max_turn_rad + 1e-12
        assert 0.0 <= w.confidence <= 1.0
    if parsed.stop:
        assert not parsed.waypoints
    else:
        assert parsed.waypoints and parsed.rejection is None


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_raises_and_never_exceeds_limits(text):
    _check_safe(parse_answer(text, LIMITS))


_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                     st.booleans(), st.none(), st.text(max_size=5))
_waypoint = st.one_of(st.lists(_numbers, min_size=0, max_size=6),
                      st.dictionaries(st.sampled_from(['dx', 'dy', 'dtheta', 'confidence', 'x', 'c']), _numbers))
_answer = st.fixed_dictionaries({}, optional={
    'env': st.one_of(st.text(max_size=30), _numbers), 'act': st.one_of(st.sampled_from(
        ['forward', 'stop', 'arrived', 'turn_left', 'fly', '']), _numbers),
    'wp': st.one_of(st.lists(_waypoint, max_size=12), _numbers)})


@settings(max_examples=400, deadline=None)
@given(_answer, st.integers(0, 400), st.sampled_from(['', 'Answer: ', '```json\n']))
def test_near_valid_json_cut_anywhere_never_raises_and_never_exceeds_limits(answer, cut, prefix):
    text = prefix + json.dumps(answer)
    _check_safe(parse_answer(text, LIMITS))
    _check_safe(parse_answer(text[:cut], LIMITS))


PLAN_FIRST = '{"act":"forward","wp":[[0.8,0,0,0.9],[0.6,0.2,20,0.7]],"env":"corridor, red door ahead"}'


def test_a_plan_first_answer_yields_its_plan_from_the_stream_once_the_waypoints_are_complete_under_guidance():
    """Guided decoding writes each key once, in order: nothing after the waypoints can change the plan."""
    cut = PLAN_FIRST.index('],"env"') + 2  # the waypoint array closed and the next key begun
    for i in range(len(PLAN_FIRST) + 1):
        parsed = plan_from_stream(PLAN_FIRST[:i], LIMITS, guided=True)
        if i < cut:
            assert parsed is None, PLAN_FIRST[:i]
        else:
            assert parsed is not None and parsed.action == 'forward' and not parsed.stop
            assert parsed.waypoints == parse_answer(PLAN_FIRST, LIMITS).waypoints


def test_unguided_the_stream_waits_for_the_object_to_close_since_a_later_key_could_name_the_plan_again():
    for i in range(len(PLAN_FIRST)):
        assert plan_from_stream(PLAN_FIRST[:i], LIMITS) is None, PLAN_FIRST[:i]
    assert plan_from_stream(PLAN_FIRST, LIMITS).waypoints == parse_answer(PLAN_FIRST, LIMITS).waypoints
    repeated = PLAN_FIRST[:PLAN_FIRST.index('"env"')] + '"act":"stop","env":"a person"}'
    assert parse_answer(repeated, LIMITS).rejection == 'duplicate_key'
    assert all(plan_from_stream(repeated[:i], LIMITS) is None for i in range(len(repeated) + 1))


def test_the_stream_yields_no_plan_for_stops_arrivals_bad_waypoints_or_a_scene_first_answer_before_its_end():
    scene_first = '{"env":"corridor","act":"forward","wp":[[0.5,0,0,0.9]]}'
    for guided in (False, True):
        assert plan_from_stream(scene_first[:-1], LIMITS, guided) is None  # the array closed, nothing follows yet
        assert plan_from_stream(scene_first, LIMITS, guided) is not None
        for text in ('{"act":"stop","wp":[],"env":"a wall"}', '{"act":"arrived","wp":[],"env":"x"}',
                     '{"wp":[[0.5,0,0,0.9]],"env":"x"}', '{"act":"forward","wp":[[0.5,0,0]],"env":"x"}',
                     '{"act":"forward","wp":[[NaN,0,0,1]],"env":"x"}', '{"act":"forward","wp":[],"env":"x"}',
                     '{"act":"forward","wp":[[0.5,0,0,0.9]] and then', 'Sure: {"act":"forward","wp":[[0.5,0,0,0.9]]}',
                     '```json\n{"act":"forward","wp":[[0.5,0,0,0.9]]}\n```'):
            assert plan_from_stream(text, LIMITS, guided) is None, text


def _stream_plan(text: str, guided: bool, pieces: list[int]) -> tuple[int, object]:
    """Feeds text in pieces of the given lengths (cycled) -> (characters fed when the plan came, the plan)."""
    stream, at, k = StreamParser(LIMITS, guided), 0, 0
    while at < len(text):
        piece = text[at:at + pieces[k % len(pieces)]]
        at, k = at + len(piece), k + 1
        parsed = stream.feed(piece)
        if parsed is not None:
            assert stream.feed(text[at:]) is None  # once
            return at, parsed
    return at, None


def _agrees(text: str, guided: bool) -> None:
    """Every prefix: the stream's plan is none or the whole answer's plan, and pieces change nothing."""
    whole = parse_answer(text, LIMITS)

    def check(parsed, where):
        if parsed is not None:
            assert whole.rejection is None and not whole.stop, (where, whole)
            assert (parsed.action, parsed.waypoints) == (whole.action, whole.waypoints), where

    every = 1 if len(text) < 2000 else 251  # a one-piece parse of each of 16k prefixes takes a while
    published = None
    for i in [*range(0, len(text), every), len(text)]:
        parsed = plan_from_stream(text[:i], LIMITS, guided)
        check(parsed, text[:i])
        if parsed is not None:
            published = i if published is None else published
        else:  # once out, the plan stays out for every longer prefix within the length guard
            assert published is None or i > MAX_ANSWER_CHARS, text[:i]
    for pieces in ([1], [3], [7, 1, 2], [len(text) or 1]):
        at, parsed = _stream_plan(text, guided, pieces)
        check(parsed, (text[:at], pieces))
        if every == 1:
            assert (parsed is None) == (published is None), (text, pieces)
            assert parsed is None or published <= at < published + max(pieces), (text, pieces)


def _schema_shaped(text: str) -> bool:
    """What guided decoding can write: one JSON object with the schema's keys, each once."""
    try:
        pairs = json.loads(text, object_pairs_hook=lambda p: p)
    except ValueError:
        return False
    keys = [key for key, _ in pairs] if isinstance(pairs, list) else []
    return bool(keys) and sorted(keys) == sorted(set(keys)) and set(keys) <= {'env', 'act', 'wp'}


@pytest.mark.parametrize('text', [text for text, *_ in CORPUS], ids=range(len(CORPUS)))
def test_on_every_prefix_of_every_corpus_answer_the_stream_has_no_plan_or_the_whole_answers(text):
    _agrees(text, guided=False)
    if _schema_shaped(text):
        _agrees(text, guided=True)


@pytest.mark.parametrize('text', [text for text, *_ in CORPUS if len(text) > MAX_ANSWER_CHARS])
def test_past_the_length_guard_the_stream_publishes_nothing_though_the_plan_completes_there(text):
    assert parse_answer(text, LIMITS).rejection == 'too_long'
    assert parse_answer(text[:MAX_ANSWER_CHARS], LIMITS).rejection != 'too_long'
    for guided in (False, True):
        assert _stream_plan(text, guided, [5]) == (len(text), None)
        assert plan_from_stream(text, LIMITS, guided) is None


def test_the_stream_reads_no_plan_inside_a_think_block_whatever_the_pieces_cut():
    plan = '{"act":"forward","wp":[[0.5,0,0,0.9]],"env":"x"}'
    thinking = '<think>' + plan + '</think>'
    for n in range(1, len(thinking) + 1):
        stream = StreamParser(LIMITS, guided=True)
        assert all(stream.feed(thinking[i:i + n]) is None for i in range(0, len(thinking), n)), n
        assert stream.feed(plan) is not None  # after the thinking, the answer's own plan
        stream = StreamParser(LIMITS, guided=True)
        assert all(stream.feed(thinking[i:i + n]) is None for i in range(0, len(thinking) - 8, n)), n  # open


_KEY_SPELLINGS = {'env': ['env', 'environment', 'scene'], 'act': ['act', 'action'],
                  'wp': ['wp', 'waypoints', 'path', 'steps']}
_plan_values = {'env': st.sampled_from(['corridor', 'a <think> tag', '} ] "', '']),
                'act': st.sampled_from(['forward', 'stop', 'arrived', 'turn_left', 'fly']),
                'wp': st.lists(st.one_of(st.lists(st.sampled_from([0, 0.5, -0.3, 45, 0.9, 'x']), min_size=3,
                                                  max_size=4),
                                         st.fixed_dictionaries({'dx': st.just(0.5), 'dy': st.just(0),
                                                                'dtheta': st.just(10), 'confidence': st.just(0.8)},
                                                               optional={'x': st.just(0.1)})),
                               max_size=3)}
_fields = st.lists(st.sampled_from(['env', 'act', 'wp']).flatmap(
    lambda field: st.tuples(st.sampled_from(_KEY_SPELLINGS[field]), _plan_values[field])), min_size=1, max_size=5)
_around = st.sampled_from(['', ' ', '\n', '<think>', '</think>', '<think>{"act":"forward","wp":[[1,0,0,1]]}</think>',
                           'Sure: ', '```json\n', '\n```', ' {"act":"stop","wp":[]}', 'x' * 40])


@settings(max_examples=150, deadline=None)
@given(st.lists(_around, max_size=2), _fields, st.lists(_around, max_size=2), st.booleans())
def test_any_answer_of_our_keys_any_repeated_and_wrapped_in_thinking_or_text_has_one_plan(before, fields, after,
                                                                                        guided):
    """Keys from every spelling, repeated or not, in any order; think blocks, fences and prose around."""
    body = '{' + ','.join(f'{json.dumps(key)}:{json.dumps(value)}' for key, value in fields) + '}'
    text = ''.join(before) + body + ''.join(after)
    if guided and not _schema_shaped(body):  # guidance writes only what the schema allows
        return
    _agrees(text, guided)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.booleans())
def test_the_stream_parser_takes_any_text(text, guided):
    plan_from_stream(text, LIMITS, guided)
    plan_from_stream('{"act":"forward","wp":' + text, LIMITS, guided)
