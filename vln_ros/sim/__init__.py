"""The closed-loop simulator's ROS-free parts: scenes from a seed, the camera renderer, the robot base, the
oracle model. vln_ros/nodes/sim_node.py puts them on the graph; vln_ros/eval runs and scores episodes."""
