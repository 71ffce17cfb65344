"""The controller's velocity limits as one type: the three parameter names in one place, for everything that
asks controller_node for its limits or holds commands to them (the console, the demo, the evaluation)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

from vln_ros.core.config import ControllerParams


@dataclass(frozen=True, slots=True)
class VelocityLimits:
    """The controller's speed limits, named as its parameters are (ControllerParams): what the console asks
    controller_node for and shows, and what the demo and the evaluation hold every cmd_vel to."""
    max_linear_x: float   # forward, either way [m/s]
    max_linear_y: float   # sideways, either way [m/s]
    max_angular_z: float  # yaw rate, either way [rad/s]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The parameter names, in field order (the order from_values takes the values in)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, params: ControllerParams) -> VelocityLimits:
        return cls(params.max_linear_x, params.max_linear_y, params.max_angular_z)

    @classmethod
    def from_values(cls, values: Sequence[float]) -> VelocityLimits:
        """Values in names() order (e.g. a parameter service's reply); ValueError unless there are exactly
        that many, each finite and not negative."""
        names = cls.names()
        if len(values) != len(names):
            raise ValueError(f'{len(values)} velocity limits {list(values)}, expected {len(names)}: {names}')
        for name, value in zip(names, values, strict=True):
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f'{name} = {value}: a velocity limit is finite and not negative')
        return cls(*(float(v) for v in values))

    def as_dict(self) -> dict[str, float]:
        """{parameter name: limit}: the console's `limits` message and run.json's `limits`."""
        return {name: getattr(self, name) for name in self.names()}

    def allows(self, vx: float, vy: float, wz: float, slack: float = 0.0) -> bool:
        """Every component finite and within its limit (plus slack, in the component's unit)."""
        return all(math.isfinite(v) and abs(v) <= limit + slack
                   for v, limit in ((vx, self.max_linear_x), (vy, self.max_linear_y), (wz, self.max_angular_z)))
