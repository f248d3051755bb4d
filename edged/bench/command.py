"""`edged bench`: how fast edged runs a model, next to the model's own speed.

One run, one model, one runtime, one thread count, one input, four rows:

* limit: a bare `invoke()` loop on a fixed, already-quantized input;
* naive: the common recipe done honestly (float normalisation, astype,
  set_tensor, invoke, get_tensor, `(q - zp) * scale`, json.dumps(tolist()));
* edged in-process: edged's own source -> preprocess -> quantize -> invoke ->
  dequantize -> encode, in one thread;
* edged daemon: the real `edged run` with its worker, publishing to a private
  mosquitto on loopback, measured by a subscriber (results/s, latency);
  also on a stand-in accelerator (`accelerator`; then `floor`, beside a
  stand-in that answers at once: what the design costs a result), with 1-8 cameras
  sharing the worker (`cameras`) and with a detector cascaded into the model
  (`cascade`).

Each row runs after a warm-up, several times, interleaved with the others;
the table shows medians and the min-max of the runs (the machine's noise).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edged.bench.procs import RowProcess, aggregate
from edged.bench.rows import RowSpec, micro
from edged.bench.table import cores_note, parse_sizes, render, target_lines, targets

ROOT = Path(__file__).resolve().parents[2]  # the checkout: edged/bench/ -> edged/ -> .
COMMITTED = ROOT / "tests" / "data" / "models" / "digits_int8.tflite"
SHARED_MNV2 = ROOT.parent / "shared" / "models" / "mobilenet_v2_1.0_224_quant.tflite"
BENCH_MNV2 = ROOT / "build" / "models" / "mobilenetv2_224_int8.tflite"
MAKE_BENCH_MODEL = "/tmp/tfvenv/bin/python scripts/make_test_models.py --bench"
ALL_ROWS = ("limit", "naive", "inprocess", "daemon", "accelerator", "cameras", "cascade",
            "micro", "rss", "latency", "jpeg")
# Asked for by name: an MJPEG camera's rows, two daemons per camera size of --sizes.
DEFAULT_ROWS = tuple(r for r in ALL_ROWS if r != "jpeg")
ROW_TITLES = {"limit": "limit", "naive": "naive", "inprocess": "edged in-process",
              "daemon": "edged daemon"}
RSS_SOURCE_FPS = 200.0  # the memory check: below what the MQTT path sustains here
# The daemon's source offers this times one limit run's frame rate: enough above it
# that a slow run does not cap the row (1.1 did once, fourth round); each frame
# beyond what the daemon takes costs its capture thread ~0.1 ms.
OFFER = 1.25


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="measure edged against the model's own speed",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=None,
                   help="model to measure (repeatable; default: the committed digits model, "
                        "the shared MobileNetV2 and the generated MobileNetV2 int8 when present)")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    p.add_argument("--frames", type=int, default=None, help="frames per run (default 600)")
    p.add_argument("--runs", type=int, default=None, help="runs per row after warm-up (default 5)")
    p.add_argument("--runtime", default="auto", help="TFLite runtime (default auto)")
    p.add_argument("--delegate", choices=("cpu", "edgetpu"), default="cpu",
                   help="cpu, or edgetpu with a Coral attached (and an _edgetpu model)")
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS),
                   help=f"comma-separated subset of {','.join(ALL_ROWS)} (default: all but jpeg)")
    p.add_argument("--rss-frames", type=int, default=None,
                   help="frames for the RSS growth check (default 20000)")
    p.add_argument("--quick", action="store_true",
                   help="a few hundred frames on the committed model (CI)")
    p.add_argument("--sizes", default="640x480",
                   help="camera frame sizes measured besides the model's own, WxH, comma-"
                        "separated (default 640x480; camera targets: 640x480,1280x720,"
                        "1920x1080)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(handler=_bench)


@dataclass
class Settings:
    models: list[Path]
    threads: int
    frames: int
    runs: int
    runtime: str
    delegate: str
    rows: tuple[str, ...]
    rss_frames: int
    latency_results: int
    quick: bool
    notes: list[str] = field(default_factory=list)
    sizes: tuple[tuple[int, int], ...] = ((480, 640),)  # (h, w) camera frames


def settings_from(args: argparse.Namespace) -> Settings:
    rows = tuple(r.strip() for r in args.rows.split(",") if r.strip())
    unknown = [r for r in rows if r not in ALL_ROWS]
    if unknown:
        raise ValueError(f"--rows: unknown row {unknown[0]!r}; choose from {', '.join(ALL_ROWS)}")
    notes: list[str] = []
    if args.model:
        models = [Path(m).resolve() for m in args.model]
        for m in models:
            if not m.is_file():
                hint = f" (create it with: {MAKE_BENCH_MODEL})" if m.name == BENCH_MNV2.name else ""
                raise ValueError(f"--model: {m}: no such file{hint}")
    elif args.quick:
        models = [COMMITTED]
    else:
        models = [COMMITTED] + [m for m in (SHARED_MNV2, BENCH_MNV2) if m.is_file()]
        if not BENCH_MNV2.is_file():
            notes.append(f"{BENCH_MNV2.relative_to(ROOT)} is absent: create it with "
                         f"{MAKE_BENCH_MODEL}")
    if args.threads < 1:
        raise ValueError("--threads must be >= 1")
    frames = args.frames or (200 if args.quick else 600)
    runs = args.runs or (2 if args.quick else 5)
    if frames < 20 or runs < 1:
        raise ValueError("--frames must be >= 20 and --runs >= 1")
    return Settings(models, args.threads, frames, runs, args.runtime, args.delegate, rows,
                    args.rss_frames or (500 if args.quick else 20000),
                    30 if args.quick else 600, args.quick, notes, parse_sizes(args.sizes))



def check_delegate(delegate: str, runtime: str) -> None:
    """Fail at once, with the delegate layer's own line, when the accelerator is absent."""
    if delegate == "cpu":
        return
    from edged.inference.delegates import DelegateSpec, load_delegate
    from edged.inference.runtime import select_runtime

    load_delegate(DelegateSpec(kind=delegate, fallback="fail"),  # type: ignore[arg-type]
                  select_runtime(runtime))  # type: ignore[arg-type]


def measure_group(s: Settings, model: Path, size: tuple[int, int], label: str,
                  broker: Any, *, model_size: bool) -> list[dict[str, Any]]:
    """All selected rows for one model and one frame size (`model_size`: the model's
    own input size), interleaved run by run."""
    from edged.bench.daemon import MAX_SOURCE_FPS, BenchDaemon, DaemonSpec

    procs: dict[str, RowProcess] = {}
    daemon: BenchDaemon | None = None
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        for row in ("limit", "naive", "inprocess"):
            if row in s.rows or (row == "limit" and "daemon" in s.rows):
                procs[row] = RowProcess(RowSpec(row, str(model), s.threads, size, s.runtime,
                                                s.delegate))
                procs[row].run(max(20, s.frames // 4))  # warm-up
        limit_fps = procs["limit"].run(s.frames)["fps"] if "limit" in procs else 0.0
        if "daemon" in s.rows:
            fps = min(MAX_SOURCE_FPS, max(limit_fps * OFFER, 5.0))
            daemon = BenchDaemon(DaemonSpec(str(model), s.threads, size, fps, s.runtime,
                                            s.delegate), broker[0], broker[1],
                                 f"{model.stem}-{label}")
            daemon.warm_up(s.frames)
        for _ in range(s.runs):
            for row, proc in procs.items():
                runs.setdefault(row, []).append(proc.run(s.frames))
            if daemon is not None:
                runs.setdefault("daemon", []).append(daemon.run(s.frames)[0])
    finally:
        for proc in procs.values():
            proc.close()
        if daemon is not None:
            daemon.stop()
    rows = []
    for row, row_runs in runs.items():
        if row not in s.rows:
            continue
        agg = aggregate(row_runs)
        rows.append({"model": model.name, "source": label, "row": row,
                     "title": ROW_TITLES[row], **agg})
    limit = next((r["fps"] for r in rows if r["row"] == "limit"), 0.0)
    for r in rows:
        r["ratio"] = r["fps"] / limit if limit else None
        if r["row"] == "daemon":
            r["offered_fps"] = fps
            r["model_size"] = model_size
            add_ceilings(r, limit, s.threads)
    return rows


def add_ceilings(row: dict[str, Any], limit_fps: float, threads: int) -> None:
    """A daemon row's `ceiling`, and `ceiling_all` counting the broker, subscriber and
    bench (they share these cores here): only where the interpreter holds every core
    and the model sets the pace (not a source cap the daemon keeps up with)."""
    cores = len(os.sched_getaffinity(0))
    by_process = row.get("cpu_us_per_result", {})
    cpu = by_process.get("daemon")
    if limit_fps and cpu and threads >= cores and row["fps"] < 0.9 * row["offered_fps"]:
        row["ceiling"] = ceiling(cores, 1e6 / limit_fps, cpu)
        row["ceiling_all"] = ceiling(cores, 1e6 / limit_fps, sum(
            v for k, v in by_process.items() if k != "worker"))


def ceiling(cores: int, invoke_us: float, cpu_us: float) -> float:
    """The daemon's ratio to the limit when the interpreter holds every core: each
    result's own CPU (capture to publish) comes out of the invoke's core time."""
    return cores * invoke_us / (cores * invoke_us + cpu_us)


def rss_growth(s: Settings, model: Path, broker: Any) -> dict[str, Any]:
    """RSS after warm-up vs after `rss_frames` more frames, in-process and daemon."""
    from edged.bench.daemon import BenchDaemon, DaemonSpec

    shape = _input_size(model)
    out: dict[str, Any] = {"model": model.name, "frames": s.rss_frames}
    proc = RowProcess(RowSpec("inprocess", str(model), s.threads, shape, s.runtime, s.delegate))
    try:
        proc.run(500)
        done = proc.run(s.rss_frames)
        out["inprocess_kb"] = done["rss_kb"] - done["rss_before_kb"]
    finally:
        proc.close()
    if "daemon" in s.rows or not s.quick:
        # Offered at a rate the MQTT path sustains: at saturation the bounded result
        # queue fills up (queue_size payloads, megabytes by design), which is not growth.
        daemon = BenchDaemon(DaemonSpec(str(model), s.threads, shape, RSS_SOURCE_FPS, s.runtime,
                                        s.delegate), broker[0], broker[1], f"{model.stem}-rss")
        try:
            daemon.measure(500, keep=False)
            before = daemon.memory_kb()["VmRSS"]
            daemon.measure(s.rss_frames, keep=False, timeout_s=3600)
            out["daemon_kb"] = daemon.memory_kb()["VmRSS"] - before
        finally:
            daemon.stop()
    return out


def latency_at_30fps(s: Settings, model: Path, broker: Any) -> dict[str, Any]:
    """End-to-end latency with frames offered at 30/s, next to the invoke time."""
    from edged.bench.daemon import BenchDaemon, DaemonSpec

    daemon = BenchDaemon(DaemonSpec(str(model), s.threads, _input_size(model), 30.0, s.runtime,
                                    s.delegate), broker[0], broker[1], f"{model.stem}-30fps")
    try:
        daemon.measure(30, keep=False)
        run = daemon.run(s.latency_results)[0]
    finally:
        daemon.stop()
    return {"model": model.name, "offered_fps": 30.0, "results": s.latency_results,
            "fps": run["fps"], "latency_ms": run["latency_ms"], "invoke_ms": run["invoke_ms"]}


def _input_size(model: Path) -> tuple[int, int]:
    from edged.inference.runtime import select_runtime

    it = select_runtime().interpreter_class(model_path=str(model))
    shape = it.get_input_details()[0]["shape"]
    return int(shape[1]), int(shape[2])


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from edged.inference.runtime import select_runtime

        runtime = select_runtime().describe()
    except Exception as exc:  # the table says why rather than failing
        runtime = f"unavailable: {exc}"
    return {"cpu": cpu, "cores": str(len(os.sched_getaffinity(0))),
            "python": platform.python_version(), "numpy": np.__version__, "runtime": runtime}


def run_bench(s: Settings) -> dict[str, Any]:
    from edged.bench.daemon import private_broker

    report: dict[str, Any] = {"machine": machine(), "threads": s.threads, "frames": s.frames,
                              "runs": s.runs, "delegate": s.delegate, "notes": list(s.notes),
                              "rows": []}
    needs_broker = any(r in s.rows for r in ("daemon", "accelerator", "cameras", "cascade",
                                             "rss", "latency", "jpeg"))
    with private_broker() if needs_broker else contextlib.nullcontext() as broker:
        for model in s.models:
            h, w = _input_size(model)
            sizes = [((h, w), f"{w}x{h}")] + [(c, f"{c[1]}x{c[0]}") for c in s.sizes
                                              if c != (h, w)]
            for size, label in sizes:
                report["rows"] += measure_group(s, model, size, label, broker,
                                                model_size=size == (h, w))
        primary = s.models[-1]
        if "accelerator" in s.rows:
            from edged.bench.accelerator import accelerator_section

            report["rows"] += accelerator_section(s, primary, _input_size(primary), broker,
                                                  report["notes"])
        if "cameras" in s.rows:
            from edged.bench.cameras import cameras_section

            report["rows"] += cameras_section(s, primary, _input_size(primary), broker,
                                              report["notes"])
        if "cascade" in s.rows:
            from edged.bench.cascade import cascade_section

            report["rows"] += cascade_section(s, primary, _input_size(primary), broker,
                                              report["notes"])
        if "jpeg" in s.rows:
            from edged.bench.jpeg import jpeg_section

            report["rows"] += jpeg_section(s, primary, _input_size(primary), broker,
                                           report["notes"])
        if "micro" in s.rows:
            report["micro"] = micro(quick=s.quick)
        if "latency" in s.rows:
            report["latency_30fps"] = latency_at_30fps(s, primary, broker)
        if "rss" in s.rows:
            report["rss_growth"] = rss_growth(s, primary, broker)
    note = cores_note(s.threads, int(report["machine"]["cores"]), s.rows)
    if note:
        report["notes"].append(note)
    report["targets"] = targets(report)
    return report


def _bench(args: argparse.Namespace) -> int:
    try:
        s = settings_from(args)
        check_delegate(s.delegate, s.runtime)
    except Exception as exc:
        print(f"edged bench: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    try:
        report = run_bench(s)
    except Exception as exc:
        print(f"edged bench: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 1
    report["seconds"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(render(report))
        for line in target_lines(report):
            print(line)
    return 0
