"""What the nodes report of the collision guard (core/guard.py): when its state is worth a message, and its
counters under the names /diagnostics shows. No ROS.

The guard's state changes its numbers every control step (the nearest distance, how long a sensor has been
silent); a latched status topic should carry changes of what the guard does and why, not 50 messages a
second. So a status is due when its action, source or reason changes (the reason compared without its
numbers: 'silent for 0.52 s' and 'silent for 0.54 s' are one reason), and at least every `period_s`
(a monitor sees the numbers move and knows the node is alive).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np

from vln_ros.core.guard import GuardState
from vln_ros.core.guard_footprint import Footprint

_NUMBER = re.compile(r'[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|inf|nan')


def reason_kind(reason: str) -> str:
    """The reason without its numbers (what stays the same while the situation does)."""
    return _NUMBER.sub('#', reason)


def state_key(state: GuardState) -> tuple[str, str, str]:
    return state.action.value, state.source, reason_kind(state.reason)


class StatusGate:
    """Decides which control steps publish the guard's status: on a change of state_key, and every period_s."""

    def __init__(self, period_s: float = 1.0) -> None:
        if not period_s > 0.0:
            raise ValueError(f'period_s must be positive, got {period_s}')
        self.period_s = period_s
        self._key: tuple[str, str, str] | None = None
        self._published_s: float | None = None

    def due(self, state: GuardState, now_s: float) -> bool:
        """True when this step's state should be published (and it is then taken as published)."""
        key = state_key(state)
        if (key == self._key and self._published_s is not None
                and 0.0 <= now_s - self._published_s < self.period_s):   # a clock jump back publishes too
            return False
        self._key, self._published_s = key, now_s
        return True

    def changed(self, state: GuardState) -> bool:
        """Whether the state's key differs from the last published one (for a log line at a change)."""
        return state_key(state) != self._key


def rejection_counters(rejections: Mapping[str, int]) -> dict[str, int]:
    """The guard's rejection counts ('<source>.<reason>') as diagnostics values guard_rejected_<source>_<reason>."""
    return {f'guard_rejected_{key.replace(".", "_")}': count for key, count in sorted(rejections.items())}


def points_at_gap(footprint: Footprint, gap_m: float, bearings_rad: np.ndarray) -> np.ndarray:
    """(N, 2) points [m, base frame] at `gap_m` from the footprint along each bearing from the base origin: the
    outline of a zone (rviz draws them). A circle's is exact; a polygon's is found by bisection along each ray
    (its gap grows along a ray from the origin for any polygon star-shaped about it, as footprints are)."""
    if not (math.isfinite(gap_m) and gap_m >= 0.0):
        raise ValueError(f'gap_m must be finite and >= 0, got {gap_m}')
    directions = np.stack([np.cos(bearings_rad), np.sin(bearings_rad)], axis=1)
    if footprint.vertices is None:
        return np.asarray(directions * (footprint.radius_m + gap_m))
    low = np.zeros(len(directions))
    high = np.full(len(directions), footprint.circumradius_m + gap_m)   # its gap is at least gap_m
    for _ in range(40):   # 2^-40 of a few metres: far below a pixel
        middle = 0.5 * (low + high)
        beyond = footprint.distance(directions * middle[:, None]) > gap_m   # > : gap 0 is the outline itself
        high, low = np.where(beyond, middle, high), np.where(beyond, low, middle)
    return np.asarray(directions * high[:, None])


def zone_outline(footprint: Footprint, gap_m: float, points: int = 72) -> np.ndarray:
    """The closed outline (first point repeated last) of the zone within `gap_m` of the footprint."""
    bearings = np.linspace(-math.pi, math.pi, points + 1)
    return points_at_gap(footprint, gap_m, bearings)
