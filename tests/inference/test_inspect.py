"""`edged inspect` on real models, through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from edged.cli import main

MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"

SHARED = ["mobilenet_v2_1.0_224_quant.tflite", "mobilenet_v1_0.25_128_quant.tflite",
          "mobilenet_v1_0.25_128_quant_edgetpu.tflite", "movenet_single_pose_lightning_ptq.tflite",
          "deeplabv3_mnv2_dm05_pascal_quant.tflite", "keras_lstm_mnist_ptq.tflite"]
COMMITTED = ["digits_int8.tflite", "digits_uint8.tflite", "multi_output_int8.tflite",
             "mixed_outputs.tflite", "ssd_postprocess.tflite", "detect_yolo_int8.tflite"]
TENSOR_KEYS = {"position", "index", "name", "tensor_name", "shape", "dtype", "quantization",
               "float_range", "formula"}


def inspect_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["inspect", str(path), "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def fails(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["inspect", *args]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("name", SHARED)
def test_json_on_every_shared_model(shared_models: Path, name: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    d = inspect_json(shared_models / name, capsys)
    assert set(d) == {"model", "size_bytes", "runtime", "needs_edgetpu", "custom_ops",
                      "tensors_listed", "note", "inputs", "outputs"}
    assert d["runtime"]["name"] == "ai_edge_litert" and d["runtime"]["version"]
    assert d["needs_edgetpu"] == name.endswith("_edgetpu.tflite")
    assert d["tensors_listed"] and len(d["inputs"]) == 1 and d["outputs"]
    for t in d["inputs"] + d["outputs"]:
        assert set(t) >= TENSOR_KEYS
    assert {"normalization", "pixel_path"} <= set(d["inputs"][0])


@pytest.mark.parametrize("name", COMMITTED)
def test_json_and_text_on_committed_models(test_models: Path, name: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    if not (test_models / name).is_file():
        pytest.skip(f"{name} not generated yet")
    d = inspect_json(test_models / name, capsys)
    assert not d["needs_edgetpu"] and d["outputs"]
    assert main(["inspect", str(test_models / name)]) == 0
    assert "edged applies" in capsys.readouterr().out


def test_mobilenet_v2_details(shared_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = inspect_json(shared_models / "mobilenet_v2_1.0_224_quant.tflite", capsys)
    (i,), (o,) = d["inputs"], d["outputs"]
    assert i | {"normalization": None} == {
        "position": 0, "index": 0, "name": "input", "tensor_name": "input",
        "shape": [1, 224, 224, 3], "dtype": "uint8",
        "quantization": {"kind": "per_tensor", "scale": 0.0078125, "zero_point": 128},
        "float_range": [-1.0, 0.9921875], "formula": "(q - 128) * 0.0078125",
        "normalization": None, "pixel_path": "identity",
        "image": {"layout": "nhwc", "height": 224, "width": 224, "channels": 3}}
    assert i["normalization"] == {"mean": [128.0], "std": [128.0],
                                  "source": "derived from the input's quantization range; "
                                            "the model metadata (TFLite NormalizationOptions) "
                                            "agrees"}
    assert o["index"] == 173 and o["dtype"] == "uint8" and o["shape"] == [1, 1001]
    assert o["quantization"] == {"kind": "per_tensor", "scale": 0.00390625, "zero_point": 0}
    assert o["formula"] == "(q - 0) * 0.00390625"


def test_signature_names_and_unquantized_tensors(shared_models: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    d = inspect_json(shared_models / "movenet_single_pose_lightning_ptq.tflite", capsys)
    (i,), (o,) = d["inputs"], d["outputs"]
    assert (i["name"], i["tensor_name"]) == ("input", "serving_default_input:0")
    assert i["quantization"] == {"kind": "none"} and i["float_range"] == [0.0, 255.0]
    assert i["formula"] == "passed through (integer, not quantized)"
    assert (o["name"], o["dtype"], o["float_range"]) == ("output_0", "float32", None)
    assert o["formula"] == "passed through (float)"


def test_per_channel_output_summary(test_models: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    if not (test_models / "mixed_outputs.tflite").is_file():
        pytest.skip("mixed_outputs.tflite not generated yet")
    d = inspect_json(test_models / "mixed_outputs.tflite", capsys)
    per_channel = [t["quantization"] for t in d["outputs"]
                   if t["quantization"]["kind"] == "per_channel"]
    for q in per_channel:
        assert set(q) == {"kind", "axis", "count", "min_scale", "max_scale"}
        assert 0 < q["min_scale"] <= q["max_scale"]


def test_edgetpu_model_lists_tensors_and_says_it_needs_the_edgetpu(
        shared_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_models / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "edge tpu   REQUIRED (compiled for the Edge TPU: edgetpu-custom-op)" in out
    assert "shape [1, 128, 128, 3]  dtype uint8" in out
    d = inspect_json(path, capsys)
    assert d["custom_ops"] == ["edgetpu-custom-op"] and d["tensors_listed"]


def test_invoking_error_model_fails_with_one_line(shared_models: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_models / "model_invoking_error.tflite"
    line = fails([str(path), "--json"], capsys)
    assert line.startswith(f"edged inspect: {path}: uses custom op 'fake-op-double' ")


def test_bad_files_fail_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.tflite"
    assert fails([str(missing)], capsys) == f"edged inspect: {missing}: model file not found"
    text = tmp_path / "notes.tflite"
    text.write_text("hello, this is not a model\n")
    assert fails([str(text)], capsys) == (
        f"edged inspect: {text}: not a TFLite model (file identifier b'o, t', expected b'TFL3' "
        "at bytes 4..8)")


def test_missing_runtime_fails_with_one_line(shared_models: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    if importlib.util.find_spec("tflite_runtime") is not None:
        pytest.skip("tflite_runtime is installed")
    line = fails([str(shared_models / "mobilenet_v1_0.25_128_quant.tflite"),
                  "--runtime", "tflite_runtime"], capsys)
    assert line.startswith("edged inspect: runtime tflite_runtime: not installed: pip install "
                           "tflite-runtime")


def test_real_command_line(shared_models: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "edged", "inspect", "--json",
                             str(shared_models / "keras_lstm_mnist_ptq.tflite")],
                            capture_output=True, text=True, timeout=120, check=True)
    d = json.loads(result.stdout)
    assert d["inputs"][0]["shape"] == [1, 28, 28] and d["outputs"][0]["name"] == "output_0"


def test_integer_ranges_are_printed_exactly_even_int64() -> None:
    """float(int64 max) rounds up: inspect printed ...808 for ...807 (issue 14.9)."""
    from edged.inference.inspect import _fmt_range, _tensor
    from edged.numerics.tensors import TensorInfo

    t = TensorInfo(3, "ids", (1, 4), np.dtype(np.int64), (), ())
    d = _tensor(0, t, "ids", is_input=False)
    assert d["float_range"] == [-9223372036854775808, 9223372036854775807]
    assert _fmt_range(d) == ("integers -9223372036854775808 .. 9223372036854775807, "
                             "never scaled")
    assert orjson.loads(orjson.dumps(d))["float_range"][1] == 2**63 - 1


def test_inspect_never_forks_the_calling_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forking a process that has threads can deadlock the child (Python 3.12+
    warns: "This process is multi-threaded, use of fork() may lead to
    deadlocks", 377 times in a suite run on 3.13). The runtime is loaded in a
    forkserver child: the caller itself never forks (issue 14.12)."""
    import os
    import threading
    import warnings

    from edged.inference.inspect import guarded_report
    from edged.inference.runtime import select_runtime

    def refuse(*_: object) -> int:
        raise AssertionError("os.fork() called in the inspecting process")

    monkeypatch.setattr(os, "fork", refuse)
    busy = threading.Event()
    thread = threading.Thread(target=busy.wait, daemon=True)
    thread.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            report = guarded_report(str(MODELS_DIR / "digits_int8.tflite"),
                                    select_runtime("auto"))
    finally:
        busy.set()
    assert report["inputs"][0]["image"]["layout"] == "nhwc"
