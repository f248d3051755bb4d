#!/usr/bin/env python3
"""Where a result's latency goes: capture -> published_at (the daemon) and
published_at -> receipt (the MQTT path), with a C receiver that stamps receipt
itself (`mosquitto_sub -F %U`), plus CPU per result of each process and of each
of the daemon's threads (by the names they give the kernel).

    python scripts/latency_split.py --fps 30 --results 600
    python scripts/latency_split.py --fps 30 --broker-nagle      # mosquitto's default
    python scripts/latency_split.py --fps 550 --results 3000 --qos 0

The figures of BENCHMARKS.md's second round came from this: the broker's
Nagle (p99 10.7 ms -> 0.96 ms), and QoS 0 at saturation.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from edged.bench.command import BENCH_MNV2
from edged.bench.daemon import DaemonSpec, daemon_config, worker_pid
from edged.bench.procstat import (
    cpu_seconds,
    sleep_wake_us,
    thread_cpu_seconds,
    thread_switches,
)
from edged.mqtt.broker import find_mosquitto, start_private_mosquitto
from edged.system.childproc import stop_process

SKIP = 30  # results while the daemon warms up


def percentiles(a: np.ndarray) -> str:
    return " ".join(f"p{q} {np.percentile(a, q):6.2f}" for q in (50, 90, 99)) + \
        f"  max {a.max():6.2f} ms"


def _end_receiver_if_dead(daemon: subprocess.Popen[bytes],
                          receiver: subprocess.Popen[bytes]) -> None:
    daemon.wait()
    receiver.terminate()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(BENCH_MNV2))
    ap.add_argument("--fps", type=float, default=30.0, help="frames offered per second")
    ap.add_argument("--results", type=int, default=600)
    ap.add_argument("--qos", type=int, choices=(0, 1), default=1)
    ap.add_argument("--broker-nagle", action="store_true",
                    help="leave mosquitto's set_tcp_nodelay at its default (false)")
    args = ap.parse_args()
    mosquitto = find_mosquitto()
    if mosquitto is None:
        sys.exit("latency_split: mosquitto is not installed (scripts/setup.sh)")
    with tempfile.TemporaryDirectory(prefix="edged-latency-") as tmp:
        try:
            broker, port = start_private_mosquitto(mosquitto, Path(tmp), nagle=args.broker_nagle)
        except RuntimeError as exc:
            sys.exit(f"latency_split: {exc}")
        receiver = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-t",
                                     "edged/bench/results", "-F", "%U %p"],
                                    stdout=subprocess.PIPE)
        # Absolute: the daemon resolves a relative path against its config's folder.
        spec = DaemonSpec(model=str(Path(args.model).resolve()), threads=2,
                          source_size=(224, 224), fps=args.fps, qos_results=args.qos)
        (Path(tmp) / "d.toml").write_text(daemon_config(spec, port))
        with open(Path(tmp) / "d.log", "wb") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "edged", "run", "--config",
                                       f"{tmp}/d.toml"], stdout=log, stderr=subprocess.STDOUT)
        rows: list[tuple[float, dict[str, Any]]] = []
        cpu0: dict[str, float] = {}
        # A daemon that fails to start would leave the receiver waiting for ever.
        watchdog = threading.Thread(target=_end_receiver_if_dead, args=(daemon, receiver),
                                    daemon=True)
        watchdog.start()
        try:
            assert receiver.stdout is not None
            for n, line in enumerate(receiver.stdout):
                if n == SKIP:
                    pids = {"daemon": daemon.pid, "worker": worker_pid(daemon.pid),
                            "mosquitto": broker.pid, "receiver": receiver.pid}
                    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
                    threads0 = thread_cpu_seconds(daemon.pid)
                    wakes0 = thread_switches(daemon.pid)
                if n < SKIP:
                    continue
                stamp, _, payload = line.partition(b" ")
                rows.append((float(stamp), orjson.loads(payload)))
                if len(rows) >= args.results:
                    break
            if len(rows) < args.results:
                sys.exit("latency_split: edged run ended early: "
                         + (Path(tmp) / "d.log").read_text(errors="replace").strip()[-400:])
            cpu = {k: (cpu_seconds(p) - cpu0[k]) * 1e6 / len(rows) for k, p in pids.items()}
            threads = {k: (v - threads0.get(k, 0.0)) * 1e6 / len(rows)
                       for k, v in thread_cpu_seconds(daemon.pid).items()}
            wakes = {k: (v - wakes0.get(k, 0)) / len(rows)
                     for k, v in thread_switches(daemon.pid).items()}
        finally:
            stop_process(daemon, 15.0)
            stop_process(receiver, 5.0)
            stop_process(broker, 5.0)
    total = np.array([(t - d["captured_at"]) * 1e3 for t, d in rows])
    wire = np.array([(t - d["published_at"]) * 1e3 for t, d in rows])
    invoke = np.array([d["timings_us"]["invoke"] / 1e3 for _, d in rows])
    span = rows[-1][0] - rows[0][0]
    print(f"{len(rows)} results at {args.fps:g} frames/s offered, QoS {args.qos}, broker "
          f"{'with' if args.broker_nagle else 'without'} Nagle: {(len(rows) - 1) / span:.0f}/s")
    print("capture -> receipt       ", percentiles(total))
    print("capture -> published_at  ", percentiles(total - wire))
    print("published_at -> receipt  ", percentiles(wire))
    print("invoke                   ", percentiles(invoke))
    print(f"p99 - invoke p99 {np.percentile(total, 99) - np.percentile(invoke, 99):.2f} ms")
    print("CPU per result: " + ", ".join(f"{k} {v:.0f} us" for k, v in cpu.items()))
    # The clock tick is 10 ms: over a few thousand results, steps of a few us.
    print("daemon threads per result: " + ", ".join(
        f"{k} {v:.0f} us" for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v > 0))
    per_wake = sleep_wake_us(400, 0.002)
    total_wakes = sum(wakes.values())
    print("context switches per result: " + ", ".join(
        f"{k} {v:.2f}" for k, v in sorted(wakes.items(), key=lambda kv: -kv[1]) if v >= 0.01)
        + f"; together {total_wakes:.2f}")
    print(f"one sleep and wake-up of a Python thread here: {per_wake:.0f} us of CPU; "
          f"x {total_wakes:.2f} = {per_wake * total_wakes:.0f} us of the daemon's "
          f"{cpu['daemon']:.0f} us per result before any work")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
