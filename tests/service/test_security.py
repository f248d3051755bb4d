"""Security properties of the real daemon: nothing listens, secrets stay secret,
TLS never falls back to plain text, exposed secret files are reported."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from broker import Mosquitto, Subscriber, TlsFiles, free_port
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, write_config

MODEL = MODELS / "digits_int8.tflite"
TCP_LISTEN = "0A"
UNIX_ACCEPTCON = 0x00010000  # __SO_ACCEPTCON: a listening unix socket


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listening_sockets(pid: int, inodes: set[int]) -> list[str]:
    """Every socket among `inodes` that accepts connections or datagrams from outside."""
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            f = line.split()
            # tcp: LISTEN; udp: any socket of ours bound to a port receives datagrams.
            if int(f[9]) in inodes and (table.startswith("udp") or f[3] == TCP_LISTEN):
                found.append(f"{table} {f[1]} state {f[3]}")
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[6]) in inodes and int(f[3], 16) & UNIX_ACCEPTCON:
            found.append(f"unix {f[7] if len(f) > 7 else '(unnamed)'} listening")
    return found


def _config(tmp_path: Path, port: int, **sections: Any) -> Path:
    return write_config(tmp_path / "edged.toml",
                        base_config(port, model=MODEL, frames=FRAMES, device="sec", **sections))


def test_daemon_and_worker_open_no_listening_socket(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with Subscriber(mosquitto.port, "edged/sec/results") as sub, \
            DaemonProcess(_config(tmp_path, mosquitto.port)) as daemon:
        sub.wait_count(lambda m: True, 5, timeout=30)
        pids = [daemon.pid, daemon.worker_pid()]
        for pid in pids:
            inodes = _socket_inodes(pid)
            # It does use sockets: the broker connection, the worker's socket pair.
            assert inodes, pid
            assert listening_sockets(pid, inodes) == [], pid
        # The check itself sees listeners: mosquitto's own port is one.
        assert listening_sockets(mosquitto.proc.pid, _socket_inodes(mosquitto.proc.pid))
        assert daemon.stop() == 0


@pytest.mark.parametrize("source", ["password_file", "password_env", "password"])
def test_password_never_appears_in_logs_or_on_topics(
        tmp_path: Path, mosquitto_factory: Any, source: str) -> None:
    secret = "pw-" + secrets.token_hex(12)
    broker = mosquitto_factory(allow_anonymous=False, passwords={"edged": secret},
                               acl="user edged\ntopic readwrite #\n")
    mqtt: dict[str, Any] = {"username": "edged"}
    env = {}
    if source == "password_file":
        pw = tmp_path / "mqtt-password"
        pw.write_text(secret + "\n")
        pw.chmod(0o600)
        mqtt["password_file"] = str(pw)
    elif source == "password_env":
        env["EDGED_TEST_MQTT_PASSWORD"] = secret
        mqtt["password_env"] = "EDGED_TEST_MQTT_PASSWORD"
    else:
        mqtt["password"] = secret
    config = _config(tmp_path, broker.port, mqtt=mqtt, logging={"level": "debug"})
    config.chmod(0o600)
    with Subscriber(broker.port, "#", username="edged", password=secret) as sub, \
            DaemonProcess(config, env=env) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 5, timeout=30)
        sub.wait_count(lambda m: m.topic.endswith("/stats"), 2, timeout=10)
        assert daemon.stop() == 0
    log = daemon.log_text()
    assert " DEBUG " in log  # debug logging was on: the most it ever says
    assert secret not in log
    topics = {m.topic for m in sub.messages}
    assert {"edged/sec/status", "edged/sec/stats", "edged/sec/results"} <= topics
    for m in sub.messages:
        assert secret.encode() not in m.payload, m.topic


class RawListener:
    """A plain TCP server that records the first bytes of every connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                try:
                    self.received.append(conn.recv(4096))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self.sock.close()


def test_tls_never_falls_back_to_plain_text(tmp_path: Path, tls_files: TlsFiles,
                                            mosquitto_factory: Any) -> None:
    tls = {"tls": True, "ca_file": str(tls_files.ca_cert)}
    # A plain-text broker where the TLS one should be: it never gets a CONNECT.
    plain = mosquitto_factory()
    with DaemonProcess(_config(tmp_path, plain.port, mqtt=tls)) as daemon:
        time.sleep(4.0)
        assert daemon.proc.poll() is None, daemon.log_text()
        assert daemon.stop() == 0
    assert "New connection" in plain.log_text()  # it did try, on this port
    assert "New client connected" not in plain.log_text(), plain.log_text()
    failures = [line for line in daemon.log_text().splitlines() if "edged.publish" in line
                and " WARNING " in line]
    assert len(failures) == 1 and "TLS" in failures[0], failures

    # The bytes themselves: every connection opens with a TLS handshake record.
    raw = RawListener()
    (tmp_path / "raw").mkdir()
    try:
        with DaemonProcess(_config(tmp_path / "raw", raw.port, mqtt=tls)) as daemon:
            time.sleep(3.0)
            assert daemon.stop() == 0
    finally:
        raw.close()
    assert raw.received, "edged never connected"
    for first in raw.received:
        assert first[:1] == b"\x16", first[:16]  # TLS record type 22: handshake
        assert b"MQTT" not in first  # the CONNECT's protocol name, had it gone in clear


def _warnings(daemon: DaemonProcess, needle: str, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in daemon.log_text().splitlines()
                 if " WARNING " in line and needle in line]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(daemon.log_text())


def test_secret_files_readable_by_others_are_reported(tmp_path: Path, tls_files: TlsFiles
                                                      ) -> None:
    key = tmp_path / "client.key"
    key.write_bytes(tls_files.client_key.read_bytes())
    key.chmod(0o644)
    pw = tmp_path / "mqtt-password"
    pw.write_text("not-a-real-secret\n")
    pw.chmod(0o640)
    mqtt = {"tls": True, "ca_file": str(tls_files.ca_cert), "cert_file":
            str(tls_files.client_cert), "key_file": str(key), "username": "edged",
            "password_file": str(pw)}
    config = _config(tmp_path, free_port(), mqtt=mqtt)
    config.chmod(0o644)
    with DaemonProcess(config) as daemon:
        for path in (key, pw):
            [line] = _warnings(daemon, f"{path}: warning:")
            assert "readable by others" in line and f"chmod 600 {path}" in line, line
        assert daemon.stop() == 0

    # An inline password makes the config file itself a secret.
    inline = _config(tmp_path, free_port(), mqtt={"username": "edged", "password": "pw"})
    inline.chmod(0o644)
    with DaemonProcess(inline) as daemon:
        [line] = _warnings(daemon, f"{inline}: warning: holds mqtt.password")
        assert f"chmod 600 {inline}" in line, line
        assert daemon.stop() == 0
