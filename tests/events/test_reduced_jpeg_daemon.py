"""JPEG frames decoded at 1/4 by the real daemon (source.jpeg_decode = "reduced"):
boxes, pixel zones and snapshots stay in the camera's own pixels.

The scripted scene (tests/scene_helpers.py) is drawn 4x larger, 1024x1024, as
JPEGs in a folder: what a user's 1024-pixel camera would send. The detector's
input is 64x64 and snapshots ask for 256 pixels, so each JPEG is decoded at 1/4
(256x256) and never whole; the events must be the ones the 256x256 PNG scene
gives (tests/events/test_events_daemon.py), with every box and zone 4x.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import orjson
from broker import Mosquitto, Subscriber
from daemon_helpers import DaemonProcess, base_config, write_config
from reload_helpers import sighup, wait_log
from scene_helpers import FPS, LABELS, LINES, MODEL, SIZE, render, scene
from sources_helpers import MjpegServer

CAMERA = "drive"
K = 4
# The driveway (the bottom half) in the camera's pixels, as a user measures it on a
# full-size picture: the same zone as the scene's normalized one.
DRIVEWAY = [[0, 512], [1024, 512], [1024, 1024], [0, 1024]]


def _write_big_scene(directory: Path) -> Path:
    directory.mkdir()
    for i, shapes in enumerate(scene()):
        big = cv2.resize(render(shapes), (SIZE * K, SIZE * K), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(directory / f"{i:04d}.jpg"), big[:, :, ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
    return directory


def test_jpegs_decoded_at_a_quarter_give_full_size_boxes_zones_and_events(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    frames = _write_big_scene(tmp_path / "frames")
    cfg = base_config(
        mosquitto.port, model=MODEL, frames=frames, device="scene",
        source={"name": CAMERA, "loop": False, "fps": FPS},
        output={"decoder": "detection", "publish": "both", "min_score": 0.3},
        events={"hold_s": 0.5, "labels": ["person", "car"], "lines": LINES,
                "zones": [{"name": "driveway", "points": DRIVEWAY, "units": "pixels"}],
                "snapshot": {"max_width": 256}})
    cfg["model"]["labels"] = str(LABELS)
    with Subscriber(mosquitto.port, "edged/scene/#") as sub, \
            DaemonProcess(write_config(tmp_path / "edged.toml", cfg),
                          args=("--exit-on-end",)) as daemon:
        assert daemon.proc.wait(60) == 0, daemon.log_text()
    log = daemon.log_text()
    assert "JPEGs of 1024x1024 decoded at 1/4 (256x256; at least 256x64 needed)" in log, log
    events = [orjson.loads(m.payload) for m in sub.on(f"/{CAMERA}/events")]
    assert [(e["type"], e["label"], e["zones"]) for e in events] == [
        ("new", "person", []), ("update", "person", []), ("new", "car", ["driveway"]),
        ("update", "person", ["driveway"]), ("end", "car", ["driveway"]),
        ("end", "person", ["driveway"])], log
    # The parked car, (160, 176)-(240, 224) in the 256-pixel scene: 4x, to a pixel or two
    # of the scene's own (JPEG's ringing at the rectangles' edges adds a few).
    assert np.allclose(events[2]["box"], [640, 704, 960, 896], atol=12), events[2]["box"]
    boxes = [d["box"] for m in sub.on("/results")
             for d in orjson.loads(m.payload)["decoded"]["detections"]]
    assert boxes and max(max(b) for b in boxes) > 600 and max(max(b) for b in boxes) <= 1024
    shot = sub.on(f"/{CAMERA}/snapshot/car")[0].payload
    image = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (256, 256, 3)
    # Its box was drawn where the car is in the reduced frame: the orange box's top edge
    # (red 255; the green car and the black ground have none) at y = 176.
    assert image[176 - 2:176 + 3, 200, 2].max() > 90  # BGR: [..., 2] is red (a 1-px line, JPEG)
    assert image[150, 200, 2] < 60 and image[200, 200, 2] < 60


def test_an_http_cameras_jpegs_are_decoded_by_the_pipeline_at_a_quarter(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The same pictures from an MJPEG camera over HTTP, sending faster than source.fps:
    frames beyond fps are never decoded, the rest are decoded when the pipeline takes
    them (defer_decode), at 1/4, and the boxes are the camera's pixels."""
    parked = [s for s in scene()[40] if s.channel == 1]  # the car alone
    big = cv2.resize(render(parked), (SIZE * K, SIZE * K), interpolation=cv2.INTER_NEAREST)
    jpeg = bytes(cv2.imencode(".jpg", big[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1])
    camera = MjpegServer(lambda i: jpeg, interval=0.01).start()  # ~100 frames/s
    try:
        cfg = base_config(
            mosquitto.port, model=MODEL, frames=tmp_path, device="scene",
            source={"kind": "stream", "uri": camera.url, "name": CAMERA, "fps": 20.0},
            output={"decoder": "detection", "min_score": 0.3})
        cfg["model"]["labels"] = str(LABELS)
        with Subscriber(mosquitto.port, "edged/scene/#") as sub, \
                DaemonProcess(write_config(tmp_path / "edged.toml", cfg)) as daemon:
            sub.wait_count(lambda m: m.topic.endswith("/results"), 20, timeout=30)
            assert daemon.stop() == 0
        log = daemon.log_text()
        assert "JPEGs of 1024x1024 decoded at 1/8 (128x128; at least 64x64 needed)" in log, log
        results = [orjson.loads(m.payload) for m in sub.on("/results")]
        for doc in results:
            (car,) = doc["decoded"]["detections"]
            assert np.allclose(car["box"], [640, 704, 960, 896], atol=16), car["box"]
        # source.fps = 20 of the camera's ~100: the seqs count frames let through.
        span = results[-1]["captured_at"] - results[0]["captured_at"]
        assert len(results) / max(span, 1e-3) < 30
    finally:
        camera.stop()


def test_a_reload_that_needs_a_larger_decode_reopens_the_http_camera(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Results only: 1/8 covers the 64x64 input. Events with snapshots 640 wide, by a
    reload that leaves [source] alone: the camera is reopened and decoded whole (1/2
    of 1024 is under 640)."""
    big = cv2.resize(render(scene()[40]), (SIZE * K, SIZE * K), interpolation=cv2.INTER_NEAREST)
    jpeg = bytes(cv2.imencode(".jpg", big[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1])
    camera = MjpegServer(lambda i: jpeg, interval=0.02).start()
    try:
        cfg = base_config(
            mosquitto.port, model=MODEL, frames=tmp_path, device="scene",
            source={"kind": "stream", "uri": camera.url, "name": CAMERA},
            output={"decoder": "detection", "min_score": 0.3})
        cfg["model"]["labels"] = str(LABELS)
        path = write_config(tmp_path / "edged.toml", cfg)
        with DaemonProcess(path) as daemon:
            wait_log(daemon, "JPEGs of 1024x1024 decoded at 1/8 (128x128; at least 64x64")
            cfg["output"]["publish"] = "both"
            write_config(path, cfg)
            sighup(daemon)
            wait_log(daemon, "JPEGs of 1024x1024 decoded at full size (1024x1024; at least "
                             "640x64 needed)")
            assert daemon.stop() == 0
    finally:
        camera.stop()
