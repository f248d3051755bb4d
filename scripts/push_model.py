#!/usr/bin/env python3
"""Push one signed model update to many devices and follow the rollout (docs/fleet.md).

    edged sign-model --key update.pem --version birds-v2 --golden feeder.png \\
        --label-id 14 --score 0.91 birds_v2.tflite --out birds-v2.bundle > birds-v2.json
    scripts/push_model.py --host broker.local birds-v2.json birds-v2.bundle pi-1 pi-2 pi-3

For each device it publishes the announcement on edged/<device>/cmd/model, then,
once the device answers "receiving" (it has checked the signature), the chunks on
edged/<device>/cmd/model/chunk (QoS 1), and prints each answer from
edged/<device>/cmd/model/result as it comes: receiving, then trial (swapped in)
or rejected, then accepted or rolled_back. It exits when every device has
settled, or after --wait seconds: 0 when every device accepted, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

SETTLED = {"accepted", "rejected", "rolled_back"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("announcement", type=Path)
    p.add_argument("bundle", type=Path)
    p.add_argument("devices", nargs="+")
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--prefix", default="edged")
    p.add_argument("--username", default="")
    p.add_argument("--password", default="")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--wait", type=float, default=600.0, help="seconds to follow the rollout")
    p.add_argument("--settle", default="accepted", choices=("trial", "accepted"),
                   help="the state a device must reach to count as done")
    args = p.parse_args()
    doc: dict[str, Any] = json.loads(args.announcement.read_text())
    bundle = args.bundle.read_bytes()
    size = int(doc.get("chunk_size", 65536))
    states: dict[str, str] = {}
    done = threading.Condition()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        device = msg.topic.split("/")[-4]
        answer = json.loads(msg.payload)
        if answer.get("version") != doc["version"]:
            return
        print(f"{device}: {answer.get('state')}"
              + (f" ({answer['error']})" if answer.get("error") else ""), flush=True)
        with done:
            states[device] = str(answer.get("state"))
            done.notify()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edged-push-{time.time_ns()}")
    if args.username:
        client.username_pw_set(args.username, args.password)
    if args.tls:
        client.tls_set()
    client.on_message = on_message
    client.connect(args.host, args.port)
    client.loop_start()
    for device in args.devices:
        client.subscribe(f"{args.prefix}/{device}/cmd/model/result", qos=1)
    time.sleep(0.5)
    deadline = time.monotonic() + args.wait
    for device in args.devices:
        # The announcement first; the chunks once the device says it is receiving (it
        # checks the signature first, and takes no chunk before).
        base = f"{args.prefix}/{device}/cmd/model"
        client.publish(base, json.dumps(doc), qos=1).wait_for_publish(30)
        with done:
            done.wait_for(lambda d=device: d in states, timeout=30)  # type: ignore[misc]
        if states.get(device) != "receiving":
            continue
        for i in range(0, len(bundle), size):
            index = (i // size).to_bytes(4, "big")
            client.publish(f"{base}/chunk", index + bundle[i:i + size], qos=1)
    wanted = SETTLED | {args.settle}
    with done:
        while (len([d for d in args.devices if states.get(d) in wanted]) < len(args.devices)
               and time.monotonic() < deadline):
            done.wait(deadline - time.monotonic())
    client.loop_stop()
    ok = all(states.get(d) == args.settle for d in args.devices)
    for device in args.devices:
        print(f"{device}: {states.get(device, 'no answer')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
