"""What the pages send (static/console.js): JSON text frames, one pydantic model per "type". No sockets.

A frame is one of the PageMessage models (a discriminated union on "type"; other keys are ignored), or it is
Unreadable (not a JSON object with a string "type", or a type nobody knows: a bad message), or Invalid (a known
type with bad content, e.g. an instruction without text: refused like the command it names, after the check
of who may send it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from vln_ros.core.tasks import MAX_INSTRUCTION_CHARS

NOT_UNDERSTOOD = 'not understood: send a JSON object with a "type"'
TYPE_SHOWN_CHARS = 40   # of an unknown type, in the reply (the page's own text, cut)


class _FromPage(BaseModel):
    model_config = ConfigDict(extra='ignore', frozen=True)


class TakeControl(_FromPage):
    type: Literal['take_control'] = 'take_control'


class ReleaseControl(_FromPage):
    """Free control without an e-stop."""
    type: Literal['release_control'] = 'release_control'


class Heartbeat(_FromPage):
    """The page holding control is alive (every heartbeat_timeout_s / 3 or so)."""
    type: Literal['heartbeat'] = 'heartbeat'


class Instruction(_FromPage):
    """A new task; text is stripped, not empty, at most MAX_INSTRUCTION_CHARS."""
    type: Literal['instruction'] = 'instruction'
    text: str

    @model_validator(mode='before')
    @classmethod
    def _text_is_a_string(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get('text'), str):
            raise PydanticCustomError('instruction_text', 'an instruction needs "text": a string')
        return data

    @field_validator('text')
    @classmethod
    def _text_fits(cls, text: str) -> str:
        text = text.strip()
        if not text:
            raise PydanticCustomError('instruction_empty', 'empty instruction')
        if len(text) > MAX_INSTRUCTION_CHARS:
            raise PydanticCustomError('instruction_long', 'instruction of {chars} characters (at most {most})',
                                      {'chars': len(text), 'most': MAX_INSTRUCTION_CHARS})
        return text


class StopTask(_FromPage):
    type: Literal['stop_task'] = 'stop_task'


class Estop(_FromPage):
    type: Literal['estop'] = 'estop'


class ReleaseEstop(_FromPage):
    type: Literal['release_estop'] = 'release_estop'


PageMessage = Annotated[TakeControl | ReleaseControl | Heartbeat | Instruction | StopTask | Estop | ReleaseEstop,
                        Field(discriminator='type')]
RobotCommand = Instruction | StopTask | ReleaseEstop   # what the node carries out for the page holding control
_PAGE_MESSAGE: TypeAdapter[PageMessage] = TypeAdapter(PageMessage)


@dataclass(frozen=True)
class Unreadable:
    """Not a message: the reply goes to `to` ('' when there was no type to name)."""
    to: str
    reason: str


@dataclass(frozen=True)
class Invalid:
    """A known type with content that does not pass its model."""
    type: str
    reason: str


def parse(text: str) -> PageMessage | Invalid | Unreadable:
    """One text frame from a page."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get('type'), str):
        return Unreadable('', NOT_UNDERSTOOD)
    kind: str = data['type']
    try:
        return _PAGE_MESSAGE.validate_python(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e['type'] == 'union_tag_invalid' for e in errors):
            shown = kind[:TYPE_SHOWN_CHARS]
            return Unreadable(shown, f'unknown message type {shown!r}')
        return Invalid(kind, errors[0]['msg'])
