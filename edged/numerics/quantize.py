"""Quantization and dequantization, exactly as the tensor's own parameters say.

Pure numpy: no interpreter is needed to use or test anything here.

The rules, for a tensor `t`:

* quantized (int8, uint8, int16, int32 with scales):
  `q = clamp(round_half_away(f / scale) + zero_point)` and
  `f = (q - zero_point) * scale`, per channel along `t.quantized_dimension`
  when there are several scales;
* float: values pass through in the tensor's float dtype;
* integer without quantization (raw uint8 pixels, an ArgMax map, a count):
  values are the integers themselves and are never scaled.

Arithmetic is done in float64/int64 with Python scalars so numpy 1 and 2,
which promote mixed scalar/array types differently, give the same bits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edged.numerics.imageinput import ImageInput, LayoutSetting, NotAnImageError, image_input
from edged.numerics.tensors import TensorInfo

_cv2: Any
try:  # cv2.LUT is ~10x faster than numpy fancy indexing for 8-bit tables.
    import cv2 as _cv2
except ImportError:  # pragma: no cover - opencv is a dependency, but keep numerics standalone
    _cv2 = None


def round_half_away(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Round to nearest, ties away from zero (std::round, as the TFLite kernels).

    `x - trunc(x)` is exact in binary floating point, so ties are detected
    exactly; `floor(x + 0.5)` is not (0.49999999999999994 + 0.5 rounds to 1.0).
    """
    whole = np.trunc(x)
    frac = x - whole
    return whole + np.where(np.abs(frac) >= 0.5, np.sign(x), 0.0)


def _channel_params(t: TensorInfo, ndim: int) -> tuple[Any, Any]:
    """Scale and zero point shaped to broadcast against an array of `ndim` dims."""
    if not t.is_per_channel:
        return t.scales[0], t.zero_points[0]
    # Count the axis from the end so arrays without the leading batch
    # dimension(s) still line the channels up correctly.
    from_end = len(t.shape) - t.quantized_dimension
    if from_end > ndim:
        raise ValueError(
            f"tensor {t.name!r}: array of rank {ndim} has no quantized dimension "
            f"{t.quantized_dimension} (tensor shape {list(t.shape)})"
        )
    shape = [1] * ndim
    shape[ndim - from_end] = len(t.scales)
    scales = np.asarray(t.scales, dtype=np.float64).reshape(shape)
    zero_points = np.asarray(t.zero_points, dtype=np.int64).reshape(shape)
    return scales, zero_points


def _clamp_cast(values: NDArray[np.float64], dtype: np.dtype[Any]) -> NDArray[Any]:
    info = np.iinfo(dtype)
    return np.clip(values, info.min, info.max).astype(dtype)


def quantize(values: ArrayLike, t: TensorInfo) -> NDArray[Any]:
    """Turn float values into what tensor `t` takes."""
    if t.dtype.kind == "f":
        return np.asarray(values, dtype=t.dtype)
    f = np.asarray(values, dtype=np.float64)
    if not t.is_quantized:
        return _clamp_cast(round_half_away(f), t.dtype)
    scale, zero_point = _channel_params(t, f.ndim)
    return _clamp_cast(round_half_away(f / scale) + zero_point, t.dtype)


def dequantize(values: ArrayLike, t: TensorInfo) -> NDArray[Any]:
    """Turn what tensor `t` holds into real values.

    Quantized tensors give float32 (computed in float64, rounded once); float
    tensors pass through; unquantized integer tensors stay integers.
    """
    q: NDArray[Any] = np.asarray(values)
    if not t.is_quantized:
        return q
    if q.dtype.itemsize == 1 and q.dtype.kind in "iu" and not t.is_per_channel:
        # The common 8-bit output: one look-up per value in a table computed the
        # same way below, so the same bits at a fifth of the time (`edged bench`).
        table = _dequantize_table(q.dtype, t.scales[0], t.zero_points[0])
        out: NDArray[np.float32] = np.take(table, q.view(np.uint8))
        return out
    scale, zero_point = _channel_params(t, q.ndim)
    # int64 first: `q - zero_point` in int8 wraps around (-128 - 127).
    real: NDArray[np.float64] = (q.astype(np.int64) - zero_point) * scale
    return real.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _dequantize_table(dtype: np.dtype[Any], scale: float, zero_point: int) -> NDArray[np.float32]:
    """Every 8-bit value of `dtype`, dequantized, indexed by its bits read as uint8."""
    q = np.arange(256, dtype=np.uint8).view(dtype).astype(np.int64)
    table: NDArray[np.float32] = ((q - zero_point) * scale).astype(np.float32)
    table.flags.writeable = False
    return table


@dataclass(frozen=True, slots=True)
class Normalization:
    """`f = (pixel - mean[c]) / std[c]`, one entry per channel or one for all."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ValueError(f"normalization: {len(self.mean)} means but {len(self.std)} stds")
        if any(not (s != 0.0 and np.isfinite(s)) for s in self.std):
            raise ValueError(f"normalization: std must be finite and non-zero, got {self.std}")

    def per_channel(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        def widen(v: tuple[float, ...], what: str) -> tuple[float, ...]:
            if len(v) == channels:
                return v
            if len(v) == 1:
                return v * channels
            raise ValueError(f"normalization: {len(v)} {what} values for {channels} channels")

        return widen(self.mean, "mean"), widen(self.std, "std")


def default_normalization(t: TensorInfo) -> Normalization:
    """Map pixels 0..255 onto the float range the input tensor can represent.

    A quantized model's input range is what it was calibrated on, so this is
    the normalization it was trained with in the usual cases ([0, 1] for int8
    with scale 1/255 and zero point -128, [-1, 1] for scale 1/128 and zero
    point 128). It makes uint8 inputs the identity and int8 inputs `p ^ 0x80`.
    Float inputs get [-1, 1], the most common float convention; unquantized
    integer inputs get the raw pixels.
    """
    if t.kind == "float":
        return Normalization((127.5,), (127.5,))
    if t.kind == "integer":
        return Normalization((0.0,), (1.0,))
    info = np.iinfo(t.dtype)
    means, stds = [], []
    for scale, zero_point in zip(t.scales, t.zero_points, strict=True):
        low = (info.min - zero_point) * scale
        high = (info.max - zero_point) * scale
        std = 255.0 / (high - low)
        # f = low + p / std  <=>  f = (p - mean) / std with mean = -low * std
        means.append(-low * std)
        stds.append(std)
    if len(set(zip(means, stds, strict=True))) == 1:
        return Normalization((means[0],), (stds[0],))
    return Normalization(tuple(means), tuple(stds))


# Training ranges a derived normalization is right for: [0, 1], [-1, 1], [0, 255].
USUAL_RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))


def normalization_source(t: TensorInfo, configured: bool) -> str:
    """Where the pixel normalization comes from, in words for the log and `inspect`."""
    if configured:
        return "preprocess.mean/std"
    if t.kind == "float":
        return "assumed for a float input ([-1, 1]); set preprocess.mean/std to be sure"
    if t.kind == "integer":
        return "raw pixels (unquantized integer input)"
    return "derived from the input's quantization range"


def choose_normalization(t: TensorInfo, configured: Normalization | None,
                         stated: Normalization | None, stated_source: str = "model metadata"
                         ) -> tuple[Normalization, str]:
    """The normalization to feed `t` with, and where it came from, in that order:
    the config, the model file's own metadata, derived from the tensor.

    Stated metadata that agrees with the derived mapping within one quantization
    step at both ends of 0..255 (MobileNet's 127.5/127.5 against its range
    [-1, 0.992]) keeps the derived one: the same model, bit for bit as before,
    on the identity/xor fast paths."""
    if configured is not None:
        return configured, normalization_source(t, configured=True)
    derived = default_normalization(t)
    channels = input_channels(t)
    try:
        s_mean, s_std = stated.per_channel(channels) if stated else ((), ())
    except ValueError:  # stated for another number of channels: not this input's
        stated = None
    if stated is None:
        return derived, normalization_source(t, configured=False)
    if t.kind == "quantized" and not t.is_per_channel:
        d_mean, d_std = derived.per_channel(channels)
        ends = np.array([0.0, 255.0])
        agree = all(np.all(np.abs((ends - dm) / ds - (ends - sm) / ss) <= t.scales[0])
                    for dm, ds, sm, ss in zip(d_mean, d_std, s_mean, s_std, strict=True))
        if agree:
            return derived, (f"derived from the input's quantization range; the "
                             f"{stated_source} agrees")
    return stated, stated_source


def unusual_derived_range(t: TensorInfo) -> tuple[float, float] | None:
    """The float range a derived normalization maps pixels onto, when it is none of
    the usual training ranges (a model calibrated on normalized data, whose
    quantization range is only the calibration's); None when it is usual."""
    if t.kind != "quantized" or t.is_per_channel:
        return None
    info = np.iinfo(t.dtype)
    scale, zero_point = t.scales[0], t.zero_points[0]
    low, high = (info.min - zero_point) * scale, (info.max - zero_point) * scale
    for want_low, want_high in USUAL_RANGES:
        # Within a step or two: converters round the range onto the integer grid.
        if abs(low - want_low) <= 2 * scale and abs(high - want_high) <= 2 * scale:
            return None
    return float(low), float(high)


PixelPath = Literal["identity", "xor", "table"]


def input_channels(t: TensorInfo, layout: LayoutSetting = "auto") -> int:
    """Channels of an image input (NHWC or NCHW, see `edged.numerics.imageinput`), else 1."""
    try:
        return image_input(t, layout).channels
    except NotAnImageError:
        return t.shape[-1] if len(t.shape) == 4 else 1


_SIGN_BIT = np.uint8(0x80)  # uint8 ^ 0x80, read as int8, is the pixel minus 128


class PixelQuantizer:
    """uint8 camera pixels -> the input tensor's values, via one table per channel.

    Every possible pixel value is pushed through the float path once, at
    start-up; per frame only a table look-up remains, bit-identical to
    `quantize((pixels - mean) / std, t)`. When the table is the identity
    (uint8 models with their own range) or `p ^ 0x80` (int8 models), even the
    look-up is skipped.
    """

    def __init__(self, t: TensorInfo, normalization: Normalization | None = None,
                 layout: LayoutSetting = "auto") -> None:
        self.tensor = t
        self.image: ImageInput | None = None
        with contextlib.suppress(NotAnImageError):  # refused by the worker and check-config
            self.image = image_input(t, layout)
        self.channels = input_channels(t, layout)
        # Pixels arrive (H, W, C); a channel-first input gets them transposed.
        self.channel_first = self.image is not None and self.image.layout == "nchw"
        self.normalization = normalization or default_normalization(t)
        channel_axis = 1 if self.channel_first else len(t.shape) - 1
        if t.is_per_channel and t.quantized_dimension != channel_axis:
            raise ValueError(
                f"input tensor {t.name!r}: per-channel quantization along axis "
                f"{t.quantized_dimension} is not along the colour channels; cannot feed pixels"
            )
        mean, std = self.normalization.per_channel(self.channels)
        pixels = np.arange(256, dtype=np.float64)
        # (256, C): column c is the table of channel c.
        floats = (pixels[:, None] - np.asarray(mean)) / np.asarray(std)
        # Per-channel parameters run along the last axis, as the channels do.
        self.table = np.ascontiguousarray(quantize(floats, t))
        self.path: PixelPath = self._detect_path()
        # cv2.LUT wants an 8-bit table shaped (1, 256, C), or (1, 256) for one channel.
        self._cv_table: NDArray[Any] | None = None
        if _cv2 is not None and self.table.dtype in (np.uint8, np.int8) and self.channels <= 4:
            self._cv_table = self.table.reshape((1, 256, self.channels) if self.channels > 1
                                                else (1, 256))

    def _detect_path(self) -> PixelPath:
        ramp = np.arange(256, dtype=np.int64)[:, None]
        if self.table.dtype == np.uint8 and np.array_equal(self.table, np.broadcast_to(
                ramp, self.table.shape)):
            return "identity"
        if self.table.dtype == np.int8 and np.array_equal(self.table, np.broadcast_to(
                ramp - 128, self.table.shape)):
            return "xor"
        return "table"

    def reference(self, pixels: NDArray[np.uint8]) -> NDArray[Any]:
        """The slow float path the table must equal, in the pixels' (H, W, C) order;
        for tests and `bench`."""
        mean, std = self.normalization.per_channel(self.channels)
        if self.channels == 1:
            f = (pixels.astype(np.float64) - mean[0]) / std[0]
        else:
            f = (pixels.astype(np.float64) - np.asarray(mean)) / np.asarray(std)
        # quantize() takes per-channel parameters along the tensor's own axis.
        t = self.tensor
        if self.channel_first and t.is_per_channel:
            t = dataclasses.replace(t, quantized_dimension=len(f.shape) - 1)
        return quantize(f, t)

    def __call__(self, pixels: NDArray[np.uint8], out: NDArray[Any] | None = None
                 ) -> NDArray[Any]:
        """Quantize `pixels` (H, W, C) or (H, W) into `out` (any shape of the same size)."""
        if pixels.dtype != np.uint8:
            raise TypeError(f"pixels must be uint8, got {pixels.dtype}")
        if self.channel_first and self.image is not None:
            return self._channel_first(pixels.reshape(self.image.pixel_shape), out)
        if out is None:
            out = np.empty(pixels.shape, dtype=self.table.dtype)
        if out.flags.c_contiguous:
            self._fill(pixels, out.reshape(pixels.shape))  # a view: written in place
        else:
            target = np.empty(pixels.shape, dtype=self.table.dtype)
            self._fill(pixels, target)
            out[...] = target.reshape(out.shape)
        return out

    def _channel_first(self, pixels: NDArray[np.uint8], out: NDArray[Any] | None
                       ) -> NDArray[Any]:
        """(H, W, C) pixels into a [1, C, H, W] tensor: the table, then one transposing copy."""
        assert self.image is not None
        hwc = np.empty(self.image.pixel_shape, dtype=self.table.dtype)
        self._fill(pixels, hwc)
        h, w, c = self.image.pixel_shape
        if out is None:
            out = np.empty((1, c, h, w), dtype=self.table.dtype)
        np.copyto(out.reshape(c, h, w), hwc.transpose(2, 0, 1))
        return out

    def _fill(self, pixels: NDArray[np.uint8], target: NDArray[Any]) -> None:
        if self.path == "identity":
            np.copyto(target, pixels)
        elif self.path == "xor":
            np.bitwise_xor(pixels, _SIGN_BIT, out=target.view(np.uint8))
        elif self._cv_table is not None and pixels.ndim >= 2:
            _cv2.LUT(pixels, self._cv_table, dst=target)
        elif self.channels == 1:
            np.take(self.table[:, 0], pixels, out=target)
        else:
            for c in range(self.channels):
                np.take(self.table[:, c], pixels[..., c], out=target[..., c])

