"""Exit codes and waits: what systemd's restart loop sees (docs/field-guide.md).

A problem a restart cannot fix exits 78 with its one line (the unit's
RestartPreventExitStatus=78 then leaves it stopped), and says why where
subscribers look: the retained offline status and the last stats. A problem
that can heal by itself (no Coral yet, broker away, camera absent, a worker
that dies) is waited out inside the daemon, which tells systemd it is up
(READY=1) and keeps the watchdog fed while it retries.

Every case runs the real `edged run` against a real mosquitto; a datagram
socket stands in for systemd's NOTIFY_SOCKET, the stub delegate for the Coral.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from broker import Mosquitto, free_port, retained
from daemon_helpers import MODELS, DaemonProcess, base_config, write_config
from faults_helpers import (
    NotifyRecorder,
    build_stub_delegate,
    copy_digit_frames,
    is_stats,
    subscribed,
    wait_until,
)
from notify_helpers import abstract_listener

DIGITS = MODELS / "digits_int8.tflite"
EX_CONFIG = 78
WATCHDOG = {"WATCHDOG_USEC": "1000000"}  # a ping every 0.5 s while healthy
FRAMES_WINDOW_S = 10.0  # the daemon's "no frames inferred recently" window
NO_CORAL = ("Edge TPU delegate: no USB or PCIe Edge TPU found (device 'first found'): check "
            "it is plugged in (lsusb lists 18d1:9302 or 1a6e:089a; PCIe shows /dev/apex_0), "
            "then check permissions: plugdev/apex groups and the udev rules")


def config_for(tmp_path: Path, port: int, model: Path = DIGITS, **sections: Any) -> Path:
    frames = copy_digit_frames(tmp_path / "frames")
    cfg = base_config(port, model=model, frames=frames, **sections)
    return write_config(tmp_path / "edged.toml", cfg)


def errors_of(log: str) -> list[str]:
    return [line.split(" ERROR   ", 1)[1] for line in log.splitlines() if " ERROR " in line]


def exits_78_saying(config: Path, port: int, line: str) -> None:
    """The daemon exits 78 with `line` as its only error, and leaves it on the broker."""
    with DaemonProcess(config) as daemon:
        code = daemon.proc.wait(60)
    log = daemon.log_text()
    assert code == EX_CONFIG, log
    assert errors_of(log) == [f"edged: {line}"], log
    status = retained(port, "edged/test/status")
    assert status is not None, "no retained status"
    doc = orjson.loads(status.payload)
    assert (doc["state"], doc["reason"], doc["error"]) == ("offline", "failed", line), doc
    stats = retained(port, "edged/test/stats")
    assert stats is not None and orjson.loads(stats.payload)["last_error"] == line


def test_refused_model_exits_78_and_says_why_on_the_broker(tmp_path: Path,
                                                           mosquitto: Mosquitto) -> None:
    model = tmp_path / "notes.tflite"
    model.write_bytes(b"not a model at all, just text")
    config = config_for(tmp_path, mosquitto.port, model)
    exits_78_saying(config, mosquitto.port,
                    f"{model}: not a TFLite model (file identifier b'a mo', expected b'TFL3' "
                    "at bytes 4..8)")


def test_missing_labels_file_exits_78(tmp_path: Path, mosquitto: Mosquitto) -> None:
    labels = tmp_path / "labels.txt"
    config = config_for(tmp_path, mosquitto.port)
    config.write_text(config.read_text().replace(
        "[model]\n", f'[model]\nlabels = "{labels}"\n'))
    exits_78_saying(config, mosquitto.port, f"labels file '{labels}': not found")


def test_edgetpu_model_with_neither_a_coral_nor_a_cpu_model_exits_78(
        tmp_path: Path, mosquitto: Mosquitto, shared_models: Path) -> None:
    model = shared_models / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    library = "/nonexistent/libedgetpu.so.1"
    config = config_for(tmp_path, mosquitto.port, model, inference={
        "delegate": "edgetpu", "edgetpu_library": library, "fallback": "cpu"})
    exits_78_saying(config, mosquitto.port, (
        f"{model}: compiled for the Edge TPU (edgetpu-custom-op) and cannot run on the CPU: "
        f"Edge TPU delegate: {library} not found: the Edge TPU runtime is not installed "
        "(apt install libedgetpu1-std); to fall back to the CPU, set model.path to the "
        "model's CPU build and model.edgetpu_path to this file"))


def test_libedgetpu_missing_with_fallback_fail_exits_78(tmp_path: Path,
                                                        mosquitto: Mosquitto) -> None:
    library = "/nonexistent/libedgetpu.so.1"
    config = config_for(tmp_path, mosquitto.port, inference={
        "delegate": "edgetpu", "edgetpu_library": library, "fallback": "fail"})
    exits_78_saying(config, mosquitto.port, (
        f"Edge TPU delegate: {library} not found: the Edge TPU runtime is not installed "
        "(apt install libedgetpu1-std) (fallback = fail)"))


def ready_and_fed(notify: NotifyRecorder, started: float) -> None:
    """READY=1 came, and pings still come after the frames window has passed."""
    wait_until(lambda: any(m.get("READY") == "1" for m in notify.messages), 30, "READY=1")
    wait_until(lambda: time.monotonic() - started > FRAMES_WINDOW_S + 2, 30, "the window")
    wait_until(lambda: notify.pings(after=time.monotonic() - 1.5), 3,
               "a watchdog ping after the frames window")


def test_no_coral_yet_is_waited_out_edgetpu_stand_in(tmp_path: Path,
                                                     mosquitto: Mosquitto) -> None:
    """fallback = "fail": no CPU; the daemon waits for the Coral, then runs on it."""
    stub = build_stub_delegate(tmp_path)
    unplugged = tmp_path / "unplugged"
    unplugged.touch()
    config = config_for(tmp_path, mosquitto.port, inference={
        "delegate": "edgetpu", "edgetpu_library": str(stub), "fallback": "fail",
        "restart_backoff_s": 0.1, "restart_backoff_max_s": 0.5})
    env = {"STUB_DELEGATE_FAIL_IF_EXISTS": str(unplugged), **WATCHDOG}
    with abstract_listener() as listener, NotifyRecorder(listener) as notify, \
            subscribed(mosquitto.port) as sub, \
            DaemonProcess(config, env={"NOTIFY_SOCKET": listener.env_value, **env}) as daemon:
        started = time.monotonic()
        waiting = sub.wait_for(is_stats(lambda s: s["worker_state"] == "waiting"), timeout=30)
        figures = orjson.loads(waiting.payload)
        assert figures["last_error"] == f"{NO_CORAL} (fallback = fail)", figures
        ready_and_fed(notify, started)
        assert any("worker waiting" in s for s in notify.statuses()), notify.statuses()
        assert not sub.on("/results") and daemon.proc.poll() is None
        unplugged.unlink()  # the Coral is plugged in
        got = sub.wait_for(lambda m: m.topic.endswith("/results"), timeout=15)
        assert orjson.loads(got.payload)["delegate"] == "edgetpu"
        assert daemon.stop() == 0
    log = daemon.log_text()
    waits = [line for line in log.splitlines() if "waiting for it" in line]
    assert [line.split(" WARNING ", 1)[1] for line in waits] == [
        f"edged.supervisor: {NO_CORAL} (fallback = fail); waiting for it (retrying, at most "
        "0.5 s apart)"], log


def test_stop_while_waiting_for_the_coral_exits_0_edgetpu_stand_in(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    stub = build_stub_delegate(tmp_path)
    config = config_for(tmp_path, mosquitto.port, inference={
        "delegate": "edgetpu", "edgetpu_library": str(stub), "fallback": "fail"})
    with subscribed(mosquitto.port) as sub, \
            DaemonProcess(config, env={"STUB_DELEGATE_FAIL": "1"}) as daemon:
        sub.wait_for(is_stats(lambda s: s["worker_state"] == "waiting"), timeout=30)
        assert daemon.stop() == 0
    assert not errors_of(daemon.log_text()), daemon.log_text()


def test_coral_whose_worker_keeps_dying_is_waited_out_edgetpu_stand_in(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """fallback = "fail" and a worker that aborts on every load: restarted with
    backoff for as long as it takes, never an exit or a watchdog kill."""
    stub = build_stub_delegate(tmp_path)
    config = config_for(tmp_path, mosquitto.port, inference={
        "delegate": "external", "external_library": str(stub), "fallback": "fail",
        "external_options": {"abort_on_prepare": "1"},
        "restart_backoff_s": 0.1, "restart_backoff_max_s": 0.5})
    with abstract_listener() as listener, NotifyRecorder(listener) as notify, \
            DaemonProcess(config, env={"NOTIFY_SOCKET": listener.env_value,
                                       **WATCHDOG}) as daemon:
        ready_and_fed(notify, time.monotonic())
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    assert daemon.log_text().count("worker killed by SIGABRT while loading the model") >= 3


def test_broker_away_at_start_is_waited_out(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", port=free_port())
    config = config_for(tmp_path, broker.port)
    with DaemonProcess(config) as daemon:
        time.sleep(3.0)
        assert daemon.proc.poll() is None, daemon.log_text()
        with broker, subscribed(broker.port) as sub:
            sub.wait_for(lambda m: m.topic.endswith("/results"), timeout=15)
            assert daemon.stop() == 0


def test_camera_absent_is_waited_out_with_the_watchdog_fed(tmp_path: Path,
                                                           mosquitto: Mosquitto) -> None:
    config = config_for(tmp_path, mosquitto.port, source={
        "kind": "v4l2", "uri": "/dev/video-edged-absent", "reopen_backoff_s": 0.2,
        "reopen_backoff_max_s": 1.0})
    with abstract_listener() as listener, NotifyRecorder(listener) as notify, \
            DaemonProcess(config, env={"NOTIFY_SOCKET": listener.env_value,
                                       **WATCHDOG}) as daemon:
        ready_and_fed(notify, time.monotonic())
        assert any("source reopening" in s for s in notify.statuses()), notify.statuses()
        assert daemon.stop() == 0
