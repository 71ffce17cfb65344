"""Replay a bag through the stack: `ros2 launch vln_ros replay.launch.py bag:=run1 rate:=1.0`.

Plays the bag with vln_bag (bag time on /clock; the topics the nodes started here publish themselves are
left out, so a bag of a live run feeds its camera, odometry and instructions in again) and starts the stack
with use_sim_time:=true. `ros2 bag play --clock run1` works as well: the bags are ordinary rosbag2 bags.
With the replay backend (record_file on the live run, backend: replay in the params file) no GPU is needed.

Thin on purpose: everything comes from vln_ros/bringup.py, which test/test_launch.py also starts the
processes from.
"""
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vln_ros import bringup

ARGUMENTS = bringup.launch_arguments(bringup.ReplayArgs)


def start_replay(context):
    # Evaluated at launch time: which nodes start depends on the value of `nodes`.
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS}
    share_dir = get_package_share_directory(bringup.PACKAGE)
    return [Node(output='screen', emulate_tty=True, **process.launch_kwargs())
            for process in bringup.processes(bringup.ReplayArgs, values, share_dir)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in ARGUMENTS],
        OpaqueFunction(function=start_replay),
    ])
