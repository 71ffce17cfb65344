"""Declare a node's ROS parameters from its pydantic model (vln_ros/core/config.py).

Each parameter gets a descriptor with type, description, unit and range, so `ros2 param describe`
shows what the model says. Values are then validated by the model itself; anything wrong raises
ParameterError naming the parameter, the value and the allowed range, and the node does not start.
"""
from __future__ import annotations

from typing import TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

from vln_ros.core.config import ParameterError, ParamSpec, StrictModel, param_specs, validate_params

M = TypeVar('M', bound=StrictModel)

_ROS_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
              float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    unit = f' [{spec.unit}]' if spec.unit else ''
    d = ParameterDescriptor(name=spec.name, type=_ROS_TYPES[spec.type], description=spec.description + unit,
                            additional_constraints=spec.allowed(), read_only=True)
    # ROS ranges are inclusive; an exclusive bound (gt/lt) is enforced by the model after declaration.
    if spec.type is int and spec.minimum is not None and spec.maximum is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
    elif spec.type is float and spec.minimum is not None and spec.maximum is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.minimum),
                                                     to_value=float(spec.maximum), step=0.0)]
    return d


def declare_params(node: Node, model: type[M]) -> M:
    """Declare every parameter of `model` on `node` and return the validated values."""
    values: dict[str, object] = {}
    mistyped: dict[str, str] = {}
    for spec in param_specs(model):
        try:
            values[spec.name] = node.declare_parameter(spec.name, spec.default, descriptor(spec)).value
        except (InvalidParameterValueException, InvalidParameterTypeException):
            # rclpy's own message lacks the allowed range; read the offending value back without the
            # descriptor's checks so the model can say exactly what is wrong.
            value = node.declare_parameter(spec.name, spec.default,
                                           ParameterDescriptor(dynamic_typing=True)).value
            values[spec.name] = value
            if spec.type is float and type(value) is int:
                mistyped[spec.name] = (f"parameter '{spec.name}' = {value!r} is an integer; write it as "
                                       f'{float(value)!r} (ROS parameters are typed); allowed: {spec.allowed()}')
            elif type(value) is not spec.type:
                mistyped[spec.name] = (f"parameter '{spec.name}' = {value!r} has type {type(value).__name__}, "
                                       f'expected {spec.type.__name__}; allowed: {spec.allowed()}')
    if not mistyped:
        return validate_params(model, values)
    problems = list(mistyped.values())
    try:  # report the range problems of the other parameters too
        validate_params(model, {k: v for k, v in values.items() if k not in mistyped})
    except ParameterError as exc:
        problems.append(str(exc))
    raise ParameterError('; '.join(problems))
