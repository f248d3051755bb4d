"""Hostile brokers, with the real daemon and real mosquitto: refuse, deny, size limits.

For each: edged keeps running, logs the problem once (not once per retry or
per result), counts it where the protocol lets it know (stats), and results
flow again once the broker is fixed (restarted with a good config on the
same port).

What MQTT 3.1.1 cannot tell a client: a broker that drops a publish for an
ACL or `message_size_limit` still acknowledges it, so edged cannot count
those; MQTT 5 says why in the PUBACK, and edged counts `results_rejected`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from broker import Mosquitto, Subscriber
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, write_config

MODEL = MODELS / "digits_int8.tflite"
DEVICE = "hostile"
LIMIT = 300  # bytes: a status message fits, a result (~460 bytes) does not


def _start(tmp_path: Path, port: int, **mqtt: Any) -> DaemonProcess:
    cfg = base_config(port, model=MODEL, frames=FRAMES, device=DEVICE, mqtt=mqtt)
    return DaemonProcess(write_config(tmp_path / "edged.toml", cfg))


def _publish_lines(daemon: DaemonProcess) -> list[str]:
    return [line for line in daemon.log_text().splitlines()
            if "edged.publish" in line and (" WARNING " in line or " ERROR " in line)]


def _latest_stats(sub: Subscriber, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = [orjson.loads(m.payload) for m in sub.on("/stats")]
        if stats and predicate(stats[-1]):
            result: dict[str, Any] = stats[-1]
            return result
        time.sleep(0.2)
    raise AssertionError(f"no stats matching within {timeout} s: {stats[-1:] if stats else []}")


def _recovers(tmp_path: Path, bad: Mosquitto, daemon: DaemonProcess, **good: Any
              ) -> tuple[Mosquitto, Subscriber]:
    """Replace `bad` with a well-configured broker on the same port; results resume."""
    port = bad.port
    bad.stop()
    fixed = Mosquitto(tmp_path / "fixed", port=port, **good).start()
    sub = Subscriber(port, f"edged/{DEVICE}/#").start()
    try:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
    except TimeoutError:
        raise AssertionError(daemon.log_text()) from None
    assert daemon.proc.poll() is None
    return fixed, sub


def _hold(daemon: DaemonProcess, seconds: float) -> None:
    """Let the daemon face the broker for a while; it must not exit."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert daemon.proc.poll() is None, daemon.log_text()
        time.sleep(0.2)


@pytest.mark.parametrize("credentials", ["wrong password", "none"])
def test_refused_connection_is_logged_once_and_counted(tmp_path: Path, credentials: str
                                                       ) -> None:
    bad = Mosquitto(tmp_path / "auth", allow_anonymous=False,
                    passwords={"edged": "right-password"}).start()
    mqtt: dict[str, Any] = {}
    if credentials != "none":
        secret = tmp_path / "mqtt-password"
        secret.write_text("wrong-password\n")
        secret.chmod(0o600)
        mqtt = {"username": "edged", "password_file": str(secret)}
    with _start(tmp_path, bad.port, **mqtt) as daemon:
        _hold(daemon, 5.0)  # retries every 0.1-0.5 s: a dozen refusals or more
        refusals = [line for line in _publish_lines(daemon) if "refused the connection" in line]
        assert len(refusals) == 1, daemon.log_text()
        assert "broker refused the connection: not authori" in refusals[0], refusals
        assert bad.log_text().count("not authorised") >= 3, bad.log_tail()
        fixed, sub = _recovers(tmp_path, bad, daemon, allow_anonymous=True)
        with fixed, sub:
            stats = _latest_stats(sub, lambda s: s["broker"] == "connected")
            assert stats["mqtt_connect_failures"] >= 3, stats
            assert daemon.stop() == 0


ACL_DENY_RESULTS = f"""topic write edged/{DEVICE}/status
topic write edged/{DEVICE}/stats
topic read edged/#
"""


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_acl_denying_results_keeps_the_daemon_running(tmp_path: Path, protocol: str) -> None:
    bad = Mosquitto(tmp_path / "acl", acl=ACL_DENY_RESULTS).start()
    with Subscriber(bad.port, f"edged/{DEVICE}/#") as watch, \
            _start(tmp_path, bad.port, protocol=protocol) as daemon:
        stats = _latest_stats(watch, lambda s: s["results_published"] >= 30)
        _hold(daemon, 1.0)
        assert not watch.on("/results")  # denied: the broker passes none on
        assert stats["mqtt_connects"] == 1, stats  # a denial does not cost the connection
        lines = _publish_lines(daemon)
        if protocol == "5":
            # The PUBACK says why: logged once, every one counted.
            stats = _latest_stats(watch, lambda s: s["results_rejected"] >= 30)
            assert stats["last_error"].startswith("broker refused a result: not authori"), stats
            assert len(lines) == 1 and "broker refused a result" in lines[0], lines
        else:
            # 3.1.1 acknowledges and drops: nothing to log or count, and nothing is.
            assert stats["results_rejected"] == 0 and not lines, (stats, lines)
        watch.stop()
        fixed, sub = _recovers(tmp_path, bad, daemon)
        with fixed, sub:
            assert daemon.stop() == 0


@pytest.mark.parametrize(("limit", "protocol"), [
    ("message_size_limit", "3.1.1"), ("message_size_limit", "5"),
    ("max_packet_size", "3.1.1"), ("max_packet_size", "5"),
])
def test_broker_size_limits_below_a_result(tmp_path: Path, limit: str, protocol: str) -> None:
    options: dict[str, Any] = ({"message_size_limit": LIMIT} if limit == "message_size_limit"
                               else {"extra": f"max_packet_size {LIMIT}"})
    bad = Mosquitto(tmp_path / "small", **options).start()
    with _start(tmp_path, bad.port, protocol=protocol) as daemon:
        _hold(daemon, 5.0)
        lines = _publish_lines(daemon)
        assert len(lines) <= 1, lines  # whatever happens, it is said once
        fixed, sub = _recovers(tmp_path, bad, daemon)
        recovered = time.time()
        with fixed, sub:
            # Figures taken after the recovery: stats queued during the last moments
            # of the bad connection go out first and describe that moment ("at").
            stats = _latest_stats(sub, lambda s: s["broker"] == "connected"
                                  and s["at"] > recovered)
            assert daemon.stop() == 0
    log = daemon.log_text()
    if (limit, protocol) == ("message_size_limit", "5"):
        # PUBACK "packet too large": each one counted, logged once.
        assert stats["results_rejected"] >= 10, stats
        assert lines and "packet too large" in lines[0], lines
    elif (limit, protocol) == ("max_packet_size", "5"):
        # Announced in CONNACK: edged does not even send them (nor the stats,
        # which are bigger still), and the connection stays up.
        assert stats["results_too_large"] >= 10 and stats["mqtt_connects"] == 2, stats
        assert lines and "maximum packet size 300" in lines[0], lines
    elif limit == "max_packet_size":
        # 3.1.1: the broker drops the connection on each oversized packet,
        # and the unacknowledged result goes again after each reconnect: the
        # connection flaps until the broker is fixed. Counted, logged once.
        assert stats["mqtt_connects"] >= 5, stats
        assert lines and "dropped right after connecting" in lines[0], lines
        assert "disconnected due to oversize packet" in bad.log_text()
    else:
        # 3.1.1 with message_size_limit: acknowledged and dropped by the broker.
        assert not lines, lines
    assert "Traceback" not in log, log
