"""Raw YOLO-style heads (YOLOv8 layout: cx, cy, w, h then one score per class).

The head is [1, 4+C, N] ("channels_first", what Ultralytics exports) or
[1, N, 4+C] ("channels_last"). There is no objectness column.

Cost is dominated by the first pass over the N x C scores, so for a quantized
head that pass runs on the raw integers against a threshold converted to the
quantized domain once (`quantized_threshold`), and only the few survivors are
dequantized. The result is identical to dequantizing everything first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edged.decode.detection import DetectionSettings, checked_wh, finish_detections
from edged.decode.labels import Labels
from edged.decode.results import (
    DecodeError,
    Detection,
    FrameMapping,
    float32_at_least,
    score_threshold,
)
from edged.numerics.quantize import dequantize
from edged.numerics.tensors import TensorInfo

YoloLayout = Literal["auto", "channels_first", "channels_last"]
BoxUnits = Literal["auto", "pixels", "normalized"]

# With "auto" units, boxes whose coordinates all lie within this bound are
# normalised: a pixel-unit box that small (2 px from the corner) is not an object.
_NORMALISED_BOUND = 2.0


def quantized_threshold(threshold: float, scale: float, zero_point: int,
                        dtype: np.dtype[Any]) -> int | None:
    """Smallest raw value q whose dequantized float32 is >= `threshold`; None if none is.

    Starts from ceil(t / scale + zero_point), then steps to the exact answer by
    evaluating the dequantization itself, so float rounding at the boundary
    cannot let a score through on one path and not the other.
    """
    info = np.iinfo(dtype)
    t = float(float32_at_least(threshold))

    def passes(q: int) -> bool:
        # As edged.numerics.quantize.dequantize: float64 product, one float32 rounding.
        return float(np.float32((q - zero_point) * scale)) >= t

    guess = t / scale + zero_point
    q = info.min if guess <= info.min else info.max + 1 if guess > info.max else math.ceil(guess)
    while q > info.min and passes(q - 1):
        q -= 1
    while q <= info.max and not passes(q):
        q += 1
    return q if q <= info.max else None


def yolo_layout(info: TensorInfo, layout: YoloLayout = "auto") -> tuple[bool, int, int]:
    """(channels_first, classes, candidates) of a YOLO head, or a one-line DecodeError."""
    shape = info.shape
    if len(shape) != 3 or shape[0] != 1:
        raise DecodeError(f"output {info.name!r}: shape {list(shape)} is not a YOLO head "
                          f"[1, 4+classes, N] or [1, N, 4+classes]")
    a, b = shape[1], shape[2]
    if layout == "auto":
        if a == b:
            raise DecodeError(f"output {info.name!r}: shape {list(shape)} is square; set the "
                              f"YOLO layout (channels_first or channels_last)")
        layout = "channels_first" if a < b else "channels_last"
    first = layout == "channels_first"
    width, n = (a, b) if first else (b, a)
    if width < 5:
        raise DecodeError(f"output {info.name!r}: shape {list(shape)} has {width} values per "
                          f"candidate; a YOLO head needs 4 box values and at least 1 class")
    return first, width - 4, n


def _candidates(block: NDArray[Any], info: TensorInfo, first: bool, min_score: float,
                limit: int) -> NDArray[np.intp]:
    """Indices (ascending) of candidates with any class score >= min_score; block is [4+C, N].

    Past `limit` survivors (a threshold set near the noise floor), only the
    `limit` best by top class score are kept, chosen on the raw values where
    they order like the floats, so no more than `limit` are ever dequantized.
    """
    cand = _passing(block, info, first, min_score)
    if cand.size <= limit or info.is_per_channel:
        return cand
    best = block[4:, cand].max(axis=0).astype(np.float64)
    return np.sort(cand[np.argsort(-best, kind="stable")[:limit]])


def _passing(block: NDArray[Any], info: TensorInfo, first: bool, min_score: float
             ) -> NDArray[np.intp]:
    scores = block[4:]
    if info.is_quantized and block.dtype.kind in "iu":
        axis = 1 if first else 2
        if info.is_per_channel:
            if info.quantized_dimension != axis:
                raise DecodeError(f"output {info.name!r}: per-channel quantization along axis "
                                  f"{info.quantized_dimension} is not along the box/class axis")
            sentinel = int(np.iinfo(block.dtype).max) + 1
            thresholds = [quantized_threshold(min_score, s, z, block.dtype)
                          for s, z in zip(info.scales[4:], info.zero_points[4:], strict=True)]
            q_thr = np.array([sentinel if q is None else q for q in thresholds], np.int64)
            return np.flatnonzero((scores >= q_thr[:, None]).any(axis=0))
        q = quantized_threshold(min_score, info.scales[0], info.zero_points[0], block.dtype)
        if q is None:
            return np.empty(0, dtype=np.intp)
        return np.flatnonzero(scores.max(axis=0) >= q)
    return np.flatnonzero(scores.max(axis=0) >= score_threshold(min_score, block.dtype))


def nms(boxes: NDArray[np.float64], scores: NDArray[Any], iou_threshold: float, *,
        max_out: int | None = None, accept: Callable[[int], bool] | None = None
        ) -> NDArray[np.intp]:
    """Greedy non-maximum suppression; indices kept, best score first.

    The Python loop runs once per KEPT box (at most `max_out`), each step
    vectorised over the rest. A box `accept` refuses (too small in the frame)
    is dropped without suppressing anything, as if filtered out beforehand.
    Class-aware suppression is done by the caller offsetting each class's boxes.
    """
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    keep: list[int] = []
    while order.size and (max_out is None or len(keep) < max_out):
        i = int(order[0])
        rest = order[1:]
        if accept is not None and not accept(i):
            order = rest
            continue
        keep.append(i)
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0)
        inter = w * h
        union = np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[inter / union <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def _big_enough(boxes: NDArray[np.float64], geometry: FrameMapping, min_area: float
                ) -> Callable[[int], bool]:
    def accept(i: int) -> bool:
        fx1, fy1, fx2, fy2 = geometry.box_to_frame(*boxes[i].tolist())
        return max(0.0, fx2 - fx1) * max(0.0, fy2 - fy1) >= min_area
    return accept


def decode_yolo(values: ArrayLike, info: TensorInfo, *, input_wh: tuple[int, int],
                geometry: FrameMapping, settings: DetectionSettings | None = None,
                labels: Labels | None = None, layout: YoloLayout = "auto",
                box_units: BoxUnits = "auto") -> tuple[Detection, ...]:
    """Detections from a YOLO head, boxes in frame pixels, best score first.

    `values` may be the raw quantized integers (fast path) or floats.
    `input_wh` is the model input (WIDTH, HEIGHT; `edged.preprocess.Geometry.input_size`
    is (h, w)); coordinates are in its
    pixels or normalised to it (`box_units`, "auto" decides per frame).
    """
    s = settings or DetectionSettings()
    first, classes, _n = yolo_layout(info, layout)
    raw = np.asarray(values).reshape(info.shape[1:])
    block = raw if first else raw.T  # [4+C, N] view, no copy
    cand = _candidates(block, info, first, s.min_score, s.max_candidates)
    if cand.size == 0:
        return ()
    # Only the survivors are dequantized, in the tensor's own orientation so
    # per-channel parameters line up.
    picked = raw[:, cand] if first else raw[cand, :]
    if info.is_quantized and picked.dtype.kind in "iu":
        picked = dequantize(picked[None], info)[0]
    f = np.asarray(picked if first else picked.T, dtype=np.float64)  # [4+C, K]
    class_ids = np.argmax(f[4:], axis=0)
    scores = np.asarray(picked if first else picked.T)[4:][class_ids, np.arange(cand.size)]
    keep = scores >= score_threshold(s.min_score, scores.dtype)
    if not s.classes.is_open:
        allowed = np.array([s.classes.allows(c, labels.get(c) if labels else None)
                            for c in range(classes)], dtype=bool)
        keep &= allowed[class_ids]
    f, class_ids, scores = f[:, keep], class_ids[keep], scores[keep]
    if scores.size > s.max_candidates:
        # Stable order so equal scores keep anchor order on both the raw and float paths.
        top = np.sort(np.argsort(-scores.astype(np.float64), kind="stable")[:s.max_candidates])
        f, class_ids, scores = f[:, top], class_ids[top], scores[top]
    cx, cy, w, h = f[0], f[1], f[2], f[3]
    normalised = (box_units == "normalized" or (
        box_units == "auto" and f[:4].size and float(np.abs(f[:4]).max()) <= _NORMALISED_BOUND))
    if normalised:
        in_w, in_h = checked_wh(input_wh)
        cx, w, cy, h = cx * in_w, w * in_w, cy * in_h, h * in_h
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    # Shifting each class to its own far-apart region makes one NMS pass class-aware.
    span = float(np.abs(boxes).max()) + 1.0 if boxes.size else 1.0
    accept = _big_enough(boxes, geometry, s.min_box_area) if s.min_box_area > 0.0 else None
    kept = nms(boxes + (class_ids * 2 * span)[:, None], scores, s.iou_threshold,
               max_out=s.max_detections, accept=accept)
    return finish_detections(boxes[kept], class_ids[kept], scores[kept], geometry=geometry,
                             settings=s, labels=labels)
