"""sim_node's parameters: the simulated robot's camera, laser, depth camera, odometry and base, and the simulation's
pace. No ROS.

One model, like the stack's nodes (vln_ros/core/config.py): the node declares its ROS parameters from it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import field_validator, model_validator

from vln_ros.core.schema import StrictModel, check_robot_names, param
from vln_ros.sim import api


class CameraParams(StrictModel):
    rate_hz: float = param(10.0, 'Camera frame rate (simulated time)', 'Hz', gt=0.0, le=60.0)
    width: int = param(448, 'Image width', 'px', ge=32, le=1920)
    height: int = param(336, 'Image height', 'px', ge=32, le=1080)
    hfov_deg: float = param(80.0, 'Horizontal field of view', 'deg', ge=20.0, le=150.0)
    latency_s: float = param(0.03, 'Capture -> published (the stamp is the capture time)', 's', ge=0.0, le=2.0)
    frame_id: str = param('camera', 'frame_id of the images')


class LaserMountParams(StrictModel):
    """Where the laser sits on the robot: on its centre line, level, looking forward.

    The guard's default laser mount (guard.laser.mount) is the same: a calibration the two must agree on."""

    x_m: float = param(0.0, 'Laser frame origin, forward of the base origin', 'm', ge=-1.0, le=1.0)
    z_m: float = param(0.2, 'Laser frame origin above the base origin (the floor): boxes lower than this are not '
                       'seen', 'm', ge=0.0, le=2.0)


class LaserParams(StrictModel):
    enabled: bool = param(True, 'Publish sensor_msgs/LaserScan on scan')
    rate_hz: float = param(15.0, 'Scans per second (simulated time)', 'Hz', gt=0.0, le=50.0)
    fov_deg: float = param(270.0, 'Field of view, symmetric about straight ahead', 'deg', gt=0.0, le=360.0)
    step_deg: float = param(0.5, 'Angle between beams', 'deg', ge=0.1, le=10.0)
    range_min_m: float = param(0.05, 'Nearest measurable range (nearer: -inf, REP 117)', 'm', ge=0.0, le=1.0)
    range_max_m: float = param(8.0, 'Farthest measurable range (no return within it: +inf, REP 117)', 'm',
                               gt=0.0, le=100.0)
    noise_m: float = param(0.01, 'Range noise (standard deviation; cut off at 3 of them)', 'm', ge=0.0, le=0.5)
    frame_id: str = param('laser', 'frame_id of the scans')
    mount: LaserMountParams = LaserMountParams()

    @model_validator(mode='after')
    def _consistent(self) -> LaserParams:
        if self.range_min_m >= self.range_max_m:
            raise ValueError(f'laser.range_min_m ({self.range_min_m}) must be smaller than laser.range_max_m '
                             f'({self.range_max_m})')
        if self.step_deg > self.fov_deg:
            raise ValueError(f'laser.step_deg ({self.step_deg}) must not exceed laser.fov_deg ({self.fov_deg})')
        return self


class DepthMountParams(StrictModel):
    """Where the depth camera sits on the robot: on its centre line, level, looking forward; its optical frame has z
    forward, x right, y down.

    The guard's default depth mount (guard.depth.mount: 0.3 m up, roll and yaw -pi/2) is the same: a calibration the
    two must agree on."""

    x_m: float = param(0.0, 'Optical frame origin, forward of the base origin', 'm', ge=-1.0, le=1.0)
    z_m: float = param(0.3, 'Optical frame origin above the base origin (the floor)', 'm', ge=0.05, le=2.0)


class DepthParams(StrictModel):
    """A depth camera drawn by the same ray caster as the camera (vln_ros/sim/render.py), as the collision guard's
    depth source reads it (guard.depth: its topics, frame and encodings)."""

    enabled: bool = param(False, 'Publish a depth image on depth/image_raw and its CameraInfo on depth/camera_info')
    rate_hz: float = param(15.0, 'Depth frames per second (simulated time)', 'Hz', gt=0.0, le=60.0)
    width: int = param(160, 'Depth image width', 'px', ge=16, le=1280)
    height: int = param(120, 'Depth image height', 'px', ge=16, le=960)
    hfov_deg: float = param(87.0, 'Horizontal field of view', 'deg', ge=20.0, le=150.0)
    encoding: Literal['32FC1', '16UC1'] = param('32FC1', '32FC1: metres, +inf beyond range_max_m; 16UC1: millimetres, '
                                                '0 beyond range_max_m (REP 118)')
    range_max_m: float = param(10.0, 'Farthest depth measured', 'm', gt=0.0, le=60.0)
    frame_id: str = param('camera_depth_optical_frame', 'frame_id of the depth images and their CameraInfo')
    mount: DepthMountParams = DepthMountParams()


class OdomParams(StrictModel):
    rate_hz: float = param(50.0, 'Odometry rate (simulated time)', 'Hz', gt=0.0, le=500.0)
    scale_error: float = param(0.02, 'Relative error on the distance travelled', ge=-0.5, le=0.5)
    yaw_drift_rad_per_m: float = param(0.01, 'Heading drift per metre travelled', 'rad/m', ge=-1.0, le=1.0)
    noise_m: float = param(0.0, 'Position noise per update (standard deviation)', 'm', ge=0.0, le=0.1)
    frame_id: str = param('odom', 'Odometry frame')
    child_frame_id: str = param('base_link', "The robot's base frame")


class BaseParams(StrictModel):
    radius_m: float = param(0.3, "The robot's footprint (a circle) for collisions", 'm', gt=0.0, le=1.0)
    lag_s: float = param(0.15, 'Time constant of tracking the commanded velocity (the gait controller)', 's',
                         ge=0.0, le=2.0)
    max_linear_x: float = param(1.0, "The base's own forward speed limit", 'm/s', gt=0.0, le=5.0)
    max_linear_y: float = param(0.5, "The base's own sideways speed limit", 'm/s', ge=0.0, le=5.0)
    max_angular_z: float = param(1.5, "The base's own yaw rate limit", 'rad/s', gt=0.0, le=10.0)
    cmd_timeout_s: float = param(0.5, 'No cmd_vel for this long: the base stops by itself', 's', gt=0.0, le=10.0)


MAX_ROBOTS = 8


def robot_names(robots: Sequence[str]) -> tuple[str, ...]:
    """The robots parameter's names, checked: the one rule for robot namespaces (core/config.check_robot_names:
    relative, each once) and at most MAX_ROBOTS in one world. ValueError naming the bad one."""
    check_robot_names(robots)
    if len(robots) > MAX_ROBOTS:
        raise ValueError(f'robots: {len(robots)} robots; at most {MAX_ROBOTS}')
    return tuple(robots)


class SimParams(StrictModel):
    """sim_node: a quadruped in a generated indoor scene, on simulated time (make eval)."""

    seed: int = param(0, 'Scene of the first episode (vln_ros/sim/scenes.py); later ones through the API', ge=0)
    speed: float = param(1.0, 'Simulated seconds per wall-clock second it aims for (1 = real time)', gt=0.0, le=20.0)
    physics_rate_hz: float = param(100.0, 'Integration steps per simulated second; /clock is published each step; '
                                   'at least every sensor rate (odom.rate_hz, camera.rate_hz, ...)',
                                   'Hz', ge=20.0, le=1000.0)
    api_address: str = param(api.DEFAULT_ADDRESS,
                             'Address of the HTTP side channel (episodes, ground truth, the oracle)')
    api_port: int = param(api.DEFAULT_PORT, 'Port of the HTTP side channel', ge=1, le=65535)
    camera: CameraParams = CameraParams()
    laser: LaserParams = LaserParams()
    depth: DepthParams = DepthParams()
    odom: OdomParams = OdomParams()
    base: BaseParams = BaseParams()
    robots: tuple[str, ...] = param(
        (), 'Several robots in one scene, one per namespace (["r1", "r2"]: topics r1/odom, r2/odom, ...; '
        "vln_ros/sim/fleet.py); empty: one robot on the node's own topics")

    @field_validator('robots')
    @classmethod
    def _robot_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return robot_names(value)

    @model_validator(mode='after')
    def _sensors_within_the_physics_rate(self) -> SimParams:
        # a sensor is sampled at the end of a physics step: a faster one would silently run at the physics rate
        for name, rate_hz, enabled in (('camera', self.camera.rate_hz, True),
                                       ('laser', self.laser.rate_hz, self.laser.enabled),
                                       ('depth', self.depth.rate_hz, self.depth.enabled),
                                       ('odom', self.odom.rate_hz, True)):
            if enabled and rate_hz > self.physics_rate_hz:
                raise ValueError(f'{name}.rate_hz {rate_hz:g} is above physics_rate_hz {self.physics_rate_hz:g}: '
                                 'a sensor samples at most once a physics step')
        return self
