#!/usr/bin/env python3
"""Push one signed model update to many devices and follow the rollout (docs/fleet.md).

    edged sign-model --key update.pem --version birds-v2 --golden feeder.png \\
        --label-id 14 --score 0.91 birds_v2.tflite --out birds-v2.bundle > birds-v2.json
    scripts/push_model.py --host broker.local birds-v2.json birds-v2.bundle pi-1 pi-2 pi-3
    scripts/push_model.py --host broker.local --fleet birds-v2.json birds-v2.bundle

Named devices: the announcement goes to each on edged/<device>/cmd/model. With
--fleet it goes once, retained, on edged/fleet/model, where every device taking
updates reads it, now or when it next connects. Either way a device answers on
its own edged/<device>/cmd/model/result: "receiving" once it has checked the
signature (then this script sends it the chunks on edged/<device>/cmd/model/chunk,
QoS 1), then "trial" (swapped in) or "rejected", then "accepted" or
"rolled_back"; "current" when it runs the update already, "declined" when it
rolled it back before. Each answer is printed as it comes. It exits when every
named device has settled, or after --wait seconds: 0 when every named device
accepted (with --fleet and no names, when none failed).
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

FAILED = {"rejected", "rolled_back", "incomplete", "declined"}
SETTLED = FAILED | {"accepted", "current"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("announcement", type=Path)
    p.add_argument("bundle", type=Path)
    p.add_argument("devices", nargs="*")
    p.add_argument("--fleet", action="store_true",
                   help="announce once, retained, to every device (edged/fleet/model)")
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--prefix", default="edged")
    p.add_argument("--username", default="")
    p.add_argument("--password", default="")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--wait", type=float, default=600.0, help="seconds to follow the rollout")
    args = p.parse_args()
    if not args.devices and not args.fleet:
        p.error("name the devices, or use --fleet")
    doc: dict[str, Any] = json.loads(args.announcement.read_text())
    bundle = args.bundle.read_bytes()
    size = int(doc.get("chunk_size", 65536))
    answers: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        answer = json.loads(msg.payload)
        if answer.get("version") == doc["version"]:
            answers.put((msg.topic.split("/")[-4], answer))

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edged-push-{time.time_ns()}")
    if args.username:
        client.username_pw_set(args.username, args.password)
    if args.tls:
        client.tls_set()
    client.on_message = on_message
    client.connect(args.host, args.port)
    client.loop_start()
    client.subscribe(f"{args.prefix}/+/cmd/model/result", qos=1)
    time.sleep(0.5)
    payload = json.dumps(doc)
    if args.fleet:
        client.publish(f"{args.prefix}/fleet/model", payload, qos=1, retain=True)
    else:
        for device in args.devices:
            client.publish(f"{args.prefix}/{device}/cmd/model", payload, qos=1)
    states: dict[str, str] = {}
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        if args.devices and all(states.get(d) in SETTLED for d in args.devices):
            break
        try:
            device, answer = answers.get(timeout=min(1.0, max(deadline - time.monotonic(), 0)))
        except queue.Empty:
            continue
        state = str(answer.get("state") or ("" if answer.get("ok") else "rejected"))
        states[device] = state
        print(f"{device}: {state}" + (f" ({answer['error']})" if answer.get("error") else ""),
              flush=True)
        if state == "receiving":  # the device checked the signature: the bytes now
            base = f"{args.prefix}/{device}/cmd/model/chunk"
            for i in range(0, len(bundle), size):
                client.publish(base, (i // size).to_bytes(4, "big") + bundle[i:i + size], qos=1)
    client.loop_stop()
    for device in args.devices:
        print(f"{device}: {states.get(device, 'no answer')}")
    if args.devices:
        return 0 if all(states.get(d) in ("accepted", "current") for d in args.devices) else 1
    return 1 if any(s in FAILED for s in states.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
