"""The ROS nodes: thin rclpy adapters over vln_ros/core, one executable each."""
