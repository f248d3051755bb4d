"""Frames to model-input pixels: fit (stretch, letterbox, crop), resize, colour order.

The geometry that maps results back to frame pixels lives here too: one
place knows how a frame became the model's input.
"""

from edged.preprocess.resize import Geometry, Preprocessor, box_in_pixels, plan_geometry

__all__ = ["Geometry", "Preprocessor", "box_in_pixels", "plan_geometry"]
