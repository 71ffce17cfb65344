"""Model-paced keyframes: the request protocol between the inference side and the camera side. No ROS.

The model asks when it is free (a KeyframeRequest on vln/keyframe_request, latched); the camera answers one
request with one keyframe and sends none while the model works, so the model starts on a frame about one
camera period old instead of one that waited in its slot. The rules, both sides:

- The model side (KeyframeAsker, used by core/inference): once loaded it says it paces the keyframes
  (wanted false). Free with a task running and no keyframe waiting, it asks (wanted true, a new number each
  time); a request still open is asked again with a new number after REQUEST_RESEND_S (a lost keyframe, a
  camera_node that restarted and had answered that number already). The first request of a new task asks
  for any frame. A keyframe taken closes the request; no task running with a request open says wanted false.
- The camera side (KeyframeAnswerer, used by camera_node): once any request has come, and pace_by_model is
  on, a frame is judged only while a request is open: the first frame the sampler passes (any frame when
  any_frame) answers it, and a request answered stays answered, even when DDS delivers its latched copy
  again. Without a request ever (no inference node) or with pace_by_model off, every frame is judged and
  every keyframe the sampler passes is sent.

Numbers start anywhere: a camera_node that answered request N of an earlier inference_node must not take this
one's N for an answered one.
"""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass

# An open request is asked again (with a new number) after this long without a keyframe.
REQUEST_RESEND_S = 2.0
MAX_SEQUENCE = 2**32 - 1   # KeyframeRequest.sequence is a uint32; 0 means none yet


@dataclass(frozen=True)
class KeyframeAsk:
    """One request as it goes on the wire (a KeyframeRequest message)."""
    sequence: int
    wanted: bool      # false: the model paces the keyframes but wants none now
    any_frame: bool   # a task just started: the next frame, changed or not


class KeyframeAsker:
    """The model side: when to ask. Called from the inference worker thread; task_started from any thread."""

    def __init__(self, first_sequence: int | None = None) -> None:
        self._sequence = random.randrange(1, 2**31) if first_sequence is None else first_sequence
        self._asked_at_s: float | None = None   # when the open request was made; None when none is open
        self._any_frame = False                 # the next keyframe may be any frame (a task just started)

    @property
    def open(self) -> bool:
        return self._asked_at_s is not None

    def loaded(self) -> KeyframeAsk:
        """The model is ready: tell the camera that a model paces its keyframes (none wanted yet)."""
        return self._say(wanted=False, now_s=0.0)

    def task_started(self) -> None:
        """The next keyframe may be any frame: the new task needs one at once, changed or not."""
        self._any_frame = True

    def idle(self) -> KeyframeAsk | None:
        """No task runs: withdraw an open request (else nothing to say)."""
        return self._say(wanted=False, now_s=0.0) if self.open else None

    def free(self, now_s: float) -> KeyframeAsk | None:
        """A task runs, the model is free and no keyframe waits (now_s: monotonic): a request, unless one is
        open and younger than REQUEST_RESEND_S."""
        if self._asked_at_s is not None and now_s - self._asked_at_s < REQUEST_RESEND_S:
            return None
        return self._say(wanted=True, now_s=now_s)

    def keyframe_taken(self) -> None:
        """The model starts on a keyframe: the request (if any) is answered, any_frame is spent."""
        self._asked_at_s, self._any_frame = None, False

    def _say(self, wanted: bool, now_s: float) -> KeyframeAsk:
        if wanted:
            self._sequence = self._sequence % MAX_SEQUENCE + 1
        self._asked_at_s = now_s if wanted else None
        return KeyframeAsk(self._sequence, wanted, self._any_frame and wanted)


@dataclass(frozen=True)
class FrameTurn:
    """What the camera does with one frame (KeyframeAnswerer.turn)."""
    judge: bool                    # ask the sampler at all (false: the model is busy or has no task)
    any_frame: bool                # the sampler must pass this frame (force)
    request: KeyframeAsk | None    # the request a keyframe from this frame answers


class KeyframeAnswerer:
    """The camera side: which frames to judge and which request a keyframe answers. Thread-safe: requests
    arrive on the executor thread, frames are judged on the worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paced = False                   # an inference node has said it paces the keyframes
        self._open: KeyframeAsk | None = None
        self._answered_sequence = 0

    def on_request(self, ask: KeyframeAsk) -> None:
        with self._lock:
            self._paced = True
            # A request already answered (the latched copy seen again) stays answered.
            self._open = ask if ask.wanted and ask.sequence != self._answered_sequence else None

    def paced(self, pace_by_model: bool) -> bool:
        """A model paces the keyframes and the camera lets it (the pace_by_model parameter)."""
        with self._lock:
            return self._paced and pace_by_model

    def turn(self, pace_by_model: bool) -> FrameTurn:
        """For the next frame: judge it or not, force it or not, and the request it would answer."""
        with self._lock:
            if not (self._paced and pace_by_model):
                return FrameTurn(judge=True, any_frame=False, request=None)
            request = self._open
        return FrameTurn(judge=request is not None,
                         any_frame=request is not None and request.any_frame, request=request)

    def keyframe_sent(self, turn: FrameTurn) -> None:
        """A keyframe from the frame of this turn went out: its request is answered."""
        if turn.request is None:
            return
        with self._lock:
            self._answered_sequence = turn.request.sequence
            # By number: DDS may deliver a latched request twice (history, then live).
            if self._open is not None and self._open.sequence == turn.request.sequence:
                self._open = None
