"""The ROS-free core: keyframes, images, prompts, parser, tasks, inference, backends, control, parameters."""
