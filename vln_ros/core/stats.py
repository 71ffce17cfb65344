"""Counters, rates and latency percentiles for /diagnostics and the benchmarks (no ROS)."""
from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np


class NumberWindow:
    """The last `size` numbers (token counts, sizes); percentiles in the numbers' own unit."""

    def __init__(self, size: int = 512) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(value)

    def __len__(self) -> int:
        return len(self._values)

    def percentile(self, q: float) -> float:
        """q-th percentile; NaN while empty."""
        if not self._values:
            return float('nan')
        return float(np.percentile(np.fromiter(self._values, float), q))


class LatencyWindow(NumberWindow):
    """The last `size` durations, added in seconds; percentiles in milliseconds."""

    def percentile_ms(self, q: float) -> float:
        """q-th percentile in ms; NaN while empty."""
        return self.percentile(q) * 1e3


class EventCounters:
    """Thread-safe named counters with per-interval rates (events/s since the last `rates` call)."""

    def __init__(self, start_s: float) -> None:
        """start_s: when counting began, on the clock later passed to `rates` (monotonic seconds)."""
        self._lock = threading.Lock()
        self._totals: Counter[str] = Counter()
        self._at_last_rates: Counter[str] = Counter()
        self._last_rates_time_s = start_s

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._totals[name] += n

    def totals(self) -> dict[str, int]:
        with self._lock:
            return dict(self._totals)

    def rates(self, now_s: float) -> dict[str, float]:
        """Events per second of each counter since the previous call (or since start_s)."""
        with self._lock:
            elapsed = now_s - self._last_rates_time_s
            rates = {name: (total - self._at_last_rates[name]) / elapsed if elapsed > 0 else 0.0
                     for name, total in self._totals.items()}
            self._at_last_rates = Counter(self._totals)
            self._last_rates_time_s = now_s
            return rates


class Throttle:
    """Says yes at most once per period (0: every time). The period is passed at each call, so it may be
    changed while the node runs; rclpy's own `throttle_duration_sec` is fixed per call site on its first
    use and raises ValueError if a later call passes another value."""

    def __init__(self) -> None:
        self._last_s: float | None = None

    def ready(self, now_s: float, period_s: float) -> bool:
        if self._last_s is not None and 0.0 <= now_s - self._last_s < period_s:
            return False
        self._last_s = now_s
        return True
