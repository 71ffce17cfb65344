"""`make eval`: the closed loop in the simulator, scored as navigation is scored."""
