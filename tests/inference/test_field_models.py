"""Models shaped like real exports, through every command (issue 14.1, 6, 10, 11).

Each model in tests/data/models/field/ (scripts/field_models.py) goes through
`edged inspect`, `edged check-config` and `edged run` with a real mosquitto
and subscriber; the floats published are compared with a plain interpreter
loop that quantizes, lays out and dequantizes on its own (no edged code).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import pytest
from ai_edge_litert.interpreter import Interpreter
from broker import Mosquitto, Subscriber
from daemon_helpers import MODELS, DaemonProcess, base_config, results, write_config

from edged.numerics.quantize import unusual_derived_range
from edged.numerics.tensors import TensorInfo

FIELD = MODELS / "field"
IMAGE_MODELS = ["dynbatch_flatten_int8", "dynbatch_flatten_uint8", "dynbatch_reshape_int8",
                "nchw_int8", "nchw_float_input", "float_input_int8", "stateful_int8"]
FRAME_COUNT = 6


def _edged(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def _frames(directory: Path) -> list[Path]:
    directory.mkdir()
    rng = np.random.default_rng(5)
    paths = []
    for i in range(FRAME_COUNT):
        path = directory / f"frame_{i:02d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def _plain_loop(model: Path, frames: list[Path], normalization: tuple[float, float] | None = None
                ) -> list[list[np.ndarray[Any, Any]]]:
    """What a careful user's own loop publishes: pixels normalised as edged
    documents (a quantized input's own range; [-1, 1] for a float input),
    laid out as the tensor's shape says, outputs (q - zero_point) * scale."""
    it = Interpreter(model_path=str(model))
    inp = it.get_input_details()[0]
    if -1 in inp["shape_signature"]:
        it.resize_tensor_input(inp["index"], [1, *inp["shape_signature"][1:]])
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    every = []
    for frame in frames:
        rgb = cv2.cvtColor(cv2.imread(str(frame)), cv2.COLOR_BGR2RGB).astype(np.float64)
        if inp["shape"][1] == 3:  # channel-first
            rgb = rgb.transpose(2, 0, 1)
        scale, zp = inp["quantization"]
        if normalization is not None:
            info = np.iinfo(inp["dtype"])
            real = (rgb - normalization[0]) / normalization[1]
            q = np.clip(np.floor(real / scale + 0.5) + zp, info.min, info.max)
            it.set_tensor(inp["index"], q.astype(inp["dtype"])[None])
        elif inp["dtype"] == np.float32:
            it.set_tensor(inp["index"], ((rgb - 127.5) / 127.5).astype(np.float32)[None])
        else:
            info = np.iinfo(inp["dtype"])
            low, high = (info.min - zp) * scale, (info.max - zp) * scale
            real = low + rgb * (high - low) / 255.0
            q = np.clip(np.floor(real / scale + 0.5) + zp, info.min, info.max)
            it.set_tensor(inp["index"], q.astype(inp["dtype"])[None])
        it.invoke()
        outs = []
        for d in it.get_output_details():
            raw = it.get_tensor(d["index"])
            s, z = d["quantization"]
            outs.append(((raw.astype(np.int64) - z) * s).astype(np.float32) if s else raw)
        every.append(outs)
    return every


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_field_model_through_inspect_check_config_and_run(
        tmp_path: Path, mosquitto: Mosquitto, name: str) -> None:
    model = FIELD / f"{name}.tflite"
    frames = _frames(tmp_path / "frames")
    inspect = _edged("inspect", "--json", str(model))
    assert inspect.returncode == 0, inspect.stderr
    image = orjson.loads(inspect.stdout)["inputs"][0]["image"]
    assert image["layout"] == ("nchw" if name.startswith("nchw") else "nhwc"), image
    assert (image["height"], image["width"], image["channels"]) == (16, 16, 3)

    cfg = base_config(mosquitto.port, model=model, frames=tmp_path / "frames",
                      source={"kind": "folder", "uri": str(tmp_path / "frames"),
                              "loop": False, "fps": 30.0},
                      inference={"num_threads": 2})
    path = write_config(tmp_path / "edged.toml", cfg)
    check = _edged("check-config", str(path))
    assert check.returncode == 0, check.stdout + check.stderr
    if "float" in name:  # the [-1, 1] assumption is said, not made silently
        assert "preprocess.mean: not set, and input" in check.stderr, check.stderr

    want = _plain_loop(model, frames)
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        got = results(sub.wait_count(lambda m: m.topic.endswith("/results"), FRAME_COUNT,
                                     timeout=60))
        assert daemon.stop() == 0
    log = daemon.log_text()
    assert "NCHW 16x16 RGB" in log if name.startswith("nchw") else "NHWC 16x16 RGB" in log
    assert [doc["seq"] for doc in got] == list(range(FRAME_COUNT))
    for doc, outs in zip(got, want, strict=True):
        for out, expected in zip(doc["outputs"], outs, strict=True):
            # Exact: the same quantized values, the same (q - zp) * scale.
            np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(
                expected.shape), expected, rtol=1e-6, atol=1e-7,
                err_msg=f"{name} frame {doc['seq']} {out['name']}")


def test_an_audio_model_is_refused_everywhere_with_one_line(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    model = FIELD / "audio_int8.tflite"
    _frames(tmp_path / "frames")
    line = "'keras_tensor_16' [1, 3, 40] int8 is not an image"
    inspect = _edged("inspect", "--json", str(model))
    assert inspect.returncode == 0 and orjson.loads(inspect.stdout)["inputs"][0]["image"] is None
    cfg = base_config(mosquitto.port, model=model, frames=tmp_path / "frames")
    path = write_config(tmp_path / "edged.toml", cfg)
    check = _edged("check-config", str(path))
    assert check.returncode == 1
    assert f"model.path: {model}: input tensor {line}" in check.stderr, check.stderr
    run = _edged("run", "--config", str(path))
    assert run.returncode == 78, run.stderr
    errors = [x for x in run.stderr.splitlines() if "is not an image" in x]
    assert len(errors) == 1 and str(model) in errors[0], run.stderr


def test_a_forced_layout_that_does_not_fit_is_refused(tmp_path: Path,
                                                      mosquitto: Mosquitto) -> None:
    model = FIELD / "nchw_int8.tflite"
    cfg = base_config(mosquitto.port, model=model, frames=tmp_path,
                      preprocess={"layout": "nhwc"})
    check = _edged("check-config", str(write_config(tmp_path / "edged.toml", cfg)))
    assert check.returncode == 1
    assert "[1, 3, 16, 16] int8 read as NHWC (preprocess.layout) is not an image" in check.stderr


def test_a_stateful_model_publishes_what_a_plain_loop_gives_from_the_first_frame(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Load-time checks run an inference; for a model with variables that would
    move its state on before frame 0 (issue 14.10): edged loads it afresh."""
    model = FIELD / "stateful_int8.tflite"
    frames = _frames(tmp_path / "frames")
    want = _plain_loop(model, frames)
    assert not np.array_equal(want[0][0], want[1][0])  # the state matters
    for threads in (1, 2):
        cfg = base_config(mosquitto.port, model=model, frames=tmp_path / "frames",
                          source={"kind": "folder", "uri": str(tmp_path / "frames"),
                                  "loop": False}, inference={"num_threads": threads})
        path = write_config(tmp_path / f"edged{threads}.toml", cfg)
        with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
            got = results(sub.wait_count(lambda m: m.topic.endswith("/results"),
                                         FRAME_COUNT, timeout=60))
            assert daemon.stop() == 0
        for doc, outs in zip(got, want, strict=True):
            assert np.array_equal(np.asarray(doc["outputs"][0]["data"], np.float32).ravel(),
                                  outs[0].reshape(-1)), (threads, doc["seq"])


def _tensor(dtype: type, scale: float, zp: int) -> TensorInfo:
    return TensorInfo(0, "images", (1, 64, 64, 3), np.dtype(dtype), (scale,), (zp,))


def test_a_derived_normalization_is_flagged_when_its_range_is_unusual() -> None:
    assert unusual_derived_range(_tensor(np.int8, 1 / 255, -128)) is None  # [0, 1]
    assert unusual_derived_range(_tensor(np.uint8, 1 / 127.5, 128)) is None  # [-1, 1]
    assert unusual_derived_range(_tensor(np.uint8, 1.0, 0)) is None  # [0, 255]
    # A YOLOv8n full-integer export: calibrated on normalized data.
    low, high = unusual_derived_range(_tensor(np.int8, 0.0186584, -14)) or (0, 0)
    assert low == pytest.approx(-2.13, abs=0.01) and high == pytest.approx(2.64, abs=0.01)


def test_normalization_stated_in_the_model_file_is_used_and_said(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A model calibrated on normalized data has the input range [-2.13, 2.63]:
    derived from it, pixels would go in as (p - 114) / 53.6. When the file
    states p / 255 (TFLite metadata), edged feeds that and says where it came
    from; without metadata check-config names the settings to try (issue 14.7)."""
    plain, stated = FIELD / "normalized_calib_int8.tflite", \
        FIELD / "normalized_calib_int8_metadata.tflite"
    frames = _frames(tmp_path / "frames")
    for model in (plain, stated):
        norm = orjson.loads(_edged("inspect", "--json", str(model)).stdout)[
            "inputs"][0]["normalization"]
        if model == stated:
            assert norm == {"mean": [0.0], "std": [255.0],
                            "source": "model metadata (TFLite NormalizationOptions)"}
        else:
            assert norm["source"] == "derived from the input's quantization range"
        cfg = base_config(mosquitto.port, model=model, frames=tmp_path / "frames",
                          source={"kind": "folder", "uri": str(tmp_path / "frames"),
                                  "loop": False})
        check = _edged("check-config", str(write_config(tmp_path / "edged.toml", cfg)))
        assert check.returncode == 0, check.stderr
        warned = "which is no usual training range" in check.stderr
        assert warned == (model == plain), check.stderr
    assert "mean = [0] and std = [255]" in _edged(
        "check-config", str(write_config(tmp_path / "plain.toml", base_config(
            mosquitto.port, model=plain, frames=tmp_path / "frames")))).stderr

    path = write_config(tmp_path / "edged.toml", cfg)  # the stated model's
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        got = results(sub.wait_count(lambda m: m.topic.endswith("/results"), FRAME_COUNT,
                                     timeout=60))
        assert daemon.stop() == 0
    assert "model metadata (TFLite NormalizationOptions)" in daemon.log_text()
    want = _plain_loop(stated, frames, normalization=(0.0, 255.0))
    for doc, outs in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(doc["outputs"][0]["data"], np.float32).ravel(),
                                   outs[0].ravel(), rtol=1e-6, atol=1e-7)
