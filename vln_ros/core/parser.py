"""The model's text -> a plan, or a counted rejection that becomes a stop plan. No ROS.

Order of attempts: a JSON object (fenced or bare, with text around it, or cut off by the token limit),
else plain text with discrete actions ("move forward 1.5 m", "turn left 30 degrees", "向前走两米", "左转九十度"),
else a rejection. Then validation against the configured ranges: numbers finite, steps and turns clamped,
at most `max_waypoints`, confidence in [0, 1]. Adjustments are reported (and counted by the node), and any
problem is a `rejection` reason: the plan is then a stop plan. `parse_answer` never raises, whatever it is
given (tests/test_parser.py throws arbitrary text and near-valid JSON at it).

One answer, one plan: the whole answer (`parse_answer`) and its stream (`StreamParser`, `plan_from_stream`)
follow the same rules, so a plan published from the stream is the whole answer's plan (test_parser checks
every prefix of every answer in test/answers.py):
- Thinking is not the answer. `<think>...</think>` blocks, and one still open when the answer ends, are
  dropped wherever they are; so is everything before a `</think>` whose `<think>` the chat template wrote
  (Qwen3 thinking models), unless the answer opens with its JSON object. The stream never reads inside a
  think block, closed or still open.
- A field named twice is rejected (`duplicate_key`, a counted parse failure, so a stop plan): the same key
  twice, or two spellings of one field (`action` and `act`, `waypoints` and `wp`, `scene` and `env`; `x` and
  `dx` in a waypoint). JSON keeps the last of two equal keys and our alias order the first spelling, so such an
  answer names two plans and the robot would follow whichever the decoder happened to keep: it stops instead.
- An answer that opens with a JSON object (after think blocks and white space) is that object, whatever
  follows it. Only such answers are published from the stream, and only once nothing still to come can
  change their plan: when the object has closed (a later key could repeat `act` or `wp`), or, under guided
  decoding (`guided`: the engine writes each of the schema's keys once, in order), as soon as the waypoint
  array has closed (plan_first's `{"act":..,"wp":[..],"env":..}`). Stops, arrivals and rejections wait for
  the whole answer.
- An answer longer than MAX_ANSWER_CHARS is rejected (`too_long`); the stream publishes nothing once the
  answer has passed it. (A plan published before the answer outgrew it is followed by the stop plan, as a
  plan whose answer breaks after its waypoints is.)
The stream parse is incremental: each piece is read once and the object decoded at most twice (16k characters
in 4-character pieces: 10-30 ms, where re-parsing every prefix took 8-13 s).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
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
_THINK_OPEN, _THINK_CLOSE = '<think>', '</think>'
_THINK = re.compile(f'{_THINK_OPEN}.*?(?:{_THINK_CLOSE}|$)', re.S)
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
    text = _without_thinking(text)  # reasoning models: only what follows the thinking counts
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


def _without_thinking(text: str) -> str:
    text = _THINK.sub('', text).strip()
    if not text.startswith('{'):  # a '</think>' left is one whose '<think>' the chat template wrote
        _, closed, after = text.partition(_THINK_CLOSE)
        if closed:
            text = after.strip()
    return text


# -- the stream ---------------------------------------------------------------------------------------

_LEAD, _OBJECT, _DONE = range(3)
_KEY_CHARS = 12  # longer than any key we read: a top-level string is kept up to about this many characters
_IN_STRING = re.compile(r'["\\]')
_STRUCTURE = re.compile(r'["{}\[\]]')
_NOT_WHITE = re.compile(r'[^ \t\n\r]')  # JSON's white space


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest end of text that is the start of tag (it may be completed by the next piece)."""
    if '<' not in text[1 - len(tag):]:
        return 0
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class StreamParser:
    """The plan in an answer still being written, fed piece by piece (`feed`): returned once, when complete
    (see the module docstring for when that is), and None before, after and for anything that is not a
    valid move plan. Each piece is read once. `guided`: the answer is held to the schema by the engine.
    Never raises."""

    def __init__(self, limits: ParserParams, guided: bool = False) -> None:
        self._limits = limits
        self._guided = guided
        self.plan: ParsedAnswer | None = None
        self._chars = 0             # of the answer so far, thinking included (the length guard counts them)
        self._thinking = False
        self._held = ''             # the end of the last piece, kept back: it may begin a think tag
        self._state = _LEAD
        self._object: list[str] = []  # the answer without its thinking, from its opening '{'
        self._size = 0              # characters of the object so far
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._string: str | None = None  # the top-level string being read (a key, or a value)
        self._last_string = ''
        self._waypoints = _LEAD     # the first top-level waypoint array: _LEAD not seen, _OBJECT in it, _DONE
        self._waypoints_end = -1    # index of its ']' while what follows is still white space

    def feed(self, piece: str) -> ParsedAnswer | None:
        if self._state == _DONE:
            return None
        try:
            return self._feed(piece)
        except Exception:  # a bug here must not end the request: the whole answer is still parsed
            self._state = _DONE
            return None

    def _feed(self, piece: str) -> ParsedAnswer | None:
        self._chars += len(piece)
        if self._chars > MAX_ANSWER_CHARS:  # the whole answer will be rejected: too_long
            self._state = _DONE
            return None
        text = self._unthought(piece)
        if self._state == _LEAD:
            lead = len(text) - len(text.lstrip())
            if lead == len(text):
                return None
            if text[lead] != '{':  # prose first: the whole answer decides
                self._state = _DONE
                return None
            text = text[lead:]
            self._state = _OBJECT
        self._object.append(text)
        self._size += len(text)
        i = 0
        while self._state == _OBJECT:
            i, end, closing = self._scan(text, i)
            if end < 0:
                return None
            whole = ''.join(self._object)  # at most twice an answer: the waypoints, the object
            self._object = [whole]
            if closing == '':
                self._state = _DONE  # nothing after the object matters
            parsed = self._plan(whole[:end + 1] + closing)
            if parsed is not None:
                self.plan, self._state = parsed, _DONE
                return parsed
        return None

    def _unthought(self, piece: str) -> str:
        """The piece without think blocks, as _THINK.sub would remove them from the whole answer."""
        text, kept, i = self._held + piece, [], 0
        while True:
            tag = _THINK_CLOSE if self._thinking else _THINK_OPEN
            j = text.find(tag, i)
            if j < 0:
                break
            if not self._thinking:
                kept.append(text[i:j])
            self._thinking, i = not self._thinking, j + len(tag)
        rest = text[i:]
        cut = len(rest) - _partial_tag(rest, tag)
        if not self._thinking:
            kept.append(rest[:cut])
        self._held = rest[cut:]
        return ''.join(kept)

    def _scan(self, text: str, start: int) -> tuple[int, int, str]:
        """Reads text (the object's next characters) from start -> (where to go on, index in the object of the end
        of a candidate and what closes it): the object's closing '}', or under guidance the first top-level
        waypoint array's ']' once a ',' follows it; (len(text), -1, '') when there is none yet. Jumps from one
        character that matters to the next (quotes, brackets, escapes)."""
        i, base = start, self._size - len(text)  # base: index in the object of text[0]
        while True:
            if self._in_string:
                if self._escaped:  # the escaped character, maybe in this piece while the '\\' was in the last
                    if i >= len(text):
                        return i, -1, ''
                    self._escaped, i = False, i + 1
                found = _IN_STRING.search(text, i)
                j = len(text) if found is None else found.start()
                if self._string is not None and len(self._string) <= _KEY_CHARS:
                    self._string += text[i:j]
                if found is None:
                    return j, -1, ''
                if text[j] == '\\':
                    self._escaped, i = True, j + 1
                    if self._string is not None:  # a key with an escape matches none of ours (no early plan)
                        self._string = '\\'
                    continue
                self._in_string, i = False, j + 1
                if self._string is not None:
                    self._last_string, self._string = self._string, None
                continue
            if self._waypoints_end >= 0:
                found = _NOT_WHITE.search(text, i)
                if found is None:
                    return len(text), -1, ''
                end, self._waypoints_end = self._waypoints_end, -1
                if found.group() == ',':
                    return found.end(), end, '}'
                i = found.start()
            found = _STRUCTURE.search(text, i)
            if found is None:
                return len(text), -1, ''
            ch, i = found.group(), found.end()
            if ch == '"':
                self._in_string = True
                self._string = '' if self._depth == 1 else None
            elif ch in '{[':
                self._depth += 1
                if (ch == '[' and self._depth == 2 and self._guided and self._waypoints == _LEAD
                        and self._last_string in _KEYS['waypoints']):
                    self._waypoints = _OBJECT
            else:
                self._depth -= 1
                if self._depth == 0:
                    return i, base + i - 1, ''
                if self._depth == 1 and self._waypoints == _OBJECT:
                    self._waypoints, self._waypoints_end = _DONE, base + i - 1

    def _plan(self, text: str) -> ParsedAnswer | None:
        try:
            obj = _DECODER.decode(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(obj, dict) or _pick(obj, 'action') is None:
            return None
        parsed = _from_json(obj, 'json', self._limits)
        return parsed if parsed.rejection is None and not parsed.stop else None


def plan_from_stream(text: str, limits: ParserParams, guided: bool = False) -> ParsedAnswer | None:
    """What StreamParser makes of text given in one piece: the plan the stream would have published by the
    end of text, or None. Never raises."""
    return StreamParser(limits, guided).feed(text)


# -- JSON ---------------------------------------------------------------------------------------------

class _Object(dict[str, Any]):
    """A decoded JSON object that remembers the keys it was given more than once."""
    repeated: frozenset[str] = frozenset()


def _object_pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) < len(pairs):
        keys = [key for key, _ in pairs]
        obj.repeated = frozenset(key for key in obj if keys.count(key) > 1)
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_object_pairs)


def _repeated_field(obj: dict[str, Any], fields: Iterable[tuple[str, ...]]) -> str | None:
    """The first field obj names twice (one key twice, or two of its spellings), or None."""
    repeated: frozenset[str] = getattr(obj, 'repeated', frozenset())  # a dict not decoded here: none
    for keys in fields:
        named = [key for key in keys if key in obj]
        if len(named) > 1 or (named and named[0] in repeated):
            return '/'.join(named)
    return None


def _find_json_object(text: str) -> tuple[dict[str, Any], str] | None:
    # An answer that opens with an object is that object (what the stream reads), whatever follows it.
    candidates = [text] if text.startswith('{') else []
    if '```' in text:
        candidates += [m.group(1) for m in _FENCE.finditer(text)]
    candidates.append(text)
    for candidate in candidates:
        start = candidate.find('{')
        if start < 0:
            continue
        body = candidate[start:]
        try:  # complete object, possibly followed by more text
            obj, _ = _DECODER.raw_decode(body)
            if isinstance(obj, dict):
                return obj, 'json'
        except (ValueError, RecursionError):
            pass
        try:  # cut off (token limit): complete what is there; half-written numbers are left out
            obj = partial_json_parser.loads(body, partial_json_parser.ALL & ~partial_json_parser.NUM,
                                            parser=_DECODER.decode)
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
    repeated = _repeated_field(obj, _KEYS.values())
    if repeated is not None:  # two plans in one answer: the robot stops rather than pick one
        return _rejected('duplicate_key', f'{repeated} named twice', source)
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
        repeated = _repeated_field(item, _WP_KEYS) if isinstance(item, dict) else None
        if repeated is not None:
            return _rejected('duplicate_key', f'waypoint {i}: {repeated} named twice', source, environment)
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
