"""Message field conversions shared by the nodes (and the demo)."""
from __future__ import annotations

from typing import Any, Literal

from geometry_msgs.msg import Twist, TwistStamped
from rclpy.time import Time


def stamp_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time -> seconds (float)."""
    return stamp.sec + stamp.nanosec * 1e-9


def time_msg(t_s: float) -> Any:
    """builtin_interfaces/Time of t_s seconds, rounded to the nanosecond (3.9999999999 s is 4 s, not 3 s + 1e9 ns)."""
    return Time(nanoseconds=round(t_s * 1e9)).to_msg()


def velocity_message(vx: float, vy: float, wz: float, msg_type: type[Twist] | type[TwistStamped], stamp_s: float,
                     frame_id: str) -> Twist | TwistStamped:
    """A body-velocity command as the base takes it: a Twist, or a TwistStamped stamped stamp_s (the step's
    own time, not a later clock read: under load the two differ, and accelerations computed from the stamps
    would disagree with the step's dt) in frame_id."""
    twist = Twist()
    twist.linear.x, twist.linear.y, twist.angular.z = float(vx), float(vy), float(wz)
    if msg_type is Twist:
        return twist
    msg = TwistStamped(twist=twist)
    msg.header.stamp = time_msg(stamp_s)
    msg.header.frame_id = frame_id
    return msg


class MalformedMessage(ValueError):
    """Serialized bytes that do not hold the message they are said to."""


ByteOrder = Literal['little', 'big']


def _cdr_uint32(data: bytes, offset: int, byteorder: ByteOrder) -> tuple[int, int]:
    """The uint32 at the next 4-aligned offset of a CDR payload (offsets count from after the 4-byte
    encapsulation header) and the offset after it."""
    offset += -offset % 4
    if 4 + offset + 4 > len(data):
        raise MalformedMessage(f'{len(data)} bytes end before offset {offset + 4}')
    return int.from_bytes(data[4 + offset:8 + offset], byteorder), offset + 4


def waypoint_count(serialized: bytes) -> int:
    """The number of waypoints in a serialized vln_ros/msg/WaypointArray, read from its CDR bytes without
    deserializing: the controller refuses an oversized plan before rclpy builds 10,000 Python objects
    from it (13 ms for 10,000 waypoints, a missed control period). Follows the field order of
    msg/WaypointArray.msg: header (stamp, frame_id), task_id, instruction, environment, action, stop, waypoints."""
    if len(serialized) < 4:
        raise MalformedMessage(f'{len(serialized)} bytes: no CDR encapsulation header')
    byteorder: ByteOrder = 'little' if serialized[1] & 1 else 'big'  # CDR_LE = 0x0001, CDR_BE = 0x0000
    offset = 8  # header.stamp: int32 sec, uint32 nanosec
    for _string in range(5):  # header.frame_id, task_id, instruction, environment, action
        length, offset = _cdr_uint32(serialized, offset, byteorder)
        offset += length
    offset += 1  # bool stop
    count, _ = _cdr_uint32(serialized, offset, byteorder)
    return count
