"""The backends' registry: each backend module registers its name, parameter model and factory once.

Adding a backend touches its own module (its code, its BackendParams model, one register_backend call)
and the one import line in backends/__init__.py. From the registry come inference_node's `backend`
choices and its `<backend>.*` parameter sections (core/config.py), the launch argument's choices
(bringup.BACKENDS), and so config/vln.yaml and the node pages' tables (tools/gen_docs.py).

No heavy import here or at the top of a backend module: config imports them all, and config must import
everywhere (lmdeploy only exists on GPU machines). A backend imports its library inside its factory.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vln_ros.core.backends.base import Backend
    from vln_ros.core.schema import BackendParams


@dataclass(frozen=True)
class BackendSpec:
    name: str                  # the `backend` parameter's value, and the name of its parameter section
    summary: str               # what it is, in a few words: part of the `backend` parameter's description
    params: type[BackendParams]
    # (its section, all of inference_node's parameters) -> the backend, loaded; StartupError says the fix
    factory: Callable[[Any, Any], Backend]


BACKENDS: dict[str, BackendSpec] = {}   # in registration order: the order of the choices and sections


def register_backend(spec: BackendSpec) -> BackendSpec:
    if spec.name in BACKENDS:
        raise ValueError(f'backend {spec.name!r} is registered twice')
    BACKENDS[spec.name] = spec
    return spec


def model_name(params: Any) -> str:
    """The model's name for plans: the last part of the `model` path."""
    return Path(params.model).name or params.model
