"""The committed test models, run by the real LiteRT interpreter through edged's numerics.

Each frame is quantized with `PixelQuantizer` for the model's own input
tensor, every output is dequantized with its own `TensorInfo`, and the result
is compared with TensorFlow's float (unquantized) model, as recorded by
scripts/make_test_models.py in tests/data/reference.json, within that
output's bound (see tests/data/README.md for how the bounds are derived).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from edged.numerics.quantize import PixelQuantizer, dequantize
from edged.numerics.tensors import TensorInfo

DATA = Path(__file__).resolve().parents[1] / "data"
REFERENCE: dict[str, Any] = json.loads((DATA / "reference.json").read_text())
MODELS: dict[str, Any] = REFERENCE["models"]
COMPARED = [m for m in MODELS if all("atol" in f for f in MODELS[m]["frames"].values())]
CASES = [(m, f) for m in COMPARED for f in MODELS[m]["frames"]]


@cache
def interpreter(model: str) -> Interpreter:
    it = Interpreter(model_path=str(DATA / "models" / model))
    it.allocate_tensors()
    return it


def read_frame(name: str) -> np.ndarray[Any, np.dtype[np.uint8]]:
    bgr = cv2.imread(str(DATA / "frames" / name), cv2.IMREAD_COLOR)
    assert bgr is not None, name
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def infer(model: str, frame: str) -> list[tuple[TensorInfo, np.ndarray[Any, Any]]]:
    """Feed one frame the way edged does; every output dequantized with its own parameters."""
    it = interpreter(model)
    (detail,) = it.get_input_details()
    quantizer = PixelQuantizer(TensorInfo.from_detail(detail))
    it.set_tensor(detail["index"], quantizer(read_frame(frame))[None])
    it.invoke()
    outs = []
    for d in it.get_output_details():
        info = TensorInfo.from_detail(d)
        outs.append((info, dequantize(it.get_tensor(d["index"]), info)))
    return outs


def test_every_model_is_small_and_documented() -> None:
    on_disk = sorted(p.name for p in (DATA / "models").glob("*.tflite"))
    assert on_disk == sorted(MODELS)
    for name in on_disk:
        assert (DATA / "models" / name).stat().st_size < 200_000, name


@pytest.mark.parametrize("model", sorted(MODELS))
def test_io_details_are_as_documented(model: str) -> None:
    it, doc = interpreter(model), MODELS[model]
    for details, documented in ((it.get_input_details(), doc["inputs"]),
                                (it.get_output_details(), doc["outputs"])):
        assert len(details) == len(documented)
        for d, want in zip(details, documented, strict=True):
            info = TensorInfo.from_detail(d)
            assert (info.name, list(info.shape), info.dtype.name) == (
                want["name"], want["shape"], want["dtype"])
            assert info.quantization_summary() == want["quantization"]


@pytest.mark.parametrize("model", ["digits_int8.tflite", "multi_output_int8.tflite",
                                   "mixed_outputs.tflite", "detect_yolo_int8.tflite",
                                   "ssd_postprocess.tflite"])
def test_int8_models_take_pixels_by_xor(model: str) -> None:
    # scale 1/255, zero point -128: [0, 1] inputs, so pixels need only p ^ 0x80.
    (detail,) = interpreter(model).get_input_details()
    assert PixelQuantizer(TensorInfo.from_detail(detail)).path == "xor"


def test_uint8_twin_takes_pixels_as_they_are() -> None:
    (detail,) = interpreter("digits_uint8.tflite").get_input_details()
    info = TensorInfo.from_detail(detail)
    assert info.dtype == np.uint8
    assert PixelQuantizer(info).path == "identity"
    (out,) = interpreter("digits_uint8.tflite").get_output_details()
    assert TensorInfo.from_detail(out).dtype == np.uint8


@pytest.mark.parametrize(("model", "frame"), CASES)
def test_dequantized_outputs_match_the_float_model(model: str, frame: str) -> None:
    reference = MODELS[model]["frames"][frame]
    for (info, got), ref, atol in zip(infer(model, frame), reference["outputs"],
                                      reference["atol"], strict=True):
        expected = np.asarray(ref, np.float64)
        assert got.shape == expected.shape, info.name
        error = np.abs(got.astype(np.float64) - expected)
        if info.is_per_channel:
            # A weight tensor: the only error is its own rounding, half a step per channel.
            half = np.asarray(info.scales).reshape(-1, *[1] * (got.ndim - 1)) / 2
            assert np.all(error <= half * (1 + 1e-6)), info.name
        else:
            assert error.max() <= atol, f"{model} {frame} {info.name}: {error.max()} > {atol}"
        if info.kind == "integer":
            assert atol == 0.0, info.name


@pytest.mark.parametrize(("model", "frame"), CASES)
def test_dequantized_outputs_match_tensorflow_lite(model: str, frame: str) -> None:
    # Same quantized model, TensorFlow's interpreter and dequantization: runtimes
    # may differ by one step in a kernel's rounding, no more. This is what catches
    # an off-by-few zero point that the float bounds are too wide to see.
    doc = MODELS[model]
    for (info, got), ref, out in zip(infer(model, frame), doc["frames"][frame]["tflite_outputs"],
                                     doc["outputs"], strict=True):
        error = np.abs(got.astype(np.float64) - np.asarray(ref, np.float64))
        assert error.max() <= out["step"] * (1 + 1e-6) + 1e-6, (
            f"{model} {frame} {info.name}: {error.max()} > one step {out['step']}")


@pytest.mark.parametrize(("model", "frame"), [c for c in CASES if c[1].startswith("digit_")])
def test_digits_are_classified(model: str, frame: str) -> None:
    label = MODELS[model]["frames"][frame]["label"]
    for info, values in infer(model, frame):
        if info.shape == (1, 10):
            assert int(np.argmax(values)) == label, info.name
        if info.dtype == np.int32:
            assert values.tolist() == [label], info.name


def test_mixed_model_has_every_kind_of_output() -> None:
    infos = [TensorInfo.from_detail(d) for d in interpreter("mixed_outputs.tflite")
             .get_output_details()]
    kinds = {(i.dtype.name, i.kind, i.is_per_channel) for i in infos}
    assert kinds == {("int32", "integer", False), ("int8", "quantized", False),
                     ("float32", "float", False), ("int8", "quantized", True)}
    (per_channel,) = [i for i in infos if i.is_per_channel]
    assert per_channel.quantized_dimension == 0
    assert len(set(per_channel.scales)) > 1


def test_multi_output_scales_differ() -> None:
    infos = [TensorInfo.from_detail(d) for d in interpreter("multi_output_int8.tflite")
             .get_output_details()]
    assert sorted(i.shape for i in infos) == [(1, 4), (1, 4, 4, 8), (1, 10)]
    assert all(i.dtype == np.int8 for i in infos)
    assert len({(i.scales, i.zero_points) for i in infos}) == 3


@pytest.mark.parametrize("frame", ["shapes_64.png", "black_64.png"])
def test_yolo_head_marks_the_lit_cells(frame: str) -> None:
    ((info, head),) = infer("detect_yolo_int8.tflite", frame)
    layout = MODELS["detect_yolo_int8.tflite"]["layout"]
    assert info.shape == (1, 4 + layout["classes"], layout["anchors"])
    boxes, scores = head[0, :4], head[0, 4:]
    hits = np.flatnonzero(scores.max(axis=0) > 0.5)
    want = MODELS["detect_yolo_int8.tflite"]["frames"][frame]["detections"]
    assert sorted(hits.tolist()) == sorted(w["anchor"] for w in want)
    step = info.scales[0]
    for w in want:
        assert int(np.argmax(scores[:, w["anchor"]])) == w["class"]
        assert abs(float(scores[w["class"], w["anchor"]]) - w["score"]) <= 2 * step
        assert np.allclose(boxes[:, w["anchor"]], w["xywh"], atol=step)


@pytest.mark.parametrize("frame", ["shapes_64.png", "black_64.png"])
def test_ssd_postprocess_custom_op_detects_the_lit_cells(frame: str) -> None:
    doc = MODELS["ssd_postprocess.tflite"]
    roles = [o["role"] for o in doc["outputs"]]
    got = {role: values for role, (_, values) in zip(roles, infer("ssd_postprocess.tflite",
                                                                  frame), strict=True)}
    assert all(v.dtype == np.float32 for v in got.values())
    want = sorted(doc["frames"][frame]["detections"], key=lambda w: w["class"])
    count = int(got["count"][0])
    assert count == len(want)
    order = np.argsort(got["classes"][0, :count])
    assert got["classes"][0, order].tolist() == [w["class"] for w in want]
    assert np.allclose(got["scores"][0, order], [w["score"] for w in want], atol=doc["score_atol"])
    assert np.allclose(got["boxes"][0, order].reshape(-1, 4),
                       np.asarray([w["yxyx"] for w in want]).reshape(-1, 4), atol=doc["box_atol"])
