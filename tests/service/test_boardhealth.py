"""Temperatures and throttling in the stats, Home Assistant and the journal (issue 19).

The board is a fake sysfs tree under EDGED_HARDWARE_ROOT (what a Pi with a
PCIe Edge TPU shows); the daemon, the broker and Home Assistant's templates
are real.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from broker import Mosquitto, retained
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, write_config
from faults_helpers import is_stats, subscribed, wait_until
from fleet_helpers import render

THROTTLED = "sys/devices/platform/soc/soc:firmware/get_throttled"


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_board_figures_reach_the_stats_home_assistant_and_the_journal(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    root = tmp_path / "hw"
    write(root, "sys/class/thermal/thermal_zone0/temp", "61234\n")
    write(root, THROTTLED, "0\n")
    for name, milli in (("temp", "70000"), ("trip_point0_temp", "85000")):
        write(root, f"sys/class/apex/apex_0/{name}", milli + "\n")
    cfg = base_config(mosquitto.port, model=MODELS / "digits_int8.tflite", frames=FRAMES,
                      homeassistant={"enabled": True})
    config = write_config(tmp_path / "edged.toml", cfg)
    with subscribed(mosquitto.port) as sub, DaemonProcess(
            config, env={"EDGED_HARDWARE_ROOT": str(root)}) as daemon:
        got = sub.wait_for(is_stats(lambda s: "soc_temp_c" in s), timeout=20)
        stats = orjson.loads(got.payload)
        assert (stats["soc_temp_c"], stats["edgetpu_temp_c"], stats["throttled"],
                stats["throttled_since_boot"]) == (61.2, 70.0, [], []), stats
        discovery = retained(mosquitto.port, "homeassistant/device/edged_test/config")
        assert discovery is not None
        cmps = orjson.loads(discovery.payload)["cmps"]
        assert render(cmps["soc_temp"]["val_tpl"], got.payload) == "61.2"
        assert render(cmps["edgetpu_temp"]["val_tpl"], got.payload) == "70.0"
        assert render(cmps["throttled"]["val_tpl"], got.payload) == "OFF"
        # The supply sags and the TPU heats: one line each, however many reports follow.
        write(root, THROTTLED, "50005\n")
        write(root, "sys/class/apex/apex_0/temp", "86500\n")
        changed = time.time()
        hot = sub.wait_for(lambda m: m.topic.endswith("/stats") and m.received_at > changed
                           and orjson.loads(m.payload)["throttled"], timeout=10)
        assert render(cmps["throttled"]["val_tpl"], hot.payload) == "ON"
        assert orjson.loads(render(cmps["throttled"]["json_attr_tpl"], hot.payload)) == {
            "now": ["under-voltage", "throttled"], "since_boot": ["under-voltage", "throttled"]}
        time.sleep(2.5)  # more reports
        write(root, THROTTLED, "50000\n")
        wait_until(lambda: "no longer reports" in daemon.log_text(), 10, "the end line")
        assert daemon.stop() == 0
    log = daemon.log_text()
    assert log.count("the board reports under-voltage, throttled (get_throttled=0x50005): "
                     "results may slow down; edged doctor says what to do") == 1, log
    assert log.count("Edge TPU apex_0 at 86.5 °C, past its first trip point (85 °C): the "
                     "driver throttles it; cool the card") == 1, log
    assert log.count("the board no longer reports under-voltage or throttling") == 1, log


def test_a_board_without_sensors_reports_none_and_gets_no_entities(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = base_config(mosquitto.port, model=MODELS / "digits_int8.tflite", frames=FRAMES,
                      homeassistant={"enabled": True})
    config = write_config(tmp_path / "edged.toml", cfg)
    with subscribed(mosquitto.port) as sub, DaemonProcess(
            config, env={"EDGED_HARDWARE_ROOT": str(tmp_path / "empty")}) as daemon:
        stats = orjson.loads(sub.wait_for(is_stats(lambda s: s["frames"] > 0),
                                          timeout=20).payload)
        assert daemon.stop() == 0
    assert not {"soc_temp_c", "edgetpu_temp_c", "throttled"} & set(stats), stats
    discovery = retained(mosquitto.port, "homeassistant/device/edged_test/config")
    assert discovery is not None
    assert not {"soc_temp", "edgetpu_temp", "throttled"} & set(
        orjson.loads(discovery.payload)["cmps"])
