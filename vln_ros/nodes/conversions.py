"""Message field conversions shared by the nodes (and the demo)."""
from __future__ import annotations

from typing import Any


def stamp_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time -> seconds (float)."""
    return stamp.sec + stamp.nanosec * 1e-9
