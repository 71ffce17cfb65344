"""Node parameters: one pydantic model per node is the single source of truth.

Each field carries its type, default, range (ge/le/gt/lt or a Literal of choices), unit and description.
The nodes declare their ROS parameters from these models (with descriptors, so `ros2 param describe`
shows unit and range), config/vln.yaml is checked against them by a test, and a bad value fails start-up
with a ParameterError naming the parameter, the value and the allowed range.

Nested models become dotted ROS parameter names (`keyframe.change_threshold`), which is also how they
nest in the YAML file.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

ParamValue = bool | int | float | str


class ParameterError(ValueError):
    """A parameter value is outside its allowed range or of the wrong type."""


def param(default: Any, description: str, unit: str = '', **constraints: Any) -> Any:
    """A model field with its unit kept where the ROS descriptor and the docs can find it."""
    return Field(default, description=description, json_schema_extra={'unit': unit}, **constraints)


class StrictModel(BaseModel):
    # frozen: a node reads one validated snapshot; extra='forbid': a misspelt YAML key is an error,
    # not a silently ignored setting.
    model_config = ConfigDict(extra='forbid', frozen=True)


@dataclass(frozen=True)
class ParamSpec:
    """One flat (dotted) parameter as ROS and the docs see it."""

    name: str
    type: type
    default: ParamValue
    description: str
    unit: str
    minimum: float | None
    maximum: float | None
    exclusive_minimum: bool
    exclusive_maximum: bool
    choices: tuple[str, ...]

    def allowed(self) -> str:
        """Human-readable allowed values, e.g. `0.0 < x <= 60.0 s` or `one of raw, compressed`."""
        if self.choices:
            return 'one of ' + ', '.join(self.choices)
        if self.type is bool:
            return 'true or false'
        if self.minimum is None and self.maximum is None:
            return f'any {self.type.__name__}'
        low = '' if self.minimum is None else f'{self.minimum} {"<" if self.exclusive_minimum else "<="} '
        high = '' if self.maximum is None else f' {"<" if self.exclusive_maximum else "<="} {self.maximum}'
        return f'{low}{self.type.__name__}{high}' + (f' [{self.unit}]' if self.unit else '')


def _bounds(info: FieldInfo) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in info.metadata:
        for key in ('ge', 'gt', 'le', 'lt'):
            value = getattr(item, key, None)
            if value is not None:
                found[key] = value
    return found


def param_specs(model: type[BaseModel], prefix: str = '') -> list[ParamSpec]:
    """Flatten a parameter model into dotted ParamSpecs, in declaration order."""
    specs: list[ParamSpec] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        dotted = prefix + name
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            specs.extend(param_specs(annotation, dotted + '.'))
            continue
        choices: tuple[str, ...] = ()
        if typing.get_origin(annotation) is Literal:
            choices = tuple(str(c) for c in typing.get_args(annotation))
            annotation = str
        if annotation not in (bool, int, float, str):
            raise TypeError(f'{dotted}: parameter type {annotation!r} is not a ROS parameter type')
        bounds = _bounds(info)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        specs.append(ParamSpec(
            name=dotted, type=annotation, default=info.default, description=info.description or '',
            unit=str(extra.get('unit', '')),
            minimum=bounds.get('ge', bounds.get('gt')), maximum=bounds.get('le', bounds.get('lt')),
            exclusive_minimum='gt' in bounds, exclusive_maximum='lt' in bounds, choices=choices))
    return specs


def flat_to_nested(values: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in values.items():
        *parents, leaf = dotted.split('.')
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def nested_to_flat(values: dict[str, Any], prefix: str = '') -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(nested_to_flat(value, f'{prefix}{key}.'))
        else:
            flat[prefix + key] = value
    return flat


M = typing.TypeVar('M', bound=BaseModel)


def validate_params(model: type[M], flat_values: dict[str, Any]) -> M:
    """Build the model from dotted values; any problem becomes one ParameterError naming every bad value."""
    specs = {s.name: s for s in param_specs(model)}
    problems = []
    for name, value in flat_values.items():
        spec = specs.get(name)
        if spec is None:
            problems.append(f"unknown parameter '{name}' (known: {', '.join(specs)})")
        elif spec.type is float and isinstance(value, float) and not math.isfinite(value):
            problems.append(f"parameter '{name}' = {value!r} is not finite; allowed: {spec.allowed()}")
    if problems:
        raise ParameterError('; '.join(problems))
    try:
        return model.model_validate(flat_to_nested(flat_values))
    except ValidationError as exc:
        for err in exc.errors():
            name = '.'.join(str(p) for p in err['loc'])
            spec = specs.get(name)
            if spec is None:  # a check across fields (model_validator): its message names them
                problems.append(str(err['msg']).removeprefix('Value error, '))
            else:
                problems.append(f"parameter '{name}' = {err['input']!r} is invalid ({err['msg']}); "
                                f'allowed: {spec.allowed()}')
        raise ParameterError('; '.join(problems)) from None


def load_node_yaml(path: str | Path, node_name: str) -> dict[str, Any]:
    """The dotted `ros__parameters` of one node in a ROS 2 parameter file ({} if the node is absent)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    for key in (node_name, '/' + node_name, '/**'):
        section = data.get(key)
        if isinstance(section, dict) and 'ros__parameters' in section:
            return nested_to_flat(section['ros__parameters'])
    return {}


# --------------------------------------------------------------------------------------------------
# The nodes' parameter models.


class KeyframeParams(StrictModel):
    """When a camera frame becomes a keyframe (core/keyframe.py)."""

    analysis_side_px: int = param(160, 'Longest side of the grayscale copy the scores are computed on', 'px',
                                  ge=32, le=1280)
    histogram_bins: int = param(32, 'Bins of the intensity histogram', ge=4, le=256)
    weight_histogram: float = param(0.3, 'Weight of the histogram distance in the change score', ge=0.0, le=1.0)
    weight_pixel: float = param(0.4, 'Weight of the mean absolute pixel difference in the change score',
                                ge=0.0, le=1.0)
    weight_edge: float = param(0.3, 'Weight of the edge-map difference in the change score', ge=0.0, le=1.0)
    change_threshold: float = param(0.12, 'Change score (weighted sum, 0-1) at or above which a frame is a '
                                    'keyframe', gt=0.0, le=1.0)
    min_interval_s: float = param(0.5, 'No keyframe sooner than this after the last one', 's', ge=0.0, le=60.0)
    max_interval_s: float = param(5.0, 'A keyframe is forced when the scene has been still this long', 's',
                                  gt=0.0, le=600.0)

    @model_validator(mode='after')
    def _consistent(self) -> KeyframeParams:
        if self.weight_histogram + self.weight_pixel + self.weight_edge <= 0.0:
            raise ValueError('keyframe.weight_histogram + keyframe.weight_pixel + keyframe.weight_edge '
                             'must be > 0 (all three are 0)')
        if self.min_interval_s > self.max_interval_s:
            raise ValueError(f'keyframe.min_interval_s ({self.min_interval_s}) must not exceed '
                             f'keyframe.max_interval_s ({self.max_interval_s})')
        return self


class CameraParams(StrictModel):
    """camera_node: camera frames in, keyframes at inference resolution out."""

    input_transport: Literal['raw', 'compressed'] = param(
        'raw', "Subscribe 'image' (sensor_msgs/Image) or 'image/compressed' (sensor_msgs/CompressedImage)")
    max_side_px: int = param(448, 'Longest side of a published keyframe (aspect kept, never upscaled); '
                             '0 = no limit', 'px', ge=0, le=8192)
    max_pixels: int = param(0, 'Most pixels (width x height) of a published keyframe; 0 = no limit', 'px',
                            ge=0, le=67_108_864)
    align_px: int = param(32, 'Keyframe width and height are rounded down to a multiple of this (Qwen3-VL '
                          'sees 32 px cells: patch 16 x merge 2); 1 = no rounding', 'px', ge=1, le=256)
    jpeg_quality: int = param(85, 'JPEG quality of published keyframes', ge=1, le=100)
    frame_id: str = param('', "Overrides the camera's header.frame_id when not empty")
    diagnostics_period_s: float = param(1.0, 'Period of /diagnostics messages', 's', ge=0.1, le=60.0)
    log_throttle_s: float = param(5.0, 'At most one log line about rejected frames this often (0 = every one)', 's',
                                  ge=0.0, le=3600.0)
    publish_decisions: bool = param(False, "Publish every frame's keyframe decision and scores on "
                                    'vln/keyframe_decisions (for tuning and the demo)')
    keyframe: KeyframeParams = KeyframeParams()


class ControllerParams(StrictModel):
    """controller_node: the newest plan to cmd_vel, and the robot's last line of safety."""

    rate_hz: float = param(50.0, 'Control loop and cmd_vel rate (the robot needs 30-50 Hz)', 'Hz', ge=10.0, le=100.0)
    max_linear_x: float = param(0.5, 'Largest forward speed command', 'm/s', ge=0.0, le=3.0)
    max_linear_y: float = param(0.2, 'Largest sideways (strafe) speed command', 'm/s', ge=0.0, le=2.0)
    max_angular_z: float = param(0.8, 'Largest yaw rate command', 'rad/s', ge=0.0, le=4.0)
    max_accel_x: float = param(0.5, 'Forward speed may grow this fast', 'm/s^2', gt=0.0, le=10.0)
    max_accel_y: float = param(0.5, 'Sideways speed may grow this fast', 'm/s^2', gt=0.0, le=10.0)
    max_accel_z: float = param(1.5, 'Yaw rate may grow this fast', 'rad/s^2', gt=0.0, le=20.0)
    max_decel_x: float = param(1.0, 'Forward speed shrinks this fast when slowing or stopping', 'm/s^2',
                               gt=0.0, le=20.0)
    max_decel_y: float = param(1.0, 'Sideways speed shrinks this fast when slowing or stopping', 'm/s^2',
                               gt=0.0, le=20.0)
    max_decel_z: float = param(3.0, 'Yaw rate shrinks this fast when slowing or stopping', 'rad/s^2',
                               gt=0.0, le=40.0)
    deadband_linear: float = param(0.005, 'Linear speed targets smaller than this become 0', 'm/s', ge=0.0, le=0.2)
    deadband_angular: float = param(0.01, 'Yaw rate targets smaller than this become 0', 'rad/s', ge=0.0, le=0.5)
    lookahead_m: float = param(0.5, 'Pure pursuit look-ahead distance along the plan', 'm', gt=0.0, le=5.0)
    heading_gain: float = param(1.5, 'Yaw rate per radian of bearing (or final heading) error', '1/s',
                                gt=0.0, le=10.0)
    lateral_gain: float = param(0.3, 'Share of the speed used to strafe towards the look-ahead point '
                                '(0 = turn only)', ge=0.0, le=1.0)
    rotate_in_place_rad: float = param(0.8, 'Turn on the spot (no translation) while the look-ahead point is '
                                       'further off the nose than this', 'rad', gt=0.0, le=3.1416)
    goal_tolerance_m: float = param(0.1, 'The plan is done once the robot is this close to its last waypoint '
                                    '(and within yaw_tolerance_rad of its heading)', 'm', gt=0.0, le=2.0)
    yaw_tolerance_rad: float = param(0.1, 'Heading tolerance at the last waypoint', 'rad', gt=0.0, le=3.1416)
    slowdown_distance_m: float = param(0.5, 'Speed scales down linearly within this distance of the last '
                                       'waypoint', 'm', ge=0.0, le=5.0)
    min_confidence: float = param(0.2, 'Waypoints less confident than this are not followed (stop)',
                                  ge=0.0, le=1.0)
    plan_timeout_s: float = param(15.0, "A plan older than this (by its keyframe's capture stamp) is not "
                                  'followed: stop', 's', gt=0.0, le=120.0)
    inference_timeout_s: float = param(10.0, 'No plan received for this long means the inference node is '
                                       'silent or gone: stop', 's', gt=0.0, le=120.0)
    future_tolerance_s: float = param(0.5, 'A plan stamped further in the future than this (clock skew) is '
                                      'rejected: stop', 's', ge=0.0, le=10.0)
    odom_timeout_s: float = param(0.5, 'Once odometry has been seen, silence this long stops the robot '
                                  '(without odometry the controller integrates its own commands)', 's',
                                  gt=0.0, le=10.0)
    estop_timeout_s: float = param(0.0, 'Dead-man: e-stop publisher silent this long counts as engaged '
                                   '(latched); 0 = off', 's', ge=0.0, le=60.0)
    zero_hold_s: float = param(1.0, 'After stopping, publish zero this long, then go quiet (so a twist_mux '
                               'can hand over)', 's', ge=0.0, le=60.0)
    publish_zero_forever: bool = param(False, 'Keep publishing zero while stopped instead of going quiet')
    cmd_vel_stamped: bool = param(False, 'Publish geometry_msgs/TwistStamped instead of Twist on cmd_vel')
    base_frame: str = param('base_link', 'frame_id of TwistStamped commands')
    diagnostics_period_s: float = param(1.0, 'Period of /diagnostics messages', 's', ge=0.1, le=60.0)

    @model_validator(mode='after')
    def _consistent(self) -> ControllerParams:
        if self.goal_tolerance_m >= self.lookahead_m:
            raise ValueError(f'goal_tolerance_m ({self.goal_tolerance_m}) must be smaller than lookahead_m '
                             f'({self.lookahead_m})')
        return self


NODE_PARAMS: dict[str, type[StrictModel]] = {'camera_node': CameraParams, 'controller_node': ControllerParams}
