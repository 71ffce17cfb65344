"""The ROS interface of vln_ros in one place: every topic and service name and every QoS profile the nodes
use, so the nodes, bringup, the demo, the bench and the tests cannot disagree about them.

Names without a leading '/' resolve in the node's namespace (the `namespace` launch argument); absolute
ones are global. Importing this module starts nothing: rclpy.qos profiles need no context.

Frames are parameters, not names fixed here: plans, paths, markers and TwistStamped commands are in
`base_frame` (default 'base_link', vln_ros/core/config.py); keyframes keep the camera's frame_id unless the
camera node's `frame_id` overrides it.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

# -- topics -------------------------------------------------------------------------------------------
IMAGE = 'image'                                 # camera_node in, raw (remapped to the camera_topic argument)
IMAGE_COMPRESSED = 'image/compressed'           # camera_node in, with input_transport compressed
KEYFRAME = 'vln/keyframe'                       # camera_node -> inference_node, JPEG CompressedImage
KEYFRAME_REQUEST = 'vln/keyframe_request'         # inference_node -> camera_node: the model is free (latched)
KEYFRAME_DECISIONS = 'vln/keyframe_decisions'   # camera_node out, only with publish_decisions
INSTRUCTION = 'vln/instruction'                 # inference_node in: a new task (std_msgs/String)
WAYPOINTS = 'vln/waypoints'                     # inference_node -> controller_node: the plan
TASK_STATUS = 'vln/task_status'                 # inference_node out, latched
PATH = 'vln/path'                               # inference_node out, for rviz
MARKERS = 'vln/markers'                         # inference_node out, for rviz
DEBUG_IMAGE = 'vln/debug_image'                 # inference_node out: annotated keyframes
ESTOP = 'vln/estop'                             # controller_node in
ODOM = 'odom'                                   # controller_node in
CMD_VEL = 'cmd_vel'                             # controller_node out
GUARD_STATUS = 'vln/guard_status'               # controller_node / guard_node out: the guard's state, latched
GUARD_MARKERS = 'vln/guard_markers'             # controller_node / guard_node out: the guard's zones, for rviz
CMD_VEL_IN = 'cmd_vel_in'                       # guard_node in: commands of teleop, a twist_mux, ...
CMD_VEL_OUT = 'cmd_vel_out'                     # guard_node out: the same commands made safe
CONTROLLER_STATUS = 'vln/controller_status'     # controller_node out: e-stop, mode, stop reason, limits, latched
# The collision guard's sensors (controller_node in, with guard.enabled): their topics are parameters
# (guard.laser.topic, ...), relative by default so that a namespace applies; these are those defaults.
SCAN = 'scan'                                   # sensor_msgs/LaserScan (also what sim_node's laser publishes)
GUARD_POINTS = 'points'                         # sensor_msgs/PointCloud2
GUARD_DEPTH = 'depth/image_raw'                 # sensor_msgs/Image, 16UC1 or 32FC1
GUARD_DEPTH_INFO = 'depth/camera_info'          # sensor_msgs/CameraInfo of the depth image
DIAGNOSTICS = '/diagnostics'                    # every node out (global, as diagnostic_aggregator expects)
CLOCK = '/clock'                                # simulated time (bag replay, sim_node)
SIM_CAMERA = 'camera/image_raw'                 # sim_node's camera out (the camera_topic make eval gives the stack)

# -- services -----------------------------------------------------------------------------------------
SET_TASK = 'vln/set_task'                       # inference_node, vln_ros/srv/SetTask
STOP_TASK = 'vln/stop_task'                     # inference_node, std_srvs/Trigger
RELEASE_ESTOP = 'vln/release_estop'             # controller_node, std_srvs/Trigger


def robot_name(robot: str, name: str) -> str:
    """A relative name of one robot served by a fleet's inference_node (its `robots` parameter):
    `r1/vln/keyframe`. robot '' is the node's own namespace: the name as it is."""
    return f'{robot}/{name}' if robot else name


# -- QoS ----------------------------------------------------------------------------------------------
# Camera frames, odometry and the guard's sensors: sensor-data QoS (best effort, depth 5): a sensor must never
# wait for us, and a late message is worth less than the next one.
SENSOR_QOS = qos_profile_sensor_data
# Keyframes are few and each one matters: reliable, but only the newest two are kept for a slow reader.
# (Best-effort subscribers, e.g. rviz, still connect to a reliable publisher.)
KEYFRAME_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
# A keyframe request is state (is the model free, which request): latched, so a camera_node started later
# learns it at once.
KEYFRAME_REQUEST_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                  durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Plans (and the path and markers drawn from them) must not be lost: the controller stops on a stop plan.
PLAN_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# An instruction is a new task: reliable, like a plan.
INSTRUCTION_QOS = PLAN_QOS
# E-stop messages must not be lost: reliable. (A best-effort e-stop publisher cannot match this
# subscription; the controller reports that as an incompatible-QoS error, and the dead-man covers it.)
ESTOP_QOS = PLAN_QOS
# The task status is latched state: a late subscriber gets the current one.
STATUS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# The guard's state too (what a console or eval starting later must see at once).
GUARD_STATUS_QOS = STATUS_QOS
# And the controller's (the console's e-stop pill, eval's view of the controller and its clock).
CONTROLLER_STATUS_QOS = STATUS_QOS
# Both latched states are published on every change and at least this often, so a reader (the console's page)
# knows one unheard for longer than twice that is stale.
GUARD_STATUS_PERIOD_S = 1.0
CONTROLLER_STATUS_PERIOD_S = 1.0
# cmd_vel: only the newest command matters to the robot.
CMD_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
# The guard's zones for rviz: only the newest matters, and they are republished every GUARD_MARKER_PERIOD_S.
GUARD_MARKERS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
# Annotated keyframes are for a person watching: the default reliability, only the newest two.
DEBUG_IMAGE_QOS = QoSProfile(depth=2)
# Diagnostics and keyframe decisions: rclpy's default (reliable, depth 10), what diagnostic tools expect.
DIAGNOSTICS_QOS = QoSProfile(depth=10)
DECISIONS_QOS = QoSProfile(depth=10)
