"""A finite source (a folder or video with loop = false) ends: what a batch user sees.

Without `--exit-on-end` the daemon says "source ended" (status and STATUS=)
and idles, so systemd does not restart it and replay the files. With it,
`edged run` exits 0 once the last result has reached the broker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
from broker import Mosquitto, retained
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, results, write_config
from faults_helpers import NotifyRecorder, subscribed, wait_until
from notify_helpers import abstract_listener

DIGITS = MODELS / "digits_int8.tflite"


def batch_config(tmp_path: Path, port: int, count: int = 5) -> Path:
    folder = tmp_path / "batch"
    folder.mkdir()
    for f in sorted(FRAMES.glob("digit_*.png"))[:count]:
        shutil.copy(f, folder)
    return write_config(tmp_path / "edged.toml", base_config(
        port, model=DIGITS, frames=folder,
        source={"kind": "folder", "loop": False, "fps": 30.0},
        mqtt={"qos_results": 1}))


def test_exit_on_end_exits_0_once_every_result_is_delivered(tmp_path: Path,
                                                           mosquitto: Mosquitto) -> None:
    config = batch_config(tmp_path, mosquitto.port)
    with subscribed(mosquitto.port) as sub, \
            DaemonProcess(config, args=("--exit-on-end",)) as daemon:
        code = daemon.proc.wait(30)
        got = sorted(d["seq"] for d in results(sub.messages))
    log = daemon.log_text()
    assert code == 0, log
    assert got == [0, 1, 2, 3, 4], log
    assert "edged: source ended: every result delivered; exiting (--exit-on-end)" in log, log
    status = retained(mosquitto.port, "edged/test/status")
    assert status is not None
    doc = orjson.loads(status.payload)
    assert (doc["state"], doc["reason"]) == ("offline", "source ended"), doc


def test_without_exit_on_end_a_finite_source_idles_saying_source_ended(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = batch_config(tmp_path, mosquitto.port)
    with abstract_listener() as listener, NotifyRecorder(listener) as notify, \
            subscribed(mosquitto.port) as sub, \
            DaemonProcess(config, env={"NOTIFY_SOCKET": listener.env_value}) as daemon:
        said = sub.wait_for(lambda m: m.topic.endswith("/status")
                            and orjson.loads(m.payload)["reason"] == "source ended", timeout=30)
        assert orjson.loads(said.payload)["state"] == "online"
        wait_until(lambda: any("source ended" in s for s in notify.statuses()), 10,
                   "STATUS= saying the source ended")
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    assert sorted(d["seq"] for d in results(sub.messages)) == [0, 1, 2, 3, 4]
