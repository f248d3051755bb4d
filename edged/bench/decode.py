"""The decoder's hot-path figure for `edged bench`: a YOLOv8-sized int8 head."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from edged.decode.dispatch import DecodeSettings, decode
from edged.numerics.tensors import TensorInfo


def realistic_yolo_head(seed: int = 0, objects: int = 6, per_object: int = 8,
                        classes: int = 80, n: int = 8400
                        ) -> tuple[NDArray[np.int8], TensorInfo]:
    """A [1, 4+C, N] int8 head like a YOLOv8 export's: normalised boxes, scores mostly ~0.

    `objects` objects are each seen by `per_object` neighbouring anchors with
    jittered boxes and scores 0.3..0.9, so NMS has real work to do.
    """
    rng = np.random.default_rng(seed)
    info = TensorInfo(0, "Identity", (1, 4 + classes, n), np.dtype(np.int8), (1 / 255,), (-128,))
    f = np.zeros((4 + classes, n), np.float64)
    f[0:2] = rng.uniform(0.05, 0.95, (2, n))
    f[2:4] = rng.uniform(0.01, 0.2, (2, n))
    f[4:] = np.abs(rng.normal(0.0, 0.006, (classes, n)))  # background noise near zero
    for k in range(objects):
        cls = int(rng.integers(classes))
        centre = rng.uniform(0.2, 0.8, 2)
        size = rng.uniform(0.1, 0.3, 2)
        for j in rng.choice(n, per_object, replace=False):
            f[0:2, j] = centre + rng.normal(0, 0.01, 2)
            f[2:4, j] = size * rng.uniform(0.9, 1.1, 2)
            f[4 + cls, j] = rng.uniform(0.3, 0.9)
            f[4 + (cls + k + 1) % classes, j] = rng.uniform(0.0, 0.2)
    raw = np.clip(np.round(f * 255) - 128, -128, 127).astype(np.int8)
    return raw[None], info


class _Identity:
    """Model coordinates are frame coordinates (a 640x640 frame, no letterbox)."""

    def to_frame(self, x: float, y: float, *, normalized: bool = False) -> tuple[float, float]:
        return x, y

    def box_to_frame(self, x1: float, y1: float, x2: float, y2: float, *,
                     normalized: bool = False, clip: bool = True
                     ) -> tuple[float, float, float, float]:
        return x1, y1, x2, y2

    def points_to_frame(self, xy: NDArray[np.floating], *, normalized: bool = False
                        ) -> NDArray[np.floating]:
        return xy


def yolo_decode_call() -> Callable[[], object]:
    """One decode of the realistic head, as the daemon's deliver stage calls it."""
    raw, info = realistic_yolo_head()
    settings = DecodeSettings(min_score=0.25, top_k=100, max_detections=100)
    return functools.partial(decode, "detection", [raw], [info], settings=settings,
                             input_wh=(640, 640), geometry=_Identity())
