"""An in-process row in a child process of its own, and the medians over a row's runs.

Shared by `edged bench`'s groups (edged.bench.command) and its sections
(accelerator, cameras).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np

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
    for key in ("latency_ms", "invoke_ms", "cpu_us_per_result", "threads_us_per_result"):
        if all(key in r for r in runs):
            # A thread that started during a run (a reload's new capture thread) is in some only.
            out[key] = {p: float(np.median([r[key].get(p, 0.0) for r in runs]))
                        for p in runs[0][key]}
    return out
