"""The Prometheus textfile: format, atomic replacement, and a real daemon's figures."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import orjson
import pytest
from broker import Mosquitto, retained
from daemon_helpers import MODELS, DaemonProcess, base_config, write_config
from fleet_helpers import copy_frames, parse_prom, sample

from edged.config import ConfigError, load_config
from edged.service.metrics import Textfile, render, write_atomic

FIGURES = {"frames": 120, "fps": 29.5, "invoke_ms_p50": 4.25, "invoke_ms_p95": 7.5,
           "latency_ms_p50": 9.0, "latency_ms_p95": 12.125, "uptime_s": 61.2,
           "frames_dropped": 3, "results_queued": 0, "results_dropped": 0,
           "results_published": 118, "delegate": "edgetpu", "worker_state": "running",
           "worker_restarts": 1, "broker": "connected", "source": "running",
           "source_reopens": 0, "last_error": "", "config_reload": "ok"}


def test_render_is_valid_exposition_text_with_device_and_delegate_labels() -> None:
    types, samples = parse_prom(render('cam "1"\\', FIGURES, model="m.tflite"))
    assert types["edged_frames_total"] == "counter" and types["edged_fps"] == "gauge"
    for (_name, labels) in samples:
        assert ("device", 'cam "1"\\') in labels and ("delegate", "edgetpu") in labels
    assert sample(samples, "edged_up") == 1
    assert sample(samples, "edged_invoke_seconds", quantile="0.5") == pytest.approx(0.00425)
    assert sample(samples, "edged_latency_seconds", quantile="0.95") == pytest.approx(0.012125)
    assert sample(samples, "edged_worker_restarts_total") == 1
    assert sample(samples, "edged_broker_connected") == 1
    assert sample(samples, "edged_worker_state", state="running") == 1
    assert sample(samples, "edged_info", model="m.tflite") == 1


def test_each_camera_has_its_own_series() -> None:
    cameras = {"porch": {"frames": 50, "fps": 14.5, "latency_ms_p50": 20.0, "frames_dropped": 2,
                         "source_reopens": 0, "source": "running"},
               "drive": {"frames": 0, "fps": 0.0, "latency_ms_p50": 0.0, "frames_dropped": 0,
                         "source_reopens": 7, "source": "reopening",
                         "jpeg_decoding": "camera"}}
    types, samples = parse_prom(render("cam", {**FIGURES, "cameras": cameras,
                                                "jpeg_decoding": "camera"}))
    assert types["edged_camera_frames_total"] == "counter"
    assert sample(samples, "edged_camera_fps", camera="porch") == 14.5
    assert sample(samples, "edged_camera_latency_seconds", camera="porch",
                  quantile="0.5") == pytest.approx(0.02)
    assert sample(samples, "edged_camera_source_reopens_total", camera="drive") == 7
    assert sample(samples, "edged_camera_source_state", camera="drive", state="reopening") == 1
    # Where a JPEG camera's frames are decoded (source.jpeg_decode_thread = auto moves them).
    assert sample(samples, "edged_camera_jpeg_decoding", camera="drive", state="camera") == 1
    assert not [labels for name, labels in samples
                if name == "edged_camera_jpeg_decoding" and ("camera", "porch") in labels]
    assert sample(samples, "edged_jpeg_decoding", state="camera") == 1
    assert sample(samples, "edged_frames_total") == 120  # the device's, as before


def test_figures_that_are_missing_or_null_are_left_out() -> None:
    _, samples = parse_prom(render("cam", {"fps": None, "delegate": "cpu"}, up=False))
    names = {name for name, _ in samples}
    assert names == {"edged_up", "edged_info", "edged_broker_connected"}
    assert sample(samples, "edged_up") == 0


def test_write_is_atomic_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "edged.prom"
    write_atomic(path, "a 1\n")
    inode = path.stat().st_ino
    write_atomic(path, "a 2\n")
    assert path.read_text() == "a 2\n"
    assert path.stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edged.prom"]


def test_an_unwritable_directory_is_logged_once_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tf = Textfile(tmp_path / "missing" / "edged.prom")
    with caplog.at_level(logging.WARNING, logger="edged.metrics"):
        assert tf.write("cam", FIGURES) is False
        assert tf.write("cam", FIGURES) is False
    assert [r.getMessage() for r in caplog.records] == [
        f"metrics.textfile: cannot write {tmp_path / 'missing' / 'edged.prom'}: "
        "no such file or directory"]
    (tmp_path / "missing").mkdir()
    assert tf.write("cam", FIGURES) is True


def test_textfile_must_be_a_prom_file(tmp_path: Path) -> None:
    cfg = tmp_path / "edged.toml"
    cfg.write_text('[metrics]\ntextfile = "/var/lib/node_exporter/edged.txt"\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert list(err.value.problems) == [
        f"{cfg}:2: metrics.textfile: must end in .prom (node_exporter's textfile collector "
        'reads only *.prom files) (got "/var/lib/node_exporter/edged.txt")']


def _listening_ports(pid: int) -> set[int]:
    """TCP ports the process listens on (from /proc: the socket inodes it holds)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def test_daemon_writes_the_stats_figures_and_opens_no_port(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    prom = tmp_path / "textfile" / "edged.prom"
    prom.parent.mkdir()
    cfg = base_config(mosquitto.port, model=MODELS / "digits_int8.tflite",
                      frames=copy_frames(tmp_path / "frames"), device="cam-1",
                      metrics={"textfile": str(prom)})
    daemon = DaemonProcess(write_config(tmp_path / "edged.toml", cfg))
    try:
        deadline = time.monotonic() + 30
        frames = 0.0
        while time.monotonic() < deadline:
            if prom.exists():
                _, samples = parse_prom(prom.read_text())
                frames = sample(samples, "edged_frames_total")
                if frames > 0:
                    break
            time.sleep(0.2)
        assert frames > 0, daemon.log_text()
        assert sample(samples, "edged_up", device="cam-1", delegate="cpu") == 1
        assert sample(samples, "edged_info", model="digits_int8.tflite") == 1
        assert _listening_ports(daemon.pid) == set()
        assert all(p.suffix == ".prom" for p in prom.parent.iterdir())
    finally:
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log_text()
    # The last file and the last retained stats come from one set of figures.
    stats_msg = retained(mosquitto.port, "edged/cam-1/stats")
    assert stats_msg is not None
    stats = orjson.loads(stats_msg.payload)
    _, samples = parse_prom(prom.read_text())
    assert sample(samples, "edged_up") == 0
    assert sample(samples, "edged_frames_total") == stats["frames"] > 0
    assert sample(samples, "edged_fps") == stats["fps"]
    for q, key in (("0.5", "invoke_ms_p50"), ("0.95", "invoke_ms_p95")):
        assert sample(samples, "edged_invoke_seconds", quantile=q) == \
            pytest.approx(stats[key] / 1000, rel=1e-12)
    for q, key in (("0.5", "latency_ms_p50"), ("0.95", "latency_ms_p95")):
        assert sample(samples, "edged_latency_seconds", quantile=q) == \
            pytest.approx(stats[key] / 1000, rel=1e-12)
    for name, key in (("edged_frames_dropped_total", "frames_dropped"),
                      ("edged_results_published_total", "results_published"),
                      ("edged_results_dropped_total", "results_dropped"),
                      ("edged_worker_restarts_total", "worker_restarts"),
                      ("edged_source_reopens_total", "source_reopens"),
                      ("edged_results_queued", "results_queued"),
                      ("edged_uptime_seconds", "uptime_s")):
        assert sample(samples, name) == stats[key], name
    assert sample(samples, "edged_broker_connected") == int(stats["broker"] == "connected")
    assert sample(samples, "edged_worker_state", state=stats["worker_state"]) == 1


def test_a_cpu_fallback_is_a_gauge() -> None:
    for reason, value in (("Edge TPU delegate: ...; running on the CPU instead", 1.0), ("", 0.0)):
        _, samples = parse_prom(render("cam", {"delegate": "cpu", "fallback": reason}))
        found = {name: v for (name, _), v in samples.items() if name == "edged_fallback"}
        assert found == {"edged_fallback": value}
