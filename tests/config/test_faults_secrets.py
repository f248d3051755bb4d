"""Secrets in broken configs, through the real processes: never in a line, a payload or a child.

Every secret-bearing key with every wrong TOML type (issue 15.1): the MQTT
password as an integer, a float, a list, a table, an array of tables, a date,
a time; credentials in a URL where a host or a device belongs; a password file
beside an inline password. Each is checked at start (`edged run`, exit 78),
by `edged check-config`, and on SIGHUP against a running daemon whose own
password is one of the values (the journal, every topic including the
retained stats, and `systemctl status`'s STATUS= line). And the inference
worker, which needs no credentials, must not inherit them (issue 15.7).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from broker import Mosquitto, Subscriber
from config_helpers import toml_document
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config
from reload_helpers import wait_log, wait_stats, worker_environ

MODEL = MODELS / "digits_int8.tflite"
RUNNING_SECRET = "Hunter2-secret"  # the running daemon's real password
OTHER = "Other-secret-9"
CAM = "Cam-secret-7"
HOST = "Host-secret-5"

# (name, sections to merge into a working config, the secret texts it holds).
BROKEN: list[tuple[str, dict[str, dict[str, Any]], tuple[str, ...]]] = [
    ("int", {"mqtt": {"password": 987654321}}, ("987654321",)),
    ("float", {"mqtt": {"password": 98765.4321}}, ("98765.4321",)),
    ("list", {"mqtt": {"password": [RUNNING_SECRET, OTHER]}}, (RUNNING_SECRET, OTHER)),
    ("table", {"mqtt": {"password": {"value": OTHER}}}, (OTHER,)),
    ("array_of_tables", {"mqtt": {"password": [{"value": OTHER}]}}, (OTHER,)),
    ("datetime", {"mqtt": {"password": dt.datetime(1999, 1, 2, 3, 4, 5, tzinfo=dt.UTC)}},
     ("1999-01-02",)),
    ("time", {"mqtt": {"password": dt.time(13, 57, 42, 123456)}}, ("13:57:42",)),
    ("bool_and_file", {"mqtt": {"password": True, "password_file": "pw.txt"}}, (OTHER,)),
    ("uri_in_host", {"mqtt": {"host": f"mqtt://edged:{HOST}@broker.lan"}}, (HOST,)),
    ("uri_for_a_device", {"source": {"kind": "v4l2", "uri": f"rtsp://admin:{CAM}@cam/1"}},
     (CAM,)),
    ("uri_in_a_list", {"source": {"kind": "stream", "uri": [f"rtsp://admin:{CAM}@cam/1"]}},
     (CAM,)),
]
IDS = [name for name, _, _ in BROKEN]


def _document(port: int, frames: Path, changes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = base_config(port, model=MODEL, frames=frames, device="sec")
    doc["mqtt"].update({"username": "edged", "password": RUNNING_SECRET})
    for section, keys in changes.items():
        doc.setdefault(section, {}).update(keys)
    return doc


def _write(directory: Path, doc: dict[str, Any]) -> Path:
    (directory / "pw.txt").write_text(OTHER + "\n")
    (directory / "pw.txt").chmod(0o600)
    path = directory / "edged.toml"
    path.write_text(toml_document(doc))
    path.chmod(0o600)
    return path


def _edged(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True,
                          text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)


def _leaks(text: str, secrets: tuple[str, ...]) -> list[str]:
    return [s for s in secrets if s in text]


@pytest.mark.parametrize(("name", "changes", "secrets"), BROKEN, ids=IDS)
def test_check_config_and_run_at_start_never_quote_a_secret(
        tmp_path: Path, name: str, changes: dict[str, dict[str, Any]],
        secrets: tuple[str, ...]) -> None:
    path = _write(tmp_path, _document(1883, FRAMES, changes))
    check = _edged("check-config", str(path))
    assert check.returncode == 1, check.stdout + check.stderr
    run = _edged("run", "--config", str(path))
    assert run.returncode == 78, run.stderr
    for proc in (check, run):
        out = proc.stdout + proc.stderr
        assert not _leaks(out, (*secrets, RUNNING_SECRET)), out
        # Still one line naming the file, the line and the key.
        assert f"{path}:" in out, out
    if "password" in changes.get("mqtt", {}) and name != "bool_and_file":
        what = {"int": "a whole number", "float": "a number", "list": "a list",
                "table": "a table", "array_of_tables": "a list", "datetime": "a date or time",
                "time": "a date or time"}[name]
        assert f"mqtt.password: must be a string (in quotes) (got {what}, not shown)" \
            in check.stderr, check.stderr


def test_broken_reloads_never_publish_or_log_a_secret(tmp_path: Path,
                                                      mosquitto_factory: Any) -> None:
    broker: Mosquitto = mosquitto_factory(allow_anonymous=False,
                                          passwords={"edged": RUNNING_SECRET},
                                          acl="user edged\ntopic readwrite #\n")
    doc = _document(broker.port, FRAMES, {"logging": {"level": "debug"}})
    path = _write(tmp_path, doc)
    every = (*(s for _, _, found in BROKEN for s in found), RUNNING_SECRET)
    with Subscriber(broker.port, "#", username="edged", password=RUNNING_SECRET) as sub, \
            DaemonProcess(path) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
        for i, (name, changes, _secrets) in enumerate(BROKEN, start=1):
            path.write_text(toml_document(_document(broker.port, FRAMES, changes)))
            sent = time.time()
            daemon.send(signal.SIGHUP)
            wait_log(daemon, "reload failed: still running", timeout=30, count=i)
            stats = wait_stats(sub, lambda s: s["config_reload"].startswith("failed"),
                               after=sent)
            assert not _leaks(str(stats), every), (name, stats)
        assert daemon.stop() == 0
    log = daemon.log_text()
    assert " DEBUG " in log
    assert log.count("reload failed: still running") == len(BROKEN)
    assert not _leaks(log, every), [line for line in log.splitlines() if _leaks(line, every)]
    for m in sub.messages:
        assert not _leaks(m.payload.decode(errors="replace"), every), (m.topic, m.payload)


def test_worker_environment_and_command_line_hold_no_password(tmp_path: Path,
                                                             mosquitto_factory: Any) -> None:
    secret = "Env-secret-3"
    broker: Mosquitto = mosquitto_factory(allow_anonymous=False, passwords={"edged": secret},
                                          acl="user edged\ntopic readwrite #\n")
    doc = base_config(broker.port, model=MODEL, frames=FRAMES, device="sec")
    doc["mqtt"].update({"username": "edged", "password_env": "EDGED_TEST_MQTT_PW"})
    path = _write(tmp_path, doc)
    env = {"EDGED_TEST_MQTT_PW": secret, "SOME_API_TOKEN": "tok-123",
           "EDGED_TEST_HARMLESS": "kept"}
    with Subscriber(broker.port, "edged/#", username="edged", password=secret) as sub, \
            DaemonProcess(path, env=env) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
        worker = daemon.worker_pid()
        environ = worker_environ(worker)
        cmdline = Path(f"/proc/{worker}/cmdline").read_bytes()
        # The daemon itself has it (it connects with it); the worker has none.
        assert worker_environ(daemon.pid)["EDGED_TEST_MQTT_PW"] == secret
        assert daemon.stop() == 0
    assert "EDGED_TEST_MQTT_PW" not in environ and "SOME_API_TOKEN" not in environ
    assert secret not in "\0".join(f"{k}={v}" for k, v in environ.items())
    assert environ["EDGED_TEST_HARMLESS"] == "kept"  # the rest is the daemon's environment
    assert environ.get("PATH") == os.environ.get("PATH")
    assert secret.encode() not in cmdline
