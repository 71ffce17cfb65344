"""Start the camera node on the robot: `ros2 launch vln_ros camera.launch.py camera_topic:=/camera/image_raw`.

Thin and declarative: the parameters come from the params file (defaults: config/vln.yaml), the
executable and its name are the ones the process-level tests start (test/test_executables.py).
The full stack's launch files (vln.launch.py, replay.launch.py) belong to the bringup issue.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory('vln_ros'), 'config', 'vln.yaml')
    return LaunchDescription([
        DeclareLaunchArgument('namespace', default_value='', description='Namespace of the robot (all topics are relative)'),
        DeclareLaunchArgument('params_file', default_value=default_params, description='ROS 2 parameter file for the nodes'),
        DeclareLaunchArgument('use_sim_time', default_value='false', description='Use /clock (bag replay, simulation)'),
        DeclareLaunchArgument('camera_topic', default_value='image',
                              description="The camera's image topic (or its compressed base topic)"),
        # Raw 1080p frames over Fast DDS are silently lost without the large-data transport.
        SetEnvironmentVariable('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA'),
        Node(
            package='vln_ros', executable='camera_node', name='camera_node', namespace=LaunchConfiguration('namespace'),
            parameters=[LaunchConfiguration('params_file'), {'use_sim_time': LaunchConfiguration('use_sim_time')}],
            remappings=[('image', LaunchConfiguration('camera_topic')),
                        ('image/compressed', [LaunchConfiguration('camera_topic'), '/compressed'])],
            output='screen', emulate_tty=True),
    ])
