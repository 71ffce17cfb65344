"""One robot's side of a fleet, on the robot: `ros2 launch vln_ros robot.launch.py namespace:=r1`.

camera_node and controller_node in /r1 (camera_topic:=/camera/color/image_raw for the driver's), guard_node too
with guard:=true. The GPU server serves r1 with fleet.launch.py robots:=r1,... (docs/fleet.md). The same as
vln.launch.py nodes:=robot namespace:=r1 (nodes:=robot,guard_node with the guard).

Thin on purpose: the nodes, their parameter file, remappings and these arguments come from vln_ros/bringup.py.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction

from launch import LaunchDescription
from vln_ros import bringup

ARGUMENTS = bringup.declared_arguments(bringup.RobotArgs, bringup.ROBOT_ARGUMENTS)


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in ARGUMENTS],
        OpaqueFunction(function=bringup.launch_actions, args=[bringup.RobotArgs, ARGUMENTS, bringup.ROBOT_ONLY]),
    ])
