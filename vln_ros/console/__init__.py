"""The operator console in the browser: a ROS-free web server (server.py) and its page (static/)."""
