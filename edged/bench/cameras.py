"""The `cameras` rows of `edged bench`: 1, 2, 4 and 8 cameras sharing one CPU worker.

Synthetic cameras at the model's input size, each offered the same rate
(together OFFER times the model's own rate, so the model is the bottleneck),
the interpreter on one thread so a core is left for the daemon's own threads
(capture per camera, pipeline, MQTT), the broker and the subscriber. Its
ratio is the aggregate results/s over a limit row run the same way (one
thread) and interleaved with it; its spread is (max - min) / mean of the
cameras' results in a run: how evenly the scheduler shares the model.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from edged.bench.daemon import MAX_SOURCE_FPS, BenchDaemon, DaemonSpec
from edged.bench.procs import RowProcess, aggregate
from edged.bench.rows import RowSpec

if TYPE_CHECKING:
    from pathlib import Path

    from edged.bench.command import Settings

COUNTS = (1, 2, 4, 8)
QUICK_COUNTS = (1, 2)
OFFER = 1.25  # all cameras together, times the limit row's frames/s
MODEL_BOUND_FPS = 1000.0
NOTE = ("cameras: N synthetic cameras sharing one worker, the interpreter on 1 thread; "
        "ratio = results/s of all cameras / the 1-thread limit; spread = (max - min) / mean "
        "of the cameras' results per run")


def spread(received: list[tuple[float, bytes]], cameras: int) -> float:
    """(max - min) / mean of each camera's results in one run (0: perfectly even)."""
    counts = Counter(orjson.loads(p).get("camera") for _, p in received)
    per = [counts.get(f"cam{i}", 0) for i in range(cameras)]
    mean = sum(per) / cameras
    return (max(per) - min(per)) / mean if mean else 1.0


def spread_figures(spreads: list[float]) -> dict[str, float]:
    """A cameras row's spread over its runs: the median and the worst."""
    return {"spread": float(np.median(spreads)), "spread_max": max(spreads)}


def cameras_section(s: Settings, model: Path, size: tuple[int, int], broker: Any,
                    notes: list[str]) -> list[dict[str, Any]]:
    h, w = size
    label = f"{w}x{h}, 1 thread, N cameras"
    limit = RowProcess(RowSpec("limit", str(model), 1, size, s.runtime, s.delegate))
    counts = QUICK_COUNTS if s.quick else COUNTS
    daemons: dict[int, BenchDaemon] = {}
    offered: dict[int, float] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        limit.run(max(20, s.frames // 4))  # warm-up
        limit_fps = limit.run(s.frames)["fps"]
        for n in counts:
            offered[n] = fps = min(MAX_SOURCE_FPS, max(OFFER * limit_fps / n, 1.0))
            daemons[n] = BenchDaemon(DaemonSpec(str(model), 1, size, fps, s.runtime, s.delegate,
                                                cameras=n, client_id=f"edged-bench-{n}"),
                                     broker[0], broker[1],
                                     f"{model.stem}-cameras{n}")
            daemons[n].warm_up(s.frames)  # paused after
        for _ in range(s.runs):
            runs.setdefault("limit", []).append(limit.run(s.frames))
            for n, daemon in daemons.items():
                run, received = daemon.run(s.frames)
                run["spread"] = spread(received, n)
                runs.setdefault(f"cameras{n}", []).append(run)
    finally:
        limit.close()
        for daemon in daemons.values():
            daemon.stop()
    rows = [{"model": model.name, "source": label, "row": "limit", "title": "limit, 1 thread",
             **aggregate(runs["limit"])}]
    for n in counts:
        agg = aggregate(runs[f"cameras{n}"])
        rows.append({"model": model.name, "source": label, "row": "cameras",
                     "title": f"{n} camera{'s' if n > 1 else ''}", "cameras": n, **agg,
                     **spread_figures([r["spread"] for r in runs[f"cameras{n}"]]),
                     "offered_fps": offered[n] * n,
                     # Beyond ~1000 results/s the MQTT path, not the shared model, is the
                     # bound (the committed digits model): no target then.
                     "model_bound": limit_fps < MODEL_BOUND_FPS})
    for r in rows:
        r["ratio"] = r["fps"] / rows[0]["fps"] if rows[0]["fps"] else None
    notes.append(NOTE)
    return rows
