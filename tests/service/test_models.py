"""Several models in one `edged run` (issue 17): a worker per model, through mosquitto.

Two cameras on two models (the digits classifier of [model] and the scene
detector of a [[models]] entry) publish each its own model's results; their
workers are separate processes, so one dying leaves the other camera going;
a reload of one model restarts only its worker. Two models pinned to two
Edge TPUs by device string load the Edge TPU stand-in (the stub delegate,
tests/stub_delegate) once each, with their own device; two on one Edge TPU
share its worker.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from broker import Mosquitto, Subscriber
from cameras_helpers import MODEL, config_text
from daemon_helpers import DaemonProcess, base_config
from faults_helpers import build_stub_delegate
from reload_helpers import digit_folder, sighup, wait_stats, wait_until
from scene_helpers import LABELS as SCENE_LABELS
from scene_helpers import MODEL as SCENE_MODEL
from scene_helpers import write_scene

STATS_SCHEMA = Path(__file__).resolve().parents[2] / "edged/schemas/stats-v1.schema.json"


def _config(frames: Path, port: int, models: list[dict[str, Any]],
            cameras: list[dict[str, Any]], **sections: dict[str, Any]) -> str:
    cfg = base_config(port, model=MODEL, frames=frames,
                      output={"decoder": "classification", "include_raw": False,
                              "stats_interval_s": 1.0, "top_k": 1, "min_score": 0.0},
                      **sections)
    text = config_text(cfg, cameras)
    for entry in models:
        text += "[[models]]\n" + "".join(f"{k} = {orjson.dumps(v).decode()}\n"
                                         for k, v in entry.items())
    return text


def _results(sub: Subscriber, camera: str, after: float = 0.0) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.on(f"/test/{camera}/results")
            if m.received_at > after]


def _wait(sub: Subscriber, daemon: DaemonProcess, camera: str, n: int, after: float = 0.0
          ) -> None:
    wait_until(lambda: len(_results(sub, camera, after)) >= n, 30,
               f"{n} results of {camera}", daemon.log_text)


def test_two_models_two_workers_each_camera_its_own(tmp_path: Path,
                                                    mosquitto: Mosquitto) -> None:
    scene = write_scene(tmp_path / "scene")
    model = {"id": "scene", "path": str(SCENE_MODEL), "labels": str(SCENE_LABELS)}
    cameras = [{"id": "digits"},
               {"id": "shapes", "model": "scene",
                "source": {"uri": str(scene), "fps": 20.0},
                "output": {"decoder": "detection", "min_score": 0.3}}]
    path, frames = tmp_path / "edged.toml", digit_folder(tmp_path, "digits")
    path.write_text(_config(frames, mosquitto.port, [model], cameras))
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        _wait(sub, daemon, "digits", 10)
        _wait(sub, daemon, "shapes", 10)
        digits, shapes = _results(sub, "digits"), _results(sub, "shapes")
        assert {(d["model"], d["decoded"]["kind"]) for d in digits} == {
            ("digits_int8.tflite", "classification")}
        assert {(d["model"], d["decoded"]["kind"]) for d in shapes} == {
            ("detect_centroid_int8.tflite", "detection")}
        assert any(d["decoded"]["detections"] for d in shapes)
        stats = wait_stats(sub, lambda s: set(s.get("models", {})) == {"model", "scene"})
        workers = stats["models"]
        assert workers["scene"]["model"] == "detect_centroid_int8.tflite"
        assert workers["model"]["worker_pid"] != workers["scene"]["worker_pid"]
        assert stats["worker_state"] == "running" and stats["delegate"] == "cpu"
        jsonschema.validate(stats, orjson.loads(STATS_SCHEMA.read_bytes()))

        # One model's worker dies: its camera waits for the restart, the other goes on.
        os.kill(workers["scene"]["worker_pid"], signal.SIGKILL)
        killed = time.time()
        _wait(sub, daemon, "shapes", 5, after=killed + 0.5)
        received = [m.received_at for m in sub.on("/test/digits/results")
                    if m.received_at > killed - 1.0]
        assert max(b - a for a, b in itertools.pairwise(received)) < 0.5
        after = wait_stats(sub, lambda s: s["models"]["scene"]["worker_restarts"] >= 1,
                           after=killed)
        assert after["models"]["model"]["worker_restarts"] == 0
        assert after["models"]["model"]["worker_pid"] == workers["model"]["worker_pid"]

        # A new file for one model: only its worker restarts.
        copy = tmp_path / "scene_copy.tflite"
        shutil.copy(SCENE_MODEL, copy)
        path.write_text(_config(frames, mosquitto.port, [{**model, "path": str(copy)}],
                                cameras))
        applied = sighup(daemon)
        _wait(sub, daemon, "shapes", 5, after=applied)
        log = daemon.log_text()
        assert "reload: model scene: restarting its worker" in log, log
        assert "reload: model [model]" not in log, log
        final = wait_stats(sub, lambda s: True, after=applied)
        assert final["models"]["model"]["worker_pid"] == workers["model"]["worker_pid"]

        # No camera uses the scene model any more: its worker stops, its counts stay.
        off = [cameras[0], {**cameras[1], "enabled": False}]
        path.write_text(_config(frames, mosquitto.port, [model], off))
        applied = sighup(daemon)
        _wait(sub, daemon, "digits", 5, after=applied)
        assert "reload: model scene: stopping its worker (no camera uses it)" in \
            daemon.log_text()
        alone = wait_stats(sub, lambda s: True, after=applied + 0.2)
        assert "models" not in alone and alone["worker_restarts"] >= 1  # the kill, kept
        assert alone["worker_pid"] == workers["model"]["worker_pid"]
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()


def test_two_models_on_two_edgetpus_each_pinned_to_its_device_edgetpu_stand_in(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    stub = build_stub_delegate(tmp_path)
    record = tmp_path / "record.txt"
    models = [{"id": "a", "path": str(MODEL), "accelerator": "edgetpu:usb:0"},
              {"id": "b", "path": str(MODEL), "accelerator": "edgetpu:usb:1"}]
    cameras = [{"id": "one", "model": "a"},
               {"id": "two", "model": "b", "source": {"kind": "synthetic"}}]
    path = tmp_path / "edged.toml"
    path.write_text(_config(digit_folder(tmp_path, "digits"), mosquitto.port, models, cameras,
                            inference={"edgetpu_library": str(stub), "fallback": "fail"}))
    with Subscriber(mosquitto.port, "edged/#") as sub, \
            DaemonProcess(path, env={"STUB_DELEGATE_RECORD": str(record)}) as daemon:
        _wait(sub, daemon, "one", 5)
        _wait(sub, daemon, "two", 5)
        stats = wait_stats(sub, lambda s: set(s.get("models", {})) == {"a", "b"})
        assert {m["delegate"] for m in stats["models"].values()} == {"edgetpu"}
        assert daemon.stop() == 0
    devices = sorted(line for line in record.read_text().splitlines()
                     if line.startswith("device="))
    # One worker each, on its own (each model and its twin, edged.inference.overlap).
    assert devices == ["device=usb:0", "device=usb:0", "device=usb:1", "device=usb:1"]


def test_two_models_on_one_edgetpu_share_its_worker_edgetpu_stand_in(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The models on one Edge TPU run in one worker (libedgetpu gives a device to one
    process): each camera gets its own model's answers from it; killed, it comes
    back with both; a model moved to another Edge TPU gets a worker of its own."""
    stub, record = build_stub_delegate(tmp_path), tmp_path / "record.txt"
    models = [{"id": "a", "path": str(MODEL), "accelerator": "edgetpu:usb:0"},
              {"id": "b", "path": str(SCENE_MODEL), "labels": str(SCENE_LABELS),
               "accelerator": "edgetpu:usb:0"}]
    cameras = [{"id": "one", "model": "a"},
               {"id": "two", "model": "b", "output": {"decoder": "detection"},
                "source": {"uri": str(write_scene(tmp_path / "scene")), "fps": 20.0}}]
    path, frames = tmp_path / "edged.toml", digit_folder(tmp_path, "digits", "3")
    inference = {"edgetpu_library": str(stub), "fallback": "fail"}
    path.write_text(_config(frames, mosquitto.port, models, cameras, inference=inference))
    with Subscriber(mosquitto.port, "edged/#") as sub, \
            DaemonProcess(path, env={"STUB_DELEGATE_RECORD": str(record)}) as daemon:
        _wait(sub, daemon, "one", 5)
        _wait(sub, daemon, "two", 5)
        assert {(d["model"], d["decoded"]["classes"][0]["label_id"])
                for d in _results(sub, "one")} == {("digits_int8.tflite", 3)}
        shapes = _results(sub, "two")
        assert {(d["model"], d["decoded"]["kind"]) for d in shapes} == {
            ("detect_centroid_int8.tflite", "detection")}
        assert any(d["decoded"]["detections"] for d in shapes)
        stats = wait_stats(sub, lambda s: set(s.get("models", {})) == {"a", "b"})
        shared = stats["models"]
        assert shared["a"]["worker_pid"] == shared["b"]["worker_pid"] == stats["worker_pid"]
        assert {m["delegate"] for m in shared.values()} == {"edgetpu"}
        assert (shared["a"]["model"], shared["b"]["model"]) == (
            "digits_int8.tflite", "detect_centroid_int8.tflite")
        jsonschema.validate(stats, orjson.loads(STATS_SCHEMA.read_bytes()))
        # One worker loaded both, each (and its twin, edged.inference.overlap) with its
        # delegate instance for the one device.
        assert record.read_text().splitlines().count("device=usb:0") == 4

        # The shared worker dies: both cameras resume on its replacement.
        os.kill(stats["worker_pid"], signal.SIGKILL)
        killed = time.time()
        _wait(sub, daemon, "one", 3, after=killed + 0.5)
        _wait(sub, daemon, "two", 3, after=killed + 0.5)
        after = wait_stats(sub, lambda s: s["worker_restarts"] >= 1, after=killed)
        assert after["worker_restarts"] == 1  # one worker, counted once

        # Model b moved to a second Edge TPU: the shared worker restarts with a alone,
        # b gets its own.
        moved = [models[0], {**models[1], "accelerator": "edgetpu:usb:1"}]
        path.write_text(_config(frames, mosquitto.port, moved, cameras, inference=inference))
        applied = sighup(daemon)
        _wait(sub, daemon, "one", 3, after=applied)
        _wait(sub, daemon, "two", 3, after=applied)
        apart = wait_stats(sub, lambda s: s["models"]["a"]["worker_pid"]
                           != s["models"]["b"]["worker_pid"], after=applied)
        assert apart["models"]["b"]["delegate"] == "edgetpu"
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()
    assert "device=usb:1" in record.read_text().splitlines()


def test_a_models_entry_no_camera_uses_restarts_no_worker(tmp_path: Path,
                                                          mosquitto: Mosquitto) -> None:
    frames = digit_folder(tmp_path, "digits")
    path = tmp_path / "edged.toml"
    spare = {"id": "spare", "path": str(MODEL)}
    path.write_text(_config(frames, mosquitto.port, [spare], []))  # no [[cameras]]
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        wait_until(lambda: len(sub.on("/test/results")) >= 3, 30, "results", daemon.log_text)
        pid = daemon.worker_pid()
        path.write_text(_config(frames, mosquitto.port, [{**spare, "accelerator": "cpu"}], []))
        applied = sighup(daemon)
        wait_until(lambda: len([m for m in sub.on("/test/results")
                                if m.received_at > applied]) >= 3, 30, "results after",
                   daemon.log_text)
        assert daemon.worker_pid() == pid
        assert "restarting its worker" not in daemon.log_text()
        assert daemon.stop() == 0


def test_three_cameras_three_models_three_frame_sizes(tmp_path: Path,
                                                      mosquitto: Mosquitto) -> None:
    """The issue's case: three cameras with different models and frame sizes at once."""
    ssd = MODEL.parent / "ssd_postprocess.tflite"
    models = [{"id": "scene", "path": str(SCENE_MODEL), "labels": str(SCENE_LABELS)},
              {"id": "ssd", "path": str(ssd)}]
    cameras = [{"id": "digits"},  # 32x32 folder frames, the [model] classifier
               {"id": "shapes", "model": "scene", "output": {"decoder": "detection"},
                "source": {"uri": str(write_scene(tmp_path / "scene")), "fps": 20.0}},
               {"id": "street", "model": "ssd", "output": {"decoder": "detection"},
                "source": {"kind": "synthetic", "width": 640, "height": 480, "fps": 15.0}}]
    path = tmp_path / "edged.toml"
    path.write_text(_config(digit_folder(tmp_path, "digits"), mosquitto.port, models, cameras))
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        for camera in ("digits", "shapes", "street"):
            _wait(sub, daemon, camera, 5)
        seen = {camera: {(d["model"], d["decoded"]["kind"]) for d in _results(sub, camera)}
                for camera in ("digits", "shapes", "street")}
        assert seen == {"digits": {("digits_int8.tflite", "classification")},
                        "shapes": {("detect_centroid_int8.tflite", "detection")},
                        "street": {("ssd_postprocess.tflite", "detection")}}
        stats = wait_stats(sub, lambda s: len(s.get("models", {})) == 3)
        assert len({m["worker_pid"] for m in stats["models"].values()}) == 3
        assert all(stats["cameras"][c]["frames"] > 0 for c in ("digits", "shapes", "street"))
        assert daemon.stop() == 0
