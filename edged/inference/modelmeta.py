"""The input normalization a model file states about itself, when it does.

Two kinds of exports carry it:

* **TFLite metadata** (tflite-support's MetadataWriter, Model Maker, most
  models on Kaggle/TF Hub): `Model.metadata` names a buffer
  "TFLITE_METADATA" holding a `ModelMetadata` flatbuffer (schema
  metadata_schema.fbs, identifier "M001"); the first input's
  `TensorMetadata.process_units` may hold `NormalizationOptions {mean, std}`.
* **Ultralytics** exports append a zip with `metadata.json` (imgsz, names,
  stride, ...). It carries no numbers for the input, but every Ultralytics
  model is fed `p / 255` (mean 0, std 255), whatever its quantization range.

Read with edged's own bounds-checked flatbuffer reader: a damaged metadata
block is ignored (None), never a crash; the model file itself was already
checked by `edged.inference.modelfile`.
"""

from __future__ import annotations

import contextlib
import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edged.inference.flatbuffer import MalformedError, Reader, Table

METADATA_NAME = "TFLITE_METADATA"
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union: NormalizationOptions


@dataclass(frozen=True)
class StatedNormalization:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # for the log and inspect: which metadata said so


def _floats(t: Table, slot: int, what: str) -> tuple[float, ...]:
    start, length = t.vector(slot, 4, what)
    return struct.unpack_from(f"<{length}f", t.r.data, start) if length else ()


def _metadata_buffer(data: bytes) -> bytes | None:
    r = Reader(data)
    model = r.table(r.deref(0, "root table"), "model")
    buffers = model.tables(4, "model.buffers")
    for entry in model.tables(6, "model.metadata"):
        if entry.string(0, "metadata.name") != METADATA_NAME:
            continue
        index = entry.scalar(1, "I", 0)
        if index >= len(buffers):
            return None
        buf = buffers[index]
        start, length = buf.vector(0, 1, "buffer.data")
        if length:
            return data[start:start + length]
        offset, size = buf.scalar(1, "Q", 0), buf.scalar(2, "Q", 0)
        return data[offset:offset + size] if size and offset + size <= len(data) else None
    return None


def _tflite_metadata(data: bytes) -> StatedNormalization | None:
    meta = _metadata_buffer(data)
    if meta is None or meta[4:8] != b"M001":
        return None
    r = Reader(meta)
    root = r.table(r.deref(0, "metadata root"), "ModelMetadata")
    for subgraph in root.tables(3, "subgraph_metadata")[:1]:
        for tensor in subgraph.tables(2, "input_tensor_metadata")[:1]:
            for unit in tensor.tables(4, "process_units"):
                options = unit.table(1, "process_unit.options")
                if unit.scalar(0, "B", 0) != _NORMALIZATION_OPTIONS or options is None:
                    continue
                mean, std = _floats(options, 0, "mean"), _floats(options, 1, "std")
                if mean and std and all(s != 0 for s in std):
                    return StatedNormalization(mean, std, "model metadata "
                                               "(TFLite NormalizationOptions)")
    return None


def _ultralytics(path: Path) -> StatedNormalization | None:
    with contextlib.suppress(OSError, zipfile.BadZipFile, ValueError, KeyError):
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("metadata.json")
            if info.file_size > 1 << 20:
                return None
            doc = json.loads(zf.read(info))
        if isinstance(doc, dict) and "ultralytics" in str(doc.get("author", "")).lower() + \
                str(doc.get("description", "")).lower():
            return StatedNormalization((0.0,), (255.0,),
                                       "model metadata (Ultralytics export: p / 255)")
    return None


def stated_normalization(path: str | Path) -> StatedNormalization | None:
    """The first input's normalization as the file states it, or None."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError:
        return None
    with contextlib.suppress(MalformedError, struct.error):
        found = _tflite_metadata(data)
        if found is not None:
            return found
    return _ultralytics(p)
