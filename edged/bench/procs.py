"""An in-process row in a child process of its own, one daemon run's figures from
the results received, and the medians over a row's runs.

Shared by `edged bench`'s groups (edged.bench.command) and its sections
(accelerator, cameras).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import orjson

from edged.bench.rows import STAGES, RowSpec
from edged.system.childproc import stop_process


class RowProcess:
    """One in-process row in its own child (see edged.bench.rows)."""

    def __init__(self, spec: RowSpec) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "edged.bench.rows", *spec.argv()],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        first = self._read()
        if "error" in first:
            self.close()
            raise RuntimeError(f"{spec.row} row: {first['error']}")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench row process exited with {self.proc.wait()}")
        doc: dict[str, Any] = json.loads(line)
        return doc

    def run(self, frames: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"frames": frames}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        stop_process(self.proc, 10.0, sig=None)  # a closed stdin ends it


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs, with the fps noise (min-max)."""
    fps = [r["fps"] for r in runs]
    stages = {s: float(np.median([r["stages_us"][s] for r in runs]))
              for s in STAGES if all(s in r["stages_us"] for r in runs)}
    out: dict[str, Any] = {"fps": float(np.median(fps)), "fps_min": min(fps),
                           "fps_max": max(fps), "runs": len(runs), "stages_us": stages,
                           "peak_rss_mb": max(r["peak_rss_kb"] for r in runs) / 1024}
    for key in ("latency_ms", "invoke_ms", "cpu_us_per_result", "threads_us_per_result",
                "cascade_us"):
        if all(key in r for r in runs):
            # A thread that started during a run (a reload's new capture thread) is in some only.
            out[key] = {p: float(np.median([r[key].get(p, 0.0) for r in runs]))
                        for p in runs[0][key]}
    return out


def summarize_run(received: list[tuple[float, bytes]]) -> dict[str, Any]:
    """results/s, latency percentiles and mean stage times from one run's results."""
    times = np.array([t for t, _ in received])
    docs = [orjson.loads(p) for _, p in received]
    latency_ms = np.array([(t - d["captured_at"]) * 1000 for (t, _), d in zip(
        received, docs, strict=True)])
    publish_us = np.array([(t - d["published_at"]) * 1e6 for (t, _), d in zip(
        received, docs, strict=True)])
    timing = {k: np.array([d["timings_us"].get(k, 0) for d in docs], dtype=np.float64)
              for k in ("preprocess", "quantize", "invoke", "dequantize", "decode")}
    span = float(times[-1] - times[0]) if len(times) > 1 else 0.0
    out: dict[str, Any] = {
        "frames": len(received),
        "fps": (len(received) - 1) / span if span > 0 else 0.0,
        "stages_us": {"resize": timing["preprocess"].mean(), "quantize": timing["quantize"].mean(),
                      "invoke": timing["invoke"].mean(), "dequantize": timing["dequantize"].mean(),
                      "decode": timing["decode"].mean(), "publish": float(publish_us.mean())},
        "latency_ms": {f"p{q}": float(np.percentile(latency_ms, q)) for q in (50, 95, 99)},
        "invoke_ms": {f"p{q}": float(np.percentile(timing["invoke"], q)) / 1000
                      for q in (50, 95, 99)},
    }
    # A cascade's: cutting a frame's crops, the worker quantizing and classifying them.
    cascade = {k: float(np.mean([d["timings_us"][k] for d in docs]))
               for k in ("crop", "classify") if all(k in d["timings_us"] for d in docs)}
    if cascade:
        out["cascade_us"] = cascade
    return out
