"""A size-1 "latest wins" hand-over between a ROS callback and a worker thread.

The callback only puts (never blocks, never queues); the worker takes the newest item. Anything put
while the worker was busy and not yet taken is replaced and counted: the consumer never falls behind by
more than one item, and memory stays flat however fast the producer is.
"""
from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar('T')


class LatestSlot(Generic[T]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.replaced = 0  # items overwritten before anyone took them

    def put(self, item: T) -> bool:
        """Store item; True if it replaced one that was never taken."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.replaced += 1
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout_s: float | None = None) -> T | None:
        """The newest item, waiting up to timeout_s; None on timeout or once closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout_s)
            item, self._item = self._item, None
            return None if self._closed else item

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake and release any waiting taker for good (node shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
