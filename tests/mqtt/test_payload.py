"""Result/status/stats payloads: real model outputs, both encodings, the schemas."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest
from ai_edge_litert.interpreter import Interpreter

from edged.mqtt.listen import summarize
from edged.mqtt.payload import (
    BINARY_MAGIC,
    PayloadError,
    Result,
    decode_result,
    encode_result_binary,
    encode_result_json,
    encode_stats,
    encode_status,
    outputs_from,
    validate_device_id,
)
from edged.numerics.quantize import dequantize
from edged.numerics.tensors import TensorInfo

SCHEMAS = Path(__file__).resolve().parents[2] / "edged" / "schemas"


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}-v1.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def run_model(path: Path, seed: int = 0) -> tuple[list[TensorInfo], list[np.ndarray[Any, Any]]]:
    """Invoke the real interpreter on random input; outputs as edged publishes them."""
    interp = Interpreter(str(path))
    interp.allocate_tensors()
    rng = np.random.default_rng(seed)
    for d in interp.get_input_details():
        info = np.iinfo(d["dtype"]) if np.dtype(d["dtype"]).kind in "iu" else None
        data = (rng.integers(info.min, info.max + 1, d["shape"]) if info
                else rng.random(d["shape"]))
        interp.set_tensor(d["index"], data.astype(d["dtype"]))
    interp.invoke()
    infos = [TensorInfo.from_detail(d) for d in interp.get_output_details()]
    arrays = [dequantize(interp.get_tensor(t.index), t) for t in infos]
    return infos, arrays


def make_result(infos: list[TensorInfo], arrays: list[Any], **kw: Any) -> Result:
    return Result(device_id=kw.get("device_id", "cam-1"), seq=kw.get("seq", 7),
                  captured_at=1_700_000_000.25, model="m.tflite", delegate="cpu",
                  outputs=outputs_from(infos, arrays),
                  timings_us={"capture": 120, "invoke": 5400, "dequantize": 12},
                  decoded=kw.get("decoded"))


@pytest.mark.parametrize("model", ["digits_int8", "digits_uint8", "multi_output_int8",
                                   "mixed_outputs"])
def test_real_model_outputs_round_trip_both_encodings(test_models: Path, model: str) -> None:
    path = test_models / f"{model}.tflite"
    if not path.is_file():
        pytest.skip(f"{path} not generated yet")
    infos, arrays = run_model(path)
    result = make_result(infos, arrays)
    doc = orjson.loads(encode_result_json(result, published_at=1_700_000_000.5))
    validator("result").validate(doc)
    assert doc["published_at"] == 1_700_000_000.5
    assert [o["name"] for o in doc["outputs"]] == [t.name for t in infos]
    for out, info, arr in zip(doc["outputs"], infos, arrays, strict=True):
        assert out["shape"] == list(info.shape)
        assert out["dtype"] == info.dtype.name
        assert out["quantization"] == info.quantization_summary()
        # float32 values survive JSON exactly (orjson writes the shortest round-trip form)
        np.testing.assert_array_equal(np.asarray(out["data"], dtype=arr.dtype), arr)
    for encode in (encode_result_json, encode_result_binary):
        back = decode_result(encode(result))
        for out, arr in zip(back["outputs"], arrays, strict=True):
            assert out["data"].shape == arr.shape
            np.testing.assert_array_equal(out["data"].astype(arr.dtype), arr)


def test_integer_outputs_stay_integers_and_per_channel_is_described() -> None:
    ids = TensorInfo(0, "class_ids", (1, 3), np.int32)
    weights = TensorInfo(1, "w", (2, 1), np.int8, scales=(0.5, 0.25), zero_points=(0, 1))
    result = make_result([ids, weights], [np.array([[3, 1, 2]], np.int32),
                                          np.array([[1.5], [0.25]], np.float32)])
    doc = orjson.loads(encode_result_json(result))
    validator("result").validate(doc)
    assert doc["outputs"][0]["data"] == [[3, 1, 2]]
    assert all(isinstance(v, int) for v in doc["outputs"][0]["data"][0])
    assert doc["outputs"][1]["quantization"] == {
        "kind": "per_channel", "axis": 0, "scales": [0.5, 0.25], "zero_points": [0, 1]}
    back = decode_result(encode_result_binary(result))
    assert back["outputs"][0]["data"].dtype == np.int32
    assert back["outputs"][0]["data"].tolist() == [[3, 1, 2]]


def test_nan_is_null_in_json_and_nan_again_after_decoding() -> None:
    info = TensorInfo(0, "scores", (1, 3), np.float32)
    result = make_result([info], [np.array([[0.5, np.nan, np.inf]], np.float32)])
    raw = encode_result_json(result)
    assert b"[[0.5,null,null]]" in raw
    validator("result").validate(orjson.loads(raw))
    data = decode_result(raw)["outputs"][0]["data"]
    assert data[0, 0] == 0.5 and np.isnan(data[0, 1])


def test_decoded_passes_through_and_shows_in_summary() -> None:
    info = TensorInfo(0, "logits", (1, 4), np.int8, scales=(0.1,), zero_points=(0,))
    decoded = {"kind": "classification", "classes": [{"label_id": 2, "label": "two",
                                                      "score": 0.9}]}
    result = make_result([info], [np.array([[0.1, 0.2, 0.9, 0.0]], np.float32)],
                         decoded=decoded)
    doc = orjson.loads(encode_result_json(result, published_at=1_700_000_000.27))
    validator("result").validate(doc)
    assert doc["decoded"] == decoded
    line = summarize(decode_result(encode_result_binary(result, published_at=1_700_000_000.27)))
    assert line.startswith("cam-1 seq=7  latency=20.0ms  m.tflite@cpu  decoded=")
    assert "top 2=0.9 1=0.2 0=0.1" in line


def test_binary_layout_is_the_documented_one() -> None:
    a = TensorInfo(0, "a", (1, 3), np.int8, scales=(0.5,), zero_points=(0,))
    b = TensorInfo(1, "b", (2,), np.int64)
    result = make_result([a, b], [np.array([[1.0, -0.5, 2.0]], np.float32),
                                  np.array([5, -6], np.int64)])
    raw = encode_result_binary(result)
    magic, version, flags, count, meta_len = struct.unpack_from("<4sBBHI", raw)
    assert (magic, version, flags, count) == (BINARY_MAGIC, 1, 0, 2)
    meta = json.loads(raw[12:12 + meta_len])
    assert [o["data_dtype"] for o in meta["outputs"]] == ["float32", "int64"]
    assert all("data" not in o for o in meta["outputs"])
    first = 12 + meta_len + (-(12 + meta_len) % 8)
    assert first % 8 == 0
    assert np.frombuffer(raw, "<f4", 3, first).tolist() == [1.0, -0.5, 2.0]
    second = first + 16  # 12 bytes padded to 16
    assert np.frombuffer(raw, "<i8", 2, second).tolist() == [5, -6]
    assert len(raw) == second + 16


@pytest.mark.parametrize(("cut", "message"), [
    (5, "binary result truncated: 5 bytes, header needs 12"),
    (20, "binary result truncated: metadata needs"),
    (-5, "binary result truncated in output 'a'"),
])
def test_truncated_binary_gives_one_line_error(cut: int, message: str) -> None:
    a = TensorInfo(0, "a", (1, 3), np.float32)
    raw = encode_result_binary(make_result([a], [np.ones((1, 3), np.float32)]))
    with pytest.raises(PayloadError, match=message.replace("(", r"\(")):
        decode_result(raw[:cut])


def test_wrong_value_count_names_the_output() -> None:
    info = TensorInfo(0, "logits", (1, 10), np.float32)
    with pytest.raises(PayloadError, match=r"^output 'logits': 9 values for tensor shape "
                                           r"\[1, 10\]$"):
        encode_result_json(make_result([info], [np.zeros(9, np.float32)]))
    with pytest.raises(PayloadError, match="2 output arrays for 1 output tensors"):
        outputs_from([info], [np.zeros(10), np.zeros(10)])


def test_squeezed_and_non_contiguous_arrays_are_published_in_tensor_shape() -> None:
    info = TensorInfo(0, "grid", (1, 2, 3), np.float32)
    transposed = np.arange(6, dtype=np.float32).reshape(3, 2).T  # not C-contiguous
    doc = orjson.loads(encode_result_json(make_result([info], [transposed])))
    assert doc["outputs"][0]["data"] == [[[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]]


def test_status_and_stats_payloads_match_their_schemas() -> None:
    online = orjson.loads(encode_status("cam-1", "online", "connected", at=time.time()))
    will = orjson.loads(encode_status("cam-1", "offline", "connection lost"))
    validator("status").validate(online)
    validator("status").validate(will)
    assert "at" not in will
    stats = orjson.loads(encode_stats("cam-1", {
        "fps": 29.5, "invoke_ms_p50": np.float64(4.2), "invoke_ms_p95": 6.0,
        "frames_dropped": 3, "results_queued": 0, "results_dropped": 0, "delegate": "cpu",
        "worker_restarts": 1, "uptime_s": 12.5, "broker": "connected", "source": "ok",
        "last_error": None}))
    validator("stats").validate(stats)
    assert stats["invoke_ms_p50"] == 4.2
    with pytest.raises(PayloadError, match="stats figure 'device_id' clashes with the envelope"):
        encode_stats("cam-1", {"device_id": "other"})


@pytest.mark.parametrize("bad", ["", "a/b", "cam+", "#", " cam"])
def test_device_id_must_be_one_topic_level(bad: str) -> None:
    with pytest.raises(PayloadError, match="must be one topic level"):
        validate_device_id(bad)
