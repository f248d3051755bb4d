"""The rows of `edged bench` that run in one process: limit, naive, edged in-process.

Each row runs in a child process of its own (`python -m edged.bench.rows ROW
...`), so its peak RSS is its own and no row inherits another's warm caches
or allocator state. The parent sends one JSON line per run (`{"frames": N}`)
and reads one JSON line back; it interleaves the rows run by run, so the
noise of a shared machine falls on every row alike.

Stage times are means per frame in microseconds; the limit row times only
the whole loop (a clock read per frame would be part of what it measures).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edged.bench.decode import yolo_decode_call
from edged.inference.delegates import DelegateSpec, load_delegate
from edged.inference.model import Model, make_interpreter
from edged.inference.runtime import Runtime, select_runtime
from edged.mqtt.payload import Result, encode_result_json, outputs_from
from edged.numerics.quantize import Normalization, PixelQuantizer, default_normalization, dequantize
from edged.numerics.tensors import TensorInfo
from edged.preprocess import Preprocessor
from edged.sources.resilient import ResilientSource
from edged.sources.synthetic import SyntheticSource
from edged.system.threads import leave_cores_to_the_model

ROWS = ("limit", "naive", "inprocess")
STAGES = ("capture", "resize", "quantize", "invoke", "dequantize", "decode", "encode",
          "publish")


@dataclass(frozen=True)
class RowSpec:
    row: str
    model: str
    threads: int
    source_size: tuple[int, int]  # (height, width) of the synthetic frames
    runtime: str = "auto"
    delegate: str = "cpu"

    def argv(self) -> list[str]:
        h, w = self.source_size
        return [self.row, self.model, str(self.threads), str(h), str(w), self.runtime,
                self.delegate]

    @classmethod
    def from_argv(cls, argv: list[str]) -> RowSpec:
        row, model, threads, h, w, runtime, delegate = argv
        return cls(row, model, int(threads), (int(h), int(w)), runtime, delegate)


def proc_status_kb(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB; empty if it is gone."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _interpreter(spec: RowSpec, runtime: Runtime) -> Any:
    delegate = None
    if spec.delegate != "cpu":
        delegate = load_delegate(DelegateSpec(kind=spec.delegate, fallback="fail"),  # type: ignore[arg-type]
                                 runtime)
    it = make_interpreter(runtime, Path(spec.model), delegate, spec.threads)
    it.allocate_tensors()
    return it


class Row:
    """One row: `run(frames)` returns (seconds, {stage: total microseconds})."""

    def run(self, frames: int) -> tuple[float, dict[str, float]]:
        raise NotImplementedError


class LimitRow(Row):
    """A bare `invoke()` loop on a fixed, already-quantized input."""

    def __init__(self, spec: RowSpec, runtime: Runtime) -> None:
        self.it = _interpreter(spec, runtime)
        d = self.it.get_input_details()[0]
        rng = np.random.default_rng(0)
        info = np.iinfo(d["dtype"]) if np.dtype(d["dtype"]).kind in "iu" else None
        fixed = (rng.integers(info.min, info.max + 1, d["shape"]) if info
                 else rng.standard_normal(d["shape"]))
        self.it.set_tensor(d["index"], fixed.astype(d["dtype"]))

    def run(self, frames: int) -> tuple[float, dict[str, float]]:
        invoke = self.it.invoke
        t0 = time.perf_counter()
        for _ in range(frames):
            invoke()
        seconds = time.perf_counter() - t0
        return seconds, {"invoke": seconds * 1e6}


class NaiveRow(Row):
    """The common recipe, done honestly (the right input range, the output's own
    scale and zero point), in one thread."""

    def __init__(self, spec: RowSpec, runtime: Runtime) -> None:
        self.it = _interpreter(spec, runtime)
        self.inp = self.it.get_input_details()[0]
        self.outs = self.it.get_output_details()
        self.source = SyntheticSource(spec.source_size, fps=0)
        self.source.open()
        t = TensorInfo.from_detail(self.inp)
        norm = default_normalization(t)
        self.mean = np.asarray(norm.mean, dtype=np.float32)
        self.std = np.asarray(norm.std, dtype=np.float32)
        self.size = (int(self.inp["shape"][2]), int(self.inp["shape"][1]))  # (w, h) for cv2
        self.scale, self.zp = self.inp["quantization"]
        self.dtype = np.dtype(self.inp["dtype"])
        self.seq = 0

    def _quantize(self, frame: NDArray[Any]) -> NDArray[Any]:
        f = (frame.astype(np.float32) - self.mean) / self.std
        if self.scale:
            info = np.iinfo(self.dtype)
            f = np.clip(np.round(f / self.scale + self.zp), info.min, info.max)
        return f.astype(self.dtype)[np.newaxis]

    def run(self, frames: int) -> tuple[float, dict[str, float]]:
        totals = dict.fromkeys(("capture", "resize", "quantize", "invoke", "dequantize",
                                "encode"), 0.0)
        clock = time.perf_counter_ns
        start = time.perf_counter()
        for _ in range(frames):
            t0 = clock()
            frame: NDArray[Any] | None = self.source.read()
            assert frame is not None
            t1 = clock()
            if frame.shape[:2] != self.size[::-1]:
                frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
            t2 = clock()
            self.it.set_tensor(self.inp["index"], self._quantize(frame))
            t3 = clock()
            self.it.invoke()
            t4 = clock()
            values = []
            for d in self.outs:
                q = self.it.get_tensor(d["index"])
                params = d["quantization_parameters"]
                if len(params["scales"]):
                    q = (q.astype(np.float32) - params["zero_points"][0]) * params["scales"][0]
                values.append(q)
            t5 = clock()
            json.dumps({"seq": self.seq, "captured_at": time.time(),
                        "outputs": [v.tolist() for v in values]})
            t6 = clock()
            self.seq += 1
            for key, a, b in (("capture", t0, t1), ("resize", t1, t2), ("quantize", t2, t3),
                              ("invoke", t3, t4), ("dequantize", t4, t5), ("encode", t5, t6)):
                totals[key] += (b - a) / 1000
        return time.perf_counter() - start, totals


class InProcessRow(Row):
    """edged's own stages, in order, in one thread: source -> preprocess -> quantize
    -> invoke -> dequantize -> encode (the daemon runs the same functions)."""

    def __init__(self, spec: RowSpec, runtime: Runtime) -> None:
        leave_cores_to_the_model()  # as the daemon and its worker do
        self.model = Model.load(spec.model, runtime, DelegateSpec(
            kind=spec.delegate, num_threads=spec.threads, fallback="fail"))  # type: ignore[arg-type]
        t = self.model.inputs[0]
        self.quantizer = PixelQuantizer(t)
        self.pre = Preprocessor.for_input(t)
        # Capture in line, not on a thread: measured, a capture thread here cost more
        # in GIL hand-overs (the quantize after each invoke waited for it) than it saved.
        self.source = ResilientSource(SyntheticSource(spec.source_size, fps=0))
        self.name = Path(spec.model).name

    def run(self, frames: int) -> tuple[float, dict[str, float]]:
        clock = time.perf_counter_ns
        model, outputs = self.model, self.model.outputs
        # Six plain sums: the clock reads and their bookkeeping are in the row's
        # frames/s, so they are kept to the least (the limit row has none).
        capture = resize = quantize = invoke = dequant = encode = 0
        start = time.perf_counter()
        for _ in range(frames):
            t0 = clock()
            frame = self.source.read()
            assert frame is not None
            t1 = clock()
            pixels = self.pre(frame.pixels)
            t2 = clock()
            model.set_input_pixels(pixels, self.quantizer)
            t3 = clock()
            model.invoke()
            t4 = clock()
            floats = [dequantize(r, t) for r, t in zip(model.raw_outputs(), outputs,
                                                         strict=True)]
            t5 = clock()
            encode_result_json(Result(
                device_id="bench", seq=frame.seq, captured_at=frame.captured_at,
                model=self.name, delegate=model.delegate_in_use,
                outputs=outputs_from(outputs, floats),
                timings_us={"invoke": (t4 - t3) // 1000}))
            t6 = clock()
            capture += t1 - t0
            resize += t2 - t1
            quantize += t3 - t2
            invoke += t4 - t3
            dequant += t5 - t4
            encode += t6 - t5
        seconds = time.perf_counter() - start
        return seconds, {"capture": capture / 1000, "resize": resize / 1000,
                         "quantize": quantize / 1000, "invoke": invoke / 1000,
                         "dequantize": dequant / 1000, "encode": encode / 1000}


def build_row(spec: RowSpec) -> Row:
    runtime = select_runtime(spec.runtime)  # type: ignore[arg-type]
    kinds: dict[str, Callable[[RowSpec, Runtime], Row]] = {
        "limit": LimitRow, "naive": NaiveRow, "inprocess": InProcessRow}
    return kinds[spec.row](spec, runtime)


def serve(spec: RowSpec) -> int:
    """Answer `{"frames": N}` lines until stdin closes."""
    try:
        row = build_row(spec)
    except Exception as exc:  # one line for the parent to show, whatever failed
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(json.dumps({"error": text}), flush=True)
        return 1
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        frames = int(json.loads(line)["frames"])
        before = proc_status_kb()
        seconds, totals = row.run(frames)
        after = proc_status_kb()
        print(json.dumps({
            "frames": frames, "seconds": seconds, "fps": frames / seconds,
            "stages_us": {k: v / frames for k, v in totals.items()},
            "rss_before_kb": before.get("VmRSS", 0), "rss_kb": after.get("VmRSS", 0),
            "peak_rss_kb": after.get("VmHWM", 0)}), flush=True)
    return 0


# -- micro-benchmarks ---------------------------------------------------------------

def time_call(fn: Callable[[], object], *, repeats: int = 7, number: int = 300
              ) -> tuple[float, float, float]:
    """(median, min, max) microseconds per call over `repeats` batches of `number`."""
    fn()
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(number):
            fn()
        per_call.append((time.perf_counter_ns() - t0) / number / 1000)
    return float(np.median(per_call)), min(per_call), max(per_call)


IMAGENET = Normalization((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))


def micro(quick: bool = False) -> dict[str, dict[str, Any]]:
    """The hot-path figures with their targets: quantize a 224x224x3 frame on each
    pixel path, dequantize + encode a [1,1001] output, decode a YOLOv8-sized int8 head."""
    number = 100 if quick else 500
    leave_cores_to_the_model()  # as in the worker, where quantizing runs
    frame = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    shape = (1, 224, 224, 3)
    cases = {
        "identity": (TensorInfo(0, "input", shape, np.dtype(np.uint8), (1 / 255,), (0,)), None),
        "xor": (TensorInfo(0, "input", shape, np.dtype(np.int8), (1 / 255,), (-128,)), None),
        "table": (TensorInfo(0, "input", shape, np.dtype(np.uint8), (0.0078125,), (128,)),
                  IMAGENET),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (t, norm) in cases.items():
        q = PixelQuantizer(t, norm)
        assert q.path == name, (name, q.path)
        dst = np.empty(shape, dtype=t.dtype)
        med, lo, hi = time_call(functools.partial(q, frame, out=dst), number=number)
        out[f"quantize_224x224x3_{name}"] = {"us": med, "min": lo, "max": hi,
                                             "target_us": 40.0 if name != "table" else 120.0}
    t = TensorInfo(1, "logits", (1, 1001), np.dtype(np.uint8), (0.00390625,), (0,))
    raw = np.random.default_rng(1).integers(0, 256, (1, 1001), dtype=np.uint8)
    timings = {"capture_age": 900, "preprocess": 40, "quantize": 12, "invoke": 4700,
               "dequantize": 5, "decode": 0}

    def dequantize_encode() -> bytes:
        floats = dequantize(raw, t)
        return encode_result_json(Result("bench", 1, 1.7e9, "m.tflite", "cpu",
                                         outputs_from((t,), (floats,)), timings))

    med, lo, hi = time_call(dequantize_encode, number=number)
    out["dequantize_encode_1x1001"] = {"us": med, "min": lo, "max": hi, "target_us": 30.0}
    med, lo, hi = time_call(yolo_decode_call(), number=max(number // 5, 20))
    out["decode_yolo_1x84x8400_int8"] = {"us": med, "min": lo, "max": hi, "target_us": 2000.0}
    med, lo, hi = time_call(events_call(), number=number)
    out["events_50_detections"] = {"us": med, "min": lo, "max": hi, "target_us": 300.0}
    return out


def events_call() -> Callable[[], object]:
    """One frame of 50 objects walking through 3 zones and across a line: tracking,
    zones and events (issue 18's hot path), at steady state."""
    from edged.decode.results import Detection
    from edged.events.engine import EventEngine
    from edged.events.zones import Line, Zone

    zones = [Zone(f"z{i}", ((i * 600.0, 0.0), (i * 600.0 + 500, 0.0), (i * 600.0 + 500, 1080.0),
                            (i * 600.0, 1080.0))) for i in range(3)]
    engine = EventEngine(zones=zones, lines=[Line("gate", (960.0, 0.0), (960.0, 1080.0))])
    # Made beforehand (they are the decoder's work, timed in its own rows); 450 frames
    # are one whole cycle of the walk (4 px a frame, wrapping at 1800), so none jumps.
    scenes = [[Detection(i % 3, ("person", "car", "dog")[i % 3], 0.8,
                         ((i * 37 + 4 * f) % 1800.0, i * 20.0, (i * 37 + 4 * f) % 1800.0 + 60,
                          i * 20.0 + 80)) for i in range(50)] for f in range(450)]
    frame = [0]

    def step() -> object:
        f = frame[0] = frame[0] + 1
        return engine.step(scenes[f % 450], f / 30, (1080, 1920))

    for _ in range(10):
        step()
    return step


def main(argv: list[str]) -> int:
    return serve(RowSpec.from_argv(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
