"""The quantized YOLO fast path equals dequantize-then-decode, exactly (property tests)."""

from __future__ import annotations

import numpy as np
from decode_helpers import Letterbox, Stretch
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.decode import DetectionSettings, decode_yolo, quantized_threshold
from edged.numerics.quantize import dequantize
from edged.numerics.tensors import TensorInfo

DTYPES = st.sampled_from([np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)])
SCALES = st.floats(1e-5, 10.0, allow_nan=False) | st.sampled_from([1 / 255, 1 / 256, 0.00390625,
                                                                     0.1, 1 / 3])
THRESHOLDS = st.floats(-300.0, 300.0, allow_nan=False) | st.sampled_from([0.0, 0.25, 0.5, 0.3])


@settings(max_examples=300, deadline=None)
@given(dtype=DTYPES, scale=SCALES, data=st.data(), threshold=THRESHOLDS)
def test_quantized_threshold_is_exact(*, dtype: np.dtype, scale: float, data: st.DataObject,
                                      threshold: float) -> None:
    info = np.iinfo(dtype)
    zero_point = data.draw(st.integers(info.min, info.max))
    # Thresholds that land exactly on, or right next to, a representable value are the
    # boundary cases where rounding direction matters.
    if data.draw(st.booleans()):
        q = data.draw(st.integers(info.min, info.max))
        exact = (q - zero_point) * scale
        threshold = data.draw(st.sampled_from([exact, float(np.nextafter(exact, np.inf)),
                                               float(np.nextafter(exact, -np.inf)),
                                               float(np.float32(exact))]))
    t = TensorInfo(0, "h", (1, 5, 10), dtype, (scale,), (zero_point,))
    every = np.arange(info.min, info.max + 1, dtype=np.int64).astype(dtype)
    # Reference: the float32 the float path sees, compared exactly with the threshold.
    reference = dequantize(every, t).astype(np.float64) >= threshold
    q_thr = quantized_threshold(threshold, scale, zero_point, dtype)
    got = np.zeros_like(reference) if q_thr is None else every >= q_thr
    assert np.array_equal(got, reference)


def _head(data: st.DataObject, dtype: np.dtype, first: bool, classes: int, n: int
          ) -> np.ndarray:
    info = np.iinfo(dtype)
    shape = (4 + classes, n) if first else (n, 4 + classes)
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    raw = rng.integers(info.min, info.max + 1, shape, dtype=np.int64)
    # Mostly low scores, like a real head, so thresholds cut somewhere interesting.
    low = rng.random(shape) < 0.8
    raw = np.where(low, np.minimum(raw, info.min + 20), raw)
    return raw.astype(dtype)[None]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.dtype(np.int8), np.dtype(np.uint8)]),
       first=st.booleans(), classes=st.integers(1, 6), n=st.integers(1, 60),
       threshold=st.floats(-0.5, 1.5, allow_nan=False), per_channel=st.booleans(),
       units=st.sampled_from(["auto", "pixels", "normalized"]))
def test_quantized_decode_equals_float_decode(*, data: st.DataObject, dtype: np.dtype, first: bool,
                                              classes: int, n: int, threshold: float,
                                              per_channel: bool, units: str) -> None:
    raw = _head(data, dtype, first, classes, n)
    info_range = np.iinfo(dtype)
    width = 4 + classes
    if per_channel:
        scales = tuple(data.draw(st.floats(1e-3, 0.05)) for _ in range(width))
        zps = tuple(data.draw(st.integers(info_range.min, info_range.min + 10))
                    for _ in range(width))
        axis = 1 if first else 2
    else:
        scales = (data.draw(st.sampled_from([1 / 255, 1 / 256, 0.0042, 0.01])),)
        zps = (int(info_range.min),)
        axis = 0
    t = TensorInfo(0, "head", raw.shape, dtype, scales, zps, quantized_dimension=axis)
    s = DetectionSettings(min_score=threshold, iou_threshold=data.draw(st.floats(0.1, 0.9)),
                          max_candidates=data.draw(st.integers(1, 80)),
                          max_detections=data.draw(st.integers(1, 80)))
    geo = data.draw(st.sampled_from([Letterbox(1280, 720, 320, 320), Stretch(300, 200, 320, 320)]))
    kw = {"input_wh": (320, 320), "geometry": geo, "settings": s, "box_units": units,
          "layout": "channels_first" if first else "channels_last"}
    fast = decode_yolo(raw, t, **kw)  # type: ignore[arg-type]
    slow = decode_yolo(dequantize(raw, t), t, **kw)  # type: ignore[arg-type]
    assert fast == slow
