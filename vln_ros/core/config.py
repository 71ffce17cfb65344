"""Node parameters: one pydantic model per node is the single source of truth.

Each field carries its type, default, range (ge/le/gt/lt or a Literal of choices), unit, description and
whether it may change while the node runs (`dynamic`). The nodes declare their ROS parameters from these
models (with descriptors, so `ros2 param describe` shows unit, range and read-only), config/vln.yaml and
the node pages' parameter tables (docs/nodes/) are generated from them (`make docs`, tools/gen_docs.py), and a bad value
fails start-up with a ParameterError naming the parameter, the value and the allowed range. A change
through the parameter services is checked by the same model with every current value (validate_change),
so it is refused with the same message.

Nested models become dotted ROS parameter names (`keyframe.change_threshold`), which is also how they
nest in the YAML file.

Parameter files: which sections of a ROS 2 parameter file apply to a node is rcl's rule, reproduced here
(parameter_file_sections, node_key_matches) so a node can say when a file it was given has nothing for it.
"""
from __future__ import annotations

import difflib
import math
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ValidationError, create_model, model_validator
from pydantic.fields import FieldInfo

from vln_ros.core.backends.registry import BACKENDS
from vln_ros.core.guard import GuardParams
from vln_ros.core.schema import BackendParams as BackendParams
from vln_ros.core.schema import ParameterError as ParameterError
from vln_ros.core.schema import StartupError as StartupError
from vln_ros.core.schema import StrictModel as StrictModel
from vln_ros.core.schema import check_robot_names as check_robot_names
from vln_ros.core.schema import is_relative_namespace as is_relative_namespace
from vln_ros.core.schema import param as param

ParamValue = bool | int | float | str | list[str]


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
    dynamic: bool = False

    def allowed(self) -> str:
        """Human-readable allowed values, e.g. `0.0 < x <= 60.0 s` or `one of raw, compressed`."""
        if self.choices:
            return 'one of ' + ', '.join(self.choices)
        if self.type is bool:
            return 'true or false'
        if self.type is list:
            return 'list of strings'
        if self.minimum is None and self.maximum is None:
            return f'any {self.type.__name__}'
        low = '' if self.minimum is None else f'{self.minimum} {"<" if self.exclusive_minimum else "<="} '
        high = '' if self.maximum is None else f' {"<" if self.exclusive_maximum else "<="} {self.maximum}'
        return f'{low}{self.type.__name__}{high}' + (f' [{self.unit}]' if self.unit else '')

    def type_problem(self, value: object) -> str | None:
        """Why `value` cannot be this parameter whatever its size (ROS parameters are typed: 2 is not 2.0)."""
        if self.type is list and type(value) is list and not all(type(v) is str for v in value):
            return f"parameter '{self.name}' = {value!r} must hold only strings; allowed: {self.allowed()}"
        if type(value) is self.type:
            return None
        if self.type is float and type(value) is int:
            return (f"parameter '{self.name}' = {value!r} is an integer; write it as {float(value)!r} "
                    f'(ROS parameters are typed); allowed: {self.allowed()}')
        return (f"parameter '{self.name}' = {value!r} has type {type(value).__name__}, expected "
                f'{self.type.__name__}; allowed: {self.allowed()}')


def _bounds(info: FieldInfo) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in info.metadata:
        for key in ('ge', 'gt', 'le', 'lt'):
            value = getattr(item, key, None)
            if value is not None:
                found[key] = value
    return found


_ROS_TYPES: tuple[type, ...] = (bool, int, float, str, list)  # what a ROS parameter can hold (list: of strings)


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
        default = info.default
        if typing.get_origin(annotation) is tuple and typing.get_args(annotation) == (str, Ellipsis):
            # A string array in ROS; a tuple in the (frozen, hashable) model.
            annotation, default = list, list(info.default)
        if annotation not in _ROS_TYPES:
            raise TypeError(f'{dotted}: parameter type {annotation!r} is not a ROS parameter type')
        param_type = _ROS_TYPES[_ROS_TYPES.index(annotation)]  # typed `type`, as `annotation` is not
        bounds = _bounds(info)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        specs.append(ParamSpec(
            name=dotted, type=param_type, default=default, description=info.description or '',
            unit=str(extra.get('unit', '')),
            minimum=bounds.get('ge', bounds.get('gt')), maximum=bounds.get('le', bounds.get('lt')),
            exclusive_minimum='gt' in bounds, exclusive_maximum='lt' in bounds, choices=choices,
            dynamic=bool(extra.get('dynamic', False))))
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


def nested_to_flat(values: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(nested_to_flat(value, f'{prefix}{key}.'))
        else:
            flat[prefix + key] = value
    return flat


def unknown_parameter(name: str, known: Iterable[str]) -> str:
    """The message for a parameter name the node does not have, with the closest one it has (difflib,
    ignoring case: `max_linear_X` -> `max_linear_x`)."""
    by_lower = {k.lower(): k for k in known}
    closest = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.0)
    hint = f" (did you mean '{by_lower[closest[0]]}'?)" if closest else ''
    return f"unknown parameter '{name}'{hint}"


M = typing.TypeVar('M', bound=BaseModel)


def validate_params(model: type[M], flat_values: dict[str, Any]) -> M:
    """Build the model from dotted values; any problem becomes one ParameterError naming every bad value."""
    specs = {s.name: s for s in param_specs(model)}
    problems = []
    for name, value in flat_values.items():
        spec = specs.get(name)
        if spec is None:
            problems.append(unknown_parameter(name, specs))
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


def validate_change(current: M, changes: Mapping[str, Any]) -> M:
    """The snapshot after a change made while the node runs (dotted name -> new value), checked by the same
    model with every current value (so cross-field rules hold) and with the same messages as at start-up.
    Raises ParameterError when a name is unknown, a parameter is fixed (not dynamic), a value has the wrong
    type or the result is invalid; `current` is never modified."""
    model = type(current)
    specs = {s.name: s for s in param_specs(model)}
    problems = []
    for name, value in changes.items():
        spec = specs.get(name)
        if spec is None:
            problems.append(unknown_parameter(name, specs))
        elif not spec.dynamic:
            problems.append(f"parameter '{name}' is fixed while the node runs (read-only): set it in the "
                            'parameter file or with -p and restart the node')
        elif (problem := spec.type_problem(value)) is not None:
            problems.append(problem)
    if problems:
        raise ParameterError('; '.join(problems))
    return validate_params(model, {**nested_to_flat(current.model_dump()), **changes})


# --------------------------------------------------------------------------------------------------
# ROS 2 parameter files, read the way rcl reads them.

_PARAMS_KEY = 'ros__parameters'
_TOKEN = '(/[A-Za-z0-9_]+)'   # one name token, as rclpy's std::regex `\w+` (ASCII)


def node_key_matches(key: str, fully_qualified_name: str) -> bool:
    """Whether a parameter file's node key (`controller_node`, `/r1/controller_node`, `/**/controller_node`,
    `/**`, `/*/controller_node`) applies to the node `fully_qualified_name` (`/r1/controller_node`).

    rcl's rule (rclpy node.cpp, _populate_node_parameters_from_rcl_params; rclcpp the same): a '/' is
    put in front of a key without one, then every `/*` becomes the regular expression `(/\\w+)`, so
    `/*` is exactly one name token and `/**` (that same group, repeated) any number, none included; the
    whole fully qualified name must match. A plain `controller_node` therefore means the node in the root
    namespace only."""
    name = key if key.startswith('/') else '/' + key
    pattern = ''.join(_TOKEN + '*' if part == '/**' else _TOKEN if part == '/*' else re.escape(part)
                      for part in re.split(r'(/\*\*|/\*)', name))
    return re.fullmatch(pattern, fully_qualified_name) is not None


def parameter_file_sections(data: Any) -> list[tuple[str, dict[str, Any]]]:
    """(node key, dotted parameters) of every section of a parsed parameter file, in file order.

    As rcl's YAML parser builds them: the keys above a `ros__parameters` key (rcl compares only its
    first 15 characters) are the node's name, outer keys its namespaces joined with '/', so
    `r1: {controller_node: {ros__parameters: ...}}` is `r1/controller_node`."""
    sections: list[tuple[str, dict[str, Any]]] = []

    def walk(mapping: Mapping[Any, Any], path: list[str]) -> None:
        for key, value in mapping.items():
            key = str(key)
            if key.startswith(_PARAMS_KEY):
                if path:
                    sections.append(('/'.join(path), nested_to_flat(value) if isinstance(value, Mapping) else {}))
            elif isinstance(value, Mapping):
                walk(value, [*path, key])

    if isinstance(data, Mapping):
        walk(data, [])
    return sections


def read_parameter_file(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """parameter_file_sections of the file at `path`."""
    return parameter_file_sections(yaml.safe_load(Path(path).read_text()))


def fully_qualified_name(node_name: str, namespace: str = '/') -> str:
    namespace = '/' + namespace.strip('/') if namespace.strip('/') else ''
    return f'{namespace}/{node_name}'


def load_node_yaml(path: str | Path, node_name: str, namespace: str = '/') -> dict[str, Any]:
    """The dotted parameters a node named `node_name` in `namespace` takes from a ROS 2 parameter file:
    every matching section (node_key_matches), later ones winning, as rclpy merges them ({} if none)."""
    fqn = fully_qualified_name(node_name, namespace)
    values: dict[str, Any] = {}
    for key, section in read_parameter_file(path):
        if node_key_matches(key, fqn):
            values.update(section)
    return values


# --------------------------------------------------------------------------------------------------
# The nodes' parameter models.


class KeyframeParams(StrictModel):
    """When a camera frame becomes a keyframe (core/keyframe.py)."""

    analysis_side_px: int = param(160, 'Longest side of the grayscale copy the scores are computed on', 'px',
                                  ge=32, le=1280, dynamic=True)
    histogram_bins: int = param(32, 'Bins of the intensity histogram', ge=4, le=256, dynamic=True)
    weight_histogram: float = param(0.0, 'Weight of the histogram distance in the global score (scores after exposure '
                                    'and motion compensation; the change score is the larger of the global score '
                                    'and the changed share of the frame)', ge=0.0, le=1.0, dynamic=True)
    weight_pixel: float = param(1.0, 'Weight of the mean absolute pixel difference (/255) in the global score',
                                ge=0.0, le=1.0, dynamic=True)
    weight_edge: float = param(0.0, 'Weight of the edge-map difference in the global score', ge=0.0, le=1.0,
                               dynamic=True)
    change_threshold: float = param(0.06, 'Change score (0-1) at or above which a frame is a keyframe: the share '
                                    'of the frame that is new (camera motion) or in changed grid cells, or the '
                                    'global score if larger', gt=0.0, le=1.0, dynamic=True)
    cell_level: float = param(8.0, 'Mean difference from the last keyframe (after exposure and motion '
                              'compensation; misalignment up to 1 px is none) at which a cell of the 8 x 8 grid '
                              'counts as changed', 'gray levels', gt=0.0, le=255.0, dynamic=True)
    min_interval_s: float = param(0.5, 'No keyframe sooner than this after the last one', 's', ge=0.0, le=60.0,
                                  dynamic=True)
    max_interval_s: float = param(5.0, 'A keyframe is forced when the scene has been still this long', 's',
                                  gt=0.0, le=600.0, dynamic=True)

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
    """camera_node: camera frames in, keyframes at inference resolution out.

    dynamic=True marks what `ros2 param set` may change while the node runs (docs/parameters.md); the
    rest builds the node's subscription, publishers and timers and needs a restart."""

    input_transport: Literal['raw', 'compressed'] = param(
        'raw', "Subscribe 'image' (sensor_msgs/Image) or 'image/compressed' (sensor_msgs/CompressedImage)")
    max_side_px: int = param(448, 'Longest side of a published keyframe (aspect kept, never upscaled); '
                             '0 = no limit', 'px', ge=0, le=8192, dynamic=True)
    max_pixels: int = param(0, 'Most pixels (width x height) of a published keyframe; 0 = no limit', 'px',
                            ge=0, le=67_108_864, dynamic=True)
    align_px: int = param(32, 'Keyframe width and height are rounded down to a multiple of this (Qwen3-VL '
                          'sees 32 px cells: patch 16 x merge 2); 1 = no rounding', 'px', ge=1, le=256,
                          dynamic=True)
    jpeg_quality: int = param(85, 'JPEG quality of published keyframes', ge=1, le=100, dynamic=True)
    max_decode_pixels: int = param(16_777_216, 'Decode budget: a frame of more pixels (width x height, raw or as '
                                   'its compressed header claims) is refused before decoding, whatever its format '
                                   '(counted rejected_too_large); 16 MP takes 4K and 12 MP cameras', 'px',
                                   ge=1, le=67_108_864, dynamic=True)
    frame_id: str = param('', "Overrides the camera's header.frame_id when not empty", dynamic=True)
    diagnostics_period_s: float = param(1.0, 'Period of /diagnostics messages', 's', ge=0.1, le=60.0)
    log_throttle_s: float = param(5.0, 'At most one log line about rejected frames this often (0 = every one)', 's',
                                  ge=0.0, le=3600.0, dynamic=True)
    publish_decisions: bool = param(False, "Publish every frame's keyframe decision and scores on "
                                    'vln/keyframe_decisions (for tuning and the demo)')
    pace_by_model: bool = param(True, 'Once an inference node asks for keyframes (vln/keyframe_request), send one '
                                'only when asked: the first frame that passes the sampler after the model became '
                                'free; false = a keyframe whenever the sampler passes one', dynamic=True)
    keyframe: KeyframeParams = KeyframeParams()


class ControllerParams(StrictModel):
    """controller_node: the newest plan to cmd_vel, and the robot's last line of safety.

    Fixed while running (no dynamic=True): the loop rate, the cmd_vel type, the base frame, the dead-man
    (arming it live would latch at once, disarming it would drop the heartbeat check) and the diagnostics
    period. docs/nodes/controller_node.md says why for each."""

    rate_hz: float = param(50.0, 'Control loop and cmd_vel rate (the robot needs 30-50 Hz)', 'Hz', ge=10.0, le=100.0)
    max_linear_x: float = param(0.5, 'Largest forward speed command', 'm/s', ge=0.0, le=3.0, dynamic=True)
    max_linear_y: float = param(0.2, 'Largest sideways (strafe) speed command', 'm/s', ge=0.0, le=2.0, dynamic=True)
    max_angular_z: float = param(0.8, 'Largest yaw rate command', 'rad/s', ge=0.0, le=4.0, dynamic=True)
    max_accel_x: float = param(0.5, 'Forward speed may grow this fast', 'm/s^2', gt=0.0, le=10.0, dynamic=True)
    max_accel_y: float = param(0.5, 'Sideways speed may grow this fast', 'm/s^2', gt=0.0, le=10.0, dynamic=True)
    max_accel_z: float = param(1.5, 'Yaw rate may grow this fast', 'rad/s^2', gt=0.0, le=20.0, dynamic=True)
    max_decel_x: float = param(1.0, 'Forward speed shrinks this fast when slowing or stopping', 'm/s^2',
                               gt=0.0, le=20.0, dynamic=True)
    max_decel_y: float = param(1.0, 'Sideways speed shrinks this fast when slowing or stopping', 'm/s^2',
                               gt=0.0, le=20.0, dynamic=True)
    max_decel_z: float = param(3.0, 'Yaw rate shrinks this fast when slowing or stopping', 'rad/s^2',
                               gt=0.0, le=40.0, dynamic=True)
    deadband_linear: float = param(0.005, 'Linear speed targets smaller than this become 0', 'm/s', ge=0.0, le=0.2,
                                   dynamic=True)
    deadband_angular: float = param(0.01, 'Yaw rate targets smaller than this become 0', 'rad/s', ge=0.0, le=0.5,
                                    dynamic=True)
    lookahead_m: float = param(0.5, 'Pure pursuit look-ahead distance along the plan', 'm', gt=0.0, le=5.0,
                               dynamic=True)
    heading_gain: float = param(1.5, 'Yaw rate per radian of bearing (or final heading) error', '1/s',
                                gt=0.0, le=10.0, dynamic=True)
    lateral_gain: float = param(0.3, 'Share of the speed used to strafe towards the look-ahead point '
                                '(0 = turn only)', ge=0.0, le=1.0, dynamic=True)
    rotate_in_place_rad: float = param(0.8, 'Turn on the spot (no translation) while the look-ahead point is '
                                       'further off the nose than this', 'rad', gt=0.0, le=3.1416, dynamic=True)
    goal_tolerance_m: float = param(0.1, 'The plan is done once the robot is this close to its last waypoint '
                                    '(and within yaw_tolerance_rad of its heading)', 'm', gt=0.0, le=2.0,
                                    dynamic=True)
    yaw_tolerance_rad: float = param(0.1, 'Heading tolerance at the last waypoint', 'rad', gt=0.0, le=3.1416,
                                     dynamic=True)
    slowdown_distance_m: float = param(0.5, 'Speed scales down linearly within this distance of the last '
                                       'waypoint', 'm', ge=0.0, le=5.0, dynamic=True)
    latency_compensation: bool = param(True, "Follow a plan from where the robot stood when its keyframe was "
                                       'captured (odometry, else the commands sent); false: from where it stands '
                                       'when the plan arrives, as if the model had no latency (for comparison '
                                       'in make eval)', dynamic=True)
    min_confidence: float = param(0.2, 'Waypoints less confident than this are not followed (stop)',
                                  ge=0.0, le=1.0, dynamic=True)
    plan_timeout_s: float = param(15.0, "A plan older than this (by its keyframe's capture stamp) is not "
                                  'followed: stop', 's', gt=0.0, le=120.0, dynamic=True)
    inference_timeout_s: float = param(10.0, 'No plan received for this long means the inference node is '
                                       'silent or gone: stop', 's', gt=0.0, le=120.0, dynamic=True)
    future_tolerance_s: float = param(0.5, 'A plan stamped further in the future than this (clock skew) is '
                                      'rejected: stop', 's', ge=0.0, le=10.0, dynamic=True)
    odom_timeout_s: float = param(0.5, 'Once odometry has been seen, silence this long stops the robot '
                                  '(without odometry the controller integrates its own commands)', 's',
                                  gt=0.0, le=10.0, dynamic=True)
    estop_timeout_s: float = param(0.0, 'Dead-man: e-stop publisher silent this long counts as engaged '
                                   '(latched); 0 = off', 's', ge=0.0, le=60.0)
    zero_hold_s: float = param(1.0, 'After stopping, publish zero this long, then go quiet (so a twist_mux '
                               'can hand over)', 's', ge=0.0, le=60.0, dynamic=True)
    publish_zero_forever: bool = param(False, 'Keep publishing zero while stopped instead of going quiet',
                                       dynamic=True)
    cmd_vel_stamped: bool = param(False, 'Publish geometry_msgs/TwistStamped instead of Twist on cmd_vel')
    base_frame: str = param('base_link', 'frame_id of TwistStamped commands')
    diagnostics_period_s: float = param(1.0, 'Period of /diagnostics messages', 's', ge=0.1, le=60.0)
    # The last stage of every command (core/guard.py; off by default): `guard.*`.
    guard: GuardParams = GuardParams()

    @model_validator(mode='after')
    def _consistent(self) -> ControllerParams:
        if self.goal_tolerance_m >= self.lookahead_m:
            raise ValueError(f'goal_tolerance_m ({self.goal_tolerance_m}) must be smaller than lookahead_m '
                             f'({self.lookahead_m})')
        return self


class ParserParams(StrictModel):
    """How the model's answer becomes a plan (core/parser.py): ranges, limits, the free-text fallback."""

    max_waypoints: int = param(8, 'More waypoints than this are cut off (the near ones are kept)', ge=1, le=64,
                               dynamic=True)
    max_step_m: float = param(1.0, 'Each waypoint step is clamped to this forward/sideways distance', 'm',
                              gt=0.0, le=10.0, dynamic=True)
    max_turn_rad: float = param(1.5708, 'Each waypoint heading change is clamped to this', 'rad', gt=0.0,
                                le=3.1416, dynamic=True)
    text_fallback: bool = param(True, 'Read plain-text answers ("forward 1 m", "turn left 30 degrees", '
                                '"向前走两米") when no JSON is found', dynamic=True)
    text_step_m: float = param(0.5, 'Free text: distance of a move without a number', 'm', gt=0.0, le=5.0,
                               dynamic=True)
    text_turn_rad: float = param(0.5236, 'Free text: angle of a turn without a number', 'rad', gt=0.0,
                                 le=3.1416, dynamic=True)
    text_confidence: float = param(0.5, 'Free text: confidence given to its waypoints', ge=0.0, le=1.0,
                                   dynamic=True)
    answer_order: Literal['scene_first', 'plan_first'] = param(
        'scene_first', 'Order the model is asked to answer in: scene_first = env, act, wp (it describes, then '
        'decides); plan_first = act, wp, env (with guided_json the plan is published from the stream as soon '
        'as its waypoints are complete, 13 of 48 tokens earlier: docs/gpu_latency.md; unguided, when the answer '
        'closes)', dynamic=True)


class InferenceSettings(StrictModel):
    """inference_node: keyframe + instruction + history -> VLM -> plan.

    Fixed while running (no dynamic=True): the backend and all its settings (built once, at start-up),
    history_max, base_frame, record_file and the diagnostics period.

    InferenceParams (below) is this plus one section per registered backend (`lmdeploy.*`, `openai.*`,
    ...: their BackendParams models, from backends/registry.py)."""

    backend: Literal[tuple(BACKENDS)] = param(  # type: ignore[valid-type]  # the registered names
        'lmdeploy', '; '.join(f'{name}: {spec.summary}' for name, spec in BACKENDS.items()))
    model: str = param('models/Qwen3-VL-32B-Instruct', 'Model path (lmdeploy) or name in the plans')
    max_new_tokens: int = param(128, 'Most tokens of one answer (output tokens are most of the latency)',
                                'tokens', ge=16, le=4096, dynamic=True)
    guided_json: bool = param(True, 'Constrain the answer to the JSON schema (guided decoding)', dynamic=True)
    image_max_pixels: int = param(200_704, 'Most pixels the vision encoder sees (448 x 448 = 200704); larger '
                                  'keyframes are shrunk by the model processor', 'px', ge=3136, le=16_777_216,
                                  dynamic=True)
    history_steps: int = param(4, 'Earlier steps (environment, action) of the task put into the prompt',
                               ge=0, le=32, dynamic=True)
    history_max: int = param(256, 'Steps kept per task (older ones are forgotten)', ge=1, le=100_000)
    history_blocked_after_s: float = param(2.0, 'The collision guard (vln/guard_status) holding the robot at an '
                                           'obstacle this long adds one step to the history: the way is '
                                           'blocked, at that distance and bearing; 0 = never', 's', ge=0.0,
                                           le=600.0, dynamic=True)
    inference_timeout_s: float = param(10.0, 'An answer taking longer is abandoned (request aborted): stop '
                                       'plan', 's', gt=0.0, le=300.0, dynamic=True)
    keyframe_max_age_s: float = param(10.0, 'Keyframes older than this (by capture stamp) are not used', 's',
                                      gt=0.0, le=600.0, dynamic=True)
    failure_threshold: int = param(3, 'This many failed answers in a row mark the task failed on '
                                   'vln/task_status and /diagnostics (the node keeps trying)', ge=1, le=1000,
                                   dynamic=True)
    arrived_confirmations: int = param(1, "The task ends after this many 'arrived' answers in a row; before "
                                       'that an arrived answer is a stop plan and the task goes on (2: one '
                                       "premature 'arrived' only halts the robot until the next answer)",
                                       ge=1, le=10, dynamic=True)
    base_frame: str = param('base_link', 'frame_id of plans, paths and markers')
    record_file: str = param('', 'Append every answer (stamp, prompt hash, text, latency, tokens) to this '
                             'JSONL file, for the replay backend; empty = off')
    diagnostics_period_s: float = param(1.0, 'Period of /diagnostics messages', 's', ge=0.1, le=60.0)
    robots: tuple[str, ...] = param(
        (), "Robot namespaces this one node serves through one backend (one engine), relative to the node's "
        'namespace: each gets <robot>/vln/keyframe, <robot>/vln/waypoints, <robot>/vln/set_task, ... and its '
        'own task, history and worker; the engine batches their requests (docs/nodes/inference_node.md). Empty '
        "= the one robot of the node's own namespace (vln/keyframe, ...)")
    max_active_robots: int = param(0, 'With robots: most robots with a running task at once; a new task on '
                                   'another robot is refused, saying why on its task status. 0 = no cap',
                                   ge=0, le=1024)
    idle_release_s: float = param(60.0, 'With max_active_robots: when a new task would be refused at the cap, a '
                                  'robot whose running task has had no keyframe for this long (its camera or its '
                                  'link is gone) has that task stopped, saying why, and its place goes to the new '
                                  'one. 0 = a place is held until the task ends', 's', ge=0.0, le=86400.0)
    parser: ParserParams = ParserParams()

    def backend_params(self) -> BackendParams:
        """The chosen backend's section (`lmdeploy`, `openai`, ...)."""
        section: BackendParams = getattr(self, self.backend)
        return section

    @model_validator(mode='after')
    def _consistent(self) -> InferenceSettings:
        self.backend_params().check_selected()
        check_robot_names(self.robots)
        if self.history_steps > self.history_max:
            raise ValueError(f'history_steps ({self.history_steps}) must not exceed history_max '
                             f'({self.history_max})')
        return self


# Declaration order is parameter order (the node page's table, config/vln.yaml): the common ones and the parser's,
# then the backends' sections in registration order. The type checker sees InferenceSettings (the sections
# are built at run time from the registry; code reaches them through backend_params()).
if TYPE_CHECKING:
    InferenceParams = InferenceSettings
else:
    InferenceParams = create_model(
        'InferenceParams', __base__=InferenceSettings, __module__=__name__, __doc__=InferenceSettings.__doc__,
        **{name: (spec.params, spec.params()) for name, spec in BACKENDS.items()})


class ConsoleParams(StrictModel):
    """console_node: the operator console in the browser (vln_ros/console).

    Fixed while running (no dynamic=True): the web server is built once, at start-up."""

    address: str = param('127.0.0.1', 'Address the web server listens on; any other than a loopback address '
                         'requires a token')
    port: int = param(8080, 'TCP port of the web server; 0 = any free port (the start line names it)', ge=0,
                      le=65535)
    token: str = param('', 'Access token every page, command and stream must carry; empty = none on a loopback '
                       'address, a random one on any other (its URL written once to the terminal, or without one to '
                       'a 0600 file, never to the log)')
    image_max_hz: float = param(10.0, 'Most images a second sent to each page (newest wins; a slow page '
                                'gets fewer, never a queue)', 'Hz', gt=0.0, le=60.0)
    heartbeat_timeout_s: float = param(0.5, 'The page holding control silent this long (tab closed, Wi-Fi lost): '
                                       'e-stop', 's', gt=0.05, le=10.0)
    max_viewers: int = param(8, 'Most pages connected at once (one more replaces the page idle longest that '
                             'does not hold control)', ge=1, le=64)
    diagnostics_period_s: float = param(1.0, 'Period of /diagnostics messages', 's', ge=0.1, le=60.0)


class GuardNodeParams(StrictModel):
    """guard_node: the collision guard alone, cmd_vel_in -> cmd_vel_out, for bases that teleop or a twist_mux
    also drives (controller_node has the same guard as its last stage; guard.* are the same parameters).

    Fixed while running (no dynamic=True): the check rate, the message type, the base frame and the
    diagnostics period, as controller_node's."""

    rate_hz: float = param(50.0, 'The guard re-checks the newest input this often (a new obstacle stops the '
                           'robot within a period, not at the next input; a silent input becomes zero)', 'Hz',
                           ge=10.0, le=100.0)
    input_timeout_s: float = param(0.5, 'cmd_vel_in silent this long: publish zero', 's', gt=0.0, le=10.0,
                                   dynamic=True)
    zero_hold_s: float = param(1.0, 'After the input went silent, publish zero this long, then go quiet',
                               's', ge=0.0, le=60.0, dynamic=True)
    cmd_vel_stamped: bool = param(False, 'geometry_msgs/TwistStamped instead of Twist on cmd_vel_in and '
                                  'cmd_vel_out')
    base_frame: str = param('base_link', 'frame_id of TwistStamped commands and of the guard status')
    diagnostics_period_s: float = param(1.0, 'Period of /diagnostics messages', 's', ge=0.1, le=60.0)
    guard: GuardParams = GuardParams()


NODE_PARAMS: dict[str, type[StrictModel]] = {'camera_node': CameraParams, 'inference_node': InferenceParams,
                                             'controller_node': ControllerParams, 'console_node': ConsoleParams,
                                             'guard_node': GuardNodeParams}
