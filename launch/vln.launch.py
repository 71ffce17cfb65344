"""The whole stack, or one side of it: `ros2 launch vln_ros vln.launch.py nodes:=robot camera_topic:=/camera/image_raw`
on the robot, `ros2 launch vln_ros vln.launch.py nodes:=gpu model:=/data/models/Qwen3-VL-32B-Instruct tp:=4`
on the GPU server (same ROS_DOMAIN_ID and namespace), or everything on one machine with nodes:=all.

Thin on purpose: the nodes, their parameter file, remappings and environment, and these arguments with their
descriptions all come from vln_ros/bringup.py, which test/test_launch.py also starts the processes from.
"""
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vln_ros import bringup

ARGUMENTS = bringup.launch_arguments(bringup.StackArgs)


def start_stack(context):
    # Evaluated at launch time: which nodes start depends on the value of `nodes`.
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS}
    share_dir = get_package_share_directory(bringup.PACKAGE)
    return [Node(output='screen', emulate_tty=True, **process.launch_kwargs())
            for process in bringup.processes(bringup.StackArgs, values, share_dir)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in ARGUMENTS],
        OpaqueFunction(function=start_stack),
    ])
