"""Home Assistant MQTT discovery against a real daemon and a real mosquitto.

The discovery payload is checked against Home Assistant's documented device
discovery rules (tests/fleet_helpers.py), and every entity's template is
rendered with Jinja (in an immutable sandbox, as Home Assistant does) against
the real status, stats and results messages the daemon published.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from broker import Mosquitto, Subscriber, retained
from daemon_helpers import MODELS, DaemonProcess, base_config, write_config
from fleet_helpers import check_device_discovery, copy_frames, render

from edged.config import Config
from edged.mqtt.discovery import discovery_config, discovery_topic, object_id
from edged.service.wiring import discovery_settings

TOPIC = "homeassistant/device/edged_cam_1/config"


def _start(tmp_path: Path, broker: Mosquitto, name: str, **overrides: Any) -> DaemonProcess:
    cfg = base_config(broker.port, model=MODELS / "digits_int8.tflite",
                      frames=copy_frames(tmp_path / "frames"), device="cam.1", **overrides)
    cfg.setdefault("homeassistant", {}).setdefault("enabled", True)
    return DaemonProcess(write_config(tmp_path / f"{name}.toml", cfg))


def _latest(sub: Subscriber, topic: str) -> bytes:
    return sub.wait_for(lambda m: m.topic == topic and bool(m.payload), timeout=30).payload


def test_object_id_and_topic_keep_to_the_characters_home_assistant_allows() -> None:
    assert object_id("cam.1") == "edged_cam_1"
    assert object_id("Front-Door_2") == "edged_Front-Door_2"
    assert discovery_topic("ha/disc", "a.b") == "ha/disc/device/edged_a_b/config"


@pytest.mark.parametrize(("decoder", "encoding", "expected"), [
    ("none", "json", set()),
    ("classification", "json", {"top_class", "top_score"}),
    ("classification", "binary", set()),  # Home Assistant cannot read binary results
    ("detection", "json", {"objects", "count_person", "count_car"}),
    ("pose", "json", {"pose_score"}),
    ("segmentation", "json", {"top_class", "top_fraction"}),
])
def test_components_per_decoder_follow_the_documented_schema(
        decoder: str, encoding: str, expected: set[str]) -> None:
    cfg = Config.model_validate({"device": {"id": "cam.1"}, "homeassistant": {"enabled": True},
                                 "output": {"encoding": encoding,
                                            "classes_keep": ["person", "car"]}})
    doc = discovery_config(discovery_settings(cfg), model="m.tflite", decoder=decoder)
    check_device_discovery(discovery_topic("homeassistant", "cam.1"), doc)
    base = {"status", "fps", "inference_ms", "latency_ms", "delegate", "fallback",
            "worker_restarts"}
    assert set(doc["cmps"]) == base | expected
    # Availability on every entity except the connectivity sensor, which must
    # be able to show "offline" itself.
    assert "avty" not in doc["cmps"]["status"]
    assert all(c["avty"] == [{"t": "edged/cam.1/status", "val_tpl": "{{ value_json.state }}"}]
               for k, c in doc["cmps"].items() if k != "status")


def test_discovery_renders_against_real_messages_and_comes_back_after_ha_restart(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    sub = Subscriber(mosquitto.port, ["homeassistant/#", "edged/#"]).start()
    daemon = _start(tmp_path, mosquitto, "ha", output={"decoder": "classification",
                                                         "stats_interval_s": 1.0})
    try:
        config = sub.wait_for(lambda m: m.topic == TOPIC, timeout=30)
        doc = orjson.loads(config.payload)
        check_device_discovery(config.topic, doc)
        assert doc["dev"]["mdl"] == "digits_int8.tflite" and doc["dev"]["sn"] == "cam.1"
        assert doc["o"]["name"] == "edged"
        # The stats message the entities will read: wait for one with figures in it.
        stats_msg = sub.wait_for(lambda m: m.topic == "edged/cam.1/stats"
                                 and orjson.loads(m.payload).get("frames", 0) > 0, timeout=30)
        stats = orjson.loads(stats_msg.payload)
        payloads = {"edged/cam.1/status": _latest(sub, "edged/cam.1/status"),
                    "edged/cam.1/stats": stats_msg.payload,
                    "edged/cam.1/results": _latest(sub, "edged/cam.1/results")}
        rendered = {k: render(c["val_tpl"], payloads[c["stat_t"]])
                    for k, c in doc["cmps"].items()}
        result = orjson.loads(payloads["edged/cam.1/results"])
        top = result["decoded"]["classes"][0]
        assert rendered["status"] == "online"
        assert float(rendered["fps"]) == stats["fps"]
        assert float(rendered["inference_ms"]) == stats["invoke_ms_p50"] > 0
        assert float(rendered["latency_ms"]) == stats["latency_ms_p50"]
        assert rendered["delegate"] == "cpu"
        assert rendered["fallback"] == "OFF"  # runs where configured
        assert rendered["worker_restarts"] == "0"
        assert rendered["top_class"] == str(top["label_id"])  # no labels file: the id
        assert float(rendered["top_score"]) == top["score"] > 0.5
        for comp in doc["cmps"].values():
            for item in comp.get("avty", []):
                assert render(item["val_tpl"], payloads[item["t"]]) == "online"

        # Home Assistant restarts: the retained config is gone (as with a broker
        # that lost it), then HA's birth message asks devices to announce again.
        subprocess.run(["mosquitto_pub", "-p", str(mosquitto.port), "-t", TOPIC, "-r", "-n"],
                       check=True)
        assert retained(mosquitto.port, TOPIC, timeout=1.0) is None
        sub.clear()
        subprocess.run(["mosquitto_pub", "-p", str(mosquitto.port), "-t",
                        "homeassistant/status", "-m", "online"], check=True)
        again = sub.wait_for(lambda m: m.topic == TOPIC and bool(m.payload), timeout=15)
        assert orjson.loads(again.payload) == doc
        kept = retained(mosquitto.port, TOPIC)
        assert kept is not None and orjson.loads(kept.payload) == doc

        # A broker restart without persistence loses every retained message:
        # the daemon announces again on the reconnect.
        mosquitto.restart(down_for=0.5)
        fresh = Subscriber(mosquitto.port, TOPIC).start()
        try:
            back = fresh.wait_for(lambda m: bool(m.payload), timeout=20)
            assert orjson.loads(back.payload) == doc
        finally:
            fresh.stop()
    finally:
        assert daemon.stop() == 0, daemon.log_text()
        sub.stop()
    # The daemon stopped cleanly: the entities become unavailable through the
    # retained status, the device stays known to Home Assistant.
    status = retained(mosquitto.port, "edged/cam.1/status")
    assert status is not None
    doc_status = orjson.loads(status.payload)
    assert render("{{ value_json.state }}", status.payload) == "offline" == doc_status["state"]
    # Why, and where the model ran, as the connectivity sensor's attributes.
    assert orjson.loads(render(doc["cmps"]["status"]["json_attr_tpl"], status.payload)) == {
        "reason": "stopped", "error": "", "delegate": "cpu", "fallback": ""}
    assert retained(mosquitto.port, TOPIC) is not None

    # Disabled: the next start removes the device from Home Assistant.
    daemon = _start(tmp_path, mosquitto, "off", homeassistant={"enabled": False})
    try:
        sub = Subscriber(mosquitto.port, TOPIC).start()
        sub.wait_for(lambda m: m.payload == b"" and not m.retain, timeout=30)
        sub.stop()
        assert retained(mosquitto.port, TOPIC, timeout=1.0) is None
        assert "homeassistant.enabled = false: removing" in daemon.log_text()
    finally:
        assert daemon.stop() == 0, daemon.log_text()


def test_detection_counts_per_class_render_from_real_results(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    frames = copy_frames(tmp_path / "frames", "shapes_64.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    cfg = base_config(mosquitto.port, model=MODELS / "detect_yolo_int8.tflite", frames=frames,
                      device="door", homeassistant={"enabled": True})
    cfg["model"]["labels"] = str(labels)
    cfg["output"].update({"decoder": "detection", "min_score": 0.5,
                          "classes_keep": ["red", "green"]})
    sub = Subscriber(mosquitto.port, ["homeassistant/#", "edged/#"]).start()
    daemon = DaemonProcess(write_config(tmp_path / "det.toml", cfg))
    try:
        config = sub.wait_for(lambda m: m.topic.startswith("homeassistant/device/"), timeout=30)
        doc = orjson.loads(config.payload)
        check_device_discovery(config.topic, doc)
        results = _latest(sub, "edged/door/results")
        detections = orjson.loads(results)["decoded"]["detections"]
        assert sorted(d["label"] for d in detections) == ["green", "red"]
        cmps = doc["cmps"]
        assert render(cmps["objects"]["val_tpl"], results) == "2"
        assert orjson.loads(render(cmps["objects"]["json_attr_tpl"], results)) == {
            "red": 1, "green": 1}
        assert render(cmps["count_red"]["val_tpl"], results) == "1"
        assert render(cmps["count_green"]["val_tpl"], results) == "1"
        # A result without detections renders 0 and an empty map, not an error.
        empty = orjson.dumps({**orjson.loads(results),
                              "decoded": {"kind": "detection", "detections": []}})
        assert render(cmps["objects"]["val_tpl"], empty) == "0"
        assert render(cmps["objects"]["json_attr_tpl"], empty) == "{}"
    finally:
        assert daemon.stop() == 0, daemon.log_text()
        sub.stop()
