"""The real `edged run` on a STAND-IN V4L2 webcam (tests/v4l2_standin.py, opened in
the daemon's own process through a sitecustomize.py: no V4L2 device can exist
here), with the real interpreter, a real mosquitto and a subscriber: the camera
is asked for MJPEG, its JPEGs are decoded by edged at 1/8 for the 32x32 digits
model (once taken, or on the camera's thread as each arrives), and the results
name the digit the camera shows."""

from __future__ import annotations

import signal
from pathlib import Path

import orjson
import pytest
from broker import Mosquitto, Received, Subscriber
from daemon_helpers import DaemonProcess, base_config, write_config
from faults_helpers import is_stats
from v4l2_standin import install_in_subprocesses

DATA = Path(__file__).resolve().parents[2] / "edged" / "data"


# auto: a 30 frames/s camera before a model of a few hundred microseconds leaves the
# pipeline waiting nearly all the time, so its decodes stay there.
@pytest.mark.parametrize(("thread", "when", "where"), [
    ("auto", "once taken or as each arrives (jpeg_decode_thread = auto)", "pipeline"),
    ("camera", "as each arrives", "camera")])
def test_standin_webcam_daemon_decodes_mjpeg_reduced_and_classifies_what_it_shows(
        tmp_path: Path, mosquitto: Mosquitto, thread: str, when: str, where: str) -> None:
    env = install_in_subprocesses(tmp_path / "site", DATA / "frames" / "digit_7_1496.png")
    cfg = base_config(mosquitto.port, model=DATA / "digits_int8.tflite", frames=tmp_path,
                      device="webcam", source={"kind": "v4l2", "uri": "0", "width": 640,
                                               "height": 480, "fps": 30.0,
                                               "jpeg_decode_thread": thread},
                      output={"decoder": "classification", "stats_interval_s": 1.0})
    with Subscriber(mosquitto.port, ["edged/webcam/results", "edged/webcam/stats"]) as sub:
        daemon = DaemonProcess(write_config(tmp_path / "edged.toml", cfg), env)
        try:
            sub.wait_for(lambda m: len(_results(sub.messages)) >= 20, timeout=60)
            # The stats tell where the frames are decoded (the device has one camera).
            stats = sub.wait_for(is_stats(lambda s: "jpeg_decoding" in s), timeout=10)
        finally:
            daemon.proc.send_signal(signal.SIGTERM)
            rc = daemon.proc.wait(30)
    log = daemon.log_text()
    assert rc == 0, log
    assert (f"opencv:0: MJPG 640x480 from the camera, decoded by edged, at least 32x32, "
            f"{when}") in log, log
    assert "opencv:0: JPEGs of 640x480 decoded at 1/8 (80x60; at least 32x32 needed)" in log
    assert orjson.loads(stats.payload)["jpeg_decoding"] == where
    tops = [orjson.loads(m.payload)["decoded"]["classes"][0]["label_id"]
            for m in _results(sub.messages)]
    assert len(tops) >= 20 and set(tops) == {7}, tops


def _results(messages: list[Received]) -> list[Received]:
    return [m for m in messages if m.topic.endswith("/results")]
