"""Start the camera node on the robot: `ros2 launch vln_ros camera.launch.py camera_topic:=/camera/image_raw`.

Thin on purpose: the node, its parameter file, remappings and environment (the large-data transport for
raw images) and these arguments come from vln_ros/bringup.py, which test/test_launch.py also starts the
processes from. The whole stack: vln.launch.py.
"""
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vln_ros import bringup

ARGUMENTS = [a for a in bringup.launch_arguments(bringup.StackArgs) if a.name in bringup.CAMERA_ARGUMENTS]


def start_camera(context):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS}
    share_dir = get_package_share_directory(bringup.PACKAGE)
    return [Node(output='screen', emulate_tty=True, **process.launch_kwargs())
            for process in bringup.processes(bringup.StackArgs, {**values, **bringup.CAMERA_ONLY}, share_dir)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in ARGUMENTS],
        OpaqueFunction(function=start_camera),
    ])
