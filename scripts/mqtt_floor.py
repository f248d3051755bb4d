#!/usr/bin/env python3
"""The floor under `edged bench`'s daemon row: a bare invoke loop that hands each
result to MQTT tools written in C, beside the same loop alone.

No edged daemon here. After every invoke the loop writes one result payload
(edged's own JSON of that model's dequantized outputs, or a short line) to
`mosquitto_pub -l` through a pipe; mosquitto_pub publishes it at the chosen QoS
to a private mosquitto on 127.0.0.1 and `mosquitto_sub` receives it into
/dev/null. That is the least any daemon must add per result to publish it
over a broker with its subscriber on the same machine: one pipe write, a C
client, the broker, a C subscriber. Its ratio to the loop alone bounds what
`edged daemon / limit` can reach on this machine. (On a model faster than the C
tools, the digits model, the pipe fills and the loop runs at their pace instead.)

    python scripts/mqtt_floor.py [--model M] [--seconds 8] [--runs 3] [--qos 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edged.bench.command import BENCH_MNV2
from edged.bench.procstat import cpu_seconds
from edged.inference.delegates import DelegateSpec
from edged.inference.model import Model
from edged.inference.runtime import select_runtime
from edged.mqtt.broker import find_mosquitto, start_private_mosquitto
from edged.mqtt.payload import Result, encode_result_json, outputs_from
from edged.system.childproc import stop_process


def result_line(model: Model) -> bytes:
    """This model's result as edged publishes it (JSON has no raw newline)."""
    model.invoke()
    doc = encode_result_json(Result("floor", 1, time.time(), "m.tflite", "cpu",
                                    outputs_from(model.outputs, model.dequantized_outputs()),
                                    {"invoke": 1900}))
    assert b"\n" not in doc
    return doc + b"\n"


def loop(model: Model, seconds: float, out: int | None, line: bytes) -> tuple[float, int]:
    """Invokes/s over `seconds`; after each invoke, `line` to the pipe `out`."""
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        model.invoke()
        if out is not None:
            os.write(out, line)
        n += 1
    return n / (time.perf_counter() - t0), n


def paho_cpu_us(port: int, payload: bytes, qos: int, n: int = 5000) -> float:
    """CPU per message of paho alone: `publish()`, `loop_write()` and reading the acks,
    in a tight loop on this thread (for scale against the daemon's MQTT thread)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    # MQTT 3.1.1, as edged's default.
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edged-floor-paho")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    while not client.is_connected():
        client.loop(0.1)
    cpu0 = time.process_time()
    for i in range(n):
        client.publish("floor/paho", payload, qos=qos)  # not to the subscriber
        client.loop_write()
        if i % 50 == 0:
            client.loop_read()
    cpu = time.process_time() - cpu0
    client.disconnect()
    return cpu / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(BENCH_MNV2))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    ap.add_argument("--runs", type=int, default=3, help="alternating runs of each")
    ap.add_argument("--qos", type=int, choices=(0, 1), default=1)
    args = ap.parse_args()
    mosquitto = find_mosquitto()
    if mosquitto is None:
        sys.exit("mqtt_floor: mosquitto is not installed (scripts/setup.sh)")
    model = Model.load(args.model, select_runtime("auto"),
                       DelegateSpec(kind="cpu", num_threads=args.threads, fallback="fail"))
    full = result_line(model)
    short = b'{"top":[[653,0.87]]}\n'
    with tempfile.TemporaryDirectory(prefix="edged-floor-") as tmp:
        try:
            broker, port = start_private_mosquitto(mosquitto, Path(tmp))
        except RuntimeError as exc:
            sys.exit(f"mqtt_floor: {exc}")
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-t", "floor", "-q",
                                str(args.qos)], stdout=subprocess.DEVNULL)
        pub = subprocess.Popen(["mosquitto_pub", "-p", str(port), "-t", "floor", "-q",
                                str(args.qos), "-l"], stdin=subprocess.PIPE)
        assert pub.stdin is not None
        pipe = pub.stdin.fileno()
        pids = {"mosquitto_pub": pub.pid, "mosquitto": broker.pid, "mosquitto_sub": sub.pid}
        rows: dict[str, list[float]] = {"alone": [], "short": [], "full": []}
        cpu: dict[str, dict[str, list[float]]] = {"short": {}, "full": {}}
        try:
            loop(model, 1.0, pipe, full)  # warm-up, the C tools included
            time.sleep(0.5)
            for _ in range(args.runs):
                for name, line in (("alone", None), ("short", short), ("full", full)):
                    before = {k: cpu_seconds(p) for k, p in pids.items()}
                    rate, n = loop(model, args.seconds, None if line is None else pipe,
                                   line or b"")
                    time.sleep(0.3)  # let the tools finish this run's messages
                    rows[name].append(rate)
                    if line is not None:
                        for k, p in pids.items():
                            cpu[name].setdefault(k, []).append(
                                (cpu_seconds(p) - before[k]) * 1e6 / n)
            paho = paho_cpu_us(port, full.rstrip(b"\n"), args.qos)
        finally:
            stop_process(pub, 5.0)
            stop_process(sub, 5.0)
            stop_process(broker, 5.0)
    alone = float(np.median(rows["alone"]))
    print(f"{Path(args.model).name}, {args.threads} threads, QoS {args.qos}, "
          f"{args.runs} x {args.seconds:g} s each, medians (min-max)")
    print(f"{'loop':34} {'invokes/s':>16}  ratio   CPU per result (us)")
    labels = {"alone": "bare invoke loop",
              "short": f"+ C MQTT path, {len(short) - 1} B result",
              "full": f"+ C MQTT path, {len(full) - 1} B result"}
    for name, rates in rows.items():
        med = float(np.median(rates))
        extra = ", ".join(f"{k} {np.median(v):.0f}" for k, v in cpu.get(name, {}).items())
        print(f"{labels[name]:34} {med:7.1f} ({min(rates):.0f}-{max(rates):.0f})"
              f"  {med / alone:5.2f}   {extra}")
    print(f"paho alone (publish, loop_write and acks in a tight loop, QoS {args.qos}): "
          f"{paho:.0f} us of CPU per {len(full) - 1} B result")
    return 0


if __name__ == "__main__":
    sys.exit(main())
