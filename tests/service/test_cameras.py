"""Several cameras in one `edged run` (issue 17), through a real mosquitto.

Three cameras of different kinds and frame sizes share the model's worker;
each one's results arrive on its own topic with its id; one camera whose
source dies does not disturb the others; a reload of one camera (or adding
and removing one) restarts only that camera, the others' frames keep their
sequence without a gap; a worker killed mid-run brings every camera back.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from broker import Mosquitto, Subscriber
from cameras_helpers import MODEL, Cameras, config_text, folder
from daemon_helpers import DaemonProcess, base_config
from fleet_helpers import check_device_discovery, render
from reload_helpers import digit_folder, wait_stats, wait_until
from scene_helpers import FPS as SCENE_FPS
from scene_helpers import LABELS as SCENE_LABELS
from scene_helpers import LINES, ZONES, write_scene
from scene_helpers import MODEL as SCENE_MODEL

SCHEMAS = Path(__file__).resolve().parents[2] / "edged" / "schemas"


@pytest.fixture
def make(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Any]:
    made: list[Cameras] = []

    def factory(cameras: list[dict[str, Any]], **sections: dict[str, Any]) -> Cameras:
        made.append(Cameras(tmp_path, mosquitto, cameras, **sections))
        return made[-1]

    yield factory
    for c in made:
        try:
            assert c.daemon.stop() == 0
            assert "Traceback" not in c.daemon.log_text(), c.daemon.log_text()
        finally:
            c.daemon.__exit__()
            c.sub.stop()


def test_three_cameras_publish_each_on_its_own_topic(make: Any, tmp_path: Path) -> None:
    c = make([
        {"id": "low", "source": {"uri": folder(tmp_path, "low", "01234")}},
        {"id": "high", "source": {"uri": folder(tmp_path, "high", "56789")},
         "output": {"top_k": 3}},
        {"id": "wide", "source": {"kind": "synthetic", "width": 1280, "height": 720,
                                  "fps": 15.0}},
    ])
    for camera in ("low", "high", "wide"):
        c.wait_results(camera, 10)
    low, high, wide = c.results("low"), c.results("high"), c.results("wide")
    assert {d["camera"] for d in low} == {"low"} and {d["camera"] for d in wide} == {"wide"}
    # Each camera's own frames and output settings: a folder of 0-4 reads as 0-4.
    assert {d["decoded"]["classes"][0]["label_id"] for d in low} <= set(range(5))
    assert {d["decoded"]["classes"][0]["label_id"] for d in high} <= set(range(5, 10))
    assert all(len(d["decoded"]["classes"]) == 3 for d in high)
    assert all(len(d["decoded"]["classes"]) == 1 for d in low + wide)
    assert not c.sub.on("/test/results")  # with [[cameras]], no device-level results
    stats = wait_stats(c.sub, lambda s: all(s["cameras"][k]["frames"] > 5
                                            for k in ("low", "high", "wide")))
    assert stats["source"] == "running"
    assert stats["frames"] >= sum(cam["frames"] for cam in stats["cameras"].values()) - 3
    assert set(stats["cameras"]["wide"]) >= {"fps", "latency_ms_p50", "frames_dropped",
                                             "source", "source_reopens", "last_error"}
    jsonschema.validate(stats, _schema("stats"))
    for doc in low + high + wide:
        jsonschema.validate(doc, _schema("result"))


def _schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((SCHEMAS / f"{name}-v1.schema.json").read_bytes())
    return doc


def test_a_camera_whose_source_dies_does_not_disturb_the_others(make: Any,
                                                                tmp_path: Path) -> None:
    c = make([
        {"id": "ok", "source": {"uri": folder(tmp_path, "ok", "0123")}},
        {"id": "dead", "source": {"kind": "stream", "uri": "rtsp://127.0.0.1:9/none",
                                  "reopen_backoff_s": 0.2, "reopen_backoff_max_s": 0.5}},
    ])
    c.wait_results("ok", 20)
    stats = wait_stats(c.sub, lambda s: s["cameras"]["dead"]["source_reopens"] >= 2)
    assert stats["cameras"]["ok"]["source"] == "running"
    assert stats["cameras"]["dead"]["source"] == "reopening"
    assert stats["source"] == "reopening (dead)"
    assert stats["last_error"].startswith("dead: ")
    later = time.time()
    c.wait_results("ok", 20, after=later)  # still flowing
    assert not c.results("dead")


def _sequence_gaps(results: list[dict[str, Any]]) -> list[tuple[int, int]]:
    seqs = [d["seq"] for d in results]
    return [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1]


def test_reloading_one_camera_leaves_the_others_running(make: Any, tmp_path: Path) -> None:
    steady = {"id": "steady", "source": {"uri": folder(tmp_path, "steady", "0123")}}
    other = {"id": "other", "source": {"uri": folder(tmp_path, "other", "4567")}}
    c = make([steady, other])
    c.wait_results("steady", 10)
    c.wait_results("other", 10)
    pid = c.daemon.worker_pid()

    # A new source for one camera: only it restarts.
    moved = {"id": "other", "source": {"uri": folder(tmp_path, "moved", "89")}}
    applied = c.reload([steady, moved])
    c.wait_results("other", 5, after=applied)
    assert {d["decoded"]["classes"][0]["label_id"]
            for d in c.results("other", applied + 0.5)} <= {8, 9}
    log = c.daemon.log_text()
    assert "reload: camera other: restarting source" in log, log
    assert "reload: camera steady" not in log, log

    # One camera added, one removed: the one kept goes on.
    added = {"id": "added", "source": {"kind": "synthetic", "width": 320, "height": 240}}
    applied = c.reload([steady, added])
    c.wait_results("added", 5, after=applied)
    removed_at = time.time()
    time.sleep(0.5)
    assert not c.results("other", removed_at)
    c.wait_results("steady", 10, after=removed_at)
    assert c.daemon.worker_pid() == pid  # the model's worker was never restarted
    # The folder source is lossless: every frame of the camera kept was inferred and
    # published across both reloads, in order.
    assert _sequence_gaps(c.results("steady")) == []
    log = c.daemon.log_text()
    assert "reload: camera added: added" in log and \
        "reload: camera other: stopped (removed or switched off)" in log, log


def test_every_camera_resumes_after_the_worker_is_killed(make: Any, tmp_path: Path) -> None:
    c = make([
        {"id": "one", "source": {"uri": folder(tmp_path, "one", "012")}},
        {"id": "two", "source": {"kind": "synthetic", "width": 640, "height": 480}},
        {"id": "three", "source": {"uri": folder(tmp_path, "three", "789")}},
    ])
    for camera in ("one", "two", "three"):
        c.wait_results(camera, 5)
    pid = c.daemon.worker_pid()
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    wait_until(lambda: c.daemon.worker_pid() != pid, 15, "a new worker", c.daemon.log_text)
    for camera in ("one", "two", "three"):
        c.wait_results(camera, 5, after=killed + 0.2)
    stats = wait_stats(c.sub, lambda s: s["worker_restarts"] >= 1, after=killed)
    assert all(cam["source"] == "running" for cam in stats["cameras"].values())


def test_home_assistant_gets_each_cameras_entities(make: Any, tmp_path: Path) -> None:
    c = make([
        {"id": "porch", "source": {"uri": folder(tmp_path, "porch", "3")}},
        {"id": "dead", "source": {"kind": "stream", "uri": "rtsp://127.0.0.1:9/none",
                                  "reopen_backoff_s": 0.2, "reopen_backoff_max_s": 0.5},
         "output": {"encoding": "binary"}},  # Home Assistant cannot read binary results
    ], homeassistant={"enabled": True})
    topic = "homeassistant/device/edged_test/config"
    doc = orjson.loads(c.sub.wait_for(lambda m: m.topic == topic, timeout=30).payload)
    check_device_discovery(topic, doc)
    cmps = doc["cmps"]
    assert {"porch_top_class", "porch_top_score", "porch_fps", "porch_source",
            "dead_fps", "dead_source"} <= set(cmps)
    assert not {"top_class", "dead_top_class"} & set(cmps)
    assert cmps["porch_top_class"]["name"] == "porch Top class"
    assert cmps["porch_top_class"]["stat_t"] == "edged/test/porch/results"
    c.wait_results("porch", 3)
    stats_msg = c.sub.wait_for(lambda m: m.topic == "edged/test/stats" and orjson.loads(
        m.payload)["cameras"]["porch"]["fps"] > 0 and orjson.loads(
        m.payload)["cameras"]["dead"]["source"] == "reopening", timeout=30)
    result = c.sub.on("/test/porch/results")[-1].payload
    payloads = {"edged/test/stats": stats_msg.payload, "edged/test/porch/results": result}
    stats = orjson.loads(stats_msg.payload)
    assert render(cmps["porch_top_class"]["val_tpl"], result) == "3"
    assert float(render(cmps["porch_fps"]["val_tpl"], payloads["edged/test/stats"])) == \
        stats["cameras"]["porch"]["fps"]
    assert render(cmps["porch_source"]["val_tpl"], stats_msg.payload) == "OFF"
    assert render(cmps["dead_source"]["val_tpl"], stats_msg.payload) == "ON"
    attrs = orjson.loads(render(cmps["dead_source"]["json_attr_tpl"], stats_msg.payload))
    assert attrs["state"] == "reopening" and attrs["error"]


def test_each_camera_keeps_its_own_max_fps(make: Any) -> None:
    c = make([
        {"id": "slow", "max_fps": 4.0, "source": {"kind": "synthetic", "fps": 30.0}},
        {"id": "fast", "source": {"kind": "synthetic", "fps": 30.0}},
    ])
    c.wait_results("slow", 3)
    c.wait_results("fast", 10)
    start = time.time()
    time.sleep(3.0)
    slow = [d for d in c.results("slow", start) if d["captured_at"] >= start]
    fast = [d for d in c.results("fast", start) if d["captured_at"] >= start]
    assert 8 <= len(slow) <= 16, len(slow)  # 4/s
    assert len(fast) >= 60, len(fast)  # 30/s, not held back by the slow one's limit
    # Fresh frames, not ones that waited for their turn: max_fps adds no latency.
    ages = sorted(d["timings_us"]["capture_age"] for d in slow)
    assert ages[len(ages) // 2] < 40_000, ages


def test_each_camera_has_its_own_events_zones_and_tracks(tmp_path: Path,
                                                          mosquitto: Mosquitto) -> None:
    """The events scene (tests/scene_helpers.py) on two cameras at once: the same objects,
    each camera's own zones and lines, ids and topics; every message each camera's."""
    frames = str(write_scene(tmp_path / "scene"))
    cfg = base_config(mosquitto.port, model=SCENE_MODEL, frames=Path(frames), device="scene",
                      source={"loop": False, "fps": SCENE_FPS},
                      output={"decoder": "detection", "publish": "events", "min_score": 0.3},
                      events={"hold_s": 0.5, "labels": ["person", "car"], "zones": ZONES,
                              "lines": LINES})
    cfg["model"]["labels"] = str(SCENE_LABELS)
    path = tmp_path / "edged.toml"
    path.write_text(config_text(cfg, [{"id": "drive"},
                                       {"id": "yard", "events": {"zones": [], "lines": []}}]))
    with Subscriber(mosquitto.port, "edged/scene/#") as sub, \
            DaemonProcess(path, args=("--exit-on-end",)) as daemon:
        assert daemon.proc.wait(90) == 0, daemon.log_text()
        time.sleep(0.3)

    def summary(camera: str) -> list[tuple[Any, ...]]:
        events = [orjson.loads(m.payload) for m in sub.on(f"/{camera}/events")]
        assert all(e["camera"] == camera for e in events)
        return [(e["type"], e["id"], e["label"], e["zones"], e.get("why")) for e in events]

    assert summary("drive") == [
        ("new", 1, "person", [], None), ("update", 1, "person", [], ["line"]),
        ("new", 2, "car", ["driveway"], None), ("update", 1, "person", ["driveway"], ["zone"]),
        ("end", 2, "car", ["driveway"], None), ("end", 1, "person", ["driveway"], None)]
    assert summary("yard") == [  # no zones, no lines: only the objects' lives
        ("new", 1, "person", [], None), ("new", 2, "car", [], None),
        ("end", 2, "car", [], None), ("end", 1, "person", [], None)]
    occupancy = {camera: orjson.loads(sub.on(f"/{camera}/occupancy")[-1].payload)["zones"]
                 for camera in ("drive", "yard")}
    assert set(occupancy["drive"]) == {"all", "driveway"} and set(occupancy["yard"]) == {"all"}
    assert not sub.on("/results")


def test_a_cameras_output_that_does_not_fit_the_model_is_refused_on_its_key(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = base_config(mosquitto.port, model=MODEL, frames=digit_folder(tmp_path, "all"))
    path = tmp_path / "edged.toml"
    path.write_text(config_text(cfg, [{"id": "a"},
                                       {"id": "b", "output": {"decoder": "detection"}}]))
    with DaemonProcess(path) as daemon:
        assert daemon.proc.wait(30) == 78  # EX_CONFIG: no restart loop
    assert (f"{path}: cameras[1].output.decoder: decoder detection: output 'output_0': "
            "shape [1, 10]") in daemon.log_text(), daemon.log_text()


def test_a_reload_adding_a_camera_that_cannot_open_changes_nothing(make: Any,
                                                                   tmp_path: Path) -> None:
    one = {"id": "one", "source": {"uri": folder(tmp_path, "one", "01")}}
    c = make([one])
    c.wait_results("one", 5)
    missing = tmp_path / "nowhere"
    refused = c.reload([one, {"id": "two", "source": {"uri": str(missing)}}],
                       expect="reload failed: still running with the previous config")
    assert f"{c.path}:" in c.daemon.log_text() and \
        f"cameras[1].source.uri: {missing}: not found" in c.daemon.log_text()
    c.wait_results("one", 10, after=refused)
    stats = wait_stats(c.sub, lambda s: s["config_reload"] != "ok", after=refused)
    assert stats["config_reload"].startswith("failed: 1 problem(s)")
    assert set(stats["cameras"]) == {"one"}


def test_a_file_growing_cameras_and_back_moves_the_results_topic(make: Any) -> None:
    c = make([])  # the one camera of [source]
    wait_until(lambda: len(c.sub.on("/test/results")) >= 1, 30, "device results",
               c.daemon.log_text)  # running: SIGHUP is a reload now
    c.cfg["source"]["name"] = "porch"
    applied = c.reload([])
    wait_until(lambda: len([m for m in c.sub.on("/test/results")
                            if m.received_at > applied]) >= 5, 30, "device results",
               c.daemon.log_text)
    applied = c.reload([{"id": "porch"}, {"id": "yard", "source": {"kind": "synthetic"}}])
    c.wait_results("porch", 5, after=applied)  # the same camera, now on its own topic
    c.wait_results("yard", 5, after=applied)
    assert all(d["camera"] == "porch" for d in c.results("porch", applied))
    applied = c.reload([])
    wait_until(lambda: len([m for m in c.sub.on("/test/results")
                            if m.received_at > applied]) >= 5, 30, "device results again",
               c.daemon.log_text)
    assert all("camera" not in orjson.loads(m.payload) for m in c.sub.on("/test/results"))
