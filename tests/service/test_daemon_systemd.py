"""The real `edged run` under a stand-in for systemd: a datagram socket bound as
NOTIFY_SOCKET (tests/notify_helpers.py), WATCHDOG_USEC/WATCHDOG_PID set the way
systemd sets them, stderr as a "journal stream", and real mosquitto."""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from broker import Mosquitto, Subscriber
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, write_config
from notify_helpers import Message, NotifyListener, path_listener
from reload_helpers import NOTIFY_KEYS, ShellDaemon, wait_log, worker_environ
from sources_helpers import MjpegServer, jpeg

MODEL = MODELS / "digits_int8.tflite"


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for f in sorted(FRAMES.glob("digit_*.png")):
        shutil.copy(f, folder)
    return folder


@pytest.fixture
def listener(tmp_path: Path):  # type: ignore[no-untyped-def]
    with path_listener(tmp_path) as bound:
        yield bound


def pings(messages: list[Message]) -> list[float]:
    return [m.at for m in messages if m.keys == ("WATCHDOG",)]


def test_ready_status_watchdog_reload_stopping_and_journal_lines(
        tmp_path: Path, mosquitto: Mosquitto, frames: Path, listener: NotifyListener) -> None:
    sub = Subscriber(mosquitto.port, "edged/#").start()
    cfg = base_config(mosquitto.port, model=MODEL, frames=frames)
    config = write_config(tmp_path / "edged.toml", cfg)
    # WATCHDOG_USEC=3 s: a ping every 1.5 s while healthy.
    env = {"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "3000000"}
    daemon = ShellDaemon(config, env, journal=True)
    try:
        ready = listener.receive_until("READY", timeout=60)[-1]
        # READY=1 follows the first result handed to MQTT (edged/daemon.py documents it).
        sub.wait_for(lambda m: m.topic.endswith("/results"), timeout=10)
        status = ready.get("STATUS") or ""
        assert re.match(r"\d+\.\d fps, invoke p50 [\d.]+ ms, delegate cpu, broker connected, "
                        r"source running", status), status

        # The worker inherits none of systemd's variables (NotifyAccess=main).
        assert not set(NOTIFY_KEYS) & set(worker_environ(daemon.worker_pid()))

        healthy = listener.drain(7.0)
        sent = pings(healthy)
        assert 3 <= len(sent) <= 7, [m.raw for m in healthy]
        assert max(b - a for a, b in itertools.pairwise(sent)) < 3.0  # within WATCHDOG_USEC
        statuses = [m.get("STATUS") for m in healthy if "STATUS" in m.keys]
        assert statuses and all("broker connected" in (s or "") for s in statuses)

        cfg["output"]["stats_interval_s"] = 2.0
        write_config(config, cfg)
        asked = monotonic_usec()
        daemon.send(signal.SIGHUP)
        around = listener.receive_until("READY", timeout=30)
        done = monotonic_usec()
        reloading = [m for m in around if "RELOADING" in m.keys]
        assert len(reloading) == 1 and around.index(reloading[0]) < len(around) - 1
        assert asked <= int(reloading[0].get("MONOTONIC_USEC") or 0) <= done
        assert "reload failed" not in (around[-1].get("STATUS") or "")

        daemon.send(signal.SIGTERM)
        stopping = listener.receive_until("STOPPING", timeout=10)[-1]
        assert stopping.get("STATUS") == "stopping"
        assert daemon.stop() == 0
    finally:
        daemon.__exit__()
        sub.stop()
    # journald: a <N> priority on every line of ours, no timestamp of our own.
    ours = [line for line in daemon.log_text().splitlines()
            if not line.startswith("INFO: Created TensorFlow Lite")]  # the runtime's C++ log
    assert ours and all(re.match(r"<[0-7]>[\w.]+: ", line) for line in ours), ours
    assert not any(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", line) for line in ours)
    assert "<6>edged: ready: first result published" in ours
    assert "<6>edged: reload: applied" in ours


class HangingCamera:
    """An HTTP MJPEG camera whose frame can hang half-sent: while `hanging` is
    set it declares a part and sends one byte of it every 0.3 s (every read
    gets data before its timeout, the frame never completes)."""

    def __init__(self) -> None:
        self.hanging = threading.Event()
        self._closing = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/stream.mjpg"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while not self._closing.is_set():
                conn, _ = self._server.accept()
                threading.Thread(target=self._stream, args=(conn,), daemon=True).start()

    def _stream(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)  # the request
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; "
                         b"boundary=frame\r\n\r\n")
            i = 0
            while not self._closing.is_set():
                if self.hanging.is_set():
                    conn.sendall(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                 b"Content-Length: 100000\r\n\r\n")
                    sent = 0
                    while self.hanging.is_set() and not self._closing.is_set():
                        conn.sendall(b"\0")
                        sent += 1
                        time.sleep(0.3)
                    conn.sendall(bytes(100000 - sent) + b"\r\n")  # not a JPEG: skipped
                part = jpeg(i * 7 % 256, size=(32, 32))
                conn.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d"
                             b"\r\n\r\n" % len(part) + part + b"\r\n")
                i += 1
                time.sleep(0.05)

    def close(self) -> None:
        self._closing.set()
        self.hanging.clear()
        self._server.close()


def _stream_daemon(tmp_path: Path, port: int, listener: NotifyListener, url: str,
                   **source: float) -> ShellDaemon:
    """`edged run` on an HTTP camera under the systemd stand-in, once it is ready
    and has pinged the watchdog (a ping every second while healthy)."""
    cfg = base_config(port, model=MODEL, frames=tmp_path,
                      source={"kind": "stream", "uri": url, **source})
    env = {"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "2000000"}
    daemon = ShellDaemon(write_config(tmp_path / "edged.toml", cfg), env)
    try:
        listener.receive_until("READY", timeout=60)
        listener.receive_until("WATCHDOG", timeout=5)
    except BaseException:
        daemon.__exit__()
        raise
    return daemon


def _watch(listener: NotifyListener, seconds: float) -> tuple[list[float], list[str]]:
    seen = listener.drain(seconds)
    return pings(seen), [m.get("STATUS") or "" for m in seen if "STATUS" in m.keys]


def test_a_camera_that_drips_a_frame_is_declared_stalled_and_the_watchdog_keeps_going(
        tmp_path: Path, mosquitto: Mosquitto, listener: NotifyListener) -> None:
    """A frame that never completes (a byte every 0.3 s, so no single read
    times out) is a stalled stream after the read timeout: edged reopens it
    itself, so the watchdog keeps being fed (a restart by systemd would only
    do what the reopen does), and results resume when the camera does."""
    camera = HangingCamera()
    daemon = _stream_daemon(tmp_path, mosquitto.port, listener, camera.url,
                            reopen_backoff_s=0.2, reopen_backoff_max_s=0.5)
    try:
        camera.hanging.set()
        gaps, statuses, last = [], [], time.monotonic()
        for _ in range(16):  # past the read timeout (5 s) and the frames window (10 s)
            got, said = _watch(listener, 1.0)
            statuses += said
            if got:
                gaps.append(got[0] - last)
                last = got[-1]
        assert gaps and max(gaps) < 2.5, gaps
        assert any("source reopening" in s for s in statuses), statuses
        assert not any("unhealthy" in s for s in statuses), statuses
        wait_log(daemon, "(stalled)", timeout=5)

        camera.hanging.clear()
        listener.receive_until("WATCHDOG", timeout=30)
        assert len(pings(listener.drain(3.0))) >= 1
        assert "watchdog withheld" not in daemon.log_text()
        assert daemon.stop() == 0
    finally:
        camera.hanging.clear()
        daemon.__exit__()
        camera.close()


@pytest.mark.slow
def test_watchdog_keeps_going_while_a_stalled_stream_is_retried(
        tmp_path: Path, mosquitto: Mosquitto, listener: NotifyListener) -> None:
    """A camera that goes silent is noticed (the read timeout) and reopened on
    schedule: edged handles it, so systemd is not asked to restart it. Slow (20 s,
    the read timeout and the frames window waited out): the default run has the
    dripping camera above under the watchdog, and the silent one reopened in
    tests/sources/test_faults_camera.py."""
    flowing = threading.Event()
    flowing.set()

    def part(i: int) -> bytes:
        flowing.wait(60)  # cleared: the camera stops sending mid-stream
        return jpeg(i * 7 % 256, size=(32, 32))

    camera = MjpegServer(part, interval=0.05).start()
    daemon = _stream_daemon(tmp_path, mosquitto.port, listener, camera.url,
                            reopen_backoff_s=0.2, reopen_backoff_max_s=0.5)
    try:
        flowing.clear()
        # Past the read timeout (5 s) and the frames window (10 s): pings all along.
        gaps, statuses, last = [], [], time.monotonic()
        for _ in range(18):
            got, said = _watch(listener, 1.0)
            statuses += said
            if got:
                gaps.append(got[0] - last)
                last = got[-1]
        assert max(gaps) < 2.5, gaps
        assert any("source reopening" in s for s in statuses), statuses
        assert not any("unhealthy" in s for s in statuses), statuses
        flowing.set()
        assert daemon.stop() == 0
    finally:
        flowing.set()
        daemon.__exit__()
        camera.stop()


def test_watchdog_pid_of_another_process_means_no_pings(
        tmp_path: Path, mosquitto: Mosquitto, frames: Path, listener: NotifyListener) -> None:
    config = write_config(tmp_path / "edged.toml",
                          base_config(mosquitto.port, model=MODEL, frames=frames))
    env = {"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    daemon = ShellDaemon(config, env, watchdog_pid=False)
    try:
        listener.receive_until("READY", timeout=60)
        assert pings(listener.drain(2.5)) == []
        assert daemon.stop() == 0
    finally:
        daemon.__exit__()


def test_broken_config_at_start_exits_78_naming_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "edged.toml"
    config.write_text("[output]\ntop_k = 0\n")
    daemon = DaemonProcess(config)
    try:
        assert daemon.proc.wait(30) == 78  # EX_CONFIG: RestartPreventExitStatus=78
    finally:
        daemon.__exit__()
    assert f"{config}:2: output.top_k: must be >= 1 (got 0)" in daemon.log_text()
