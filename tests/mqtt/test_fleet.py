"""Fleet scale with real brokers: device ids everywhere, MQTT 5 shared
subscriptions, reconnect jitter, and a mosquitto bridge to a central broker
that survives the central broker going away."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from broker import Mosquitto, Subscriber
from daemon_helpers import MODELS, DaemonProcess, base_config, write_config
from fleet_helpers import copy_frames

from edged.mqtt.publisher import Publisher, PublisherSettings


@contextlib.contextmanager
def daemons(tmp_path: Path, ports: dict[str, int], **overrides: Any
            ) -> Iterator[dict[str, DaemonProcess]]:
    """One real `edged run` per device id, each publishing to its own broker port."""
    frames = copy_frames(tmp_path / "frames")
    running: dict[str, DaemonProcess] = {}
    try:
        for device, port in ports.items():
            cfg = base_config(port, model=MODELS / "digits_int8.tflite", frames=frames,
                              device=device, **overrides)
            cfg["source"]["fps"] = 10.0  # two daemons share two busy cores
            running[device] = DaemonProcess(write_config(tmp_path / f"{device}.toml", cfg))
        yield running
    finally:
        for d in running.values():
            d.stop()


def seqs(sub: Subscriber, device: str) -> list[int]:
    return [orjson.loads(m.payload)["seq"] for m in sub.on(f"/{device}/results")]


def test_every_topic_and_payload_names_its_device_and_a_shared_group_splits_results(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    everything = Subscriber(mosquitto.port, "edged/#").start()
    group = [Subscriber(mosquitto.port, "$share/consumers/edged/+/results",
                        protocol=mqtt.MQTTv5).start() for _ in range(2)]
    with daemons(tmp_path, {"pi-a": mosquitto.port}) as running:
        everything.wait_count(lambda m: m.topic.endswith("/results"), 20, timeout=40)
        everything.wait_for(lambda m: m.topic.endswith("/stats"), timeout=20)
        got = [{orjson.loads(m.payload)["seq"] for m in g.messages} for g in group]
        assert running["pi-a"].proc.poll() is None
    for g in group:
        g.stop()
    everything.stop()
    for m in everything.messages:
        level = m.topic.split("/")[1]
        assert level == "pi-a", m.topic
        assert orjson.loads(m.payload)["device_id"] == "pi-a", m.topic
    # Each result went to exactly one member of the group, and both had a share.
    assert got[0] and got[1], [len(s) for s in got]
    assert not got[0] & got[1]
    assert len(got[0]) + len(got[1]) >= 15
    assert "as edged-pi-a" in mosquitto.log_text()  # the client id names the device


def test_reconnect_jitter_spreads_a_fleet_coming_back_after_an_outage(
        mosquitto: Mosquitto) -> None:
    fleet = [Publisher(PublisherSettings(device_id=f"dev-{i}", port=mosquitto.port,
                                         backoff_min_s=0.4, backoff_max_s=3.0,
                                         keepalive_s=5, connect_timeout_s=2.0))
             for i in range(8)]
    for p in fleet:
        p.start()
    try:
        assert all(p.wait_connected(10) for p in fleet)
        mosquitto.stop()
        time.sleep(3.0)
        mosquitto.start()
        back: dict[int, float] = {}
        deadline = time.monotonic() + 20
        while len(back) < len(fleet) and time.monotonic() < deadline:
            for i, p in enumerate(fleet):
                if i not in back and p.counters().connects >= 2:
                    back[i] = time.monotonic()
            time.sleep(0.005)
        assert len(back) == len(fleet), "every device reconnects"
        # Without jitter all eight would retry on the same schedule and arrive
        # within a few milliseconds of each other.
        assert max(back.values()) - min(back.values()) > 0.2, sorted(back.values())
    finally:
        for p in fleet:
            p.stop()


def bridge(central: int, name: str) -> str:
    """The device broker's bridge to the central one (as in docs/fleet.md)."""
    return "\n".join([
        f"connection central-{name}",
        f"address 127.0.0.1:{central}",
        f"remote_clientid bridge-{name}",  # unique per device broker
        "topic edged/# out 1",
        "cleansession false",
        "restart_timeout 1 2",
        "keepalive_interval 5",
        "bridge_protocol_version mqttv311",
        "notifications false",
    ])


def test_two_devices_reach_a_central_broker_through_bridges_and_survive_its_outage(
        tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]) -> None:
    central = mosquitto_factory()
    device_brokers = {name: mosquitto_factory(extra=bridge(central.port, name))
                      for name in ("pi-a", "pi-b")}
    sub = Subscriber(central.port, "edged/#").start()
    with daemons(tmp_path, {n: b.port for n, b in device_brokers.items()}) as running:
        for name in running:
            sub.wait_count(lambda m, n=name: m.topic == f"edged/{n}/results", 5, timeout=40)
        online = {orjson.loads(m.payload)["device_id"] for m in sub.on("/status")
                  if orjson.loads(m.payload)["state"] == "online"}
        assert online == {"pi-a", "pi-b"}

        central.stop()
        before = {n: max(seqs(sub, n)) for n in running}
        time.sleep(3.0)
        central.start()
        # The subscriber and both bridges reconnect by themselves; the daemons
        # never noticed (their own brokers stayed up) and carry on counting.
        for name in running:
            sub.wait_for(lambda m, n=name: m.topic == f"edged/{n}/results"
                         and orjson.loads(m.payload)["seq"] > before[n] + 5, timeout=40)
        for name, d in running.items():
            assert d.proc.poll() is None
            assert "connection lost" not in d.log_text(), name
    sub.stop()
    for b in device_brokers.values():
        assert "Connecting bridge" in b.log_text()
