"""mqtts end to end: the real `edged run` against a real mosquitto TLS listener with a
test CA, client certificates and a password file made at test time (tests/broker.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from broker import Mosquitto, Subscriber, TlsFiles, make_ca, retained
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, write_config
from notify_helpers import NotifyListener, path_listener
from reload_helpers import ShellDaemon, wait_results, wait_until

MODEL = MODELS / "digits_int8.tflite"
PASSWORD = "s3cret-Pw-4-edged"
PASSWORD_ENV = "EDGED_TEST_MQTT_PASSWORD"
CONNECTED = re.compile(r"New client connected from \S+ as edged-test")
ATTEMPT = re.compile(r"New connection from 127\.0\.0\.1|Client connection from 127\.0\.0\.1 failed")


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for f in sorted(FRAMES.glob("digit_*.png"))[:3]:
        shutil.copy(f, folder)
    return folder


def tls_config(broker: Mosquitto, tls: TlsFiles, frames: Path, **mqtt: Any
               ) -> dict[str, dict[str, Any]]:
    cfg = base_config(broker.port, model=MODEL, frames=frames,
                      inference={"max_fps": 10.0},
                      mqtt={"tls": True, "ca_file": str(tls.ca_cert), "reconnect_min_s": 0.2,
                            "reconnect_max_s": 1.0})
    cfg["mqtt"].update(mqtt)
    return cfg


def password_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mqtt-password"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize("case", ["server", "mutual", "password_file", "password_env"])
def test_tls_delivers(tmp_path: Path, mosquitto_factory: Any, tls_files: TlsFiles,
                      frames: Path, case: str) -> None:
    with_password = case.startswith("password")
    broker = mosquitto_factory(tls=tls_files, require_certificate=case == "mutual",
                               passwords={"edged": PASSWORD} if with_password else None,
                               allow_anonymous=not with_password)
    mqtt: dict[str, Any] = {}
    env = {}
    if case == "mutual":
        mqtt = {"cert_file": str(tls_files.client_cert), "key_file": str(tls_files.client_key)}
    elif case == "password_file":
        mqtt = {"username": "edged", "password_file": password_file(tmp_path, PASSWORD)}
    elif case == "password_env":
        mqtt = {"username": "edged", "password_env": PASSWORD_ENV}
        env[PASSWORD_ENV] = PASSWORD
    creds = {"username": "edged", "password": PASSWORD} if with_password else {}
    sub = Subscriber(broker.port, "edged/#", tls=tls_files, **creds).start()
    config = write_config(tmp_path / "edged.toml", tls_config(broker, tls_files, frames, **mqtt))
    daemon = DaemonProcess(config, env)
    try:
        wait_results(sub, 3)
        assert daemon.stop() == 0
    finally:
        daemon.__exit__()
        sub.stop()
    assert CONNECTED.search(broker.log_text()), broker.log_tail()
    status = retained(broker.port, "edged/test/status", tls=tls_files, **creds)
    assert status is not None and b'"offline"' in status.payload
    assert PASSWORD not in daemon.log_text()


def _failing(tmp_path: Path, listener: NotifyListener, broker: Mosquitto, cfg: dict[str, Any],
             reason: str, env: dict[str, str] | None = None) -> str:
    """Run edged against a broker it cannot use; `reason` is a regex the logged
    reason must match. Checks the log, STATUS= and the retries; returns the log."""
    config = write_config(tmp_path / "edged.toml", cfg)
    daemon = ShellDaemon(config, {"NOTIFY_SOCKET": listener.env_value, **(env or {})})
    logged = re.compile(rf"MQTT 127\.0\.0\.1:{broker.port}: (.+?); retrying with backoff")
    try:
        wait_until(lambda: logged.search(daemon.log_text()) is not None, 30,
                   "a connect failure in the log", daemon.log_text)
        why = logged.findall(daemon.log_text())[0]
        assert re.fullmatch(reason, why), why
        # READY does not wait for the broker (results queue meanwhile); STATUS= says why.
        status = ""
        for _ in range(4):
            status = listener.receive_until("STATUS", timeout=15)[-1].get("STATUS") or ""
            if "broker disconnected (" in status:
                break
        shown = re.search(r"broker disconnected \((.+)\), source", status)
        assert shown and re.fullmatch(reason, shown.group(1)), status
        # Retries with backoff, logging each distinct reason once, not every attempt.
        # mosquitto logs an attempt whose TLS handshake fails inside its accept as
        # "Client connection from ... failed", and one whose client sends its alert
        # a little later (TLS 1.3) as "New connection from": timing picks which.
        wait_until(lambda: len(ATTEMPT.findall(broker.log_text())) >= 4, 20,
                   "four connection attempts", broker.log_text)
        reasons = logged.findall(daemon.log_text())
        assert len(reasons) == len(set(reasons)) < 4, reasons
        assert daemon.stop() == 0
    finally:
        daemon.__exit__()
    # Never a plain-text MQTT session: the broker never saw a CONNECT from edged.
    assert not CONNECTED.search(broker.log_text()), broker.log_tail()
    return daemon.log_text()


@pytest.fixture
def listener(tmp_path: Path):  # type: ignore[no-untyped-def]
    with path_listener(tmp_path) as bound:
        yield bound


def test_wrong_ca_is_refused_and_reported(tmp_path: Path, mosquitto_factory: Any,
                                          tls_files: TlsFiles, frames: Path,
                                          listener: NotifyListener) -> None:
    broker = mosquitto_factory(tls=tls_files)
    other_ca, _ = make_ca(tmp_path / "other", "other-ca")
    cfg = tls_config(broker, tls_files, frames, ca_file=str(other_ca))
    _failing(tmp_path, listener, broker, cfg, "TLS: certificate verify failed: "
             "self-signed certificate in certificate chain")


def test_missing_client_certificate_is_reported(tmp_path: Path, mosquitto_factory: Any,
                                                tls_files: TlsFiles, frames: Path,
                                                listener: NotifyListener) -> None:
    broker = mosquitto_factory(tls=tls_files, require_certificate=True)
    cfg = tls_config(broker, tls_files, frames)
    # OpenSSL reports it as an alert, an EOF or a reset, depending on timing.
    _failing(tmp_path, listener, broker, cfg, r".* \(.*does the broker require a client "
             r"certificate \(mqtt\.cert_file, mqtt\.key_file\)\?\)")


def test_wrong_password_is_reported(tmp_path: Path, mosquitto_factory: Any,
                                    tls_files: TlsFiles, frames: Path,
                                    listener: NotifyListener) -> None:
    broker = mosquitto_factory(tls=tls_files, passwords={"edged": PASSWORD},
                               allow_anonymous=False)
    cfg = tls_config(broker, tls_files, frames, username="edged", password_env=PASSWORD_ENV)
    log = _failing(tmp_path, listener, broker, cfg,
                   "broker refused the connection: not authorised",
                   env={PASSWORD_ENV: "wrong-" + PASSWORD})
    assert "wrong-" + PASSWORD not in log


def test_tls_never_falls_back_to_plain_text(tmp_path: Path, mosquitto: Mosquitto,
                                            tls_files: TlsFiles, frames: Path,
                                            listener: NotifyListener) -> None:
    # TLS configured, but the port is a plain-text listener: a fall-back would connect.
    cfg = tls_config(mosquitto, tls_files, frames)
    _failing(tmp_path, listener, mosquitto, cfg, rf".* \(is port {mosquitto.port} a TLS "
             r"listener\?.*\)")


def test_inline_secret_readable_by_others_is_warned_about(
        tmp_path: Path, mosquitto_factory: Any, tls_files: TlsFiles, frames: Path) -> None:
    broker = mosquitto_factory(tls=tls_files, passwords={"edged": PASSWORD},
                               allow_anonymous=False)
    config = write_config(tmp_path / "edged.toml", tls_config(
        broker, tls_files, frames, username="edged", password=PASSWORD))
    config.chmod(0o644)
    sub = Subscriber(broker.port, "edged/#", tls=tls_files, username="edged",
                     password=PASSWORD).start()
    daemon = DaemonProcess(config)
    try:
        wait_results(sub, 1)
        assert daemon.stop() == 0
    finally:
        daemon.__exit__()
        sub.stop()
    log = daemon.log_text()
    assert (f"{config}: warning: holds mqtt.password and is readable by others (mode 0644); "
            f"run: chmod 600 {config}") in log
    assert "mqtt.password: inline password; move it to a file" in log
    assert PASSWORD not in log  # redacted everywhere
