"""Events from detections: tracks across frames, zones, debounced occupancy (issue 18)."""
