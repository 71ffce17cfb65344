"""The console's control rules (vln_ros/console/control.py) and the pages' messages (messages.py): who may do
what from which page, heartbeats and their timeout. No sockets, no sleeps: every time is passed in."""
from __future__ import annotations

import json

import pytest

from vln_ros.console.control import LOST_BEFORE_RUN, NOT_HOLDER, Control, Lost, Verdict
from vln_ros.console.messages import (
    NOT_UNDERSTOOD,
    Estop,
    Heartbeat,
    Instruction,
    Invalid,
    ReleaseControl,
    ReleaseEstop,
    StopTask,
    TakeControl,
    Unreadable,
    parse,
)
from vln_ros.core.tasks import MAX_INSTRUCTION_CHARS

TIMEOUT_S = 0.5
A, B = 1, 2


def said(control: Control, page: int, message: dict[str, object], now_s: float = 0.0) -> Verdict:
    """What control makes of a page's message, sent as the page sends it (JSON text)."""
    return control.handle(page, parse(json.dumps(message)), now_s)


def holding(page: int = A, now_s: float = 0.0) -> Control:
    control = Control(TIMEOUT_S)
    assert said(control, page, {'type': 'take_control'}, now_s).reply == (True, 'you have control')
    return control


# -- the messages -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(('text', 'expected'), [
    ('{"type": "take_control"}', TakeControl()), ('{"type": "release_control"}', ReleaseControl()),
    ('{"type": "heartbeat", "sent_ms": 12}', Heartbeat()), ('{"type": "stop_task"}', StopTask()),
    ('{"type": "estop"}', Estop()), ('{"type": "release_estop"}', ReleaseEstop()),
    ('{"type": "instruction", "text": "  go to the door \\n"}', Instruction(text='go to the door')),
])
def test_each_message_the_page_sends_is_read_as_its_type_and_other_keys_are_ignored(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize('text', ['{not json', '[1, 2]', '"take_control"', '{"text": "go"}', '{"type": 5}', ''])
def test_what_is_not_a_json_object_with_a_string_type_is_not_understood(text):
    assert parse(text) == Unreadable('', NOT_UNDERSTOOD)


def test_an_unknown_type_is_named_in_the_reply_cut_to_forty_characters():
    assert parse('{"type": "launch_missiles"}') == Unreadable('launch_missiles',
                                                              "unknown message type 'launch_missiles'")
    long = 'x' * 100
    assert parse(json.dumps({'type': long})) == Unreadable('x' * 40, f"unknown message type {'x' * 40!r}")


@pytest.mark.parametrize(('message', 'reason'), [
    ({'type': 'instruction'}, 'an instruction needs "text": a string'),
    ({'type': 'instruction', 'text': 42}, 'an instruction needs "text": a string'),
    ({'type': 'instruction', 'text': ' \n\t'}, 'empty instruction'),
    ({'type': 'instruction', 'text': 'x' * (MAX_INSTRUCTION_CHARS + 1)},
     f'instruction of {MAX_INSTRUCTION_CHARS + 1} characters (at most {MAX_INSTRUCTION_CHARS})'),
])
def test_an_instruction_without_a_fitting_text_is_invalid_with_the_reason(message, reason):
    assert parse(json.dumps(message)) == Invalid('instruction', reason)


def test_an_instruction_of_the_longest_allowed_text_is_read():
    assert parse(json.dumps({'type': 'instruction', 'text': 'y' * MAX_INSTRUCTION_CHARS})) == \
        Instruction(text='y' * MAX_INSTRUCTION_CHARS)


# -- who holds control ------------------------------------------------------------------------------------------
def test_one_page_takes_control_and_every_page_hears_of_it_once():
    control = Control(TIMEOUT_S)
    verdict = said(control, A, {'type': 'take_control'})
    assert verdict == Verdict('take_control', (True, 'you have control'), changed=True, log='page 1 took control')
    assert control.holder == A and control.alive(now_s=0.0)
    again = said(control, A, {'type': 'take_control'})
    assert again == Verdict('take_control', (True, 'you had control already'))


def test_another_page_cannot_take_control_while_one_holds_it():
    control = holding(A)
    verdict = said(control, B, {'type': 'take_control'})
    assert verdict == Verdict('take_control', (False, 'page 1 holds control: it must release it (or close) first'),
                              refused=True)
    assert control.holder == A


def test_release_frees_control_without_a_loss_and_only_from_the_holder():
    control = holding(A)
    assert said(control, B, {'type': 'release_control'}) == Verdict('release_control', (False, NOT_HOLDER),
                                                                   refused=True)
    verdict = said(control, A, {'type': 'release_control'})
    assert verdict == Verdict('release_control', (True, 'control released (no e-stop)'), changed=True,
                              log='page 1 released control')
    assert control.holder is None and not control.alive(now_s=0.0)
    assert control.expire(now_s=100.0) is None   # released is not lost: no e-stop later either
    assert said(control, B, {'type': 'take_control'}).reply == (True, 'you have control')


# -- heartbeats -------------------------------------------------------------------------------------------------
def test_heartbeats_keep_control_alive_and_their_absence_for_the_timeout_loses_it_once():
    control = holding(A, now_s=10.0)
    for now_s in (10.4, 10.8, 11.2):
        assert said(control, A, {'type': 'heartbeat'}, now_s) == Verdict('heartbeat')
        assert control.expire(now_s + TIMEOUT_S) is None and control.alive(now_s + TIMEOUT_S)
    assert not control.alive(11.2 + TIMEOUT_S + 0.01)
    lost = control.expire(11.2 + TIMEOUT_S + 0.01)
    assert lost == Lost(A, 'no heartbeat for 0.5 s from the page holding control')
    assert control.holder is None and control.expire(20.0) is None


def test_taking_control_counts_as_the_first_heartbeat():
    control = holding(A, now_s=5.0)
    assert control.alive(5.0 + TIMEOUT_S) and control.expire(5.0 + TIMEOUT_S) is None
    assert control.expire(5.0 + TIMEOUT_S + 0.01) is not None


def test_a_heartbeat_from_a_page_without_control_is_answered_not_counted_and_changes_nothing():
    control = holding(A, now_s=0.0)
    verdict = said(control, B, {'type': 'heartbeat'}, now_s=0.4)
    assert verdict == Verdict('heartbeat', (False, NOT_HOLDER)) and not verdict.refused
    assert control.expire(0.51) == Lost(A, 'no heartbeat for 0.5 s from the page holding control')


def test_the_holders_socket_closing_loses_control_and_another_pages_does_not():
    control = holding(A)
    assert control.closed(B) is None and control.holder == A
    assert control.closed(A) == Lost(A, 'the page holding control (page 1) disconnected')
    assert control.holder is None and control.closed(A) is None


def test_clear_frees_control_without_a_loss():
    control = holding(A)
    control.clear()
    assert control.holder is None and control.expire(100.0) is None and control.closed(A) is None


# -- what each command may do from which page -------------------------------------------------------------------
def test_the_estop_is_taken_from_any_page_with_or_without_control():
    control = Control(TIMEOUT_S)
    assert said(control, B, {'type': 'estop'}) == Verdict('estop', estop=True)
    control = holding(A)
    assert said(control, B, {'type': 'estop'}) == Verdict('estop', estop=True)
    assert control.holder == A


@pytest.mark.parametrize('message', [{'type': 'instruction', 'text': 'go'}, {'type': 'stop_task'},
                                     {'type': 'release_estop'}])
def test_robot_commands_run_only_from_the_page_holding_control(message):
    control = Control(TIMEOUT_S)
    assert said(control, B, message) == Verdict(message['type'], (False, 'take control first'), refused=True)
    said(control, A, {'type': 'take_control'})
    assert said(control, B, message) == Verdict(message['type'], (False, 'page 1 holds control'), refused=True)
    verdict = said(control, A, message)
    assert verdict.reply is None and verdict.run == parse(json.dumps(message)) and not verdict.refused


def test_an_instruction_is_run_stripped():
    verdict = said(holding(A), A, {'type': 'instruction', 'text': '  go to the door \n'})
    assert verdict.run == Instruction(text='go to the door')


def test_who_may_send_is_checked_before_what_was_sent():
    """A page without control hears that first, whatever its instruction looks like."""
    control = Control(TIMEOUT_S)
    assert said(control, B, {'type': 'instruction', 'text': 42}).reply == (False, 'take control first')
    said(control, A, {'type': 'take_control'})
    verdict = said(control, A, {'type': 'instruction', 'text': 42})
    assert verdict == Verdict('instruction', (False, 'an instruction needs "text": a string'), refused=True)
    assert said(control, A, {'type': 'instruction', 'text': ''}).reply == (False, 'empty instruction')


def test_bad_messages_are_answered_and_counted_as_bad_not_as_refused_commands():
    control = holding(A)
    assert control.handle(A, parse('{not json'), 0.0) == Verdict('', (False, NOT_UNDERSTOOD), bad=True)
    assert control.handle(B, parse('{"type": "launch_missiles"}'), 0.0) == \
        Verdict('launch_missiles', (False, "unknown message type 'launch_missiles'"), bad=True)
    assert control.holder == A


def test_a_queued_command_may_not_run_once_its_page_has_lost_control():
    control = holding(A)
    assert control.before_run(A) is None and control.before_run(B) == LOST_BEFORE_RUN
    control.expire(now_s=1.0)
    assert control.before_run(A) == LOST_BEFORE_RUN
