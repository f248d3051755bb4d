"""Running figures for the stats topic, STATUS= and the Prometheus textfile.

The pipeline thread records; the housekeeping thread reads a snapshot. A
fixed-size ring keeps memory flat however long the daemon runs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

WINDOW = 512  # frames the percentiles and fps are computed over


@dataclass(frozen=True, slots=True)
class StageTimes:
    """Microseconds spent in each stage for one frame."""

    capture_age: int = 0
    preprocess: int = 0
    quantize: int = 0
    invoke: int = 0
    dequantize: int = 0
    decode: int = 0
    encode: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "capture_age": self.capture_age, "preprocess": self.preprocess,
            "quantize": self.quantize, "invoke": self.invoke,
            "dequantize": self.dequantize, "decode": self.decode, "encode": self.encode,
        }


class Stats:
    """`parent`: figures this one's frames count towards too (a camera's, the device's)."""

    def __init__(self, parent: Stats | None = None) -> None:
        self.parent = parent
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._done_at: deque[float] = deque(maxlen=WINDOW)
        self._invoke_us: deque[int] = deque(maxlen=WINDOW)
        self._latency_us: deque[int] = deque(maxlen=WINDOW)
        self.frames = 0
        self.last_frame_mono = 0.0

    def record(self, times: StageTimes, latency_us: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.frames += 1
            self.last_frame_mono = now
            self._done_at.append(now)
            self._invoke_us.append(times.invoke)
            self._latency_us.append(latency_us)
        if self.parent is not None:
            self.parent.record(times, latency_us)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            done = list(self._done_at)
            invoke = np.asarray(self._invoke_us, dtype=np.float64)
            latency = np.asarray(self._latency_us, dtype=np.float64)
            frames = self.frames
        now = time.monotonic()
        fps = 0.0
        # Only count a window that is still current: a stalled pipeline shows 0 fps.
        recent = [t for t in done if now - t <= 10.0]
        if len(recent) >= 2 and recent[-1] > recent[0]:
            fps = (len(recent) - 1) / (recent[-1] - recent[0])

        def pct(a: np.ndarray, q: float) -> float:
            return round(float(np.percentile(a, q)) / 1000.0, 3) if a.size else 0.0

        return {
            "frames": frames,
            "fps": round(fps, 2),
            "invoke_ms_p50": pct(invoke, 50),
            "invoke_ms_p95": pct(invoke, 95),
            "latency_ms_p50": pct(latency, 50),
            "latency_ms_p95": pct(latency, 95),
            "uptime_s": round(now - self._started, 1),
        }
