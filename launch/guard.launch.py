"""Start the collision guard alone, before the motors of a base that teleop or a twist_mux also drives:
`ros2 launch vln_ros guard.launch.py params_file:=my_robot.yaml`. It reads cmd_vel_in and publishes
cmd_vel_out (relative to the namespace): point the mux's output at the one and the base driver at the other.
Beside the stack: `ros2 launch vln_ros vln.launch.py nodes:=robot,guard_node`.

Its guard.* parameters (footprint, zones, sensors and their mounts) come from the guard_node section of the
parameter file; config/vln.yaml's has the guard off (commands pass unchanged) until guard.enabled and a
source are set there. Thin on purpose: the node, its parameter file and these arguments come from
vln_ros/bringup.py.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction

from launch import LaunchDescription
from vln_ros import bringup

ARGUMENTS = [a for a in bringup.launch_arguments(bringup.StackArgs) if a.name in bringup.GUARD_ARGUMENTS]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in ARGUMENTS],
        OpaqueFunction(function=bringup.launch_actions, args=[bringup.StackArgs, ARGUMENTS, bringup.GUARD_ONLY]),
    ])
