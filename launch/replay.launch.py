"""Replay a bag through the stack: `ros2 launch vln_ros replay.launch.py bag:=run1 rate:=1.0`.

Plays the bag with vln_bag (bag time on /clock; the topics the nodes started here publish themselves are
left out, so a bag of a live run feeds its camera, odometry and instructions in again) and starts the stack
with use_sim_time:=true. `ros2 bag play --clock run1` works as well: the bags are ordinary rosbag2 bags.
With the replay backend (record_file on the live run, backend: replay in the params file) no GPU is needed.
The player ending with the bag ends nothing; any process failing ends the launch with a non-zero exit.

Thin on purpose: everything comes from vln_ros/bringup.py, which `make demo` and the tests also start the
processes from.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction

from launch import LaunchDescription
from vln_ros import bringup

ARGUMENTS = bringup.launch_arguments(bringup.ReplayArgs)


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in ARGUMENTS],
        # Evaluated at launch time: which nodes start depends on the value of `nodes`.
        OpaqueFunction(function=bringup.launch_actions, args=[bringup.ReplayArgs, ARGUMENTS]),
    ])
