"""Start the camera node on the robot: `ros2 launch vln_ros camera.launch.py camera_topic:=/camera/image_raw`.

Raw frames over ~0.5 MB need FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA exported for the camera driver and this
launch alike (README, "Large images over Fast DDS"); compressed frames do not.

Thin on purpose: the node, its parameter file, remappings and these arguments come from vln_ros/bringup.py.
The whole stack: vln.launch.py.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction

from launch import LaunchDescription
from vln_ros import bringup

ARGUMENTS = [a for a in bringup.launch_arguments(bringup.StackArgs) if a.name in bringup.CAMERA_ARGUMENTS]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in ARGUMENTS],
        OpaqueFunction(function=bringup.launch_actions, args=[bringup.StackArgs, ARGUMENTS, bringup.CAMERA_ONLY]),
    ])
