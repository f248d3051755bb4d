#!/usr/bin/env python3
"""What a result's Python costs when it runs once per frame, not in a loop.

The daemon's threads wake once or more per result, each runs its part of the
result and sleeps again. Measured here, in one process, on this machine:

* a sleep and wake-up: a C `nanosleep` loop is not available from Python, so a
  `time.sleep` loop (its CPU per wake-up), and a thread woken by a Condition;
* the same work hot (back to back) and cold (one every `--interval` ms, as a
  camera's frames come): edged's Publisher front + paho publishing one result
  at QoS 1 to a private mosquitto, and `dequantize` + `encode_result_json` of a
  [1,1001] output.

    python scripts/cold_cost.py                  # 10 ms apart (100 frames/s)
    python scripts/cold_cost.py --interval 33

The ratio cold/hot is what a per-result micro-benchmark leaves out: after a
sleep the caches and branch predictors hold other threads' and the
interpreter's work, and Python's dispatch pays for it on every bytecode.
"spun" is the same interval spent busy instead of asleep (no idle between
calls), which separates what the idle costs from what time alone does.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edged.bench.procstat import sleep_wake_us
from edged.mqtt.broker import find_mosquitto, start_private_mosquitto
from edged.mqtt.payload import Result, encode_result_json, outputs_from
from edged.numerics.quantize import dequantize
from edged.numerics.tensors import TensorInfo
from edged.system.childproc import stop_process


def per_call_us(work: Callable[[], None], n: int, interval_s: float, *,
                spin: bool = False) -> float:
    """CPU per call of `work`, the time between calls left out (`interval_s` 0: back
    to back; `spin`: busy between calls instead of asleep, so no idle in between)."""
    total = 0.0
    for _ in range(n):
        if interval_s and spin:
            until = time.perf_counter() + interval_s
            while time.perf_counter() < until:
                pass
        elif interval_s:
            time.sleep(interval_s)
        t0 = time.thread_time()
        work()
        total += time.thread_time() - t0
    return total * 1e6 / n


def condition_wake_us(n: int, interval_s: float) -> float:
    cond, box, spent = threading.Condition(), [0], [0.0]

    def consumer() -> None:
        seen, t0 = 0, time.thread_time()
        while seen < n:
            with cond:
                while box[0] == seen:
                    cond.wait()
                seen = box[0]
        spent[0] = time.thread_time() - t0

    t = threading.Thread(target=consumer)
    t.start()
    for _ in range(n):
        time.sleep(interval_s)
        with cond:
            box[0] += 1
            cond.notify()
    t.join()
    return spent[0] * 1e6 / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval", type=float, default=10.0, help="ms between calls (cold)")
    ap.add_argument("-n", type=int, default=500)
    args = ap.parse_args()
    interval, n = args.interval / 1000, args.n
    print(f"a time.sleep and wake-up: {sleep_wake_us(n, interval):.0f} us of CPU; "
          f"a thread woken by a Condition: {condition_wake_us(n, interval):.0f} us")
    info = TensorInfo(0, "logits", (1, 1001), np.uint8, scales=(0.1,), zero_points=(10,))
    raw = np.random.default_rng(0).integers(0, 255, (1, 1001), dtype=np.uint8)

    def encode() -> None:
        floats = dequantize(raw, info)
        encode_result_json(Result("cam", 1, time.time(), "m.tflite", "cpu",
                                  outputs_from([info], [floats]), {"invoke": 1}))

    rows = [("dequantize + encode_result_json [1,1001]", encode)]
    mosquitto = find_mosquitto()
    with tempfile.TemporaryDirectory() as tmp:
        broker = None
        if mosquitto is not None:
            broker, port = start_private_mosquitto(mosquitto, Path(tmp))
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cold-cost")
            client.connect("127.0.0.1", port)
            for _ in range(20):
                client.loop(0.02)
            payload = b'{"seq": 1, "outputs": "' + b"x" * 3000 + b'"}'

            def publish() -> None:
                client.publish("edged/cold/results", payload, qos=1)
                client.loop_write()
                client.loop_read()  # the previous result's PUBACK, by now

            rows.append(("paho publish QoS 1 + write + read an ack", publish))
        try:
            print(f"{'work':<44}{'hot us':>8}{'cold us':>9}{'cold/hot':>9}{'spun us':>9}"
                  f"   (cold: one every {args.interval:g} ms asleep; spun: busy between)")
            for name, work in rows:
                per_call_us(work, 50, 0.0)  # warm-up
                hot = per_call_us(work, n * 4, 0.0)
                cold = per_call_us(work, n, interval)
                spun = per_call_us(work, max(n // 5, 1), interval, spin=True)
                print(f"{name:<44}{hot:>8.1f}{cold:>9.1f}{cold / hot:>9.1f}{spun:>9.1f}")
        finally:
            if broker is not None:
                stop_process(broker, 5.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
