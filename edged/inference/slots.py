"""The memory the daemon and its worker share: frames in, raw outputs back.

One memfd, mapped by both sides, holds for each slot the preprocessed pixels
and the raw output tensors. A worker holding several models (issue 17: one
Edge TPU serving them all) has slots of its own for each, numbered one
model after the other: model m's slot s is `m * slots + s`, so a request
names one number and its slot says which model it is for. With a cascade
also two areas of crops for the classifier and each crop's raw outputs: the
worker classifies one frame's crops from one while the pipeline cuts the next
frame's into the other (`edged.service.cascade`).
Frames and outputs never cross the worker's socket.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edged.numerics.imageinput import NotAnImageError, image_input
from edged.numerics.tensors import TensorInfo

_ALIGN = 64


def pixel_shape(t: TensorInfo) -> tuple[int, ...]:
    """The uint8 frame an input tensor takes: (H, W, C) for an image, else its shape
    minus batch (a non-image input is refused at load; this only sizes a slot)."""
    try:
        return image_input(t).pixel_shape
    except NotAnImageError:
        pass
    if len(t.shape) == 4:
        return t.shape[1:]
    return t.shape[1:] if len(t.shape) > 1 else t.shape


class _Planner:
    def __init__(self) -> None:
        self.offset = 0

    def take(self, nbytes: int) -> int:
        at = self.offset
        self.offset = (at + nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
        return at

    def outputs(self, tensors: tuple[TensorInfo, ...]) -> tuple[int, ...]:
        return tuple(self.take(t.size * t.dtype.itemsize) for t in tensors)


@dataclass(frozen=True)
class Layout:
    """Where each slot's pixels and outputs, and each crop's, live in the memfd.

    `slots` per model; `pixel_shapes` and `outputs` one per model; the offsets
    one per slot, model after model."""

    slots: int
    pixel_shapes: tuple[tuple[int, ...], ...]
    outputs: tuple[tuple[TensorInfo, ...], ...]
    pixel_offsets: tuple[int, ...]
    output_offsets: tuple[tuple[int, ...], ...]
    size: int
    crop_shape: tuple[int, ...] = ()
    crop_outputs: tuple[TensorInfo, ...] = ()
    crop_offsets: tuple[int, ...] = ()
    crop_output_offsets: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def plan(cls, slots: int, models: Sequence[tuple[tuple[int, ...], tuple[TensorInfo, ...]]],
             *, crops: int = 0, crop_shape: tuple[int, ...] = (),
             crop_outputs: tuple[TensorInfo, ...] = ()) -> Layout:
        """`models`: each model's (pixel shape, outputs), in the worker's order."""
        at = _Planner()
        pixel_offsets, output_offsets = [], []
        for pixel_shape, outputs in models:
            for _ in range(slots):
                pixel_offsets.append(at.take(int(np.prod(pixel_shape))))
                output_offsets.append(at.outputs(outputs))
        crop_offsets, crop_output_offsets = [], []
        for _ in range(crops if crop_shape else 0):
            crop_offsets.append(at.take(int(np.prod(crop_shape))))
            crop_output_offsets.append(at.outputs(crop_outputs))
        return cls(slots, tuple(shape for shape, _ in models),
                   tuple(outputs for _, outputs in models), tuple(pixel_offsets),
                   tuple(output_offsets), max(at.offset, _ALIGN),
                   crop_shape if crop_offsets else (), crop_outputs if crop_offsets else (),
                   tuple(crop_offsets), tuple(crop_output_offsets))

    @property
    def all_slots(self) -> int:
        return len(self.pixel_offsets)

    def model_of(self, slot: int) -> int:
        """Which of the worker's models slot `slot` is for."""
        return slot // self.slots

    @property
    def crops(self) -> int:
        return len(self.crop_offsets)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outputs"] = [[t.to_dict() for t in model] for model in self.outputs]
        d["crop_outputs"] = [t.to_dict() for t in self.crop_outputs]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layout:
        return cls(int(d["slots"]), tuple(tuple(shape) for shape in d["pixel_shapes"]),
                   tuple(tuple(TensorInfo.from_dict(t) for t in model)
                         for model in d["outputs"]),
                   tuple(d["pixel_offsets"]), tuple(tuple(o) for o in d["output_offsets"]),
                   int(d["size"]), tuple(d.get("crop_shape") or ()),
                   tuple(TensorInfo.from_dict(t) for t in d.get("crop_outputs") or ()),
                   tuple(d.get("crop_offsets") or ()),
                   tuple(tuple(o) for o in d.get("crop_output_offsets") or ()))

    def pixels(self, buf: mmap.mmap, slot: int) -> NDArray[np.uint8]:
        return np.ndarray(self.pixel_shapes[self.model_of(slot)], np.uint8, buf,
                          self.pixel_offsets[slot])

    def raw_outputs(self, buf: mmap.mmap, slot: int) -> list[NDArray[Any]]:
        return _views(buf, self.outputs[self.model_of(slot)], self.output_offsets[slot])

    def crop(self, buf: mmap.mmap, i: int) -> NDArray[np.uint8]:
        return np.ndarray(self.crop_shape, np.uint8, buf, self.crop_offsets[i])

    def crop_raw_outputs(self, buf: mmap.mmap, i: int) -> list[NDArray[Any]]:
        return _views(buf, self.crop_outputs, self.crop_output_offsets[i])


def _views(buf: mmap.mmap, tensors: tuple[TensorInfo, ...], offsets: tuple[int, ...]
           ) -> list[NDArray[Any]]:
    return [np.ndarray(t.shape, t.dtype, buf, off)
            for t, off in zip(tensors, offsets, strict=True)]


class SharedSlots:
    """The daemon's side of the memfd: mapped for one layout, with views of each slot
    and each crop. A new layout (another model after a fallback) gets new memory."""

    def __init__(self) -> None:
        self.layout: Layout | None = None
        self.fd = -1
        self.buf: mmap.mmap | None = None
        self.pixels: list[NDArray[np.uint8]] = []
        self.outputs: list[list[NDArray[Any]]] = []
        self.crops: list[NDArray[np.uint8]] = []
        self.crop_outputs: list[list[NDArray[Any]]] = []
        self._crop_half = 0

    def map(self, layout: Layout) -> None:
        if layout == self.layout:
            return
        self.close()
        self.fd = os.memfd_create("edged-slots", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, layout.size)
        buf = self.buf = mmap.mmap(self.fd, layout.size)
        self.layout = layout
        self.pixels = [layout.pixels(buf, s) for s in range(layout.all_slots)]
        self.outputs = [layout.raw_outputs(buf, s) for s in range(layout.all_slots)]
        self.crops = [layout.crop(buf, i) for i in range(layout.crops)]
        self.crop_outputs = [layout.crop_raw_outputs(buf, i) for i in range(layout.crops)]

    def next_crops(self) -> tuple[int, list[NDArray[np.uint8]]]:
        """The first index and the buffers of the half of the crops the next classify
        takes. The halves alternate for the whole worker (every camera's cascade), so
        one frame's crops are cut while the other's are classified."""
        per_frame = len(self.crops) // 2
        first, self._crop_half = self._crop_half * per_frame, self._crop_half ^ 1
        return first, self.crops[first:first + per_frame]

    def close(self) -> None:
        self.pixels, self.outputs, self.crops, self.crop_outputs = [], [], [], []
        if self.buf is not None:
            # BufferError: a caller still holds a view; the mapping goes when it does.
            with contextlib.suppress(BufferError):
                self.buf.close()
            self.buf = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.layout = None
