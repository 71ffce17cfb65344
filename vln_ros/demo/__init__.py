"""`make demo`: the bundled corridor bag through the real node processes, and the keyframe demo."""
