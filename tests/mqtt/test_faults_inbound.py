"""What other MQTT clients can make edged receive (issue 15.2), through the real daemon.

edged subscribes to two topics at most: Home Assistant's birth message when
discovery is on, and, when it is off, its own discovery topic once at start
(to remove a config an earlier run left). Anyone who may publish there can
send it anything: one retained 200 MB message took the daemon from 72 MB to
650 MB (OOM-killed inside the unit's MemoryMax=768M, after every start); a
flood of 20,000 small messages wrote 20,000 log lines, grew it by 22 MB and
paused results for 1.5 s.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from broker import HOST, Mosquitto, Subscriber
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, write_config
from faults_helpers import record_figure
from paho.mqtt.enums import CallbackAPIVersion

from edged.mqtt.discovery import discovery_topic

MODEL = MODELS / "digits_int8.tflite"
BIG = 200 * 1024 * 1024
MB = 1024 * 1024


def _kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def _publish(port: int, topic: str, payload: bytes, *, retain: bool = False, count: int = 1,
             qos: int = 0) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-{time.monotonic_ns()}")
    client.connect(HOST, port)
    client.loop_start()
    try:
        info = None
        for _ in range(count):
            while True:
                info = client.publish(topic, payload, qos=qos, retain=retain)
                if info.rc != mqtt.MQTT_ERR_QUEUE_SIZE:
                    break
                time.sleep(0.001)
        assert info is not None
        if qos:
            info.wait_for_publish(60)
        else:
            time.sleep(0.5)
    finally:
        client.disconnect()
        client.loop_stop()


def _config(tmp_path: Path, port: int, protocol: str, ha: bool) -> Path:
    cfg = base_config(port, model=MODEL, frames=FRAMES, device="cam1",
                      mqtt={"protocol": protocol}, homeassistant={"enabled": ha})
    return write_config(tmp_path / "edged.toml", cfg)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@pytest.mark.parametrize("ha", [False, True], ids=["ha_off", "ha_on"])
def test_a_huge_retained_message_is_refused_before_it_is_held(
        tmp_path: Path, mosquitto: Mosquitto, protocol: str, ha: bool) -> None:
    # Where each setting listens: off, its own discovery topic; on, HA's birth topic.
    topic = "homeassistant/status" if ha else discovery_topic("homeassistant", "cam1")
    _publish(mosquitto.port, topic, b"x" * BIG, retain=True, qos=1)
    with Subscriber(mosquitto.port, "edged/#") as sub, \
            DaemonProcess(_config(tmp_path, mosquitto.port, protocol, ha)) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 10, timeout=60)
        time.sleep(2.0)  # past the first connect, any refusal, a reconnect
        peak = _kb(daemon.pid, "VmHWM") / 1024
        rss = _kb(daemon.pid, "VmRSS") / 1024
        t = time.time()
        sub.wait_count(lambda m: m.topic.endswith("/results") and m.received_at > t, 10,
                       timeout=10)
        assert daemon.stop() == 0
    log = daemon.log_text()
    record_figure("huge_retained", protocol=protocol, ha=ha, peak_mb=peak, rss_mb=rss)
    assert peak < 140, (peak, log)
    if protocol == "3.1.1":  # MQTT 5: the broker never sends it (our maximum packet size)
        refused = [line for line in log.splitlines() if "bytes from the broker" in line]
        assert len(refused) == 1, log
        assert f"{BIG + len(topic) + 2} bytes from the broker" in refused[0], refused
    assert "Traceback" not in log


def test_a_flood_of_birth_messages_costs_no_log_lines_memory_or_results(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    announce = discovery_topic("homeassistant", "cam1")
    with Subscriber(mosquitto.port, ["edged/#", announce]) as sub, \
            DaemonProcess(_config(tmp_path, mosquitto.port, "3.1.1", True)) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 30, timeout=60)
        time.sleep(1.0)
        rss_before = _kb(daemon.pid, "VmRSS")
        lines_before = len(daemon.log_text().splitlines())
        start = time.time()
        # Another process floods (the test's own threads must not slow the subscriber).
        subprocess.run(["mosquitto_pub", "-p", str(mosquitto.port), "-t",
                        "homeassistant/status", "-l"], input=b"online\n" * 20_000,
                       check=True, timeout=120)
        time.sleep(2.0)
        end = time.time()
        rss_after = _kb(daemon.pid, "VmRSS")
        assert daemon.stop() == 0
    during = sorted(m.received_at for m in sub.on("/results") if start <= m.received_at <= end)
    gap = max(b - a for a, b in itertools.pairwise(during))
    announced = [m for m in sub.messages if m.topic == announce and m.received_at >= start]
    new_lines = daemon.log_text().splitlines()[lines_before:]
    record_figure("birth_flood", messages=20_000, log_lines=len(new_lines),
                  rss_growth_mb=(rss_after - rss_before) / 1024, max_result_gap_s=gap,
                  announcements=len(announced), flood_s=end - 2.0 - start)
    assert len(new_lines) <= 5, new_lines[:20]
    assert (rss_after - rss_before) / 1024 < 4, (rss_before, rss_after)
    assert gap < 0.5, gap
    # Home Assistant was told again, but not 20,000 times.
    assert 1 <= len(announced) <= 3, len(announced)


def test_subscriptions_are_the_narrowest_and_only_what_is_needed(
        tmp_path: Path, mosquitto_factory: Any) -> None:
    broker: Mosquitto = mosquitto_factory(extra="log_type subscribe\nlog_type unsubscribe")
    runs: dict[bool, list[list[str]]] = {}
    for ha in (False, True):
        (tmp_path / str(ha)).mkdir()
        start = len(broker.log_text().splitlines())
        with Subscriber(broker.port, "edged/#") as sub, \
                DaemonProcess(_config(tmp_path / str(ha), broker.port, "3.1.1", ha)) as daemon:
            sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=60)
            time.sleep(4.0)  # past the "once" subscription's grace
            assert daemon.stop() == 0
        # mosquitto logs "<client> <qos> <topic>" per SUBSCRIBE, "<client> <topic>" per UNSUBSCRIBE.
        runs[ha] = [line.split(": ", 1)[1].split()[1:]
                    for line in broker.log_text().splitlines()[start:]
                    if ": edged-cam1 " in line]
    # Off: its own discovery topic, exact, QoS 0, dropped right after (a config
    # left behind by an earlier run is removed; nothing stays subscribed).
    assert runs[False] == [["0", "homeassistant/device/edged_cam1/config"],
                           ["homeassistant/device/edged_cam1/config"]], runs
    # On: Home Assistant's birth topic, exact, QoS 0; its own discovery topic once (the
    # entities an earlier config had and this one lacks are removed), dropped right after.
    assert runs[True] == [["0", "homeassistant/status"],
                          ["0", "homeassistant/device/edged_cam1/config"],
                          ["homeassistant/device/edged_cam1/config"]], runs
