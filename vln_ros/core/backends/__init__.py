"""Backends: keyframe + prompt -> the model's text. `make_backend` picks one from the parameters.

Each is imported only when chosen: lmdeploy (and torch) exist only on GPU machines, and the openai client
is not needed for a replay.
"""
from __future__ import annotations

from pathlib import Path

from vln_ros.core.backends.base import Answer, AnswerRecord, AnswerRecorder, Backend, BackendError, Request
from vln_ros.core.config import InferenceParams

__all__ = ['Answer', 'AnswerRecord', 'AnswerRecorder', 'Backend', 'BackendError', 'Request', 'make_backend']


def make_backend(params: InferenceParams) -> Backend:
    """Create (and for lmdeploy, load) the configured backend; StartupError says how to fix a bad setup."""
    model_name = Path(params.model).name or params.model
    if params.backend == 'replay':
        from vln_ros.core.backends.replay import ReplayBackend
        return ReplayBackend(params.replay, model_name)
    if params.backend == 'openai':
        from vln_ros.core.backends.openai_server import OpenAIBackend
        return OpenAIBackend(params.openai, model_name, params.inference_timeout_s)
    from vln_ros.core.backends.lmdeploy_pipeline import LmdeployBackend
    return LmdeployBackend(params)
