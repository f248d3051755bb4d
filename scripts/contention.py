#!/usr/bin/env python3
"""Why per-frame work costs more than its length beside a multi-threaded invoke.

1. A bare invoke loop, alone and with one busy Python thread beside it
   (XNNPACK's threads meet at a barrier after every operator: preempting one
   stalls the other).
2. What small steps cost warm and right after an invoke (which evicts the
   caches): the Python the in-process row runs between invokes.
3. Whether the interpreter's pool threads spin after an invoke: their CPU
   while the caller sleeps, each read on its own thread's clock (the
   process-wide clock folds other threads' time in late and misleads here).

    python scripts/contention.py [--model build/models/mobilenetv2_224_int8.tflite]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable

import numpy as np

from edged.bench.command import BENCH_MNV2
from edged.inference.delegates import DelegateSpec
from edged.inference.model import Model
from edged.inference.runtime import select_runtime
from edged.sources.resilient import ResilientSource
from edged.sources.synthetic import SyntheticSource


def invokes_per_s(model: Model, n: int = 200) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        model.invoke()
    return n / (time.perf_counter() - t0)


def median_us(fn: Callable[[], object], before: Callable[[], object] | None, n: int = 300
              ) -> float:
    times = []
    for _ in range(n):
        if before is not None:
            before()
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1000


def thread_clock(tid: int) -> int:
    """The clock id of another thread's CPU time (Linux: CPUCLOCK_SCHED, per thread)."""
    return ((~tid) << 3) | 6


def pool_busy_after_invoke(model: Model, pause_s: float, n: int = 100) -> float:
    """Cores the process's other threads keep busy while the caller sleeps after an invoke."""
    me = threading.get_native_id()
    tids = [int(t) for t in os.listdir("/proc/self/task") if int(t) != me]
    busy = 0.0
    for _ in range(n):
        model.invoke()
        cpu0, wall0 = [time.clock_gettime(thread_clock(t)) for t in tids], time.perf_counter()
        time.sleep(pause_s)
        wall = time.perf_counter() - wall0
        busy += sum(time.clock_gettime(thread_clock(t)) - c
                    for t, c in zip(tids, cpu0, strict=True)) / wall
    return busy / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(BENCH_MNV2))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model = Model.load(args.model, select_runtime("auto"),
                       DelegateSpec(kind="cpu", num_threads=args.threads, fallback="fail"))
    model.invoke()
    alone = invokes_per_s(model)
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=busy)
    spinner.start()
    time.sleep(0.2)
    beside = invokes_per_s(model)
    stop.set()
    spinner.join()
    print(f"invokes/s, {args.threads} threads: alone {alone:.0f}, "
          f"beside one busy Python thread {beside:.0f}")

    source = ResilientSource(SyntheticSource((224, 224), fps=0))
    steps: dict[str, Callable[[], object]] = {
        "no-op call": lambda: None,
        "np.empty 150 KB": lambda: np.empty(150_528, np.uint8),
        "ResilientSource.read (synthetic 224x224)": source.read,
    }
    print(f"{'step':<42}{'warm us':>9}{'after an invoke us':>20}")
    for name, fn in steps.items():
        print(f"{name:<42}{median_us(fn, None):>9.2f}{median_us(fn, model.invoke):>20.2f}")
    print("pool threads while the caller sleeps after an invoke (cores busy): " + ", ".join(
        f"{pause * 1e6:.0f} us {pool_busy_after_invoke(model, pause):.2f}"
        for pause in (100e-6, 1e-3)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
