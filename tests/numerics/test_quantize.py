"""Quantization numerics, without an interpreter: properties and the classic failures."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edged.numerics.quantize import (
    Normalization,
    PixelQuantizer,
    default_normalization,
    dequantize,
    quantize,
    round_half_away,
)
from edged.numerics.tensors import TensorError, TensorInfo

INT_DTYPES = [np.int8, np.uint8, np.int16]


def tensor(dtype: type = np.int8, scale: float = 0.05, zp: int = 3,
           shape: tuple[int, ...] = (1, 8)) -> TensorInfo:
    return TensorInfo(0, "t", shape, np.dtype(dtype), (scale,), (zp,))


@st.composite
def quantized_tensors(draw: st.DrawFn) -> TensorInfo:
    dtype = np.dtype(draw(st.sampled_from(INT_DTYPES)))
    info = np.iinfo(dtype)
    scale = draw(st.floats(1e-4, 10.0, allow_nan=False))
    zp = 0 if dtype == np.int16 else draw(st.integers(int(info.min), int(info.max)))
    return TensorInfo(1, "q", (1, 16), dtype, (scale,), (zp,))


def test_round_half_away_from_zero_exactly() -> None:
    x = np.array([0.5, -0.5, 1.5, 2.5, -2.5, 0.49999999999999994, -0.49999999999999994])
    assert round_half_away(x).tolist() == [1.0, -1.0, 2.0, 3.0, -3.0, 0.0, -0.0]


@given(quantized_tensors(), st.data())
def test_quantize_then_dequantize_is_within_half_a_step(t: TensorInfo, data: st.DataObject
                                                        ) -> None:
    low, high = t.float_range()  # type: ignore[misc]
    values = data.draw(hnp.arrays(np.float64, 16, elements=st.floats(low, high)))
    back = dequantize(quantize(values, t), t).astype(np.float64)
    # Half a step, plus the float32 rounding of the dequantized value.
    bound = t.scales[0] * 0.5 * (1 + 1e-6) + np.abs(back) * 2.0**-23 + 1e-9
    assert np.all(np.abs(back - values) <= bound)


@given(quantized_tensors(), st.data())
def test_dequantize_then_quantize_is_identity(t: TensorInfo, data: st.DataObject) -> None:
    info = np.iinfo(t.dtype)
    q = data.draw(hnp.arrays(t.dtype, 16, elements=st.integers(int(info.min), int(info.max))))
    assert np.array_equal(quantize(dequantize(q, t).astype(np.float64), t), q)


@given(quantized_tensors(), st.floats(-1e12, 1e12))
def test_quantize_clamps_to_the_dtype_range(t: TensorInfo, value: float) -> None:
    q = quantize(np.array([value]), t)
    info = np.iinfo(t.dtype)
    assert q.dtype == t.dtype and info.min <= int(q[0]) <= info.max


def test_dequantize_int8_does_not_overflow() -> None:
    # The bare recipe `q - zp` in int8 wraps: -128 - 127 = 1.
    t = tensor(np.int8, 0.1, 127)
    assert dequantize(np.array([-128], np.int8), t)[0] == pytest.approx(-25.5)


def test_unquantized_integer_output_is_never_scaled() -> None:
    argmax = TensorInfo(2, "ArgMax", (1, 4, 4), np.dtype(np.int64), (0.0,), (0,))
    assert not argmax.is_quantized and argmax.kind == "integer"
    values = np.arange(16, dtype=np.int64).reshape(1, 4, 4)
    out = dequantize(values, argmax)
    assert out.dtype == np.int64 and np.array_equal(out, values)


def test_float_output_passes_through() -> None:
    t = TensorInfo(3, "f", (1, 3), np.dtype(np.float32))
    x = np.array([[0.1, -2.0, 3.5]], np.float32)
    assert dequantize(x, t) is x or np.array_equal(dequantize(x, t), x)


def test_zero_scale_means_not_quantized_not_index_error() -> None:
    t = TensorInfo.from_detail({
        "index": 0, "name": "x", "shape": np.array([1, 4]), "dtype": np.uint8,
        "quantization": (0.0, 0),
        "quantization_parameters": {"scales": np.array([], np.float32),
                                    "zero_points": np.array([], np.int32),
                                    "quantized_dimension": 0},
    })
    assert t.kind == "integer" and t.quantization_summary() == {"kind": "none"}


def test_legacy_quantization_pair_is_used_when_parameters_are_missing() -> None:
    t = TensorInfo.from_detail({"index": 0, "name": "x", "shape": [1, 4], "dtype": np.uint8,
                                "quantization": (0.5, 10)})
    assert t.scales == (0.5,) and t.zero_points == (10,)


@given(st.lists(st.floats(1e-3, 2.0), min_size=2, max_size=6), st.data())
def test_per_channel_dequantize_uses_each_channels_parameters(scales: list[float],
                                                             data: st.DataObject) -> None:
    channels = len(scales)
    zps = data.draw(st.lists(st.integers(-128, 127), min_size=channels, max_size=channels))
    axis = data.draw(st.integers(0, 2))
    shape = [2, 3, 4]
    shape[axis] = channels
    t = TensorInfo(0, "w", tuple(shape), np.dtype(np.int8), tuple(scales), tuple(zps), axis)
    q = data.draw(hnp.arrays(np.int8, tuple(shape)))
    got = dequantize(q, t)
    moved = np.moveaxis(q.astype(np.int64), axis, 0)
    expected = np.stack([(moved[c] - zps[c]) * scales[c] for c in range(channels)])
    assert np.array_equal(got, np.moveaxis(expected, 0, axis).astype(np.float32))
    # and quantize inverts it channel by channel
    assert np.array_equal(quantize(got.astype(np.float64), t), q)


def test_per_channel_scales_must_match_the_axis() -> None:
    with pytest.raises(TensorError, match="'w': 3 per-channel scales do not match dimension 1"):
        TensorInfo(0, "w", (1, 4), np.dtype(np.int8), (0.1, 0.2, 0.3), (0, 0, 0), 1)


def test_per_channel_array_without_batch_dimension_lines_up_from_the_end() -> None:
    t = TensorInfo(0, "w", (1, 2, 3), np.dtype(np.int8), (1.0, 2.0, 3.0), (0, 0, 0), 2)
    assert dequantize(np.ones((2, 3), np.int8), t).tolist() == [[1, 2, 3], [1, 2, 3]]


# --- the camera fast path ---------------------------------------------------------------

@pytest.mark.parametrize(("dtype", "scale", "zp", "path"), [
    (np.uint8, 1 / 128, 128, "identity"),
    (np.uint8, 1 / 255, 0, "identity"),
    (np.int8, 1 / 255, -128, "xor"),
    (np.int8, 1 / 128, 0, "xor"),
])
def test_default_normalization_gives_the_fast_paths(dtype: type, scale: float, zp: int,
                                                    path: str) -> None:
    t = TensorInfo(0, "in", (1, 4, 4, 3), np.dtype(dtype), (scale,), (zp,))
    assert PixelQuantizer(t).path == path


def test_xor_path_is_pixel_minus_128_as_int8() -> None:
    t = TensorInfo(0, "in", (1, 1, 256, 1), np.dtype(np.int8), (1 / 255,), (-128,))
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 256, 1)
    assert PixelQuantizer(t)(pixels).ravel().tolist() == list(range(-128, 128))


@settings(max_examples=60)
@given(
    st.sampled_from([*INT_DTYPES, np.float32]),
    st.floats(1e-3, 0.1), st.integers(-20, 20),
    st.lists(st.floats(-300, 300), min_size=3, max_size=3),
    st.lists(st.floats(0.5, 200), min_size=3, max_size=3),
    hnp.arrays(np.uint8, (5, 7, 3)),
)
def test_table_path_is_bit_identical_to_the_float_path(dtype: type, scale: float, zp: int,
                                                       mean: list[float], std: list[float],
                                                       pixels: np.ndarray) -> None:
    t = TensorInfo(0, "in", (1, 5, 7, 3), np.dtype(dtype),
                   () if dtype == np.float32 else (scale,), () if dtype == np.float32 else (zp,))
    pq = PixelQuantizer(t, Normalization(tuple(mean), tuple(std)))
    out = np.empty(t.shape, t.dtype)
    pq(pixels, out)
    assert np.array_equal(out[0], pq.reference(pixels), equal_nan=True)


def test_fast_paths_equal_the_float_path_on_every_pixel_value() -> None:
    pixels = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3).astype(np.uint8)
    for dtype, scale, zp in [(np.uint8, 1 / 128, 128), (np.int8, 1 / 255, -128)]:
        pq = PixelQuantizer(TensorInfo(0, "in", (1, 16, 16, 3), np.dtype(dtype), (scale,), (zp,)))
        assert np.array_equal(pq(pixels), pq.reference(pixels))


def test_per_channel_input_gets_one_table_per_channel() -> None:
    t = TensorInfo(0, "in", (1, 2, 2, 3), np.dtype(np.int8), (0.01, 0.02, 0.04), (0, 1, 2), 3)
    pq = PixelQuantizer(t, Normalization((0.0,), (255.0,)))
    pixels = np.full((2, 2, 3), 255, np.uint8)
    assert pq(pixels)[0, 0].tolist() == [100, 51, 27]
    assert np.array_equal(pq(pixels), pq.reference(pixels))


def test_raw_pixel_input_without_quantization_is_unchanged() -> None:
    t = TensorInfo(0, "in", (1, 4, 4, 3), np.dtype(np.uint8))
    assert PixelQuantizer(t).path == "identity"


def test_default_normalization_of_float_input_is_minus_one_to_one() -> None:
    t = TensorInfo(0, "in", (1, 4, 4, 3), np.dtype(np.float32))
    pq = PixelQuantizer(t)
    assert pq.table[0, 0] == -1.0 and pq.table[255, 0] == 1.0
    assert default_normalization(t) == Normalization((127.5,), (127.5,))


def test_writes_into_a_preallocated_buffer_of_the_tensor_shape() -> None:
    t = TensorInfo(0, "in", (1, 4, 4, 3), np.dtype(np.int8), (1 / 255,), (-128,))
    buf = np.zeros(t.shape, np.int8)
    pixels = np.full((4, 4, 3), 200, np.uint8)
    assert PixelQuantizer(t)(pixels, buf) is buf
    assert (buf == 72).all()


def test_bad_normalization_is_one_clear_line() -> None:
    with pytest.raises(ValueError, match=r"normalization: std must be finite and non-zero"):
        Normalization((0.0,), (0.0,))
    t = TensorInfo(0, "in", (1, 4, 4, 3), np.dtype(np.uint8), (1.0,), (0,))
    with pytest.raises(ValueError, match="normalization: 2 mean values for 3 channels"):
        PixelQuantizer(t, Normalization((1.0, 2.0), (1.0,)))


def test_tensor_info_survives_the_worker_protocol() -> None:
    t = TensorInfo(4, "w", (1, 3), np.dtype(np.int8), (0.1, 0.2, 0.3), (1, 2, 3), 1)
    assert TensorInfo.from_dict(t.to_dict()) == t
