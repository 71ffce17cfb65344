"""The model's text -> a plan, or a counted rejection that becomes a stop plan. No ROS.

Order of attempts: a JSON object (fenced or bare, with text around it, or cut off by the token limit),
else plain text with discrete actions ("move forward 1.5 m", "turn left 30 degrees", "向前走两米", "左转九十度"),
else a rejection. Then validation against the configured ranges: numbers finite, steps and turns clamped,
at most `max_waypoints`, confidence in [0, 1]. Adjustments are reported (and counted by the node), and any
problem is a `rejection` reason: the plan is then a stop plan. `parse_answer` never raises, whatever it is
given (tests/test_parser.py throws arbitrary text and near-valid JSON at it).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import partial_json_parser

from vln_ros.core.config import ParserParams
from vln_ros.core.control import Waypoint
from vln_ros.core.prompts import ARRIVED_ACTION, ENV_MAX_CHARS, STOP_ACTION

# Longer than any answer the token limit allows; bounds the parser's time on garbage.
MAX_ANSWER_CHARS = 16_384
_DEG = math.pi / 180.0

# Spellings models use for our actions (after lower-casing and '_' for spaces and hyphens).
_ACTION_ALIASES = {
    'move_forward': 'forward', 'go_forward': 'forward', 'ahead': 'forward', 'straight': 'forward',
    'go_straight': 'forward', 'back': 'backward', 'move_backward': 'backward', 'go_back': 'backward',
    'move_left': 'left', 'strafe_left': 'left', 'move_right': 'right', 'strafe_right': 'right',
    'left_turn': 'turn_left', 'right_turn': 'turn_right', 'rotate_left': 'turn_left',
    'rotate_right': 'turn_right', 'halt': 'stop', 'wait': 'stop', 'done': 'arrived', 'goal_reached': 'arrived',
    'reached': 'arrived', 'finish': 'arrived', 'finished': 'arrived', 'complete': 'arrived',
}
_KEYS = {
    'environment': ('env', 'environment', 'scene', 'description'),
    'action': ('act', 'action'),
    'waypoints': ('wp', 'waypoints', 'path', 'steps'),
}
_WP_KEYS = (('dx', 'x', 'forward'), ('dy', 'y', 'left'), ('dtheta', 'dth', 'th', 'turn', 'yaw'),
            ('confidence', 'conf', 'c'))
_CONTROL_CHARS = re.compile(r'[\x00-\x08\x0b-\x1f\x7f]')
_THINK = re.compile(r'<think>.*?(?:</think>|$)', re.S)
_FENCE = re.compile(r'```(?:json|JSON)?\s*(.*?)(?:```|$)', re.S)


@dataclass(frozen=True)
class ParsedAnswer:
    environment: str
    action: str
    waypoints: tuple[Waypoint, ...]
    stop: bool                     # the plan must not be followed: stop (also after a rejection)
    arrived: bool                  # the model says the task is done
    source: str                    # json, partial_json, text, or none
    rejection: str | None = None   # counter name of why this is a stop plan against the model's will
    detail: str = ''
    adjustments: tuple[str, ...] = ()  # clamped_step, clamped_turn, clamped_confidence, truncated, ...


def _rejected(reason: str, detail: str, source: str = 'none', environment: str = '') -> ParsedAnswer:
    return ParsedAnswer(environment, STOP_ACTION, (), stop=True, arrived=False, source=source,
                        rejection=reason, detail=detail[:200])


def parse_answer(text: object, limits: ParserParams) -> ParsedAnswer:
    """Model text -> ParsedAnswer. Never raises."""
    try:
        return _parse(text, limits)
    except Exception as exc:  # last guard: a bug here must still end in a stop plan, not a dead node
        return _rejected('internal_error', repr(exc))


def _parse(text: object, limits: ParserParams) -> ParsedAnswer:
    if not isinstance(text, str):
        return _rejected('not_text', f'answer is {type(text).__name__}, not text')
    if len(text) > MAX_ANSWER_CHARS:
        return _rejected('too_long', f'{len(text)} characters (most: {MAX_ANSWER_CHARS})')
    text = _THINK.sub('', text).strip()  # reasoning models: only what follows the thinking counts
    if not text:
        return _rejected('empty', 'empty answer')
    found = _find_json_object(text)
    if found is not None:
        obj, source = found
        return _from_json(obj, source, limits)
    if limits.text_fallback:
        from_text = _from_text(text, limits)
        if from_text is not None:
            return from_text
    return _rejected('no_answer', f'neither JSON nor an action in: {text[:80]!r}')


_WP_OPEN = re.compile(r'"(?:wp|waypoints)"\s*:\s*\[')


def plan_from_stream(text: str, limits: ParserParams) -> ParsedAnswer | None:
    """The plan in an answer still being written, once it is complete: a JSON object whose action is named
    and whose waypoint array has closed, with more to come (a plan-first answer's `,"env":...`). None until
    then, and for anything that is not a valid move plan (a stop, an arrival or a rejection waits for the
    whole answer). Cheap enough to call on every streamed piece; never raises."""
    try:
        return _plan_from_stream(text, limits)
    except Exception:  # a bug here must not end the request: the whole answer is still parsed
        return None


def _plan_from_stream(text: str, limits: ParserParams) -> ParsedAnswer | None:
    start = text.find('{')
    opened = _WP_OPEN.search(text, start) if start >= 0 else None
    if opened is None:
        return None
    depth, end = 0, -1
    for i in range(opened.end() - 1, len(text)):
        if text[i] == '[':
            depth += 1
        elif text[i] == ']':
            depth -= 1
            if depth == 0:
                end = i
                break
    if end < 0:
        return None
    rest = text[end + 1:].lstrip()
    if not rest or rest[0] not in ',}':
        return None
    try:
        obj = json.loads(text[start:end + 1] + '}')
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or _pick(obj, 'action') is None:
        return None
    parsed = _from_json(obj, 'json', limits)
    return parsed if parsed.rejection is None and not parsed.stop else None


# -- JSON ---------------------------------------------------------------------------------------------

def _find_json_object(text: str) -> tuple[dict[str, Any], str] | None:
    candidates = [m.group(1) for m in _FENCE.finditer(text)] if '```' in text else []
    candidates.append(text)
    for candidate in candidates:
        start = candidate.find('{')
        if start < 0:
            continue
        body = candidate[start:]
        try:  # complete object, possibly followed by more text
            obj, _ = json.JSONDecoder().raw_decode(body)
            if isinstance(obj, dict):
                return obj, 'json'
        except (ValueError, RecursionError):
            pass
        try:  # cut off (token limit): complete what is there; half-written numbers are left out
            obj = partial_json_parser.loads(body, partial_json_parser.ALL & ~partial_json_parser.NUM)
            if isinstance(obj, dict) and obj:
                return obj, 'partial_json'
        except Exception:  # the library raises several types on garbage; none of them matter here
            pass
    return None


def _pick(obj: dict[str, Any], field: str) -> Any:
    for key in _KEYS[field]:
        if key in obj:
            return obj[key]
    return None


def _clean_text(value: Any, limit: int = 2 * ENV_MAX_CHARS) -> str:
    if not isinstance(value, str):
        return ''
    return _CONTROL_CHARS.sub(' ', value).strip()[:limit]


def _normal_action(value: Any) -> str:
    if not isinstance(value, str):
        return ''
    action = re.sub(r'[\s\-]+', '_', value.strip().lower())[:40]
    return _ACTION_ALIASES.get(action, action)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):  # bool is an int in Python; true is not 1 m
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().removesuffix('m').removesuffix('°'))
        except ValueError:
            return None
    return None


def _waypoint_numbers(item: Any) -> list[float | None] | None:
    """[dx, dy, dtheta_deg, confidence?] from a list or a dict; None if the shape is not a waypoint."""
    if isinstance(item, (list, tuple)):
        values = list(item)
    elif isinstance(item, dict):
        values = []
        for keys in _WP_KEYS:
            values.append(next((item[k] for k in keys if k in item), None))
        while values and values[-1] is None:
            values.pop()
    else:
        return None
    if not 3 <= len(values) <= 4:
        return None
    return [_number(v) for v in values]


def _from_json(obj: dict[str, Any], source: str, limits: ParserParams) -> ParsedAnswer:
    environment = _clean_text(_pick(obj, 'environment'))
    action = _normal_action(_pick(obj, 'action'))
    if action in (STOP_ACTION, ARRIVED_ACTION):
        return ParsedAnswer(environment, action, (), stop=True, arrived=action == ARRIVED_ACTION, source=source)
    raw = _pick(obj, 'waypoints')
    if raw is None:
        return _rejected('missing_waypoints', f'no waypoints and action {action!r}', source, environment)
    if not isinstance(raw, list):
        return _rejected('bad_waypoints', f'waypoints are {type(raw).__name__}, not a list', source, environment)
    steps: list[list[float | None]] = []
    for i, item in enumerate(raw):
        numbers = _waypoint_numbers(item)
        cut_off = source == 'partial_json' and i == len(raw) - 1   # the step being written when the answer ended
        if numbers is None or any(n is None for n in numbers[:3]) or (cut_off and (len(numbers) < 4
                                                                              or numbers[3] is None)):
            if cut_off:
                break  # e.g. '[0.5,0.0,0,' : three numbers written, the confidence never came
            return _rejected('bad_waypoint', f'waypoint {i} is {item!r:.60}', source, environment)
        steps.append(numbers)
    return _validated(environment, action or 'move', steps, source, limits, default_confidence=None)


def _validated(environment: str, action: str, steps: list[list[float | None]], source: str,
               limits: ParserParams, default_confidence: float | None) -> ParsedAnswer:
    if not steps:
        return _rejected('no_waypoints', f'action {action!r} without waypoints', source, environment)
    adjustments: list[str] = []
    if len(steps) > limits.max_waypoints:
        steps = steps[:limits.max_waypoints]
        adjustments.append('truncated')
    waypoints = []
    for i, step in enumerate(steps):
        dx, dy, dtheta_deg = step[0], step[1], step[2]
        confidence = step[3] if len(step) > 3 else default_confidence
        if dx is None or dy is None or dtheta_deg is None:  # the callers already drop or reject such a step
            return _rejected('bad_waypoint', f'waypoint {i} is {step!r:.60}', source, environment)
        if confidence is None:
            return _rejected('bad_waypoint', f'waypoint {i} has no confidence', source, environment)
        if not all(math.isfinite(v) for v in (dx, dy, dtheta_deg, confidence)):
            return _rejected('non_finite', f'waypoint {i} = {step}', source, environment)
        length = math.hypot(dx, dy)
        if length > limits.max_step_m:
            dx, dy = dx * limits.max_step_m / length, dy * limits.max_step_m / length
            adjustments.append('clamped_step')
        dtheta = dtheta_deg * _DEG
        if abs(dtheta) > limits.max_turn_rad:
            dtheta = math.copysign(limits.max_turn_rad, dtheta)
            adjustments.append('clamped_turn')
        if not 0.0 <= confidence <= 1.0:
            confidence = min(max(confidence, 0.0), 1.0)
            adjustments.append('clamped_confidence')
        waypoints.append(Waypoint(dx, dy, dtheta, confidence))
    return ParsedAnswer(environment, action, tuple(waypoints), stop=False, arrived=False, source=source,
                        adjustments=tuple(dict.fromkeys(adjustments)))


# -- free text ----------------------------------------------------------------------------------------

_NUM = r'(-?\d+(?:\.\d+)?|[零一二两三四五六七八九十半]+)'
_UNIT = r'(cm|centimet(?:er|re)s?|厘米|公分|m\b|met(?:er|re)s?|米|°|deg(?:ree)?s?|度|rad(?:ian)?s?)?'
_QUANTITY = re.compile(_NUM + r'\s*' + _UNIT, re.I)
# (pattern, kind); kinds: fwd, back, turn_l, turn_r, strafe_l, strafe_r, around, stop, arrived.
_TEXT_ACTIONS = [
    (r'\b(?:turn|rotate|veer|head|go|bear)\s+(?:to\s+the\s+)?left\b|\bleft\s+turn\b|左转|向左转|往左转', 'turn_l'),
    (r'\b(?:turn|rotate|veer|head|go|bear)\s+(?:to\s+the\s+)?right\b|\bright\s+turn\b|右转|向右转|往右转',
     'turn_r'),
    (r'\bturn\s+(?:\d+\s*(?:°|deg(?:ree)?s?)\s+)?(?:to\s+the\s+)?left\b', 'turn_l'),
    (r'\bturn\s+(?:\d+\s*(?:°|deg(?:ree)?s?)\s+)?(?:to\s+the\s+)?right\b', 'turn_r'),
    (r'\bturn\s+around\b|掉头|向后转', 'around'),
    (r'\b(?:strafe|sidestep|side-step|shift|slide)\s+(?:to\s+the\s+)?left\b|向左平移|左移', 'strafe_l'),
    (r'\b(?:strafe|sidestep|side-step|shift|slide)\s+(?:to\s+the\s+)?right\b|向右平移|右移', 'strafe_r'),
    (r'\b(?:move|go|walk|step|head|proceed|continue|drive)\s+(?:straight\s+)?(?:forward|ahead|straight)\b'
     r'|\bforward\b(?=\s*-?\d)|向前|往前|前进|直走', 'fwd'),
    (r'\b(?:move|go|walk|step|back)\s+(?:back(?:ward)?s?|up)\b|\bbackward\b(?=\s*-?\d)|后退|向后|往后', 'back'),
    (r'\b(?:arrived|goal\s+(?:has\s+been\s+|is\s+)?reached|reached\s+the\s+goal|task\s+(?:is\s+)?complete)\b'
     r'|到达|已到|抵达', 'arrived'),
    (r'\b(?:stop|halt|do\s+not\s+move|don\'t\s+move)\b|停止|停下|停', 'stop'),
]
_TEXT_ACTION = re.compile('|'.join(f'(?P<{kind}{i}>{pattern})' for i, (pattern, kind) in enumerate(_TEXT_ACTIONS)),
                          re.I)
_CN_DIGITS = {'零': 0, '一': 1, '二': 2, '两': 2, '三': 3, '四': 4, '五': 5, '六': 6, '七': 7, '八': 8, '九': 9}


def _cn_number(s: str) -> float | None:
    """Chinese numerals up to 99 (三, 十五, 九十, 两) and 半 (a half)."""
    if s == '半':
        return 0.5
    if '十' in s:
        tens, _, ones = s.partition('十')
        if (tens and tens not in _CN_DIGITS) or (ones and ones not in _CN_DIGITS):
            return None
        return 10.0 * (_CN_DIGITS[tens] if tens else 1) + (_CN_DIGITS[ones] if ones else 0)
    return float(_CN_DIGITS[s]) if len(s) == 1 and s in _CN_DIGITS else None


def _quantity(segment: str) -> tuple[float, str] | None:
    m = _QUANTITY.search(segment)
    if m is None:
        return None
    number = float(m.group(1)) if m.group(1)[-1].isdigit() else _cn_number(m.group(1))
    if number is None:
        return None
    return number, (m.group(2) or '').lower()


def _from_text(text: str, limits: ParserParams) -> ParsedAnswer | None:
    matches = list(_TEXT_ACTION.finditer(text))
    if not matches:
        return None
    environment = _clean_text(text.split('\n', 1)[0], ENV_MAX_CHARS)
    kinds = [re.sub(r'\d+$', '', m.lastgroup or '') for m in matches]
    if 'arrived' in kinds or 'stop' in kinds:  # any stop word wins: the robot stops rather than guesses
        action = ARRIVED_ACTION if 'arrived' in kinds else STOP_ACTION
        return ParsedAnswer(environment, action, (), stop=True, arrived=action == ARRIVED_ACTION, source='text')
    steps: list[list[float | None]] = []
    for i, (m, kind) in enumerate(zip(matches, kinds, strict=True)):
        following = text[m.end():matches[i + 1].start() if i + 1 < len(matches) else len(text)][:30]
        found = _quantity(m.group(0) + ' ' + following)  # "turn 45 degrees right" or "turn right 45 degrees"
        if kind in ('turn_l', 'turn_r', 'around'):
            angle = math.degrees(limits.text_turn_rad)
            if kind == 'around':
                angle = 180.0
            elif found is not None and not found[1].startswith(('c', 'm', '厘', '公', '米')):
                angle = math.degrees(found[0]) if found[1].startswith('rad') else found[0]
            steps.append([0.0, 0.0, angle if kind != 'turn_r' else -angle])
        else:
            distance = limits.text_step_m
            if found is not None and not found[1].startswith(('°', 'd', '度', 'r')):
                distance = found[0] / 100.0 if found[1] in ('cm', '厘米', '公分') or found[1].startswith('centi') \
                    else found[0]
            dx, dy = {'fwd': (distance, 0.0), 'back': (-distance, 0.0), 'strafe_l': (0.0, distance),
                      'strafe_r': (0.0, -distance)}[kind]
            steps.append([dx, dy, 0.0])
    action = {'fwd': 'forward', 'back': 'backward', 'turn_l': 'turn_left', 'turn_r': 'turn_right',
              'around': 'turn_left', 'strafe_l': 'left', 'strafe_r': 'right'}[kinds[0]]
    return _validated(environment, action, steps, 'text', limits, default_confidence=limits.text_confidence)
