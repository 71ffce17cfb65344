"""Development helpers for the tests, the demo and the benchmarks; nothing a robot or GPU server runs needs them.

graph: a private rclpy context spun in a background thread. local_graph: the private DDS domain and loopback
profile of a run on this machine (it needs the source tree's config/). frames: synthetic camera frames and
image messages. The shipped runtime (core/, nodes/, interface.py, bringup.py, bag.py) never imports this.
"""
