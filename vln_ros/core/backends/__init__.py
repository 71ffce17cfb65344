"""Backends: keyframe + prompt -> the model's text. `make_backend` builds the one the parameters choose.

Each backend module registers itself (registry.py: name, parameter model, factory); the line below is
the one place that lists them, and their order is the order of the `backend` choices. Importing them is
cheap: lmdeploy (and torch) exist only on GPU machines and the openai client is not needed for a replay,
so each imports its library only in its factory.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from vln_ros.core.backends import lmdeploy_pipeline, openai_server, oracle, replay  # noqa: F401  (each registers)
from vln_ros.core.backends.base import Answer, AnswerRecord, AnswerRecorder, Backend, BackendError, Request
from vln_ros.core.backends.registry import BACKENDS

if TYPE_CHECKING:
    from vln_ros.core.config import InferenceParams

__all__ = ['Answer', 'AnswerRecord', 'AnswerRecorder', 'Backend', 'BackendError', 'Request', 'make_backend']


def make_backend(params: InferenceParams) -> Backend:
    """Create (and for lmdeploy, load) the configured backend; StartupError says how to fix a bad setup."""
    spec = BACKENDS[params.backend]
    return spec.factory(getattr(params, spec.name), params)
