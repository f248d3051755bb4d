"""Helpers for the decoder tests: tiny frame mappings and running a real model.

The mappings are this test suite's own letterbox/stretch implementations of
`edged.decode.FrameMapping`, so the decoders are tested without depending on
`edged.preprocess`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from numpy.typing import NDArray

from edged.numerics.quantize import dequantize
from edged.numerics.tensors import TensorInfo


@dataclass(frozen=True)
class Stretch:
    """Frame (fw x fh) resized to the model input (iw x ih), aspect not kept."""

    fw: int
    fh: int
    iw: int
    ih: int

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        return x * self.fw / self.iw, y * self.fh / self.ih

    def box_to_frame(self, x1: float, y1: float, x2: float, y2: float
                     ) -> tuple[float, float, float, float]:
        a, b = self.to_frame(x1, y1)
        c, d = self.to_frame(x2, y2)
        return a, b, c, d


@dataclass(frozen=True)
class Letterbox:
    """Frame scaled by one factor to fit the input, centred, bars around it."""

    fw: int
    fh: int
    iw: int
    ih: int

    @property
    def scale(self) -> float:
        return min(self.iw / self.fw, self.ih / self.fh)

    @property
    def pad(self) -> tuple[float, float]:
        return (self.iw - self.fw * self.scale) / 2, (self.ih - self.fh * self.scale) / 2

    @property
    def content_box(self) -> tuple[float, float, float, float]:
        px, py = self.pad
        return px, py, self.iw - px, self.ih - py

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        px, py = self.pad
        fx = min(max((x - px) / self.scale, 0.0), float(self.fw))
        fy = min(max((y - py) / self.scale, 0.0), float(self.fh))
        return fx, fy

    def box_to_frame(self, x1: float, y1: float, x2: float, y2: float
                     ) -> tuple[float, float, float, float]:
        a, b = self.to_frame(x1, y1)
        c, d = self.to_frame(x2, y2)
        return a, b, c, d


def read_rgb(path: Path) -> NDArray[np.uint8]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return np.ascontiguousarray(bgr[:, :, ::-1])


def stretch_to(rgb: NDArray[np.uint8], w: int, h: int) -> NDArray[np.uint8]:
    return np.asarray(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA), dtype=np.uint8)


def letterbox_to(rgb: NDArray[np.uint8], w: int, h: int) -> tuple[NDArray[np.uint8], Letterbox]:
    geo = Letterbox(rgb.shape[1], rgb.shape[0], w, h)
    nw, nh = round(rgb.shape[1] * geo.scale), round(rgb.shape[0] * geo.scale)
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return out, Letterbox(rgb.shape[1], rgb.shape[0], w, h)


def run_model(path: Path, pixels: NDArray[Any]) -> tuple[list[TensorInfo], list[NDArray[Any]]]:
    """Invoke a real model once: (output infos, raw output arrays)."""
    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp = TensorInfo.from_detail(it.get_input_details()[0])
    it.set_tensor(inp.index, pixels.reshape(inp.shape).astype(inp.dtype))
    it.invoke()
    infos = [TensorInfo.from_detail(d) for d in it.get_output_details()]
    return infos, [np.array(it.get_tensor(i.index)) for i in infos]


def output_infos(path: Path) -> list[TensorInfo]:
    """Outputs as the daemon sees them: after allocation (SSD outputs have no shape before)."""
    it = Interpreter(model_path=str(path))
    # An Edge TPU model cannot allocate without the delegate; its shapes are static anyway.
    with contextlib.suppress(RuntimeError):
        it.allocate_tensors()
    return [TensorInfo.from_detail(d) for d in it.get_output_details()]


def ssd_roles_from_file(path: Path) -> dict[str, int]:
    """Role -> tensor index, from the TFLite_Detection_PostProcess op's own output list.

    Read from the real model file with the schema the runtime ships; this is
    what a model-file reader would hand the decoder.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    for j in range(graph.OperatorsLength()):
        op = graph.Operators(j)
        code = model.OperatorCodes(op.OpcodeIndex()).CustomCode()
        if code == b"TFLite_Detection_PostProcess":
            outs = [int(i) for i in op.OutputsAsNumpy()]
            return dict(zip(("boxes", "classes", "scores", "count"), outs, strict=True))
    raise AssertionError(f"{path}: no TFLite_Detection_PostProcess op")


def dequantized(values: NDArray[Any], info: TensorInfo) -> NDArray[Any]:
    return np.asarray(dequantize(values, info))
