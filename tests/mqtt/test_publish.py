"""The MQTT publisher against a real mosquitto: status, will, outages, refusals, TLS."""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest
from broker import Mosquitto, Subscriber, TlsFiles, make_ca, make_tls_files, retained
from publisher_helpers import FAST, publisher, result_payload, seq_of

import edged.mqtt.publisher
from edged.mqtt.backoff import backoff_delay
from edged.mqtt.loop import ACK_BATCH_S, PublishLoop
from edged.mqtt.payload import (
    decode_result,
)
from edged.mqtt.publisher import Publisher, PublisherError, PublisherSettings, TlsSettings
from edged.mqtt.settings import Outbox

SCHEMAS = Path(__file__).resolve().parents[2] / "edged" / "schemas"
HELPER = Path(__file__).resolve().parents[1] / "publish_helpers.py"


def schema(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        json.loads((SCHEMAS / f"{name}-v1.schema.json").read_text()))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto") as b:
        yield b


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def test_online_retained_results_and_stats_valid_then_offline_on_clean_stop(
        broker: Mosquitto) -> None:
    pub = publisher(broker.port)
    try:
        assert pub.wait_connected(5)
        online = retained(broker.port, "edged/cam-1/status")
        assert online is not None
        status = orjson.loads(online.payload)
        schema("status").validate(status)
        assert (status["state"], status["reason"], status["device_id"]) == (
            "online", "connected", "cam-1")
        with Subscriber(broker.port, "edged/cam-1/+") as sub:
            for seq in range(3):
                pub.publish_result(result_payload(seq))
            pub.publish_stats({"fps": 12.5, "results_queued": 0, "broker": "connected"})
            got = sub.wait_count(lambda m: m.topic == "edged/cam-1/results", 3)
            for m in got:
                schema("result").validate(orjson.loads(m.payload))
            assert [seq_of(m.payload) for m in got] == [0, 1, 2]
            stats = sub.wait_for(lambda m: m.topic == "edged/cam-1/stats")
            schema("stats").validate(orjson.loads(stats.payload))
        assert pub.wait_idle(5)
        c = pub.counters()
        assert (c.published, c.acked, c.dropped, c.queued, c.inflight) == (3, 3, 0, 0, 0)
    finally:
        t0 = time.monotonic()
        pub.stop()
        stop_s = time.monotonic() - t0
    assert stop_s < 2.0
    assert not pub.network_alive()
    with pytest.raises(RuntimeError, match="a stopped Publisher cannot start again"):
        pub.start()
    offline = retained(broker.port, "edged/cam-1/status")
    assert offline is not None
    doc = orjson.loads(offline.payload)
    schema("status").validate(doc)
    assert (doc["state"], doc["reason"]) == ("offline", "stopped")
    stats = retained(broker.port, "edged/cam-1/stats")
    assert stats is not None and orjson.loads(stats.payload)["fps"] == 12.5


def test_results_go_to_each_cameras_topic_in_the_order_given(broker: Mosquitto) -> None:
    """Several cameras share the connection and the queue; each result goes to the topic
    it was queued for, the device's by default."""
    pub = publisher(broker.port)
    try:
        assert pub.wait_connected(5)
        with Subscriber(broker.port, "edged/cam-1/#") as sub:
            for seq in range(6):
                pub.publish_result(result_payload(seq), ("edged/cam-1/drive/results",
                                                         "edged/cam-1/porch/results",
                                                         None)[seq % 3])
            got = sub.wait_count(lambda m: m.topic.endswith("/results"), 6)
        assert [(m.topic, seq_of(m.payload)) for m in got] == [
            ("edged/cam-1/drive/results", 0), ("edged/cam-1/porch/results", 1),
            ("edged/cam-1/results", 2), ("edged/cam-1/drive/results", 3),
            ("edged/cam-1/porch/results", 4), ("edged/cam-1/results", 5)]
    finally:
        pub.stop()


def nagle_off(pub: Publisher) -> bool:
    sock = pub._client.socket()
    assert isinstance(sock, socket.socket)
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_results_leave_without_waiting_for_nagle(broker: Mosquitto) -> None:
    # paho leaves Nagle on; a result written while the previous one is unacknowledged
    # would wait for the broker's delayed ACK. Every (re)connection turns it off.
    pub = publisher(broker.port)
    try:
        assert pub.wait_connected(5)
        assert nagle_off(pub)
        broker.restart()
        assert pub.wait_idle(10) and pub.counters().connects == 2
        assert nagle_off(pub)
    finally:
        pub.stop()


def test_a_lost_connection_that_was_logged_is_followed_by_its_reconnect_in_the_log(
        broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    # Lost within FLAP_S of connecting counts as flapping; the reconnect line was
    # then left out, and the log ended on "connection lost" while all was well.
    caplog.set_level(logging.INFO, logger="edged.publish")
    pub = publisher(broker.port)
    try:
        assert pub.wait_connected(5)
        broker.restart()
        assert pub.wait_idle(10) and pub.counters().connects == 2
        said = [r.getMessage() for r in caplog.records if r.name == "edged.publish"]
        lost = [i for i, m in enumerate(said) if "connection lost" in m]
        assert len(lost) == 1, said
        assert "dropped right after connecting" in said[lost[0]]
        assert any(m.startswith("MQTT: connected to") for m in said[lost[0]:]), said
    finally:
        pub.stop()


def test_batched_acks_are_read_without_another_publish_to_wake_the_thread(
        broker: Mosquitto) -> None:
    # While results are in flight the network thread does not wake per PUBACK; a
    # lone result's ack must still be read within ACK_BATCH_S, not the idle timeout.
    pub = publisher(broker.port)
    try:
        assert pub.wait_connected(5) and pub.wait_idle(5)
        for seq in range(3):
            pub.publish_result(result_payload(seq))
            t0 = time.monotonic()
            while pub.counters().acked < seq + 1 and time.monotonic() - t0 < 5:
                time.sleep(0.002)
            assert pub.counters().acked == seq + 1
            assert time.monotonic() - t0 < 20 * ACK_BATCH_S
        assert pub.counters().inflight == 0
    finally:
        pub.stop()


def test_a_result_queued_while_the_network_thread_pumps_is_never_stranded() -> None:
    """`wake()` skips its byte while a look at the queue is pending; whatever lands
    between the pump reading the queue and `pumped()` must still be sent."""
    out = Outbox(queue_size=8)

    def wake_readable() -> bool:
        return bool(select.select([out.wake_r], [], [], 0)[0])

    try:
        out.queue.append(("t", b"r1"))
        out.wake()
        assert wake_readable()
        out.drain_wake()  # the network thread wakes ...
        out.queue.append(("t", b"r2"))
        out.wake()  # ... and a result lands meanwhile: no byte, a look is pending
        taken = [out.queue.popleft()]  # the pump takes r1 only
        out.queue.append(("t", b"r3"))
        out.wake()  # lands after the pump read the queue: still no byte
        assert not wake_readable()
        assert out.pumped(stats_sendable=True) is True  # so the loop schedules another pump
        taken += [out.queue.popleft(), out.queue.popleft()]
        assert [p for _, p in taken] == [b"r1", b"r2", b"r3"]
        assert out.pumped(stats_sendable=True) is False
        out.queue.append(("t", b"r4"))
        out.wake()  # nothing pending now: this one must wake the thread
        assert wake_readable()
    finally:
        out.close_wake()


def test_will_is_published_when_the_publisher_process_is_killed(broker: Mosquitto) -> None:
    child = subprocess.Popen([sys.executable, str(HELPER), str(broker.port), "cam-9"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "connected"
        with Subscriber(broker.port, "edged/cam-9/#") as sub:
            sub.wait_for(lambda m: m.topic.endswith("/results"), 5)
            child.send_signal(signal.SIGKILL)
            child.wait(5)
            killed_at = time.time()
            will = sub.wait_for(lambda m: m.topic == "edged/cam-9/status"
                                and b'"offline"' in m.payload, 5)
        doc = orjson.loads(will.payload)
        schema("status").validate(doc)
        assert (doc["state"], doc["reason"]) == ("offline", "connection lost")
        assert "at" not in doc
        assert will.received_at - killed_at < 2.0  # the kernel closes the socket at once
        kept = retained(broker.port, "edged/cam-9/status")
        assert kept is not None and orjson.loads(kept.payload)["state"] == "offline"
    finally:
        child.kill()
        child.wait()


def test_broker_outage_keeps_the_newest_results_and_counts_exactly_what_was_lost(
        tmp_path: Path) -> None:
    queue_size, before, during = 20, 10, 50
    # Broker persistence and a persistent subscriber session: whatever the broker
    # accepted after its restart reaches the subscriber even if the publisher
    # reconnects first. The subscriber then sees exactly what edged delivered.
    with Mosquitto(tmp_path / "b", persistence=True) as broker, \
            Subscriber(broker.port, "edged/cam-1/results", client_id="outage-sub",
                       clean_session=False) as sub:
        pub = publisher(broker.port, queue_size=queue_size, max_inflight=5)
        try:
            assert pub.wait_connected(5)
            for seq in range(before):
                pub.publish_result(result_payload(seq))
            assert pub.wait_idle(5)
            broker.stop(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while pub.is_connected() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not pub.is_connected()
            for seq in range(before, before + during):
                pub.publish_result(result_payload(seq))
                time.sleep(0.02)
            c = pub.counters()
            assert (c.queued, c.dropped) == (queue_size, during - queue_size)
            assert c.last_error in ("connection refused",) or c.last_error.startswith(
                "connection lost")
            broker.start()
            assert pub.wait_idle(10), pub.counters()
            total = before + during
            sub.wait_for(lambda m: seq_of(m.payload) == total - 1, 10)
            time.sleep(0.3)  # duplicates (at-least-once) may trail; they must not matter
        finally:
            pub.stop()
    seqs = [seq_of(m.payload) for m in sub.messages]
    missing = sorted(set(range(total)) - set(seqs))
    c = pub.counters()
    assert c.dropped == len(missing) == during - queue_size
    # The OLDEST queued results went: the newest `queue_size` all arrived.
    assert missing == list(range(before, before + during - queue_size))
    assert c.published == before + queue_size
    assert c.connect_failures >= 1 and c.connects == 2


def test_publish_result_never_blocks_while_the_broker_is_away(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "b")  # configured, never started: connection refused
    pub = publisher(broker.port, queue_size=100)
    try:
        payload = result_payload(0)
        t0 = time.perf_counter()
        for _ in range(20_000):
            pub.publish_result(payload)
        per_call = (time.perf_counter() - t0) / 20_000
        c = pub.counters()
        assert (c.queued, c.dropped) == (100, 19_900)
        # A guard against blocking (a connect attempt takes seconds), not a speed test.
        assert per_call < 1e-3, f"{per_call * 1e6:.1f} us per publish_result"
        time.sleep(0.5)
        c = pub.counters()
        assert c.last_error == "connection refused"
        assert c.connect_failures >= 2
        assert pub.network_alive()
    finally:
        pub.stop()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_refused_password_is_one_clear_line_retried_and_never_logged(
        tmp_path: Path, protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Mosquitto(tmp_path / "b", allow_anonymous=False,
                   passwords={"edged": "right-secret"}) as broker:
        pub = publisher(broker.port, username="edged", password="wrong-secret",
                        protocol=protocol)
        try:
            deadline = time.monotonic() + 5
            while pub.counters().connect_failures < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            c = pub.counters()
            assert c.connect_failures >= 3 and not c.connected
            assert c.last_error == "broker refused the connection: not authorised"
            assert pub.network_alive()
        finally:
            pub.stop()
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert sum("not authorised" in w for w in warnings) == 1  # once, not per retry
        assert "secret" not in caplog.text
        good = publisher(broker.port, username="edged", password="right-secret",
                         protocol=protocol)
        try:
            assert good.wait_connected(5)
        finally:
            good.stop()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_acl_denied_results_are_counted_and_status_still_flows(tmp_path: Path,
                                                              protocol: str) -> None:
    acl = "topic readwrite edged/cam-1/status\ntopic readwrite edged/cam-1/stats\ntopic read #\n"
    with Mosquitto(tmp_path / "b", acl=acl) as broker, \
            Subscriber(broker.port, "edged/#") as sub:
        pub = publisher(broker.port, protocol=protocol)
        try:
            assert pub.wait_connected(5)
            for seq in range(3):
                pub.publish_result(result_payload(seq))
            pub.publish_stats({"fps": 1.0})
            sub.wait_for(lambda m: m.topic.endswith("/stats"), 5)
            assert pub.wait_idle(5)
            c = pub.counters()
            if protocol == "5":  # the PUBACK says so
                assert (c.rejected, c.acked) == (3, 0)
                assert c.last_error == "broker refused a result: not authorised"
            else:  # MQTT 3.1.1 has no way to tell: the broker acknowledges and drops
                assert (c.rejected, c.acked) == (0, 3)
            assert c.connected and pub.network_alive()
            assert sub.on("/results") == []
        finally:
            pub.stop()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_broker_message_size_limit_is_survived(tmp_path: Path, protocol: str) -> None:
    with Mosquitto(tmp_path / "b", message_size_limit=300) as broker, \
            Subscriber(broker.port, "edged/cam-1/results") as sub:
        pub = publisher(broker.port, protocol=protocol)
        try:
            assert pub.wait_connected(5)
            big, small = result_payload(1), b'{"seq": 2}'
            assert len(big) > 300
            pub.publish_result(big)
            pub.publish_result(small)
            assert sub.wait_for(lambda m: m.payload == small, 5)
            assert pub.wait_idle(5)
            c = pub.counters()
            assert c.connects == 1 and c.connected  # never dropped the connection
            if protocol == "5":
                assert (c.rejected, c.acked) == (1, 1)
                assert c.last_error == "broker refused a result: packet too large"
            assert [m.payload for m in sub.messages] == [small]
        finally:
            pub.stop()


def test_own_payload_limit_and_broker_maximum_packet_size(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "b", extra="max_packet_size 1000") as broker:
        limited = publisher(broker.port, max_payload_bytes=100, device_id="a")
        v5 = publisher(broker.port, protocol="5", device_id="b")
        try:
            assert limited.wait_connected(5) and v5.wait_connected(5)
            for pub in (limited, v5):
                pub.publish_result(b"x" * 2000)
                pub.publish_result(b"y" * 50)
                assert pub.wait_idle(5)
            assert limited.counters().last_error == (
                "result of 2000 bytes exceeds max_payload_bytes 100; not sent")
            assert v5.counters().last_error == (
                "result of 2000 bytes exceeds the broker's maximum packet size 1000; not sent")
            for pub in (limited, v5):
                c = pub.counters()
                assert (c.too_large, c.published, c.acked, c.connects) == (1, 1, 1, 1)
        finally:
            limited.stop()
            v5.stop()


def test_mqtt5_message_expiry_content_type_and_binary_round_trip(broker: Mosquitto) -> None:
    with Subscriber(broker.port, "edged/cam-1/results", protocol=mqtt.MQTTv5) as sub:
        pub = publisher(broker.port, protocol="5", message_expiry_s=60)
        try:
            sent = result_payload(5, binary=True)
            assert pub.wait_connected(5)
            pub.publish_result(sent)
            pub.publish_result(result_payload(6))
            binary, text = sub.wait_count(lambda m: True, 2)
        finally:
            pub.stop()
    assert 0 < binary.properties["MessageExpiryInterval"] <= 60
    assert binary.properties["ContentType"] == "application/vnd.edged.result-v1+binary"
    assert text.properties["ContentType"] == "application/json"
    assert text.properties["PayloadFormatIndicator"] == 1
    assert binary.payload == sent
    doc = decode_result(binary.payload)
    assert doc["seq"] == 5 and doc["device_id"] == "cam-1"
    np.testing.assert_array_equal(doc["outputs"][0]["data"],
                                  (np.arange(10, dtype=np.float32) + 5).reshape(1, 10) / 16)


def test_tls_server_auth_and_mutual(tmp_path: Path, tls: TlsFiles) -> None:
    with Mosquitto(tmp_path / "server-auth", tls=tls) as broker:
        pub = publisher(broker.port, tls=TlsSettings(tls.ca_cert))
        try:
            assert pub.wait_connected(5), pub.counters()
            assert nagle_off(pub)
        finally:
            pub.stop()
    with Mosquitto(tmp_path / "mutual", tls=tls, require_certificate=True) as broker:
        pub = publisher(broker.port, tls=TlsSettings(tls.ca_cert, tls.client_cert,
                                                     tls.client_key))
        try:
            assert pub.wait_connected(5), pub.counters()
            pub.publish_result(result_payload(1))
            assert pub.wait_idle(5)
        finally:
            pub.stop()
        without = publisher(broker.port, tls=TlsSettings(tls.ca_cert))
        try:
            time.sleep(1.0)
            c = without.counters()
            assert not c.connected and c.connect_failures >= 1
            # TLS 1.3 reports a missing client certificate after the handshake:
            # as the broker's alert ("tlsv13 alert certificate required") or, when
            # the broker's close wins the race, as an EOF. TLS either way.
            assert (c.last_error or "").startswith("connection closed before CONNACK: TLS: ")
        finally:
            without.stop()


def test_tls_wrong_ca_fails_clearly_and_never_falls_back_to_plain_text(
        tmp_path: Path, tls: TlsFiles) -> None:
    other_ca, _ = make_ca(tmp_path / "other", "other-ca")
    with Mosquitto(tmp_path / "tls", tls=tls) as broker:
        # another CA, and the system trust store (which never heard of the test CA)
        for settings in (TlsSettings(other_ca), TlsSettings(None)):
            pub = publisher(broker.port, tls=settings)
            try:
                time.sleep(0.8)
                c = pub.counters()
                assert not c.connected and c.connect_failures >= 2
                assert (c.last_error or "").startswith("TLS: certificate verify failed: ")
            finally:
                pub.stop()
    with Mosquitto(tmp_path / "plain") as broker:  # a plain-text broker on the TLS client's port
        pub = publisher(broker.port, tls=TlsSettings(tls.ca_cert))
        try:
            time.sleep(0.8)
            c = pub.counters()
            assert not c.connected and c.connect_failures >= 2
            assert c.connects == 0
        finally:
            pub.stop()
        assert "New client connected" not in broker.log_text()


def test_settings_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(PublisherError, match=r"^mqtt\.ca_file: .*nope\.pem: no such file$"):
        Publisher(PublisherSettings(device_id="cam-1", tls=TlsSettings(tmp_path / "nope.pem")))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(PublisherError, match=r"^mqtt\.tls: cannot load .*garbage\.pem: TLS: "):
        Publisher(PublisherSettings(device_id="cam-1", tls=TlsSettings(garbage)))
    # A reload retried with that file must not leak the wake-up socket pair each time
    # (the failures are kept, so nothing is left for the garbage collector to close).
    # Counted once earlier tests' network threads have closed their own sockets (a
    # stopped publisher's thread may still be on its way out) and garbage is gone.
    deadline = time.monotonic() + 5.0
    while (any(t.name == "edged-mqtt" for t in threading.enumerate())
           and time.monotonic() < deadline):
        time.sleep(0.01)
    gc.collect()
    fds = len(os.listdir("/proc/self/fd"))
    kept = []
    for _ in range(3):
        with pytest.raises(PublisherError) as failed:
            Publisher(PublisherSettings(device_id="cam-1", tls=TlsSettings(garbage)))
        kept.append(failed)
    assert len(os.listdir("/proc/self/fd")) == fds
    with pytest.raises(PublisherError, match=r"^mqtt\.prefix 'a/#': must be a topic"):
        Publisher(PublisherSettings(device_id="cam-1", prefix="a/#"))
    with pytest.raises(ValueError, match="device_id 'a/b': must be one topic level"):
        Publisher(PublisherSettings(device_id="a/b"))


class _RaisingLoop(PublishLoop):
    """A callback of ours that fails: paho must swallow it (suppress_exceptions)."""

    def _on_publish(self, *args: Any) -> None:
        super()._on_publish(*args)
        raise RuntimeError("a bug in a callback")


def test_a_failing_callback_does_not_kill_the_network_thread(
        broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edged.mqtt.publisher, "PublishLoop", _RaisingLoop)
    pub = Publisher(PublisherSettings(device_id="cam-1", port=broker.port, **FAST))
    pub.start()
    try:
        with Subscriber(broker.port, "edged/cam-1/results") as sub:
            assert pub.wait_connected(5)
            for seq in range(5):
                pub.publish_result(result_payload(seq))
            sub.wait_count(lambda m: True, 5)
        assert pub.wait_idle(5)
        assert pub.network_alive() and pub.counters().acked == 5
    finally:
        pub.stop()


def test_backoff_grows_is_capped_and_spreads_a_fleet() -> None:
    rng = random.Random(1)
    for attempt, step in [(0, 1.0), (1, 2.0), (3, 8.0), (10, 60.0), (500, 60.0)]:
        delays = [backoff_delay(attempt, 1.0, 60.0, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
    fleet = [backoff_delay(8, 1.0, 60.0, random.Random(device)) for device in range(1000)]
    # 1000 devices coming back after an outage: no second gets more than ~5 %.
    counts = np.histogram(fleet, bins=30, range=(30, 60))[0]
    assert counts.max() < 60 and counts.min() > 10
