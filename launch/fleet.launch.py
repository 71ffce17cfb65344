"""The server side of a fleet: `ros2 launch vln_ros fleet.launch.py robots:=r1,r2,r3` on the GPU server.

shape:=engine (the default, and what the measurement recommends on one GPU): ONE inference_node serving every
robot namespace through one in-process engine. shape:=api: one inference_node per robot namespace with the openai
backend, against `lmdeploy serve api_server` or `lmdeploy serve proxy` over several
(openai_url:=http://<host>:8000/v1). Each robot runs robot.launch.py namespace:=<name>; nodes:=all also starts the
robots' camera_node and controller_node here. Command lines for both shapes: docs/fleet.md.

Thin on purpose: the nodes, their parameters, the checks of the robot names and these arguments come from
vln_ros/bringup.py.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction

from launch import LaunchDescription
from vln_ros import bringup

ARGUMENTS = bringup.declared_arguments(bringup.FleetArgs, bringup.FLEET_ARGUMENTS)


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in ARGUMENTS],
        # Evaluated at launch time: which nodes start, and how many, depends on robots, shape and nodes.
        OpaqueFunction(function=bringup.launch_actions, args=[bringup.FleetArgs, ARGUMENTS]),
    ])
