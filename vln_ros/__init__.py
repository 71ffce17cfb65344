"""vln_ros: vision-language navigation for quadrupeds on ROS 2.

The generated interfaces (vln_ros.msg, vln_ros.srv) are built by rosidl. In a colcon install they sit in
this very folder; in the venv (editable install) they live in site-packages/vln_ros, and extend_path
makes both folders one package.
"""
import os
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

# Largest camera frame any node decodes. OpenCV reads its own decode limit once, when it is imported,
# so it is set here, before any vln_ros module imports cv2: a few hundred bytes of PNG claiming
# 20000 x 20000 pixels must not make a node allocate gigabytes.
MAX_IMAGE_PIXELS = 8192 * 8192
os.environ.setdefault('OPENCV_IO_MAX_IMAGE_PIXELS', str(MAX_IMAGE_PIXELS))
