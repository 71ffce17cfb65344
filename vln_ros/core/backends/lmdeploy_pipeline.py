"""The lmdeploy backend: the VLM in this process (`lmdeploy.pipeline`), tensor parallel over `tp` GPUs.

lmdeploy is an optional extra (`pip install '.[lmdeploy]'`, or the GPU server's own install); it is
imported only when this backend is chosen, and its absence is a StartupError with the fix. What is sent
to lmdeploy is built by plain functions (engine_config_kwargs, chat_messages, gen_config_kwargs) that the
tests check without lmdeploy installed.

API facts this relies on (lmdeploy 0.18; shared/GPU.md and the lmdeploy source):
- `pipeline(model, backend_config=PytorchEngineConfig(...)|TurbomindEngineConfig(...))`. TurboMind has no
  Qwen3-VL, so engine `auto` is PyTorch. `distributed_executor_backend` is 'mp' or 'ray' (lmdeploy's own
  default for tp > 1 on CUDA is Ray; the GPU test machines have no Ray, so `executor: mp` there).
- Messages in OpenAI form; an image item `{'type': 'image_data', 'image_data': {'data': PIL.Image}}` skips
  base64 and URL loading. Qwen3-VL reads the image budget from the request's `mm_processor_kwargs`, keyed
  by modality (`{'image': {'min_pixels', 'max_pixels'}}`, lmdeploy/vl/model/preprocess_utils.py); older
  Qwen2/2.5-VL code paths from keys of the image item: both are sent.
- Greedy: `do_sample=False`. Guided JSON: `response_format={'type': 'json_schema', 'json_schema': {...}}`.
- Cancel: a `pipe.session()` per request, `session.abort()` from any thread (the stream then ends with
  finish_reason 'abort'). Abort is a no-op before the request holds an engine handle, so the flag is also
  checked on every streamed chunk.
- `pipe.close()` with the mp executor was seen to hang at tp=2: close() runs it in a thread with a bound,
  then kills the engine's child processes.
"""
from __future__ import annotations

import copy
import io
import multiprocessing
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vln_ros.core.backends.base import Answer, Backend, BackendError, Request
from vln_ros.core.backends.registry import BackendSpec, register_backend
from vln_ros.core.schema import BackendParams, StartupError, param

if TYPE_CHECKING:
    from vln_ros.core.config import InferenceParams


class LmdeployParams(BackendParams):
    """The in-process LMDeploy engine (backend: lmdeploy)."""

    engine: Literal['auto', 'pytorch', 'turbomind'] = param(
        'auto', 'LMDeploy engine; auto = PyTorch (TurboMind has no Qwen3-VL as of lmdeploy 0.18)')
    tp: int = param(4, 'Tensor parallel degree: the number of GPUs the model is split over', ge=1, le=16)
    executor: Literal['auto', 'mp', 'ray'] = param(
        'auto', "Multi-GPU executor of the PyTorch engine; auto = lmdeploy's choice (Ray when tp > 1 and Ray "
        'is installed), mp = local processes')
    session_len: int = param(8192, 'Most tokens (prompt, image and answer) of one request', 'tokens',
                             ge=1024, le=262_144)
    cache_max_entry_count: float = param(0.8, 'Share of free GPU memory given to the KV cache', gt=0.0, le=0.95)
    max_batch_size: int = param(4, 'Most requests the engine batches (one plan at a time needs few). Serving a '
                                'fleet (parameter robots), a smaller value is raised to the robot count: a slot '
                                'per robot, each with one request in flight (measured: 64 served 32 robots, '
                                'docs/gpu_latency.md)', ge=1, le=256)
    max_prefill_token_num: int = param(8192, "Prefill budget: most prompt tokens the engine prefills in one step "
                                       "(lmdeploy 0.18's default, what the fleet bench measured with: a "
                                       'keyframe is about 220 tokens plus the image, so 8192 admits about 16 '
                                       'robots at once; docs/gpu_latency.md)', 'tokens', ge=256, le=262_144)
    eager_mode: bool = param(False, 'Disable CUDA graphs (slower decoding, faster start, less memory)')
    weights: Literal['auto', 'fp8'] = param(
        'auto', "Weight format: auto = the checkpoint's; fp8 = quantize the linear layers to FP8 while loading "
        '(Hopper and newer; faster decoding, half the weight memory: docs/gpu_latency.md)')
    prefix_caching: bool = param(False, 'Reuse the KV cache of a prompt prefix seen before (the system prompt; '
                                 'lmdeploy reuses nothing from an image on: docs/gpu_latency.md)')
    shutdown_timeout_s: float = param(10.0, 'Engine shutdown is abandoned (child processes killed) after this',
                                      's', gt=0.0, le=120.0)

MIN_IMAGE_PIXELS = 32 * 32  # one Qwen3-VL image token

# Each fix named here works as written: backend is a launch argument of vln.launch.py and replay.launch.py.
INSTALL_HINT = ("backend 'lmdeploy' needs the lmdeploy package, which is not installed here: on the GPU machine "
                "run pip install '.[lmdeploy]' in the package (see models/README.md); or choose another backend "
                '(ros2 launch ... backend:=openai, or ros2 run ... --ros-args -p backend:=openai): openai against a '
                'running server (parameter openai.base_url), replay with a recording (parameter replay.file)')


def engine_kind(params: LmdeployParams) -> str:
    return 'pytorch' if params.engine == 'auto' else params.engine


def engine_config_kwargs(params: LmdeployParams) -> dict[str, Any]:
    """Keyword arguments of PytorchEngineConfig / TurbomindEngineConfig."""
    kwargs: dict[str, Any] = {'tp': params.tp, 'session_len': params.session_len,
                              'cache_max_entry_count': params.cache_max_entry_count,
                              'max_batch_size': params.max_batch_size,
                              'max_prefill_token_num': params.max_prefill_token_num}
    if params.prefix_caching:
        kwargs['enable_prefix_caching'] = True
    if params.weights == 'fp8':
        kwargs['model_format'] = 'fp8'
    if engine_kind(params) == 'pytorch':
        kwargs['eager_mode'] = params.eager_mode
        if params.executor != 'auto' and params.tp > 1:
            kwargs['distributed_executor_backend'] = params.executor
    return kwargs


def chat_messages(request: Request, image: Any) -> list[dict[str, Any]]:
    """OpenAI-form messages with the decoded keyframe as an image_data item."""
    return [
        {'role': 'system', 'content': request.prompt.system},
        {'role': 'user', 'content': [
            {'type': 'image_data', 'image_data': {'data': image, 'max_pixels': request.image_max_pixels}},
            {'type': 'text', 'text': request.prompt.user},
        ]},
    ]


def mm_processor_kwargs(request: Request) -> dict[str, Any]:
    """The image budget for the HF processor. min_pixels is lowered too: the processor's default minimum
    (256x256 px for Qwen3-VL) would upscale a small keyframe, and a minimum above the maximum makes lmdeploy
    ignore both."""
    return {'image': {'min_pixels': min(MIN_IMAGE_PIXELS, request.image_max_pixels),
                      'max_pixels': request.image_max_pixels}}


def gen_config_kwargs(request: Request) -> dict[str, Any]:
    """Keyword arguments of GenerationConfig: greedy, bounded, guided when asked."""
    kwargs: dict[str, Any] = {'max_new_tokens': request.max_new_tokens, 'do_sample': False}
    if request.ignore_eos:
        kwargs['ignore_eos'] = True
    if request.guided:
        kwargs['response_format'] = {'type': 'json_schema',
                                     'json_schema': {'name': 'vln_plan', 'schema': request.prompt.schema}}
    return kwargs


def check_model_path(model: str) -> None:
    """A local-looking model path that does not exist fails now, not deep inside lmdeploy."""
    if not Path(model).exists() and model.startswith(('/', './', '../', 'models/', '~')):
        raise StartupError(f'model {model!r} does not exist: download the weights as models/README.md says, '
                           'or pass model:=<path or Hugging Face id>')


class LmdeployBackend(Backend):
    def __init__(self, section: LmdeployParams, params: InferenceParams,
                 engine_extra: dict[str, Any] | None = None) -> None:
        """engine_extra: more engine-config fields (e.g. max_prefill_token_num, prefill_interval) that are not
        node parameters; the GPU fleet benchmark tries them as levers (bench/gpu.py fleet)."""
        try:
            import lmdeploy
        except ImportError:
            raise StartupError(INSTALL_HINT) from None
        check_model_path(params.model)
        self._params = section
        self._lmdeploy = lmdeploy
        self._owns_engine = True
        config_type = (lmdeploy.PytorchEngineConfig if engine_kind(self._params) == 'pytorch'
                       else lmdeploy.TurbomindEngineConfig)
        try:
            # engine_extra wins: the bench sets levers (the prefill budget too) over the parameters.
            config = config_type(**{**engine_config_kwargs(self._params), **(engine_extra or {})})
        except TypeError as exc:  # a field this lmdeploy version does not know
            raise StartupError(f'lmdeploy {lmdeploy.__version__} rejects the engine config: {exc}') from None
        self.model_name = Path(params.model).name or params.model
        # Creates the engine (and, for tp > 1, its worker processes); must run on the main thread.
        self._pipe = lmdeploy.pipeline(params.model, backend_config=config, log_level='WARNING')
        self._lock = threading.Lock()
        self._session: Any = None
        self._cancelled = False

    def generate(self, request: Request) -> Answer:
        from PIL import Image
        image = Image.open(io.BytesIO(request.image_jpeg)).convert('RGB')
        gen_config = self._lmdeploy.GenerationConfig(**gen_config_kwargs(request))
        with self._lock:
            self._cancelled = False
            session = self._session = self._pipe.session()
        started = time.perf_counter()
        first_token_s = None
        parts: list[str] = []
        input_tokens = output_tokens = None
        finish_reason = ''
        try:
            for out in self._pipe.stream_infer(chat_messages(request, image), sessions=session,
                                               gen_config=gen_config,
                                               mm_processor_kwargs=mm_processor_kwargs(request)):
                if self._cancelled:
                    session.abort()
                    raise BackendError('cancelled')
                if out.text:
                    if first_token_s is None:
                        first_token_s = time.perf_counter() - started
                    parts.append(out.text)
                input_tokens = out.input_token_len or input_tokens
                output_tokens = out.generate_token_len or output_tokens
                if request.on_chunk is not None and out.text:
                    request.on_chunk(out.text, output_tokens or 0)
                finish_reason = out.finish_reason or finish_reason
        finally:
            with self._lock:
                self._session = None
        if finish_reason == 'abort' or self._cancelled:
            raise BackendError('cancelled')
        if finish_reason == 'error':
            raise BackendError('error', 'the engine ended the request with an error')
        return Answer(''.join(parts), time.perf_counter() - started, input_tokens, output_tokens, first_token_s,
                      finish_reason)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            session = self._session
        if session is not None:
            try:
                session.abort()
            except Exception:  # the request may have ended meanwhile; the flag covers the rest
                pass

    def client(self, robot: str = '') -> LmdeployBackend:
        """Another client of this backend's engine, with its own request in flight and its own cancel: one per
        robot when several robots share one engine (lmdeploy batches their requests). Its close() leaves the
        engine to this backend's."""
        other = copy.copy(self)
        other._lock = threading.Lock()
        other._session = None
        other._cancelled = False
        other._owns_engine = False
        return other

    def close(self) -> None:
        if not self._owns_engine:
            return
        closer = threading.Thread(target=self._pipe.close, name='lmdeploy_close', daemon=True)
        closer.start()
        closer.join(self._params.shutdown_timeout_s)
        if closer.is_alive():  # the mp executor's close was seen to hang: end its workers ourselves
            for child in multiprocessing.active_children():
                child.terminate()
            for child in multiprocessing.active_children():
                child.join(2.0)
                if child.is_alive():
                    child.kill()


register_backend(BackendSpec('lmdeploy', 'in-process engine on this machine', LmdeployParams,
                             lambda section, params: LmdeployBackend(section, params)))
