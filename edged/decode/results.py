"""Decoded results as small immutable values, and what decoders need from preprocessing.

Every value has `to_json()` giving plain dicts/lists/str/float/int for the
payload. Coordinates in results are always FRAME pixels (the original camera
frame), never model-input pixels.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edged.numerics.quantize import dequantize
from edged.numerics.tensors import TensorInfo


class DecodeError(ValueError):
    """Outputs a decoder cannot use, or bad decoder settings; the message is one line."""


class FrameMapping(Protocol):
    """Maps MODEL-INPUT pixel coordinates back to FRAME pixel coordinates.

    `edged.preprocess.Geometry` satisfies it; decoders depend only on this so
    they stay testable with a tiny letterbox/stretch stand-in.
    """

    def to_frame(self, x: float, y: float) -> tuple[float, float]: ...

    def box_to_frame(self, x1: float, y1: float, x2: float, y2: float
                     ) -> tuple[float, float, float, float]: ...


def float32_at_least(threshold: float) -> np.float32:
    """The smallest float32 >= `threshold`: `x >= it` iff x >= threshold, for float32 x.

    Comparing a float32 array with a Python float is rounded differently by
    numpy 1 and 2; a float32 scalar chosen this way makes both exact.
    """
    t = np.float32(threshold)
    if float(t) < threshold:
        t = np.nextafter(t, np.float32(np.inf))
    return np.float32(t)


def score_threshold(threshold: float, dtype: np.dtype[Any]) -> Any:
    """The scalar to compare an array of `dtype` with, so `>=` means exactly >= threshold."""
    return float32_at_least(threshold) if dtype == np.float32 else threshold


def real_values(values: ArrayLike, info: TensorInfo) -> NDArray[Any]:
    """An output's real values whether the caller passes raw or already dequantized ones.

    Raw integers of a quantized tensor are dequantized; floats pass through, so
    dequantizing twice (which would truncate the floats) cannot happen.
    """
    a = np.asarray(values)
    if info.is_quantized and a.dtype.kind in "iu":
        return dequantize(a, info)
    return a


def _r(value: float, digits: int = 6) -> float:
    # Rounded so payloads do not carry float32 noise like 0.8999999761581421.
    return round(float(value), digits)


@dataclass(frozen=True, slots=True)
class Classification:
    label_id: int
    label: str | None
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"label_id": self.label_id, "label": self.label, "score": _r(self.score)}


@dataclass(frozen=True, slots=True)
class Detection:
    label_id: int
    label: str | None
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    # A cascade's classifier on its crop (edged.decode.cascade); () when not classified.
    classes: tuple[Classification, ...] = ()

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label_id": self.label_id, "label": self.label,
                               "score": _r(self.score), "box": [_r(v, 2) for v in self.box]}
        if self.classes:
            out["classes"] = [c.to_json() for c in self.classes]
        return out


@dataclass(frozen=True, slots=True)
class Keypoint:
    name: str
    x: float  # frame pixels
    y: float
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "x": _r(self.x, 2), "y": _r(self.y, 2),
                "score": _r(self.score)}


@dataclass(frozen=True, slots=True)
class Pose:
    score: float  # mean keypoint score, the MoveNet convention
    keypoints: tuple[Keypoint, ...]

    def to_json(self) -> dict[str, Any]:
        return {"score": _r(self.score), "keypoints": [k.to_json() for k in self.keypoints]}


@dataclass(frozen=True, slots=True)
class ClassFraction:
    label_id: int
    label: str | None
    fraction: float  # of the map's pixels that hold image content

    def to_json(self) -> dict[str, Any]:
        return {"label_id": self.label_id, "label": self.label, "fraction": _r(self.fraction)}


MASK_ENCODING = "uint8-class-ids-row-major"


@dataclass(frozen=True, slots=True)
class SegmentationMask:
    """A downscaled class map.

    Binary encoding: `width * height` bytes, one uint8 class id per pixel,
    row-major (row 0 first, left to right), no header; width and height travel
    beside it. JSON carries the bytes as standard base64 in `data`.
    """

    width: int
    height: int
    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) != self.width * self.height:
            raise ValueError(f"mask: {len(self.data)} bytes for {self.width}x{self.height}")

    def to_array(self) -> NDArray[np.uint8]:
        return np.frombuffer(self.data, dtype=np.uint8).reshape(self.height, self.width)

    def to_json(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "encoding": MASK_ENCODING,
                "data": base64.b64encode(self.data).decode("ascii")}


@dataclass(frozen=True, slots=True)
class SegmentationSummary:
    classes: tuple[ClassFraction, ...]  # largest fraction first
    mask: SegmentationMask | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"classes": [c.to_json() for c in self.classes]}
        out["mask"] = self.mask.to_json() if self.mask is not None else None
        return out


def _norm(name: str) -> str:
    return name.strip().casefold()


@dataclass(frozen=True, slots=True)
class ClassFilter:
    """Classes to keep (empty: all) and to ignore, by label id or label name.

    Names match case-insensitively, so `"Person"` in a config matches `person`.
    """

    keep: frozenset[int | str] = frozenset()
    ignore: frozenset[int | str] = frozenset()

    @classmethod
    def of(cls, keep: Collection[int | str] = (), ignore: Collection[int | str] = ()
           ) -> ClassFilter:
        def fold(items: Collection[int | str]) -> frozenset[int | str]:
            return frozenset(_norm(i) if isinstance(i, str) else int(i) for i in items)
        return cls(fold(keep), fold(ignore))

    @property
    def is_open(self) -> bool:
        return not self.keep and not self.ignore

    def allows(self, label_id: int, label: str | None) -> bool:
        name = _norm(label) if label is not None else None
        if self.keep and label_id not in self.keep and (name is None or name not in self.keep):
            return False
        return not (label_id in self.ignore or (name is not None and name in self.ignore))

    def unknown_names(self, names: Mapping[int, str]) -> list[str]:
        """Names in keep/ignore that no label carries (a typo in the config)."""
        known = {_norm(n) for n in names.values()}
        return sorted(str(i) for i in self.keep | self.ignore
                      if isinstance(i, str) and i not in known)
