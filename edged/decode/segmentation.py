"""Semantic segmentation: an ArgMax class map [1, H, W] or per-class scores [1, H, W, C].

The summary is the fraction of pixels of each class and, optionally, the class
map downscaled (nearest neighbour, so ids stay ids) in the binary encoding
documented on `SegmentationMask`. Both cover only `content_box`, the part of
the model input that holds the frame (a letterbox's bars are not "background").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edged.decode.labels import Labels
from edged.decode.results import (
    ClassFraction,
    DecodeError,
    SegmentationMask,
    SegmentationSummary,
)
from edged.numerics.quantize import dequantize
from edged.numerics.tensors import TensorInfo


def segmentation_layout(info: TensorInfo) -> str:
    """"argmax" or "scores"; a one-line DecodeError for any other shape."""
    shape = info.shape
    integer_map = info.dtype.kind in "iu" and not info.is_quantized
    if integer_map and len(shape) == 3 and shape[0] == 1 and min(shape[1:]) > 1:
        return "argmax"
    if integer_map and len(shape) == 4 and shape[0] == 1 and shape[3] == 1 and min(shape[1:3]) > 1:
        return "argmax"
    if len(shape) == 4 and shape[0] == 1 and min(shape[1:3]) > 1 and shape[3] > 1:
        return "scores"
    raise DecodeError(f"output {info.name!r}: shape {list(shape)} ({info.dtype}) is not a "
                      f"segmentation map: want an integer ArgMax [1, H, W] or scores [1, H, W, C]")


def class_map(values: ArrayLike, info: TensorInfo) -> NDArray[Any]:
    """The [H, W] class id map of a segmentation output."""
    layout = segmentation_layout(info)
    a = np.asarray(values)
    h, w = info.shape[1], info.shape[2]
    if layout == "argmax":
        return a.reshape(h, w)
    a = a.reshape(info.shape)
    # Raw per-tensor quantized scores order like their floats; per-channel ones do not.
    if info.is_per_channel and a.dtype.kind in "iu":
        a = dequantize(a, info)
    ids: NDArray[Any] = np.argmax(a[0], axis=-1)
    return ids


def _crop(ids: NDArray[Any], content_box: tuple[float, float, float, float] | None,
          input_wh: tuple[int, int] | None) -> NDArray[Any]:
    if content_box is None:
        return ids
    h, w = ids.shape
    in_w, in_h = input_wh if input_wh is not None else (w, h)
    x1, y1, x2, y2 = content_box
    # Map pixels touched by the content at all are kept.
    c1 = min(max(math.floor(x1 * w / in_w), 0), w - 1)
    r1 = min(max(math.floor(y1 * h / in_h), 0), h - 1)
    c2 = min(max(math.ceil(x2 * w / in_w), c1 + 1), w)
    r2 = min(max(math.ceil(y2 * h / in_h), r1 + 1), h)
    return ids[r1:r2, c1:c2]


def downscale_nearest(ids: NDArray[Any], max_side: int) -> NDArray[Any]:
    """Nearest-neighbour downscale so the longer side is at most `max_side` (aspect kept)."""
    h, w = ids.shape
    if max_side < 1:
        raise DecodeError(f"mask size must be >= 1, got {max_side}")
    if max(h, w) <= max_side:
        return ids
    scale = max_side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    # Sample each output pixel's centre.
    rows = ((np.arange(nh) + 0.5) * h / nh).astype(np.intp)
    cols = ((np.arange(nw) + 0.5) * w / nw).astype(np.intp)
    small: NDArray[Any] = ids[rows[:, None], cols[None, :]]
    return small


def summarize_segmentation(values: ArrayLike, info: TensorInfo, *, labels: Labels | None = None,
                           content_box: tuple[float, float, float, float] | None = None,
                           input_wh: tuple[int, int] | None = None,
                           mask_max_side: int | None = None, min_fraction: float = 0.0
                           ) -> SegmentationSummary:
    """Class fractions (largest first, those >= `min_fraction` and > 0) and an optional mask.

    `content_box` (x1, y1, x2, y2) is in model-input pixels; `input_wh`
    (width, height) is the model input, needed when the map is smaller.
    """
    ids = _crop(class_map(values, info), content_box, input_wh)
    if ids.size == 0:
        raise DecodeError(f"output {info.name!r}: empty segmentation map")
    flat = ids.reshape(-1)
    low, high = int(flat.min()), int(flat.max())
    if low < 0:
        raise DecodeError(f"output {info.name!r}: negative class id {low} in segmentation map")
    counts = np.bincount(flat.astype(np.intp, copy=False))
    present = np.flatnonzero(counts)
    fractions = counts[present] / flat.size
    order = np.lexsort((present, -fractions))
    classes = tuple(
        ClassFraction(int(present[i]), labels.get(int(present[i])) if labels else None,
                      float(fractions[i]))
        for i in order if fractions[i] >= min_fraction)
    mask = None
    if mask_max_side is not None:
        if high > 255:
            raise DecodeError(f"output {info.name!r}: class id {high} does not fit the uint8 "
                              f"mask encoding")
        small = np.ascontiguousarray(downscale_nearest(ids, mask_max_side), dtype=np.uint8)
        mask = SegmentationMask(int(small.shape[1]), int(small.shape[0]), small.tobytes())
    return SegmentationSummary(classes, mask)
