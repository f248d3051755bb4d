"""`edged demo`: the daemon on the bundled digits model and frames, results printed live.

Starts a private mosquitto on a free loopback port (nothing is exposed beyond
127.0.0.1), or, when mosquitto is not installed, amqtt (a maintained
pure-Python broker, the optional extra `edged[demo]`, also loopback only), or
says how to install one; runs `edged run` as a real child process against it,
subscribes, prints each result as it arrives, then stops everything cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from edged.mqtt import broker
from edged.system.childproc import stop_process

DATA = Path(__file__).resolve().parent / "data"
BROKER_ENV = "EDGED_DEMO_BROKER"
BROKER_HELP = (f"environment: {BROKER_ENV}=auto|mosquitto|amqtt chooses the broker: auto "
               "(default) runs mosquitto when installed, else amqtt (pip install "
               "'edged[demo]'); both listen on 127.0.0.1 only.")
INSTALL_HELP = ("no MQTT broker to run the demo against: install mosquitto "
                "(sudo apt-get install mosquitto, or scripts/setup.sh), or the pure-Python "
                "amqtt (.venv/bin/pip install 'edged[demo]')")


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the daemon on the bundled model and print results",
                       description=__doc__.split("\n\n")[0], epilog=BROKER_HELP)
    p.add_argument("--count", type=int, default=20, help="results to print before stopping")
    p.add_argument("--fps", type=float, default=5.0, help="frames per second to infer")
    p.set_defaults(handler=_demo)


def _start_broker(tmp: Path, stack: contextlib.ExitStack) -> int | None:
    """Port of a private loopback broker that `stack` stops, or None (reason
    printed). Prints the demo's first line: which broker it uses."""
    choice = os.environ.get(BROKER_ENV, "auto")
    if choice not in ("auto", "mosquitto", "amqtt"):
        print(f"edged demo: {BROKER_ENV}={choice!r}: must be auto, mosquitto or amqtt",
              file=sys.stderr)
        return None
    mosquitto = broker.find_mosquitto() if choice in ("auto", "mosquitto") else None
    wants_amqtt = choice == "amqtt" or (choice == "auto" and not mosquitto)
    amqtt = broker.find_amqtt() if wants_amqtt else None
    try:
        if mosquitto is not None:
            proc, port = broker.start_private_mosquitto(mosquitto, tmp)
            name = "private mosquitto"
        elif amqtt is not None:
            proc, port = broker.start_private_amqtt(amqtt, tmp)
            name = "private amqtt (pure-Python, demo only)"
        else:
            print(f"edged demo: {INSTALL_HELP}", file=sys.stderr)
            return None
    except RuntimeError as exc:
        print(f"edged demo: {exc}", file=sys.stderr)
        return None
    stack.callback(stop_process, proc, 5.0)
    print(f"broker: {name} on 127.0.0.1:{port}", flush=True)
    return port


def demo_config(port: int, fps: float) -> str:
    return f"""\
# Written by `edged demo`.
[device]
id = "demo"
[source]
kind = "folder"
uri = "{DATA / 'frames'}"
loop = true
fps = {fps}
[model]
path = "{DATA / 'digits_int8.tflite'}"
labels = "{DATA / 'digits_labels.txt'}"
[inference]
num_threads = 1
[mqtt]
host = "127.0.0.1"
port = {port}
[output]
decoder = "classification"
top_k = 3
min_score = 0.05
stats_interval_s = 5
"""


def _print_result(payload: bytes | bytearray) -> None:
    doc = orjson.loads(payload)
    lat = (doc["published_at"] - doc["captured_at"]) * 1000
    top = ", ".join(f"{c['label']} {c['score']:.3f}" for c in (doc.get("decoded") or {})
                    .get("classes", []))
    out = doc["outputs"][0]
    floats = " ".join(f"{v:.4f}" for v in out["data"][0])
    print(f"seq {doc['seq']:>4}  {lat:6.1f} ms  top: {top}\n"
          f"          {out['name']} {out['dtype']} {out['quantization']['kind']} "
          f"-> floats [{floats}]", flush=True)


def _demo(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    with (tempfile.TemporaryDirectory(prefix="edged-demo-") as tmp,
          contextlib.ExitStack() as stack):
        port = _start_broker(Path(tmp), stack)
        if port is None:
            return 1
        daemon: subprocess.Popen[bytes] | None = None
        try:
            got = threading.Semaphore(0)
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edged-demo-sub")

            def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
                if msg.topic.endswith("/results"):
                    _print_result(msg.payload)
                    got.release()
                elif msg.topic.endswith("/status"):
                    print(f"status: {orjson.loads(msg.payload)['state']}", flush=True)

            client.on_message = on_message
            client.connect("127.0.0.1", port)
            client.subscribe("edged/demo/#", qos=1)
            client.loop_start()
            cfg = Path(tmp) / "edged.toml"
            cfg.write_text(demo_config(port, args.fps))
            print(f"daemon: edged run --config {cfg}", flush=True)
            daemon = subprocess.Popen([sys.executable, "-m", "edged", "run", "--config",
                                       str(cfg)])
            for _ in range(args.count):
                if not got.acquire(timeout=30) or daemon.poll() is not None:
                    print("edged demo: no result within 30 s", file=sys.stderr)
                    return 1
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(10)
            time.sleep(0.3)  # let the explicit `offline` arrive
            client.loop_stop()
            print(f"daemon stopped cleanly (exit {code})" if code == 0 else
                  f"daemon exited with {code}", flush=True)
            return 0 if code == 0 else 1
        except KeyboardInterrupt:
            return 130
        finally:
            if daemon is not None:
                stop_process(daemon, 10.0)
