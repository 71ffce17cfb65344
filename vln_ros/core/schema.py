"""What parameter models are made of: `param()` fields, StrictModel and the two errors about them.

A module of its own so that a backend can declare its parameter model beside its code (backends/*.py)
without importing core/config.py: config builds InferenceParams from the backends' registry, so it
imports them, never the other way round. config.py re-exports everything here.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ParameterError(ValueError):
    """A parameter value is outside its allowed range or of the wrong type."""


class StartupError(RuntimeError):
    """The node cannot start as configured (e.g. a backend's library is missing); the message says the fix."""


def param(default: Any, description: str, unit: str = '', *, dynamic: bool = False, **constraints: Any) -> Any:
    """A model field with its unit kept where the ROS descriptor and the docs can find it.

    dynamic: the node applies a new value while it runs (`ros2 param set`); otherwise the parameter is
    read-only and changing it needs a restart."""
    return Field(default, description=description, json_schema_extra={'unit': unit, 'dynamic': dynamic},
                 **constraints)


class StrictModel(BaseModel):
    # frozen: a node reads one validated snapshot; extra='forbid': a misspelt YAML key is an error,
    # not a silently ignored setting.
    model_config = ConfigDict(extra='forbid', frozen=True)


class BackendParams(StrictModel):
    """The settings of one backend: the `<backend>.*` parameters of inference_node."""

    def check_selected(self) -> None:
        """Raise ValueError (the message names the parameter) when these settings cannot run as the chosen
        backend; called only for the backend the `backend` parameter selects."""


# One token of a ROS name (rmw's rule): letters, digits and underscores, not starting with a digit.
_NAME_TOKEN = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')


# A robot's topic and service names are its namespace and up to ~40 characters more, and DDS names end at 255 (a
# 240-character robot name ended inference_node's start with rclpy's InvalidTopicNameException, a traceback).
MAX_NAMESPACE_CHARS = 64
NAMESPACE_RULE = ("tokens of letters, digits and underscores, not starting with a digit, separated by single '/', "
                  f'at most {MAX_NAMESPACE_CHARS} characters')


def is_relative_namespace(name: str) -> bool:
    """`r1`, `site_a/r1`: NAMESPACE_RULE, no leading '/'. The one rule for robot namespaces (the `robots`
    parameter, fleet launch files)."""
    return 0 < len(name) <= MAX_NAMESPACE_CHARS and all(_NAME_TOKEN.fullmatch(token) for token in name.split('/'))


def check_robot_names(robots: Sequence[str]) -> None:
    """Each robot namespace is a relative ROS namespace (`r1`, `site_a/r1`) and appears once: a duplicate
    would make two pipelines answer one robot's keyframes, so it is refused, not merged. ValueError names the
    bad one."""
    seen: set[str] = set()
    for robot in robots:
        if not is_relative_namespace(robot):
            raise ValueError(f"robots: {robot!r} is not a relative ROS namespace ({NAMESPACE_RULE}; no leading '/')")
        if robot in seen:
            raise ValueError(f'robots: {robot!r} is listed twice (each robot namespace once)')
        seen.add(robot)
