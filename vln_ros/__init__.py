"""vln_ros: vision-language navigation for quadrupeds on ROS 2.

The generated interfaces (vln_ros.msg, vln_ros.srv) are built by rosidl. In a colcon install they sit in
this very folder; in the venv (editable install) they live in site-packages/vln_ros, and extend_path
makes both folders one package.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
