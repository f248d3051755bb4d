"""What edged puts on the wire: result, status and stats payloads.

Pure functions, no MQTT. Schemas: `edged/schemas/*.schema.json` (draft 2020-12).

Result payload v1, JSON (orjson)::

    {"schema": 1, "device_id": "cam-1", "boot_id": "5f0c3a9e71d24b86", "seq": 42,
     "captured_at": 1718000000.123456, "published_at": 1718000000.140001,
     "model": "digits_int8.tflite", "delegate": "cpu",
     "timings_us": {"capture": 120, "invoke": 5400, ...},
     "outputs": [{"name": "logits", "shape": [1, 10], "dtype": "int8",
                  "quantization": {"kind": "per_tensor", "scale": 0.0039, "zero_point": -128},
                  "data": [[0.0, 0.99609375, ...]]}],
     "decoded": {...}}                                   # only when a decoder ran

* times are Unix epoch seconds (float, UTC); `published_at - captured_at` is
  the end-to-end latency on the device;
* `dtype` and `quantization` describe the model's tensor; `data` holds the
  values edged computed from it: floats for quantized and float tensors,
  integers for integer tensors that are not quantized. `data` is nested like
  `shape` (row-major); NaN and infinities are written as `null`.

Result payload v1, binary (for outputs too large for JSON), little-endian::

    offset  size  field
    0       4     magic b"EDGB"
    4       1     version (1)
    5       1     flags (0, reserved)
    6       2     output count N (uint16)
    8       4     metadata length M (uint32)
    12      M     metadata: UTF-8 JSON, the JSON payload above without any
                  `data`; each output instead has `"data_dtype"`
                  ("float32" | "int32" | "int64" | "float64")
    ...     pad   zero bytes up to the next multiple of 8
    then N data blocks in output order, each prod(shape) * itemsize bytes of
    `data_dtype`, row-major, each padded with zeros to a multiple of 8 bytes
    (so a reader can `numpy.frombuffer` every block without copying).

Floats are sent as float32 (float64 only for a float64 tensor); integer
tensors as int32, or int64 for int64/uint32/uint64.

Status (retained): {"schema": 1, "device_id", "state": "online"|"offline",
"reason", "at"?, "version", "boot_id", "delegate"?, "fallback"?, "error"?}.
Stats (retained): {"schema": 1, "device_id", "boot_id", "at", ...figures}.
`boot_id` (`BOOT_ID`) is new each time edged starts; `seq` and the counters
never go down while it stays.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import orjson
from numpy.typing import NDArray

from edged import __version__
from edged.numerics.tensors import TensorInfo

SCHEMA_VERSION: Final = 1
# Random, per `edged run` process: `seq` and every counter start again at 0 with a new
# one (and only grow while it stays), so consumers de-duplicate by (device_id, boot_id, seq).
BOOT_ID: Final = os.urandom(8).hex()
BINARY_MAGIC: Final = b"EDGB"
BINARY_VERSION: Final = 1
_HEADER = struct.Struct("<4sBBHI")
_ALIGN = 8
JSON_OPTS: Final = orjson.OPT_SERIALIZE_NUMPY

# Keys a stats figure may not use: they belong to the envelope.
# Tensor dtype char -> the dtype its values travel in (see the module docstring).
_WIRE_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    np.dtype(t).char: np.dtype(w) for t, w in (
        ("float16", "float32"), ("float32", "float32"), ("float64", "float64"),
        ("bool", "int32"), ("int8", "int32"), ("uint8", "int32"), ("int16", "int32"),
        ("uint16", "int32"), ("int32", "int32"), ("uint32", "int64"), ("int64", "int64"),
        ("uint64", "int64"),
    )
}

_ENVELOPE_KEYS: Final = frozenset({"schema", "device_id", "boot_id", "at"})

StatusState = Literal["online", "offline"]


class PayloadError(ValueError):
    """A payload that cannot be encoded or decoded; the message is one line."""


@dataclass(frozen=True, slots=True)
class Output:
    """One model output as published: the tensor it came from and its values."""

    info: TensorInfo
    data: NDArray[Any]


@dataclass(frozen=True, slots=True)
class Result:
    """Everything one inference publishes, before encoding."""

    device_id: str
    seq: int
    captured_at: float
    model: str
    delegate: str
    outputs: tuple[Output, ...]
    timings_us: Mapping[str, int] = field(default_factory=dict)
    decoded: Any = None
    camera: str | None = None  # its [[cameras]] id; None: the file's one camera


def _wire_array(out: Output) -> NDArray[Any]:
    """The values in the dtype they travel in, C-contiguous and shaped like the
    tensor (orjson and the binary writer both need contiguity; for the
    interpreter's own arrays all of this is a few attribute reads)."""
    data = out.data
    dt = data.dtype
    wire = _WIRE_DTYPES.get(dt.char)
    if wire is None:
        raise PayloadError(f"output {out.info.name!r}: cannot publish dtype {dt}")
    shape = out.info.shape
    if data.shape != shape:
        if data.size != math.prod(shape):
            raise PayloadError(
                f"output {out.info.name!r}: {data.size} values for tensor shape {list(shape)}"
            )
        data = data.reshape(shape)
    if dt is wire and data.flags.c_contiguous:
        return data
    return np.ascontiguousarray(data, dtype=wire)


def _meta(result: Result, published_at: float | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "device_id": result.device_id,
        "boot_id": BOOT_ID,
        "seq": result.seq,
        "captured_at": result.captured_at,
        "published_at": time.time() if published_at is None else published_at,
        "model": result.model,
        "delegate": result.delegate,
        "timings_us": dict(result.timings_us),
    }
    if result.camera is not None:
        meta["camera"] = result.camera
    return meta


def _output_meta(out: Output) -> dict[str, Any]:
    # A fresh dict (callers add to it) from a cached one: the same per tensor every
    # frame, and building it was a sixth of encoding a [1,1001] result.
    return dict(_tensor_meta(out.info))


@functools.lru_cache(maxsize=256)
def _tensor_meta(info: TensorInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "shape": list(info.shape),
        "dtype": info.dtype.name,
        "quantization": info.quantization_summary(),
    }


def encode_result_json(result: Result, published_at: float | None = None) -> bytes:
    """The v1 JSON payload. `published_at` defaults to now."""
    doc = _meta(result, published_at)
    outputs = []
    for out in result.outputs:
        entry = _output_meta(out)
        entry["data"] = _wire_array(out)
        outputs.append(entry)
    doc["outputs"] = outputs
    if result.decoded is not None:
        doc["decoded"] = result.decoded
    try:
        return orjson.dumps(doc, option=JSON_OPTS)
    except TypeError as exc:
        raise PayloadError(f"result {result.seq}: cannot encode as JSON: {exc}") from None


def _pad(n: int) -> int:
    return -n % _ALIGN


def encode_result_binary(result: Result, published_at: float | None = None) -> bytes:
    """The v1 binary payload (layout in the module docstring)."""
    if len(result.outputs) > 0xFFFF:
        raise PayloadError(f"result {result.seq}: too many outputs ({len(result.outputs)})")
    doc = _meta(result, published_at)
    arrays = [_wire_array(out) for out in result.outputs]
    entries = []
    for out, arr in zip(result.outputs, arrays, strict=True):
        entry = _output_meta(out)
        entry["data_dtype"] = arr.dtype.name
        entries.append(entry)
    doc["outputs"] = entries
    if result.decoded is not None:
        doc["decoded"] = result.decoded
    meta = orjson.dumps(doc, option=JSON_OPTS)
    parts: list[bytes | memoryview] = [
        _HEADER.pack(BINARY_MAGIC, BINARY_VERSION, 0, len(arrays), len(meta)),
        meta,
        bytes(_pad(_HEADER.size + len(meta))),
    ]
    for arr in arrays:
        # Little-endian on the wire whatever the host is (all Pis are LE anyway).
        le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        parts.append(le.tobytes() if not le.flags.c_contiguous else le.data.cast("B"))
        parts.append(bytes(_pad(le.nbytes)))
    return b"".join(parts)


def is_binary(payload: bytes) -> bool:
    return payload[:4] == BINARY_MAGIC


def decode_result(payload: bytes) -> dict[str, Any]:
    """Either encoding back to the JSON document's structure.

    `outputs[i]["data"]` is a numpy array shaped like the tensor (float32 or
    an integer dtype for binary, float64/int64 for JSON; JSON nulls become NaN).
    """
    if is_binary(payload):
        return _decode_binary(payload)
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"result payload is neither binary v1 nor JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        raise PayloadError("result payload has no 'outputs' list")
    for out in doc["outputs"]:
        data = out.get("data")
        # null only ever stands for a NaN/inf float, so a float array is right then.
        has_null = _contains_none(data)
        arr = np.array(data, dtype=np.float64 if has_null else None)
        out["data"] = arr.reshape(out.get("shape", arr.shape))
    return doc


def _contains_none(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, list):
        return any(_contains_none(v) for v in value)
    return False


def _decode_binary(payload: bytes) -> dict[str, Any]:
    if len(payload) < _HEADER.size:
        raise PayloadError(f"binary result truncated: {len(payload)} bytes, header needs 12")
    _magic, version, _flags, count, meta_len = _HEADER.unpack_from(payload)
    if version != BINARY_VERSION:
        raise PayloadError(f"binary result version {version} is not supported (expected 1)")
    start = _HEADER.size
    end = start + meta_len
    if end > len(payload):
        raise PayloadError(f"binary result truncated: metadata needs {meta_len} bytes")
    doc: dict[str, Any] = orjson.loads(payload[start:end])
    outputs = doc.get("outputs")
    if not isinstance(outputs, list) or len(outputs) != count:
        raise PayloadError(f"binary result: header says {count} outputs, metadata disagrees")
    offset = end + _pad(end)
    view = memoryview(payload)
    for out in outputs:
        dtype = np.dtype(out.pop("data_dtype")).newbyteorder("<")
        shape = tuple(out["shape"])
        n = int(np.prod(shape, dtype=np.int64))
        nbytes = n * dtype.itemsize
        if offset + nbytes > len(payload):
            raise PayloadError(f"binary result truncated in output {out['name']!r}")
        out["data"] = np.frombuffer(view, dtype=dtype, count=n, offset=offset).reshape(shape)
        offset += nbytes + _pad(nbytes)
    return doc


def encode_status(device_id: str, state: StatusState, reason: str,
                  at: float | None = None, fields: Mapping[str, Any] | None = None) -> bytes:
    """Retained status. `at` is left out for the last will, which the broker
    sends long after it was written, so a time in it would be wrong. `fields`
    are the daemon's own (`delegate`, `fallback`, `error`; see the schema)."""
    doc: dict[str, Any] = {"schema": SCHEMA_VERSION, "device_id": device_id, "state": state,
                           "reason": reason, "version": __version__, "boot_id": BOOT_ID}
    if at is not None:
        doc["at"] = at
    if fields:
        clash = doc.keys() & fields.keys()
        if clash:
            raise PayloadError(f"status field {sorted(clash)[0]!r} clashes with the envelope")
        doc.update(fields)
    return orjson.dumps(doc)


# The figures the daemon reports; others may be added and pass through.
STATS_FIELDS: Final = (
    "fps", "invoke_ms_p50", "invoke_ms_p95", "frames_dropped", "results_queued",
    "results_dropped", "delegate", "worker_restarts", "uptime_s", "broker", "source",
    "last_error",
)


def encode_stats(device_id: str, figures: Mapping[str, Any], at: float | None = None) -> bytes:
    """Retained stats: the caller's figures under the common envelope."""
    clash = _ENVELOPE_KEYS.intersection(figures)
    if clash:
        raise PayloadError(f"stats figure {sorted(clash)[0]!r} clashes with the envelope")
    doc: dict[str, Any] = {"schema": SCHEMA_VERSION, "device_id": device_id,
                           "boot_id": BOOT_ID, "at": time.time() if at is None else at}
    doc.update(figures)
    try:
        return orjson.dumps(doc, option=JSON_OPTS)
    except TypeError as exc:
        raise PayloadError(f"stats: cannot encode as JSON: {exc}") from None


def validate_device_id(device_id: str) -> str:
    """A device id must be one MQTT topic level (fleet topics are per device)."""
    if not device_id or any(c in device_id for c in "/+#\0") or device_id != device_id.strip():
        raise PayloadError(f"device_id {device_id!r}: must be one topic level "
                           "(no '/', '+', '#', NUL or surrounding spaces)")
    return device_id


def outputs_from(infos: Sequence[TensorInfo], arrays: Sequence[NDArray[Any]]) -> tuple[Output, ...]:
    """Pair each output tensor with its values, checking nothing is missing."""
    if len(infos) != len(arrays):
        raise PayloadError(f"{len(arrays)} output arrays for {len(infos)} output tensors")
    return tuple(Output(i, a) for i, a in zip(infos, arrays, strict=True))
