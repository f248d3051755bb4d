"""Issue 18 end to end: the real daemon, a real detector model, a real mosquitto.

The scene (tests/scene_helpers.py) is rendered to PNGs and played by the folder
source at 20 fps; tests/data/scene/detect_centroid_int8.tflite finds its
objects. Every event, occupancy change and snapshot is read back by a
subscriber, as Home Assistant or Node-RED would.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import orjson
from broker import Mosquitto, Received, Subscriber
from daemon_helpers import DaemonProcess, base_config, write_config
from fleet_helpers import check_device_discovery, render
from scene_helpers import FPS, LABELS, LINES, MODEL, SIZE, ZONES, Shape, write_scene

CAMERA = "drive"
OCCUPANCY = f"edged/scene/{CAMERA}/occupancy"
SCHEMAS = Path(__file__).resolve().parents[2] / "edged" / "schemas"


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        orjson.loads((SCHEMAS / f"{name}-v1.schema.json").read_bytes()))


def _config(tmp: Path, port: int, frames: Path, *, loop: bool = False, ha: bool = False,
            publish: str = "events", **events: Any) -> Path:
    cfg = base_config(
        port, model=MODEL, frames=frames, device="scene",
        source={"name": CAMERA, "loop": loop, "fps": FPS},
        output={"decoder": "detection", "publish": publish, "min_score": 0.3},
        events={"hold_s": 0.5, "labels": ["person", "car"], "zones": ZONES, "lines": LINES,
                **events},
        homeassistant={"enabled": ha})
    cfg["model"]["labels"] = str(LABELS)
    return write_config(tmp / "edged.toml", cfg)


def _events(sub: Subscriber) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.on(f"/{CAMERA}/events")]


def _occupancy(m: Received) -> dict[str, dict[str, int]]:
    zones: dict[str, dict[str, int]] = orjson.loads(m.payload)["zones"]
    return zones


def test_scene_gives_the_exact_events_occupancy_and_snapshots(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    frames = write_scene(tmp_path / "frames")
    base = "edged/scene"
    with Subscriber(mosquitto.port, f"{base}/#") as sub, \
            DaemonProcess(_config(tmp_path, mosquitto.port, frames),
                          args=("--exit-on-end",)) as daemon:
        code = daemon.proc.wait(60)
        assert code == 0, daemon.log_text()
        time.sleep(0.3)
    events = _events(sub)
    person, car = 1, 2
    summary = [(e["type"], e["id"], e["label"], e["zones"], e.get("why"), e.get("entered"),
                e.get("crossed")) for e in events]
    assert summary == [
        ("new", person, "person", [], None, None, None),
        # Walking left along the top, it crosses the gate (x = 0.5, drawn downwards): "in".
        ("update", person, "person", [], ["line"], [], [{"line": "gate", "direction": "in"}]),
        ("new", car, "car", ["driveway"], None, None, None),
        ("update", person, "person", ["driveway"], ["zone"], ["driveway"], []),
        ("end", car, "car", ["driveway"], None, None, None),
        ("end", person, "person", ["driveway"], None, None, None),
    ], daemon.log_text()
    # Flicker (every third frame missing, frames 12-30) never ended the person: one id.
    for e in events:
        _validator("event").validate(e)
        assert e["camera"] == CAMERA and e["device_id"] == "scene"
        assert e["start"] <= e["at"] and (e["end"] is None or e["start"] <= e["end"] <= e["at"])
    # The car's box, parked at (160, 176)-(240, 224) in frame pixels, to a pixel or two.
    assert np.allclose(events[2]["box"], [160, 176, 240, 224], atol=2.5), events[2]["box"]
    # new events name their snapshot; the others have none.
    assert [e["snapshot"] for e in events] == [
        f"{base}/{CAMERA}/snapshot/person", None, f"{base}/{CAMERA}/snapshot/car", None, None,
        None]
    # Only events: the per-frame firehose is off.
    assert not sub.on("/results")

    states = [_occupancy(m) for m in sub.on(f"/{CAMERA}/occupancy")]
    zero = {"all": {"person": 0, "car": 0}, "driveway": {"person": 0, "car": 0}}
    assert states[0] == zero  # fresh at start
    assert states[-1] == zero
    assert {"all": {"person": 1, "car": 1}, "driveway": {"person": 1, "car": 1}} in states
    for m in sub.on(f"/{CAMERA}/occupancy"):
        _validator("occupancy").validate(orjson.loads(m.payload))

    for label in ("person", "car"):
        shots = sub.on(f"/{CAMERA}/snapshot/{label}")
        assert len(shots) == 1, [m.topic for m in sub.messages if "snapshot" in m.topic]
        image = cv2.imdecode(np.frombuffer(shots[0].payload, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (SIZE, SIZE, 3)


def test_a_restart_mid_event_leaves_no_stale_occupancy_or_entities(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Killed while a car is parked: the broker keeps occupancy 1 (retained) and says
    offline (the LWT, which Home Assistant's availability follows); the next start
    says 0 before its first frame. Then events turned off: their entities go."""
    parked = write_scene(tmp_path / "parked", [[Shape(1, 160, 176, (80, 48))]] * 40)
    empty = write_scene(tmp_path / "empty", [[]] * 40)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    base = "edged/scene"
    occupancy = f"{base}/{CAMERA}/occupancy"
    discovery = "homeassistant/device/edged_scene/config"
    with Subscriber(mosquitto.port, [f"{base}/#", discovery]) as sub:
        with DaemonProcess(_config(tmp_path / "a", mosquitto.port, parked, loop=True,
                                   ha=True)) as a:
            sub.wait_for(lambda m: m.topic == occupancy and
                         _occupancy(m)["driveway"]["car"] == 1, timeout=30)
            config = orjson.loads(sub.wait_for(lambda m: m.topic == discovery).payload)
            event = sub.wait_for(lambda m: m.topic.endswith(f"/{CAMERA}/events"), timeout=30)
            a.stop(signal.SIGKILL)
        check_device_discovery(discovery, config)
        cmps = config["cmps"]
        # Home Assistant's view, rendered from the real messages.
        now = sub.on(f"/{CAMERA}/occupancy")[-1].payload
        assert render(cmps[f"{CAMERA}_driveway_car_occupied"]["val_tpl"], now) == "ON"
        assert render(cmps[f"{CAMERA}_driveway_person_occupied"]["val_tpl"], now) == "OFF"
        assert render(cmps[f"{CAMERA}_all_car_count"]["val_tpl"], now) == "1"
        fired = orjson.loads(render(cmps[f"{CAMERA}_event"]["val_tpl"], event.payload))
        assert fired["event_type"] == "new" and fired["label"] == "car", fired
        assert fired["event_type"] in cmps[f"{CAMERA}_event"]["evt_typ"]
        assert cmps[f"{CAMERA}_driveway_car_occupied"]["stat_t"] == occupancy
        assert cmps[f"{CAMERA}_event"]["p"] == "event"
        assert cmps[f"{CAMERA}_snapshot_car"]["img_t"] == f"{base}/{CAMERA}/snapshot/car"
        assert all("avty" in c for c in cmps.values() if c["uniq_id"] != "edged_scene_status")
        sub.wait_for(lambda m: m.topic == f"{base}/status" and b'"offline"' in m.payload,
                     timeout=20)
    # What a subscriber arriving now sees: the stale 1, retained.
    with Subscriber(mosquitto.port, occupancy) as late:
        assert _occupancy(late.wait_for(lambda m: m.retain))["driveway"]["car"] == 1
    with Subscriber(mosquitto.port, [f"{base}/#", discovery]) as sub, \
            DaemonProcess(_config(tmp_path / "b", mosquitto.port, empty, loop=True, ha=True,
                                  publish="both")):
        fresh = sub.wait_for(lambda m: m.topic == occupancy and not m.retain, timeout=30)
        assert _occupancy(fresh)["driveway"]["car"] == 0
        sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
        assert not sub.on(f"/{CAMERA}/events")
    with Subscriber(mosquitto.port, occupancy) as late:
        assert _occupancy(late.wait_for(lambda m: m.retain))["driveway"]["car"] == 0
    # Events off: every event entity of the earlier config is removed (platform only).
    with Subscriber(mosquitto.port, [f"{base}/#", discovery]) as sub, \
            DaemonProcess(_config(tmp_path / "b", mosquitto.port, empty, loop=True, ha=True,
                                  publish="results")):
        removed = sub.wait_for(lambda m: m.topic == discovery and not m.retain
                               and b'"p":"event"}' in m.payload, timeout=30)
        check_device_discovery(discovery, orjson.loads(removed.payload))
        cmps = orjson.loads(removed.payload)["cmps"]
        assert cmps[f"{CAMERA}_event"] == {"p": "event"}
        assert cmps[f"{CAMERA}_driveway_car_occupied"] == {"p": "binary_sensor"}
        assert "fps" in cmps and len(cmps["fps"]) > 1


@contextlib.contextmanager
def _parked_car(tmp_path: Path, port: int) -> Iterator[tuple[Subscriber, DaemonProcess, Path]]:
    """A daemon watching a car parked in the driveway (looped), once it is counted; the
    subscriber on the camera's topics and the scene's frames."""
    parked = write_scene(tmp_path / "parked", [[Shape(1, 160, 176, (80, 48))]] * 40)
    path = _config(tmp_path, port, parked, loop=True)
    with Subscriber(port, f"edged/scene/{CAMERA}/#") as sub, DaemonProcess(path) as daemon:
        sub.wait_for(lambda m: m.topic == OCCUPANCY and
                     _occupancy(m)["driveway"]["car"] == 1, timeout=30)
        yield sub, daemon, parked


def test_a_reload_of_the_zones_starts_a_fresh_stage_without_a_restart(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    with _parked_car(tmp_path, mosquitto.port) as (sub, daemon, parked):
        pid = daemon.worker_pid()
        garage = {"name": "garage", "points": [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]]}
        _config(tmp_path, mosquitto.port, parked, loop=True, zones=[*ZONES, garage])
        daemon.send(signal.SIGHUP)
        # Zeros first (a fresh stage), then the parked car counted again in both zones.
        fresh = sub.wait_for(lambda m: m.topic == OCCUPANCY and "garage" in _occupancy(m),
                             timeout=30)
        assert _occupancy(fresh)["garage"] == {"person": 0, "car": 0}
        sub.wait_for(lambda m: m.topic == OCCUPANCY and
                     _occupancy(m).get("garage", {}).get("car") == 1, timeout=30)
        assert daemon.worker_pid() == pid  # the model was not reloaded for it
        assert daemon.stop() == 0, daemon.log_text()


def test_a_reload_of_other_output_keys_keeps_the_events_stage(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Reloading top_k rebuilds decoding but not the tracks: the parked car is not
    announced again as new, and its occupancy never drops to 0."""
    with _parked_car(tmp_path, mosquitto.port) as (sub, daemon, parked):
        cfg = _config(tmp_path, mosquitto.port, parked, loop=True)
        cfg.write_text(cfg.read_text().replace("[output]\n", "[output]\ntop_k = 7\n"))
        daemon.send(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "reload: applied" not in daemon.log_text():
            assert time.monotonic() < deadline, daemon.log_text()
            time.sleep(0.05)
        assert "output" in daemon.log_text().split("reload: changed: ")[1].splitlines()[0]
        time.sleep(1.5)  # 30 frames after the reload: min_frames three times over
        news = [e for e in _events(sub) if e["type"] == "new"]
        assert [e["label"] for e in news] == ["car"], news
        counts = [_occupancy(m)["driveway"]["car"] for m in sub.on(OCCUPANCY)]
        assert counts[0] == 0 and 0 not in counts[1:], counts  # zeros at start only
        assert daemon.stop() == 0, daemon.log_text()
