"""What the interpreter says about one tensor, as a small immutable value.

Every numeric stage (quantize, dequantize, decode) takes a `TensorInfo` rather
than the interpreter's detail dict, so the parameters travel with the tensor
they belong to and cannot be taken from the wrong one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

TensorKind = Literal["quantized", "float", "integer"]


class TensorError(ValueError):
    """A tensor whose reported parameters cannot be used as they are."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One input or output tensor.

    `scales` and `zero_points` are empty for a tensor that is not quantized;
    a per-tensor quantized tensor has one of each, a per-channel one has
    `shape[quantized_dimension]` of each.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    quantized_dimension: int = 0

    def __post_init__(self) -> None:
        # Normalise so equality and hashing do not depend on how the caller
        # spelt the dtype (np.uint8, "uint8", np.dtype("uint8")).
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        # TFLite reports "not quantized" as scale 0 (the legacy
        # `quantization == (0.0, 0)`); fold it into the empty form here, once.
        if self.scales and all(s == 0.0 for s in self.scales):
            object.__setattr__(self, "scales", ())
            object.__setattr__(self, "zero_points", ())
        if not self.scales:
            return
        if len(self.zero_points) == 1 and len(self.scales) > 1:
            object.__setattr__(self, "zero_points", self.zero_points * len(self.scales))
        if len(self.zero_points) != len(self.scales):
            raise TensorError(
                f"tensor {self.name!r}: {len(self.scales)} scales but "
                f"{len(self.zero_points)} zero points"
            )
        if any(not (s > 0.0) or s == float("inf") for s in self.scales):
            raise TensorError(f"tensor {self.name!r}: scales must be finite and > 0, got "
                              f"{_summary(self.scales)}")
        if len(self.scales) > 1:
            axis = self.quantized_dimension
            if not 0 <= axis < len(self.shape) or self.shape[axis] != len(self.scales):
                raise TensorError(
                    f"tensor {self.name!r}: {len(self.scales)} per-channel scales do not match "
                    f"dimension {axis} of shape {list(self.shape)}"
                )

    @classmethod
    def from_detail(cls, detail: Mapping[str, Any]) -> TensorInfo:
        """Build from one entry of `get_input_details()` / `get_output_details()`."""
        params = detail.get("quantization_parameters") or {}
        scales = tuple(float(s) for s in np.asarray(params.get("scales", ())).ravel())
        zero_points = tuple(int(z) for z in np.asarray(params.get("zero_points", ())).ravel())
        if not scales:
            # Old runtimes only fill the legacy pair.
            scale, zero_point = detail.get("quantization", (0.0, 0))
            if scale:
                scales, zero_points = (float(scale),), (int(zero_point),)
        return cls(
            index=int(detail["index"]),
            name=str(detail.get("name", "")),
            shape=tuple(int(d) for d in np.asarray(detail["shape"]).ravel()),
            dtype=np.dtype(detail["dtype"]),
            scales=scales,
            zero_points=zero_points,
            quantized_dimension=int(params.get("quantized_dimension", 0)),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, for the worker protocol and `inspect --json`."""
        return {
            "index": self.index, "name": self.name, "shape": list(self.shape),
            "dtype": self.dtype.name, "scales": list(self.scales),
            "zero_points": list(self.zero_points),
            "quantized_dimension": self.quantized_dimension,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorInfo:
        return cls(
            index=int(d["index"]), name=str(d["name"]), shape=tuple(d["shape"]),
            dtype=np.dtype(d["dtype"]), scales=tuple(d["scales"]),
            zero_points=tuple(d["zero_points"]),
            quantized_dimension=int(d["quantized_dimension"]),
        )

    @property
    def is_quantized(self) -> bool:
        return bool(self.scales)

    @property
    def is_per_channel(self) -> bool:
        return len(self.scales) > 1

    @property
    def kind(self) -> TensorKind:
        if self.is_quantized:
            return "quantized"
        if self.dtype.kind == "f":
            return "float"
        return "integer"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def float_range(self) -> tuple[float, float] | None:
        """The float values the dtype can represent, or None when unbounded.

        Per-channel tensors report the union over channels.
        """
        if self.dtype.kind == "f":
            return None
        info = np.iinfo(self.dtype)
        if not self.is_quantized:
            # Python ints: float(int64 max) would round it up to ...808.
            return int(info.min), int(info.max)
        lows = [(info.min - z) * s for s, z in zip(self.scales, self.zero_points, strict=True)]
        highs = [(info.max - z) * s for s, z in zip(self.scales, self.zero_points, strict=True)]
        return min(lows), max(highs)

    def quantization_summary(self) -> dict[str, Any]:
        """The parameters edged applies, in the form the payload and `inspect` print."""
        if not self.is_quantized:
            return {"kind": "none"}
        if not self.is_per_channel:
            return {"kind": "per_tensor", "scale": self.scales[0],
                    "zero_point": self.zero_points[0]}
        return {
            "kind": "per_channel",
            "axis": self.quantized_dimension,
            "scales": list(self.scales),
            "zero_points": list(self.zero_points),
        }

    def formula(self) -> str:
        """How edged turns this tensor's values into floats, for people."""
        if self.kind == "float":
            return "passed through (float)"
        if self.kind == "integer":
            return "passed through (integer, not quantized)"
        if not self.is_per_channel:
            zp = self.zero_points[0]
            shifted = f"q + {-zp}" if zp < 0 else f"q - {zp}"
            return f"({shifted}) * {self.scales[0]!r}"
        return (f"(q - zero_point[c]) * scale[c], c = index along axis "
                f"{self.quantized_dimension}")


def _summary(values: tuple[float, ...]) -> str:
    shown = ", ".join(repr(v) for v in values[:4])
    return f"[{shown}{', ...' if len(values) > 4 else ''}]"
