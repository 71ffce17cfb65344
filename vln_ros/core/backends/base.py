"""The one interface every backend implements, and the answer record they share. No ROS.

A backend turns a request (keyframe JPEG + prompt + optional JSON schema) into text, with latency and
token counts. `cancel()` may be called from any thread and aborts the request in flight, which then
raises BackendError('cancelled'); cancel() is per client, and several robots sharing one model each use
their own `client()`, so one robot's cancel never reaches another's request. Timeouts are the caller's: it
waits `inference_timeout_s` and then cancels, so a backend that hangs cannot hang the node.
"""
from __future__ import annotations

import abc
import base64
import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vln_ros.core.schema import StartupError

if TYPE_CHECKING:  # core/config imports the backends, and prompts imports config
    from vln_ros.core.prompts import Prompt


@dataclass(frozen=True)
class Request:
    image_jpeg: bytes        # the keyframe as camera_node sent it
    stamp_ns: int            # its capture stamp (ROS time, ns): the replay backend's key
    prompt: Prompt
    max_new_tokens: int
    guided: bool             # constrain the answer to prompt.schema
    image_max_pixels: int
    # Benchmarks only: generate exactly max_new_tokens (random-weight models never stop on their own).
    ignore_eos: bool = False
    # Called from the backend's thread with each streamed piece of text and the output tokens so far
    # (backends that stream; the GPU benchmark times the tokens with it).
    on_chunk: Callable[[str, int], None] | None = field(default=None, compare=False, repr=False)
    # The caller's bound on this request (inference_timeout_s as it is now: it changes live), for a backend's own
    # timeouts, so that a request the caller gave up on ends with it; None: the backend's start-up bound.
    timeout_s: float | None = None

    def image_data_url(self) -> str:
        return 'data:image/jpeg;base64,' + base64.b64encode(self.image_jpeg).decode('ascii')


@dataclass(frozen=True)
class Answer:
    text: str
    latency_s: float                       # request sent -> whole answer back
    input_tokens: int | None = None
    output_tokens: int | None = None
    first_token_s: float | None = None     # request sent -> first answer token
    finish_reason: str = ''


class BackendError(RuntimeError):
    """A request failed; `reason` is the counter name (timeout, cancelled, oom, unavailable, ...)."""

    def __init__(self, reason: str, detail: str = '') -> None:
        super().__init__(f'{reason}: {detail}' if detail else reason)
        self.reason = reason
        self.detail = detail


class Backend(abc.ABC):
    model_name: str = ''

    @abc.abstractmethod
    def generate(self, request: Request) -> Answer:
        """Blocking; raises BackendError on failure or cancellation."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Abort the request in flight, if any (thread-safe, returns at once)."""

    def client(self, robot: str = '') -> Backend:
        """Another client of this backend: one per robot when one inference_node serves several (parameter
        `robots`; robot: the namespace it serves, for a backend whose answers depend on the robot, the oracle).
        It shares the model (one engine batches all clients' requests) but has its own request in flight, so its
        cancel() aborts only its own robot's request; its close() leaves the shared model to this backend's.
        Call it for every robot (this object itself serves none then). A backend that cannot be shared raises
        NotShareable."""
        raise NotShareable(f'backend {type(self).__name__} cannot serve several robots from one inference_node')

    def close(self) -> None:  # noqa: B027 (optional: most backends hold nothing to release)
        """Release the model (bounded in time)."""


class NotShareable(StartupError):
    """The backend cannot serve several robots (inference_node's `robots`); the message says why and the fix."""


class CancelFlag:
    """The in-flight request's cancellation, for backends that poll: a fresh event per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event: threading.Event | None = None

    def start(self) -> threading.Event:
        with self._lock:
            self._event = threading.Event()
            return self._event

    def cancel(self) -> None:
        with self._lock:
            if self._event is not None:
                self._event.set()

    def finish(self) -> None:
        with self._lock:
            self._event = None


# -- recording (the inference node's record_file) and its format, which the replay backend reads -----

@dataclass
class AnswerRecord:
    """One line of a recording: what was asked about which keyframe, and what came back (or failed)."""

    stamp_ns: int
    task_id: str
    instruction: str
    prompt_hash: str
    text: str
    latency_s: float
    input_tokens: int | None = None
    output_tokens: int | None = None
    first_token_s: float | None = None
    error: str = ''                       # BackendError reason when the request failed
    model: str = ''
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, line: str) -> AnswerRecord:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError('not a JSON object')
        record = cls(**data)
        if not isinstance(record.stamp_ns, int) or not isinstance(record.text, str) \
                or not isinstance(record.latency_s, (int, float)) or record.latency_s < 0:
            raise ValueError('stamp_ns (int), text (str) and latency_s (>= 0) are required')
        return record

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


class AnswerRecorder:
    """Appends AnswerRecords to a JSONL file, flushed per line so a crash loses at most one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open('a', encoding='utf-8')
        self._lock = threading.Lock()

    def write(self, record: AnswerRecord) -> None:
        with self._lock:
            self._file.write(record.to_json() + '\n')
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def load_records(path: str | Path) -> list[AnswerRecord]:
    records = []
    for number, line in enumerate(Path(path).read_text(encoding='utf-8').splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(AnswerRecord.from_json(line))
        except (ValueError, TypeError) as exc:
            raise ValueError(f'{path}:{number}: not an answer record ({exc})') from None
    return records
