"""`auto` decoder inference from output names and shapes, and configured-kind checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from decode_helpers import Stretch, output_infos, ssd_roles_from_file

from edged.decode import (
    DecodeError,
    DecodeSettings,
    Labels,
    check_kind,
    decode,
    decode_kind,
    decoded_json,
    infer_kind,
    prepare_labels,
)
from edged.decode.detection import ssd_roles_in_op_order
from edged.inference.modelfile import read_model_file
from edged.numerics.tensors import TensorInfo

F32 = np.dtype(np.float32)

SHARED = {
    "mobilenet_v2_1.0_224_quant.tflite": "classification",
    "mobilenet_v1_0.25_128_quant.tflite": "classification",
    "mobilenet_v1_0.25_128_quant_edgetpu.tflite": "classification",
    "movenet_single_pose_lightning_ptq.tflite": "pose",
    "deeplabv3_mnv2_dm05_pascal_quant.tflite": "segmentation",
    "keras_lstm_mnist_ptq.tflite": "classification",
}


def test_every_shared_model(shared_models: Path) -> None:
    models = sorted(shared_models.glob("*.tflite"))
    assert {m.name for m in models} == {*SHARED, "model_invoking_error.tflite"}
    for model in models:
        outputs = output_infos(model)
        if model.name == "model_invoking_error.tflite":
            with pytest.raises(DecodeError, match=r"^decoder auto: output '' \[\] float32 is not "
                                                  r"a classification, detection, pose or "
                                                  r"segmentation layout; set output.decoder$"):
                infer_kind(outputs)
            continue
        kind, reason = infer_kind(outputs)
        assert kind == SHARED[model.name], (model.name, reason)
        assert "\n" not in reason and repr(outputs[0].name) in reason


def test_reasons_say_what_was_seen(shared_models: Path) -> None:
    _, reason = infer_kind(output_infos(shared_models / "mobilenet_v2_1.0_224_quant.tflite"))
    assert reason == ("one output 'MobilenetV2/Predictions/Softmax' [1, 1001]: a score for each "
                      "of 1001 classes")
    _, reason = infer_kind(output_infos(shared_models /
                                        "deeplabv3_mnv2_dm05_pascal_quant.tflite"))
    assert reason == "one output 'ArgMax' [1, 513, 513] int64: ArgMax class map"


COMMITTED = {
    "digits_int8.tflite": "classification",
    "digits_uint8.tflite": "classification",
    "detect_yolo_int8.tflite": "detection",
    # TF2 names: classes and scores cannot be told apart without the model file's op.
    "ssd_postprocess.tflite": "name the SSD outputs in the config",
    "multi_output_int8.tflite": "3 outputs",
    "mixed_outputs.tflite": "4 outputs",
}


def test_every_committed_test_model(test_models: Path) -> None:
    """Each committed model: auto decides with a one-line reason, or says why not in one line."""
    for model in sorted(test_models.glob("*.tflite")) if test_models.is_dir() else []:
        expected = COMMITTED.get(model.name)
        try:
            kind, reason = infer_kind(output_infos(model))
        except DecodeError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("decoder auto: ")
            assert expected is None or expected in str(exc), (model.name, str(exc))
        else:
            assert "\n" not in reason
            assert expected is None or kind == expected, (model.name, reason)


def test_every_committed_model_with_the_model_files_ssd_roles(test_models: Path) -> None:
    """What the daemon does: auto gets the SSD op's output list from the model file."""
    models = sorted(test_models.glob("*.tflite"))
    assert {m.name for m in models} == set(COMMITTED)
    for model in models:
        roles = ssd_roles_in_op_order(read_model_file(model).ssd_outputs)
        outputs = output_infos(model)
        if model.name != "ssd_postprocess.tflite":
            assert roles == {}, model.name
            continue
        # The reader agrees with the runtime's own generated schema module.
        assert roles == ssd_roles_from_file(model)
        kind, reason = decode_kind("auto", outputs, roles)
        by_index = {o.index: o.name for o in outputs}
        assert kind == "detection"
        assert reason == "SSD post-process head (" + ", ".join(
            f"{role} {by_index[roles[role]]!r}" for role in ("boxes", "classes", "scores",
                                                              "count")) + ")"
        assert decode_kind("detection", outputs, roles) == ("detection", "configured")
        with pytest.raises(DecodeError, match=r"^decoder classification: wants one output, "
                                              r"the model has 4 "):
            decode_kind("classification", outputs, roles)


def test_ssd_roles_only_when_the_ops_outputs_are_the_models() -> None:
    from edged.inference.modelfile import BUILTIN_CUSTOM, _ssd_op_outputs

    codes = [(3, ""), (BUILTIN_CUSTOM, "TFLite_Detection_PostProcess")]
    ops = ((0, (5,)), (1, (7, 8, 9, 10)))
    assert _ssd_op_outputs(codes, ops, (7, 8, 9, 10)) == (7, 8, 9, 10)
    assert ssd_roles_in_op_order((7, 8, 9, 10)) == {"boxes": 7, "classes": 8, "scores": 9,
                                                    "count": 10}
    # Another op consumes the boxes: the model's outputs are not the op's.
    assert _ssd_op_outputs(codes, ops, (11, 8, 9, 10)) == ()
    assert _ssd_op_outputs([(3, ""), (BUILTIN_CUSTOM, "Other")], ops, (7, 8, 9, 10)) == ()


def test_every_shared_model_with_the_model_files_ssd_roles(shared_models: Path) -> None:
    for model in sorted(shared_models.glob("*.tflite")):
        roles = ssd_roles_in_op_order(read_model_file(model).ssd_outputs)
        assert roles == {}, model.name
        if model.name in SHARED:
            assert infer_kind(output_infos(model), roles or None)[0] == SHARED[model.name]


def ssd() -> list[TensorInfo]:
    p = "TFLite_Detection_PostProcess"
    return [TensorInfo(0, p, (1, 10, 4), F32), TensorInfo(1, f"{p}:1", (1, 10), F32),
            TensorInfo(2, f"{p}:2", (1, 10), F32), TensorInfo(3, f"{p}:3", (1,), F32)]


@pytest.mark.parametrize(("outputs", "kind", "reason_part"), [
    (ssd(), "detection", "SSD post-process head"),
    ([TensorInfo(0, "output0", (1, 84, 8400), np.dtype(np.int8), (0.0039,), (-128,))],
     "detection", "YOLO-style head [1, 4+C, N], 8400 candidates x (4 box values + 80 classes)"),
    ([TensorInfo(0, "out", (1, 2100, 6), F32)], "detection", "[1, N, 4+C], 2100 candidates"),
    ([TensorInfo(0, "probs", (1, 1, 1, 10), F32)], "classification", "10 classes"),
    ([TensorInfo(0, "seg", (1, 64, 64, 21), F32)], "segmentation", "per-class score map"),
    ([TensorInfo(0, "seg", (1, 64, 64), np.dtype(np.int32))], "segmentation", "ArgMax"),
])
def test_shapes(outputs: list[TensorInfo], kind: str, reason_part: str) -> None:
    got, reason = infer_kind(outputs)
    assert got == kind and reason_part in reason


@pytest.mark.parametrize(("outputs", "message"), [
    ([], "^decoder auto: the model has no outputs$"),
    ([TensorInfo(0, "a", (1, 10), F32), TensorInfo(1, "b", (1, 4), F32)],
     r"^decoder auto: 2 outputs \('a' \[1, 10\] float32, 'b' \[1, 4\] float32\) are not a "
     r"layout edged recognises; set output.decoder$"),
    ([TensorInfo(0, "v", (1, 1), F32)], r"^decoder auto: output 'v' \[1, 1\] float32 is not"),
    ([TensorInfo(0, "depth", (1, 240, 320), F32)], r"^decoder auto: output 'depth'"),
    ([TensorInfo(i, f"o{i}", s, F32) for i, s in enumerate([(1, 10, 4), (1, 10), (1, 10), (1,)])],
     r"^decoder auto: SSD-like outputs 'o0', 'o1', 'o2', 'o3' are not named"),
    ([*ssd()[:3], TensorInfo(3, "TFLite_Detection_PostProcess:3", (1, 2), F32)],
     r"^decoder auto: SSD count output 'TFLite_Detection_PostProcess:3': shape \[1, 2\] is not "
     r"\[1\]$"),
])
def test_undecidable_layouts_say_why(outputs: list[TensorInfo], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        infer_kind(outputs)


def test_configured_kinds_are_checked() -> None:
    probs = [TensorInfo(0, "probs", (1, 10), F32)]
    assert decode_kind("classification", probs) == ("classification", "configured")
    assert decode_kind("none", probs) == ("none", "configured")
    assert decode_kind("auto", probs)[0] == "classification"
    with pytest.raises(DecodeError, match=r"^output.decoder: unknown decoder 'yolo' \(choose one "
                                          r"of none, classification, detection, pose, "
                                          r"segmentation, auto\)$"):
        decode_kind("yolo", probs)
    with pytest.raises(DecodeError, match=r"^decoder pose: output 'probs': shape \[1, 10\] is not "
                                          r"a single-pose keypoint head"):
        check_kind("pose", probs)
    with pytest.raises(DecodeError, match=r"^decoder segmentation: wants one output, the model "
                                          r"has 4 "):
        check_kind("segmentation", ssd())
    check_kind("detection", ssd())


def test_decode_dispatch_and_json() -> None:
    probs = [TensorInfo(0, "probs", (1, 3), np.dtype(np.uint8), (1 / 256,), (0,))]
    labels = prepare_labels("classification", Labels.from_names(["a", "b"]), probs)
    assert labels.offset == 1
    result = decode("classification", [np.array([[0, 200, 50]], np.uint8)], probs,
                    settings=DecodeSettings(min_score=0.1), input_wh=(1, 1),
                    geometry=Stretch(1, 1, 1, 1), labels=labels)
    assert decoded_json("classification", result) == {"kind": "classification", "classes": [
        {"label_id": 1, "label": "a", "score": 0.78125},
        {"label_id": 2, "label": "b", "score": 0.195312}]}
    assert decoded_json("none", decode("none", [], [], settings=DecodeSettings(),
                                       input_wh=(1, 1), geometry=Stretch(1, 1, 1, 1))) is None


def test_decode_dispatch_pose_and_segmentation_json() -> None:
    pose_info = [TensorInfo(0, "kp", (1, 1, 17, 3), F32)]
    kp = np.full((1, 1, 17, 3), 0.5, np.float32)
    geo = Stretch(200, 100, 10, 10)
    pose = decode("pose", [kp], pose_info, settings=DecodeSettings(), input_wh=(10, 10),
                  geometry=geo)
    j = decoded_json("pose", pose)
    assert j is not None and j["kind"] == "pose" and len(j["poses"]) == 1
    assert j["poses"][0]["keypoints"][0] == {"name": "nose", "x": 100.0, "y": 50.0, "score": 0.5}
    seg_info = [TensorInfo(0, "ArgMax", (1, 2, 2), np.dtype(np.int64))]
    seg = decode("segmentation", [np.array([[[0, 1], [1, 1]]])], seg_info,
                 settings=DecodeSettings(mask_max_side=1), input_wh=(2, 2), geometry=geo,
                 labels=Labels.from_names(["bg", "fg"]))
    assert decoded_json("segmentation", seg) == {
        "kind": "segmentation",
        "classes": [{"label_id": 1, "label": "fg", "fraction": 0.75},
                    {"label_id": 0, "label": "bg", "fraction": 0.25}],
        "mask": {"width": 1, "height": 1, "encoding": "uint8-class-ids-row-major",
                 "data": "AQ=="}}
