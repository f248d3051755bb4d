"""Remote commands (issue 20), through the real `edged run` and mosquitto: a setting
changed over MQTT takes effect, is answered, is kept in the overrides file across a
restart and shown by check-config; bad commands are answered with one line and change
nothing; a retained command is not carried out; a storm neither stops the results
nor grows the daemon."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import orjson
from broker import Mosquitto, Subscriber
from cameras_helpers import MODEL, config_text
from daemon_helpers import DaemonProcess, base_config
from fleet_helpers import check_device_discovery
from reload_helpers import digit_folder, wait_until

from edged.config.check import check_config

BASE = "edged/test"
STATS_SCHEMA = orjson.loads((Path(__file__).resolve().parents[2]
                             / "edged/schemas/stats-v1.schema.json").read_bytes())


def _config(tmp_path: Path, port: int, cameras: list[dict[str, Any]] | None = None,
            **commands: Any) -> Path:
    cfg = base_config(port, model=MODEL, frames=digit_folder(tmp_path, "digits"),
                      output={"decoder": "classification", "top_k": 3, "min_score": 0.0,
                              "include_raw": False},
                      commands={"enabled": True, "allow_insecure": True,
                                "overrides_file": str(tmp_path / "overrides.toml"),
                                **commands})
    cfg["source"]["fps"] = 20.0
    path = tmp_path / "edged.toml"
    path.write_text(config_text(cfg, cameras or []))
    return path


def _send(sub: Subscriber, topic: str, payload: Any, *, retain: bool = False) -> float:
    sent = time.time()
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    sub.client.publish(f"{BASE}/{topic}", body, qos=1, retain=retain).wait_for_publish(5)
    return sent


def _answer(sub: Subscriber, topic: str, after: float, timeout: float = 10.0
            ) -> dict[str, Any]:
    m = sub.wait_for(lambda m: m.topic == f"{BASE}/{topic}/result" and m.received_at >= after,
                     timeout=timeout)
    return orjson.loads(m.payload)  # type: ignore[no-any-return]


def _results(sub: Subscriber, suffix: str, after: float) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.on(suffix) if m.received_at > after]


def _wait_results(sub: Subscriber, daemon: DaemonProcess, n: int, after: float,
                  suffix: str = "/test/results") -> None:
    wait_until(lambda: len(_results(sub, suffix, after)) >= n, 20, f"{n} results",
               daemon.log_text)


def test_a_setting_sent_takes_effect_is_kept_across_a_restart_and_shown(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    path = _config(tmp_path, mosquitto.port)
    with Subscriber(mosquitto.port, "edged/#") as sub:
        with DaemonProcess(path) as daemon:
            _wait_results(sub, daemon, 3, 0)
            sent = _send(sub, "cmd/set", {"key": "output.top_k", "value": 1})
            got = _answer(sub, "cmd/set", sent)
            assert got.pop("at") >= sent - 1
            assert got == {"ok": True, "command": "set", "key": "output.top_k", "value": 1}
            after = time.time() + 0.3
            _wait_results(sub, daemon, 3, after)
            assert {len(r["decoded"]["classes"]) for r in _results(sub, "/test/results", after)
                    } == {1}
            assert "command set: done" in daemon.log_text()
        assert (tmp_path / "overrides.toml").read_text().endswith("[output]\ntop_k = 1\n")
        restarted = time.time()
        with DaemonProcess(path) as daemon:  # the override outlives the process
            _wait_results(sub, daemon, 3, restarted)
            assert {len(r["decoded"]["classes"]) for r in _results(
                sub, "/test/results", restarted)} == {1}
    assert f"override: output.top_k = 1 (from {tmp_path / 'overrides.toml'})" in \
        check_config(path).notes


def test_bad_commands_are_answered_in_one_line_and_change_nothing(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    path = _config(tmp_path, mosquitto.port, max_payload_bytes=256)
    bad = [
        (b"nope", "payload: not JSON"),
        (b"[1, 2]", "payload: must be a JSON object"),
        ({"key": "output.top_k"}, 'payload: needs {"key": "output.min_score", "value": 0.4}'),
        ({"key": "output.top_k", "value": "3"}, "output.top_k: must be a whole number (got \"3\")"),
        ({"key": "output.min_score", "value": 1.5}, "output.min_score: must be <= 1"),
        ({"key": "mqtt.host", "value": "evil"}, "'mqtt.host' cannot be set at runtime"),
        ({"key": "output.top_k", "value": 1, "pad": "x" * 300}, "payload of 3"),
    ]
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        _wait_results(sub, daemon, 3, 0)
        for payload, error in bad:
            sent = _send(sub, "cmd/set", payload)
            got = _answer(sub, "cmd/set", sent)
            assert got["ok"] is False and got["error"].startswith(error), (payload, got)
            assert "\n" not in got["error"]
        after = time.time()
        _wait_results(sub, daemon, 3, after)
        assert {len(r["decoded"]["classes"]) for r in _results(sub, "/test/results", after)
                } == {3}
        assert daemon.proc.poll() is None
    assert not (tmp_path / "overrides.toml").exists()


def test_a_retained_command_is_not_carried_out(tmp_path: Path,
                                               mosquitto: Mosquitto) -> None:
    path = _config(tmp_path, mosquitto.port)
    with Subscriber(mosquitto.port, "edged/#") as sub:
        _send(sub, "cmd/set", {"key": "output.top_k", "value": 1}, retain=True)
        started = time.time()
        with DaemonProcess(path) as daemon:
            got = _answer(sub, "cmd/set", started, timeout=20)
            assert got["ok"] is False and got["error"].startswith("retained")
            _wait_results(sub, daemon, 3, time.time())
            assert {len(r["decoded"]["classes"]) for r in _results(
                sub, "/test/results", started)} == {3}
        _send(sub, "cmd/set", b"", retain=True)  # clear it on the broker
    assert not (tmp_path / "overrides.toml").exists()


def test_a_camera_switched_off_by_command_stops_and_the_other_goes_on(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    path = _config(tmp_path, mosquitto.port, cameras=[{"id": "porch"}, {"id": "drive"}])
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        _wait_results(sub, daemon, 3, 0, "/porch/results")
        connects = daemon.log_text().count("MQTT: connected")
        sent = _send(sub, "porch/cmd/set", {"key": "enabled", "value": False})
        assert _answer(sub, "porch/cmd/set", sent)["ok"] is True
        # Its command topic stays subscribed (to switch it on again): no new connection.
        assert daemon.log_text().count("MQTT: connected") == connects
        after = time.time() + 0.5
        _wait_results(sub, daemon, 5, after, "/drive/results")
        assert not _results(sub, "/porch/results", after)
        sent = _send(sub, "drive/cmd/set", {"key": "output.top_k", "value": 2})
        assert _answer(sub, "drive/cmd/set", sent)["ok"] is True
    assert "[cameras.porch]\nenabled = false\n" in (tmp_path / "overrides.toml").read_text()


def test_a_command_storm_neither_stops_the_results_nor_grows_the_daemon(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    path = _config(tmp_path, mosquitto.port)
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        _wait_results(sub, daemon, 10, 0)
        before_rss = _rss_kb(daemon.pid)
        start = time.time()
        for i in range(2000):  # about 1,000 a second
            sub.client.publish(f"{BASE}/cmd/reload", b"{}", qos=0)
            if i % 100 == 99:
                time.sleep(0.1)
        storm_end = time.time()
        results = _results(sub, "/test/results", start)
        assert len(results) >= 0.5 * 20 * (storm_end - start), len(results)  # fps = 20
        answers = [m for m in sub.on("/cmd/reload/result") if m.received_at >= start]
        assert answers and len(answers) < 200  # refusals answered at a bounded rate
        assert _rss_kb(daemon.pid) - before_rss < 8 * 1024
        assert daemon.proc.poll() is None


def test_commands_without_tls_and_a_user_are_refused_at_start(tmp_path: Path,
                                                               mosquitto: Mosquitto) -> None:
    path = _config(tmp_path, mosquitto.port, allow_insecure=False)
    with DaemonProcess(path) as daemon:
        assert daemon.proc.wait(30) == 78
    assert "commands.enabled: needs mqtt.tls and mqtt.username: whoever may publish on " \
           "cmd/ controls this device" in daemon.log_text()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_home_assistant_controls_send_commands_and_show_the_values_in_effect(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    path = _config(tmp_path, mosquitto.port, cameras=[{"id": "porch"}, {"id": "drive"}])
    path.write_text(path.read_text() + "[homeassistant]\nenabled = true\n")
    with Subscriber(mosquitto.port, ["edged/#", "homeassistant/#"]) as sub, \
            DaemonProcess(path) as daemon:
        _wait_results(sub, daemon, 3, 0, "/porch/results")
        discovery = sub.wait_for(lambda m: m.topic.startswith("homeassistant/")
                                 and m.payload != b"", timeout=10)
        check_device_discovery(discovery.topic, orjson.loads(discovery.payload))
        cmps = orjson.loads(discovery.payload)["cmps"]
        switch = cmps["porch_enabled"]
        assert switch["p"] == "switch" and switch["cmd_t"] == f"{BASE}/porch/cmd/set"
        assert {"set_min_score", "set_max_fps", "set_publish", "reload",
                "drive_set_max_fps"} <= set(cmps)
        select = cmps["set_publish"]
        assert select["p"] == "select" and select["ops"] == ["results", "events", "both"]
        sent = time.time()  # what the select sends, as Home Assistant renders its template
        sub.client.publish(select["cmd_t"], select["cmd_tpl"].replace("{{ value }}", "both"),
                           qos=1).wait_for_publish(5)
        got = _answer(sub, "cmd/set", sent)
        # A classifier's results cannot become events: refused on reload, nothing kept.
        assert got["ok"] is False and "publish" in got["error"], got
        sent = time.time()
        sub.client.publish(switch["cmd_t"], switch["pl_off"], qos=1).wait_for_publish(5)
        assert _answer(sub, "porch/cmd/set", sent)["ok"] is True
        stats = sub.wait_for(lambda m: m.topic == f"{BASE}/stats" and m.received_at > sent
                             and not orjson.loads(m.payload)["settings"]["cameras"]["porch"][
                                 "enabled"], timeout=10)
        assert orjson.loads(stats.payload)["settings"]["cameras"]["drive"] == {
            "enabled": True, "max_fps": 0.0}
        jsonschema.validate(orjson.loads(stats.payload), STATS_SCHEMA)
        # Switched off, its switch stays: it can be switched on again from Home Assistant.
        later = sub.wait_for(lambda m: m.topic.startswith("homeassistant/") and m.payload
                             != b"" and m.received_at > sent, timeout=10)
        assert "porch_enabled" in orjson.loads(later.payload)["cmps"]


def test_a_snapshot_asked_for_is_the_cameras_next_frame_and_zones_can_be_set(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    path = _config(tmp_path, mosquitto.port, cameras=[{"id": "porch"}, {"id": "drive"}])
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        _wait_results(sub, daemon, 3, 0, "/porch/results")
        sent = _send(sub, "porch/cmd/snapshot", {})
        assert _answer(sub, "porch/cmd/snapshot", sent)["topics"] == [f"{BASE}/porch/snapshot"]
        jpeg = sub.wait_for(lambda m: m.topic == f"{BASE}/porch/snapshot"
                            and m.received_at >= sent, timeout=10).payload
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[:2] == (32, 32)  # a digit frame, whole
        assert not [m for m in sub.on("/drive/snapshot") if m.received_at >= sent]
        zones = [{"name": "left", "points": [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0]]}]
        sent = _send(sub, "drive/cmd/set", {"key": "events.zones", "value": zones})
        assert _answer(sub, "drive/cmd/set", sent)["ok"] is True
        sent = _send(sub, "drive/cmd/set", {"key": "events.zones", "value": [{"name": "x"}]})
        got = _answer(sub, "drive/cmd/set", sent)
        assert got["ok"] is False and "points" in got["error"], got
    assert 'zones = [{name = "left"' in (tmp_path / "overrides.toml").read_text()


def test_an_overrides_file_that_cannot_be_written_is_answered_and_nothing_changes(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    path = _config(tmp_path, mosquitto.port,
                   overrides_file=str(tmp_path / "no-such-dir" / "overrides.toml"))
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        _wait_results(sub, daemon, 3, 0)
        sent = _send(sub, "cmd/set", {"key": "output.top_k", "value": 1})
        got = _answer(sub, "cmd/set", sent)
        assert got["ok"] is False and got["error"].startswith(
            f"{tmp_path / 'no-such-dir' / 'overrides.toml'}: cannot write: "), got
        after = time.time()
        _wait_results(sub, daemon, 3, after)
        assert {len(r["decoded"]["classes"]) for r in _results(sub, "/test/results", after)
                } == {3}
