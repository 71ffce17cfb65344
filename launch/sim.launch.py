"""The stack driving a simulated quadruped: `ros2 launch vln_ros sim.launch.py seed:=3`.

sim_node renders the robot's camera in a generated indoor scene, integrates cmd_vel and publishes odometry
and /clock; the stack runs on that clock with the oracle backend (the simulator's ground truth: what a
perfect model would answer) unless `backend:=` names another. sim_node logs the scene's instruction; give
it with `ros2 service call /vln/set_task vln_ros/srv/SetTask "{instruction: '...'}"`. `make eval` runs and
scores whole sets of episodes (docs/eval.md). `robots:=r1,r2,r3`: several robots in one world, each with its own
stack in its namespace (`ros2 service call /r1/vln/set_task ...`), what `make eval ROBOTS=3` starts; with
`shape:=engine`, ONE inference_node in the root serves them all (fleet.launch.py's shape engine, docs/fleet.md).

Thin on purpose: everything comes from vln_ros/bringup.py, which make eval also starts the processes from.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction

from launch import LaunchDescription
from vln_ros import bringup

ARGUMENTS = bringup.launch_arguments(bringup.SimArgs)


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in ARGUMENTS],
        # Evaluated at launch time: which nodes start depends on the value of `nodes`.
        OpaqueFunction(function=bringup.launch_actions, args=[bringup.SimArgs, ARGUMENTS]),
    ])
