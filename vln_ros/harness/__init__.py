"""The floor of the development side: what make demo, make eval, make bench and the tests share. Nothing a robot
or GPU server runs needs it, and a robot's install leaves it out (CMakeLists.txt, setup.cfg).

processes: the node processes of a run (ProcessGroup, executable, parameter_pairs, free_port, REPO).
run_setup: before a run starts (output folders writable, a private ROS domain, SIGTERM as Ctrl-C).
observer: the node that watches or drives a graph from the outside (demo's and eval's observers, bench's probes).
graph: a private rclpy context spun in a background thread. local_graph: the private DDS domain and loopback
profile of a run on this machine (it needs the source tree's config/). frames: synthetic camera frames and
image messages. browser: headless Chromium for the console's tests and benchmark.

demo/, eval/ and bench/ import this and never each other's helpers; this imports none of them. The shipped
runtime (core/, nodes/, console/, sim/, interface.py, bringup.py, bag.py, launch/) never imports it
(test/test_package_layout.py).
"""
