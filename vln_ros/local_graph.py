"""The ROS environment of a graph that stays on this machine: tests, `make demo`, `make bench`.

Discovery and data stay on loopback, raw camera frames of any size pass (shared memory), and each run
gets its own DDS domain. See config/fastdds_localhost_large_data.xml for why ROS_AUTOMATIC_DISCOVERY_RANGE
=LOCALHOST cannot be used for this (it silently drops messages over ~0.5 MB). Robots use their own
network settings instead (README, "Large images over Fast DDS").
"""
from __future__ import annotations

import os
from pathlib import Path

FASTDDS_PROFILE = Path(__file__).resolve().parents[1] / 'config' / 'fastdds_localhost_large_data.xml'


def environment(domain_id: int) -> dict[str, str]:
    if not FASTDDS_PROFILE.is_file():
        raise FileNotFoundError(f'{FASTDDS_PROFILE} is missing: the local graph needs the source tree')
    return {
        'ROS_DOMAIN_ID': os.environ.get('ROS_DOMAIN_ID', str(domain_id)),
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SYSTEM_DEFAULT',  # let the profile decide the transports
        'FASTDDS_DEFAULT_PROFILES_FILE': str(FASTDDS_PROFILE),
        'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
    }


def use(domain_id: int) -> dict[str, str]:
    """Set the environment for this process (before rclpy.init) and its children; returns it."""
    env = environment(domain_id)
    os.environ.pop('FASTDDS_BUILTIN_TRANSPORTS', None)  # ignored with the profile; avoid confusion
    os.environ.update(env)
    return env
