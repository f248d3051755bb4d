"""Detection end to end through the real interpreter on the committed detection models.

`detect_yolo_int8.tflite` is a raw YOLOv8-layout int8 head [1, 7, 64] (8x8 grid,
3 classes: class c scores colour channel c of a cell); `ssd_postprocess.tflite`
runs the real TFLite_Detection_PostProcess op, with TF2-style output names.
Expected detections come from tests/data/reference.json (written by
scripts/make_test_models.py from the float TensorFlow graph).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from decode_helpers import Stretch, output_infos, read_rgb, run_model, ssd_roles_from_file

from edged.decode import (
    DecodeError,
    DecodeSettings,
    Labels,
    decode,
    decode_kind,
    decode_ssd,
    decode_yolo,
    infer_kind,
)
from edged.numerics.quantize import PixelQuantizer, dequantize
from edged.numerics.tensors import TensorInfo

LABELS = Labels.from_names(["red", "green", "blue"])


def _model(test_models: Path, name: str) -> Path:
    path = test_models / name
    if not path.is_file():
        pytest.skip(f"{name} not generated yet")
    return path


def _reference(test_models: Path, name: str) -> dict[str, Any]:
    refs = json.loads((test_models.parent / "reference.json").read_text())["models"]
    return dict(refs[name])


def _run(model: Path, frame: Path) -> tuple[list[TensorInfo], list[np.ndarray]]:
    from ai_edge_litert.interpreter import Interpreter

    inp = TensorInfo.from_detail(Interpreter(model_path=str(model)).get_input_details()[0])
    return run_model(model, PixelQuantizer(inp)(read_rgb(frame)))


def _expected(ref: dict[str, Any], frame: str, scale: float) -> list[tuple[int, list[float]]]:
    out = []
    for d in sorted(ref["frames"][frame]["detections"], key=lambda d: d["class"]):
        y1, x1, y2, x2 = d["yxyx"]
        out.append((d["class"], [v * 64 * scale for v in (x1, y1, x2, y2)]))
    return out


@pytest.mark.parametrize("frame", ["shapes_64.png", "black_64.png"])
def test_yolo_int8_model_end_to_end(test_models: Path, frame: str) -> None:
    model = _model(test_models, "detect_yolo_int8.tflite")
    infos, raw = _run(model, test_models.parent / "frames" / frame)
    assert raw[0].dtype == np.int8
    kind, reason = infer_kind(infos)
    assert kind == "detection" and "YOLO-style head [1, 4+C, N], 64 candidates" in reason
    geo = Stretch(640, 640, 64, 64)  # a frame ten times the model input
    settings = DecodeSettings(min_score=0.5)
    dets = decode(kind, raw, infos, settings=settings, input_wh=(64, 64), geometry=geo,
                  labels=LABELS)
    assert isinstance(dets, tuple)
    # The reference is the SSD's detections on the same cells and scores.
    want = _expected(_reference(test_models, "ssd_postprocess.tflite"), frame, 10.0)
    got = sorted((d.label_id, list(d.box)) for d in dets)  # type: ignore[union-attr]
    assert [g[0] for g in got] == [w[0] for w in want]
    # Box values are int8 too: allowed the head's own error bound, for a centre and a half size.
    atol = _reference(test_models, "detect_yolo_int8.tflite")["outputs"][0]["atol"] * 1.5 * 640
    for (_, box), (_, want_box) in zip(got, want, strict=True):
        assert box == pytest.approx(want_box, abs=atol)
    assert all(d.label == LABELS.get(d.label_id) for d in dets)  # type: ignore[union-attr]
    # Raw int8 and dequantized floats decode identically.
    assert decode_yolo(dequantize(raw[0], infos[0]), infos[0], input_wh=(64, 64),
                       geometry=geo, settings=settings.detection(), labels=LABELS) == dets


@pytest.mark.parametrize("frame", ["shapes_64.png", "black_64.png"])
def test_ssd_postprocess_model_end_to_end(test_models: Path, frame: str) -> None:
    model = _model(test_models, "ssd_postprocess.tflite")
    infos = output_infos(model)
    # TF2 names (PartitionedCall:N): auto refuses to guess classes vs scores ...
    with pytest.raises(DecodeError, match=r"^decoder auto: SSD-like outputs .* name the SSD "
                                          r"outputs in the config$"):
        infer_kind(infos)
    # ... and decides once told the roles, here from the op's outputs in the model file.
    roles = ssd_roles_from_file(model)
    assert decode_kind("auto", infos, roles)[0] == "detection"
    infos, raw = _run(model, test_models.parent / "frames" / frame)
    ref = _reference(test_models, "ssd_postprocess.tflite")
    assert {i.name: r for i in infos for r, idx in roles.items() if idx == i.index} == {
        o["name"]: o["role"] for o in ref["outputs"]}
    dets = decode_ssd(raw, infos, input_wh=(64, 64), geometry=Stretch(64, 64, 64, 64),
                      labels=LABELS, names=roles)
    want = _expected(ref, frame, 1.0)
    got = sorted((d.label_id, list(d.box)) for d in dets)
    assert [g[0] for g in got] == [w[0] for w in want]
    for (_, box), (_, want_box) in zip(got, want, strict=True):
        assert box == pytest.approx(want_box, abs=1e-4)
    assert all(d.score == pytest.approx(1.0, abs=ref["score_atol"]) for d in dets)
