"""Declare a node's ROS parameters from its pydantic model (vln_ros/core/config.py), and keep them honest.

At start-up (declare_params), in this order:
- every parameter file the node was given (`--params-file`) must have a section for the node's fully
  qualified name, by rcl's own matching (core/config.node_key_matches): otherwise the file was meant for
  someone else or keyed without a wildcard (`controller_node:` does not apply to `/r1/controller_node`).
  The controller refuses to start (ParameterError, exit 2); camera and inference nodes log a warning.
- each parameter is declared with a descriptor (type, description, unit, range, read-only unless the
  model marks it dynamic), so `ros2 param describe` shows what the model says;
- every override the node received (files and -p) must name one of its parameters or one of ROS's own:
  rclpy silently ignores an override that is never declared, so `max_linear_X` would leave the default;
- the values are validated by the model; anything wrong raises one ParameterError naming each parameter,
  value and allowed range, and the node does not start.

While the node runs (LiveParameters), a change through the parameter services (`ros2 param set`) is
checked by the same model with every current value (core/config.validate_change) and refused, changing
nothing, with the model's message; an accepted one is logged and handed to the node's apply method.

rclpy internals relied on (rclpy 9.x Kilted, 7.x Jazzy): `Node._parameter_overrides` (the overrides of
this node, files and -p merged) and the parameter services calling `node.set_parameters_atomically` (see
LiveParameters for why that method is wrapped on the node instance).
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, TypeVar

import yaml
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from vln_ros.core.config import (
    ParameterError,
    ParamSpec,
    StrictModel,
    nested_to_flat,
    node_key_matches,
    param_specs,
    read_parameter_file,
    unknown_parameter,
    validate_change,
    validate_params,
)

M = TypeVar('M', bound=StrictModel)

_ROS_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
              float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
              list: ParameterType.PARAMETER_STRING_ARRAY}
# Parameters rclpy declares on every node itself (Node.__init__: TimeSource, TypeDescriptionService), and
# the prefix of those it declares for a publisher or subscription created with QoS overriding options.
ROS_OWN_PARAMETERS = ('use_sim_time', 'start_type_description_service')
ROS_OWN_PREFIXES = ('qos_overrides.',)


def descriptor(spec: ParamSpec, live: bool = True) -> ParameterDescriptor:
    """The ROS descriptor of one parameter; read-only unless the model marks it dynamic (and `live`)."""
    unit = f' [{spec.unit}]' if spec.unit else ''
    d = ParameterDescriptor(name=spec.name, type=_ROS_TYPES[spec.type], description=spec.description + unit,
                            additional_constraints=spec.allowed(), read_only=not (live and spec.dynamic))
    # ROS ranges are inclusive; an exclusive bound (gt/lt) is enforced by the model after declaration.
    if spec.type is int and spec.minimum is not None and spec.maximum is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
    elif spec.type is float and spec.minimum is not None and spec.maximum is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.minimum),
                                                     to_value=float(spec.maximum), step=0.0)]
    return d


def params_files(args: Sequence[str]) -> list[str]:
    """The `--params-file FILE` arguments among the ROS arguments of a command line (rcl's syntax: they
    follow `--ros-args`, up to a lone `--` or the end; several `--ros-args` blocks are allowed)."""
    files: list[str] = []
    in_ros_args = False
    tokens = iter(args)
    for token in tokens:
        if token == '--ros-args':
            in_ros_args = True
        elif token == '--':
            in_ros_args = False
        elif in_ros_args and token == '--params-file':
            path = next(tokens, None)
            if path is not None:
                files.append(path)
    return files


def unmatched_files(files: Sequence[str], fully_qualified_name: str) -> list[str]:
    """A problem for each file without a section for the node (checked the way rcl applies them)."""
    problems = []
    for path in files:
        try:
            keys = [key for key, _ in read_parameter_file(path)]
        except (OSError, yaml.YAMLError) as exc:  # rcl read it already; this is only a second opinion
            problems.append(f'parameter file {path} could not be checked for a section for '
                            f'{fully_qualified_name}: {exc}')
            continue
        if any(node_key_matches(key, fully_qualified_name) for key in keys):
            continue
        name = fully_qualified_name.rsplit('/', 1)[-1]
        found = f"its sections are {', '.join(repr(k) for k in keys)}" if keys else 'it has no sections'
        problems.append(f'parameter file {path} has no section for {fully_qualified_name} ({found}), so none '
                        f"of its values apply; key the section '/**/{name}:' to apply it in any namespace")
    return problems


def declare_params(node: Node, model: type[M], apply: Callable[[M], None] | None = None, *,
                   cli_args: Sequence[str] | None = None,
                   file_without_section: Literal['warn', 'error'] = 'warn') -> M:
    """Declare every parameter of `model` on `node` and return the validated values.

    apply: the node's method that takes a validated new snapshot while it runs; without it every parameter
    is read-only. cli_args: the node's own `cli_args`, if any (the process's command line is always read).
    file_without_section: what a parameter file without a section for this node is: 'error' (raise
    ParameterError; the controller) or 'warn' (log a warning and run without it)."""
    fqn = node.get_fully_qualified_name()
    for problem in unmatched_files(params_files([*sys.argv, *(cli_args or ())]), fqn):
        if file_without_section == 'error':
            raise ParameterError(problem)
        node.get_logger().warning(problem)

    specs = param_specs(model)
    values: dict[str, object] = {}
    problems: list[str] = []
    for spec in specs:
        # rclpy infers a type from the default, and an empty list reads as a byte array: a string array is
        # declared by its type (no value unless overridden; None then means the model's default).
        default: Any = Parameter.Type.STRING_ARRAY if spec.type is list else spec.default
        try:
            declared = node.declare_parameter(spec.name, default, descriptor(spec, live=apply is not None)).value
            values[spec.name] = spec.default if declared is None and spec.type is list else declared
        except (InvalidParameterValueException, InvalidParameterTypeException):
            # rclpy's own message lacks the allowed range; read the offending value back without the
            # descriptor's checks so the model can say exactly what is wrong.
            value: object = node.declare_parameter(spec.name, spec.default,
                                                   ParameterDescriptor(dynamic_typing=True)).value
            values[spec.name] = value
            if (type_problem := spec.type_problem(value)) is not None:
                problems.append(type_problem)
    # rclpy ignores an override that is never declared: a misspelt name would leave the default in force.
    problems.extend(unknown_parameter(name, (s.name for s in specs))
                    for name in getattr(node, '_parameter_overrides', {})
                    if not node.has_parameter(name) and name not in ROS_OWN_PARAMETERS
                    and not name.startswith(ROS_OWN_PREFIXES))
    mistyped = {s.name for s in specs if s.type_problem(values[s.name]) is not None}
    try:  # the range problems of the other parameters too
        validated = validate_params(model, {k: v for k, v in values.items() if k not in mistyped})
    except ParameterError as exc:
        problems.append(str(exc))
    if problems:
        raise ParameterError('; '.join(problems))
    if apply is not None:
        LiveParameters(node, validated, apply)
    return validated


class LiveParameters(Generic[M]):
    """Changes of a running node's parameters: validated by the model, applied by the node, or refused.

    Every path that sets parameters runs the on-set callback (`_check`), so nothing the model refuses is
    ever stored or applied. rclpy checks a descriptor's read-only flag, type and range before any on-set
    callback, though, and answers in its own words ('Trying to set a read-only parameter: rate_hz.'). The
    parameter services (`ros2 param set`, SetParameters, SetParametersAtomically) call
    `node.set_parameters_atomically`, so that method is wrapped on this node instance to answer with the
    model's message first (the same as at start-up)."""

    def __init__(self, node: Node, snapshot: M, apply: Callable[[M], None]) -> None:
        self._node = node
        self._snapshot = snapshot
        self._apply = apply
        self._specs = {s.name: s for s in param_specs(type(snapshot))}
        self._lock = threading.RLock()  # a service call and an in-process set_parameters must not interleave
        self._unchecked_set = node.set_parameters_atomically
        node.set_parameters_atomically = self.set_parameters_atomically  # type: ignore[method-assign]
        # Registered after every declaration: rclpy runs these callbacks for declarations too.
        node.add_on_set_parameters_callback(self._check)
        node.add_post_set_parameters_callback(self._commit)

    def _changes(self, parameters: Sequence[Parameter[Any]]) -> dict[str, Any]:
        return {p.name: p.value for p in parameters if p.name in self._specs}

    def _problem(self, parameters: Sequence[Parameter[Any]]) -> str | None:
        """Why the model refuses this change (None: it accepts it). Other names are not its business."""
        try:
            validate_change(self._snapshot, self._changes(parameters))
        except ParameterError as exc:
            return str(exc)
        return None

    def set_parameters_atomically(self, parameter_list: list[Parameter[Any]]) -> SetParametersResult:
        with self._lock:
            undeclared = [p.name for p in parameter_list if not self._node.has_parameter(p.name)]
            if undeclared:  # rclpy would raise ParameterNotDeclaredException (the services report it)
                problem: str | None = '; '.join(unknown_parameter(name, self._specs) for name in undeclared)
            else:
                problem = self._problem(parameter_list)
            if problem is None:
                return self._unchecked_set(parameter_list)
        self._node.get_logger().warning(f'refused a parameter change: {problem}')
        return SetParametersResult(successful=False, reason=problem)

    def _check(self, parameters: list[Parameter[Any]]) -> SetParametersResult:
        with self._lock:
            problem = self._problem(parameters)
        return SetParametersResult(successful=problem is None, reason=problem or '')

    def _commit(self, parameters: list[Parameter[Any]]) -> None:
        """rclpy holds the new values now (they passed _check): the node takes the new snapshot."""
        with self._lock:
            changes = self._changes(parameters)
            if not changes:  # e.g. use_sim_time: rclpy's own business
                return
            old = nested_to_flat(self._snapshot.model_dump())
            self._snapshot = validate_change(self._snapshot, changes)
            for name, value in changes.items():
                unit = f' {self._specs[name].unit}' if self._specs[name].unit else ''
                self._node.get_logger().info(f'parameter {name} set: {old[name]!r} -> {value!r}{unit}')
            self._apply(self._snapshot)
