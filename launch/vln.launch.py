"""The whole stack, or one side of it: `ros2 launch vln_ros vln.launch.py nodes:=robot camera_topic:=/camera/image_raw`
on the robot, `ros2 launch vln_ros vln.launch.py nodes:=gpu model:=/data/models/Qwen3-VL-32B-Instruct tp:=4`
on the GPU server (same ROS_DOMAIN_ID and namespace), or everything on one machine with nodes:=all.

Thin on purpose: the nodes, their parameter file and remappings, these arguments with their descriptions,
the check that everything is installed and what ends the launch all come from vln_ros/bringup.py, which
`make demo` and the tests also start the processes from.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction

from launch import LaunchDescription
from vln_ros import bringup

ARGUMENTS = bringup.launch_arguments(bringup.StackArgs)


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in ARGUMENTS],
        # Evaluated at launch time: which nodes start depends on the value of `nodes`.
        OpaqueFunction(function=bringup.launch_actions, args=[bringup.StackArgs, ARGUMENTS]),
    ])
