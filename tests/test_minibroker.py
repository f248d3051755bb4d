"""The embedded demo broker (`edged.minibroker`) with real clients: paho 2.x,
edged's own Publisher (in process and as a child process killed with
SIGKILL), raw TCP sockets speaking bytes written out by hand, and `edged demo`
end to end on it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from broker import Subscriber, retained
from paho.mqtt.enums import CallbackAPIVersion

from edged.demo import find_mosquitto
from edged.minibroker import MiniBroker
from edged.minibroker_wire import ProtocolError, decode_length, encode_length, topic_matches
from edged.publish import Publisher, PublisherSettings

ROOT = Path(__file__).resolve().parent.parent
PUBLISH_HELPER = ROOT / "tests" / "publish_helpers.py"
FAST: dict[str, Any] = {"keepalive_s": 5, "backoff_min_s": 0.1, "backoff_max_s": 0.4,
                        "connect_timeout_s": 3.0}


@pytest.fixture
def mini() -> Iterator[MiniBroker]:
    with MiniBroker() as broker:
        yield broker


# ------------------------------------------------ raw clients, bytes by hand


def s16(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: bytes, *, keepalive: int = 60, name: bytes = b"MQTT",
                   level: int = 4, will: tuple[bytes, bytes] | None = None) -> bytes:
    flags = 0x02 | (0x04 | 0x08 | 0x20 if will else 0)  # clean; will QoS 1, retained
    body = s16(name) + bytes([level, flags]) + keepalive.to_bytes(2, "big") + s16(client_id)
    if will:
        body += s16(will[0]) + s16(will[1])
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def raw_client(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if first:
        sock.sendall(first)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the broker sends until it closes the connection."""
    sock.settimeout(timeout)
    got = b""
    with sock, contextlib.suppress(ConnectionResetError):  # closed with our bytes unread
        while chunk := sock.recv(4096):
            got += chunk
    return got


def mqtt_client(port: int, client_id: str = "", **kw: Any) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, **kw)
    client.connect("127.0.0.1", port, keepalive=5)
    client.loop_start()
    return client


def publish(client: mqtt.Client, topic: str, payload: bytes, qos: int = 1,
            retain: bool = False) -> None:
    info = client.publish(topic, payload, qos=qos, retain=retain)
    info.wait_for_publish(5)  # QoS 1: returns once the broker's PUBACK arrived
    assert info.is_published()


def assert_still_serving(port: int) -> None:
    with Subscriber(port, "alive/#") as sub:
        client = mqtt_client(port)
        try:
            publish(client, "alive/check", b"yes")
            sub.wait_for(lambda m: m.payload == b"yes", 5)
        finally:
            client.disconnect()
            client.loop_stop()


# ------------------------------------------------------------ wire format


def test_topic_matching_follows_mqtt_rules() -> None:
    cases = [("a/+/c", "a/b/c", True), ("a/+/c", "a/b/d", False), ("a/+", "a/b/c", False),
             ("a/#", "a", True), ("a/#", "a/b/c", True), ("#", "a/b", True),
             ("+/+", "a/b", True), ("+", "/a", False), ("+/a", "/a", True),
             ("#", "$SYS/x", False), ("+/x", "$SYS/x", False), ("$SYS/#", "$SYS/x", True),
             ("a/b", "a/b", True), ("a/b", "a/b/", False)]
    assert [(f, t, topic_matches(f, t)) for f, t, _ in cases] == cases


def test_remaining_length_round_trips_and_is_bounded() -> None:
    for n in (0, 127, 128, 16383, 16384, 2_097_151, 268_435_455):
        assert decode_length(bytearray(b"\x30" + encode_length(n)), 1 << 30) == (
            n, 1 + len(encode_length(n)))
    assert decode_length(bytearray(b"\x30\x80"), 1 << 20) is None  # incomplete: wait
    with pytest.raises(ProtocolError, match="longer than 4 bytes"):
        decode_length(bytearray(b"\x30\xff\xff\xff\xff\x01"), 1 << 30)
    with pytest.raises(ProtocolError, match=r"2097157 bytes exceeds the 1048576-byte limit"):
        decode_length(bytearray(b"\x30" + encode_length(2_097_152)), 1 << 20)


# ------------------------------------------------------------ the broker


def test_listens_on_127_0_0_1_only(mini: MiniBroker) -> None:
    host, port = mini.address
    assert (host, port) == ("127.0.0.1", mini.port) and port > 0
    # What the kernel has listening on this port, IPv4 and IPv6 (state 0A = LISTEN).
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    listening.append(local)
    assert listening == [f"0100007F:{port:04X}"]
    with pytest.raises(ConnectionRefusedError):  # another loopback address: not bound
        socket.create_connection(("127.0.0.2", port), timeout=2).close()


def test_qos0_and_qos1_delivery_with_wildcards_and_unsubscribe(mini: MiniBroker) -> None:
    with Subscriber(mini.port, ["sensors/+/temp", "cams/#"], qos=1) as sub1, \
            Subscriber(mini.port, "#", qos=0) as sub0:
        pub = mqtt_client(mini.port, "pub")
        try:
            publish(pub, "sensors/kitchen/temp", b"21.5", qos=1)
            publish(pub, "sensors/kitchen/humidity", b"40", qos=1)
            publish(pub, "cams", b"parent", qos=0)
            publish(pub, "cams/front/results", b"r1", qos=1)
            sub0.wait_count(lambda m: True, 4)
            got1 = sub1.wait_count(lambda m: True, 3)
            assert [(m.topic, m.payload, m.qos, m.retain) for m in got1] == [
                ("sensors/kitchen/temp", b"21.5", 1, False), ("cams", b"parent", 0, False),
                ("cams/front/results", b"r1", 1, False)]
            assert {m.qos for m in sub0.messages} == {0}  # min(publish QoS, granted QoS)
            sub1.client.unsubscribe("cams/#")
            time.sleep(0.3)
            publish(pub, "cams/front/results", b"r2")
            publish(pub, "sensors/hall/temp", b"19")
            sub1.wait_for(lambda m: m.payload == b"19")
            assert b"r2" not in [m.payload for m in sub1.messages]
            assert b"r2" in [m.payload for m in sub0.wait_count(lambda m: True, 6)]
        finally:
            pub.disconnect()
            pub.loop_stop()


def test_many_qos1_messages_arrive_in_order_each_acknowledged(mini: MiniBroker) -> None:
    with Subscriber(mini.port, "bulk/#", qos=1) as sub:
        pub = mqtt_client(mini.port, "bulk-pub")
        try:
            infos = [pub.publish("bulk/x", b"%d" % i, qos=1) for i in range(300)]
            for info in infos:
                info.wait_for_publish(10)
            got = sub.wait_count(lambda m: True, 300, timeout=20)
            assert [int(m.payload) for m in got] == list(range(300))
            assert all(m.qos == 1 for m in got)
        finally:
            pub.disconnect()
            pub.loop_stop()


def test_qos2_subscription_is_granted_qos1_and_a_qos2_publish_disconnects(
        mini: MiniBroker) -> None:
    granted: list[Any] = []
    gone = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="q2")
    client.on_subscribe = lambda _c, _u, _m, codes, _p: granted.extend(codes)
    client.on_disconnect = lambda *_a: gone.set()
    client.connect("127.0.0.1", mini.port)
    client.loop_start()
    try:
        client.subscribe([("q/#", 2)])
        deadline = time.monotonic() + 5
        while not granted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [int(c.value) for c in granted] == [1]
        client.publish("q/x", b"exactly once?", qos=2)
        assert gone.wait(5), "a QoS 2 PUBLISH must end the connection"
    finally:
        client.loop_stop()
    assert_still_serving(mini.port)


def test_an_invalid_filter_is_refused_in_the_suback_the_others_granted(
        mini: MiniBroker) -> None:
    sock = raw_client(mini.port, connect_packet(b"filters"))
    with sock:
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        body = b"\x00\x07" + s16(b"bad/#/x") + b"\x01" + s16(b"ok/+") + b"\x02"
        sock.sendall(bytes([0x82, len(body)]) + body)
        assert sock.recv(6) == b"\x90\x04\x00\x07\x80\x01"  # SUBACK: failure, QoS 1


def test_retained_messages_replace_clear_and_arrive_flagged(mini: MiniBroker) -> None:
    pub = mqtt_client(mini.port, "ret-pub")
    try:
        publish(pub, "dev/1/status", b"first", retain=True)
        publish(pub, "dev/1/status", b"online", retain=True)
        publish(pub, "dev/2/status", b"gone", retain=True)
        publish(pub, "dev/2/status", b"", retain=True)  # empty payload: clears
        with Subscriber(mini.port, "dev/+/status") as sub:
            got = sub.wait_for(lambda m: True)
            time.sleep(0.3)
            assert [(m.topic, m.payload, m.retain) for m in sub.messages] == [
                (got.topic, b"online", True)]
            publish(pub, "dev/1/status", b"live", retain=True)
            live = sub.wait_for(lambda m: m.payload == b"live")
            assert not live.retain  # to an existing subscription: retain flag 0
        assert retained(mini.port, "dev/2/status") is None
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_edged_publisher_online_results_acked_then_offline_on_clean_stop(
        mini: MiniBroker) -> None:
    with Subscriber(mini.port, "edged/cam-1/#") as sub:
        pub = Publisher(PublisherSettings(device_id="cam-1", port=mini.port, **FAST))
        pub.start()
        try:
            assert pub.wait_connected(5)
            for seq in range(5):
                pub.publish_result(b'{"seq":%d}' % seq)
            results = sub.wait_count(lambda m: m.topic.endswith("/results"), 5)
            assert [orjson.loads(m.payload)["seq"] for m in results] == list(range(5))
            assert pub.wait_idle(5)
            assert pub.counters().acked == 5
        finally:
            pub.stop()
        sub.wait_for(lambda m: m.topic.endswith("/status") and b'"offline"' in m.payload)
    kept = retained(mini.port, "edged/cam-1/status")
    assert kept is not None
    assert orjson.loads(kept.payload)["reason"] == "stopped"  # the explicit one, no will


def test_edged_publisher_on_mqtt5_is_refused_with_a_clear_reason(mini: MiniBroker) -> None:
    pub = Publisher(PublisherSettings(device_id="cam-5", port=mini.port, protocol="5", **FAST))
    pub.start()
    try:
        deadline = time.monotonic() + 10
        while pub.counters().last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pub.is_connected()
        assert "unsupported protocol version" in str(pub.counters().last_error)
    finally:
        pub.stop()


def test_will_is_published_when_a_publisher_process_is_sigkilled(mini: MiniBroker) -> None:
    child = subprocess.Popen([sys.executable, str(PUBLISH_HELPER), str(mini.port), "cam-9"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "connected"
        with Subscriber(mini.port, "edged/cam-9/#") as sub:
            online = sub.wait_for(lambda m: m.topic.endswith("/status"))
            assert online.retain and orjson.loads(online.payload)["state"] == "online"
            sub.wait_for(lambda m: m.topic.endswith("/results"))
            child.send_signal(signal.SIGKILL)
            child.wait(5)
            will = sub.wait_for(lambda m: m.topic == "edged/cam-9/status"
                                and b'"offline"' in m.payload)
        doc = orjson.loads(will.payload)
        assert (doc["state"], doc["reason"]) == ("offline", "connection lost")
        kept = retained(mini.port, "edged/cam-9/status")
        assert kept is not None and orjson.loads(kept.payload)["state"] == "offline"
    finally:
        child.kill()
        child.wait()


def test_keepalive_silence_past_one_and_a_half_intervals_publishes_the_will(
        mini: MiniBroker) -> None:
    with Subscriber(mini.port, "dev/quiet/#") as sub:
        connected_at = time.monotonic()  # before the CONNECT: a lower bound
        sock = raw_client(mini.port, connect_packet(b"quiet", keepalive=1,
                                                    will=(b"dev/quiet/status", b"lost")))
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        will = sub.wait_for(lambda m: m.payload == b"lost", 10)  # sent nothing since
        assert time.monotonic() - connected_at >= 1.5
        assert will.qos == 1
        assert read_until_closed(sock) == b""
    kept = retained(mini.port, "dev/quiet/status")
    assert kept is not None and kept.payload == b"lost"


def test_a_new_connection_with_the_same_client_id_takes_over(mini: MiniBroker) -> None:
    with Subscriber(mini.port, "dev/twin/#") as sub:
        first = raw_client(mini.port, connect_packet(b"twin", will=(b"dev/twin/s", b"old")))
        assert first.recv(4) == b"\x20\x02\x00\x00"
        second = raw_client(mini.port, connect_packet(b"twin"))
        assert second.recv(4) == b"\x20\x02\x00\x00"
        assert read_until_closed(first) == b""
        sub.wait_for(lambda m: m.payload == b"old")
        second.sendall(b"\xc0\x00")  # PINGREQ: the new one is served
        assert second.recv(2) == b"\xd0\x00"
        second.sendall(b"\xe0\x00")  # DISCONNECT: no will
        assert read_until_closed(second) == b""


@pytest.mark.parametrize(("name", "level"), [(b"MQTT", 5), (b"MQIsdp", 3), (b"MQTT", 9)])
def test_protocols_other_than_3_1_1_get_connack_1_then_close(
        mini: MiniBroker, name: bytes, level: int) -> None:
    sock = raw_client(mini.port, connect_packet(b"old", name=name, level=level))
    assert read_until_closed(sock) == b"\x20\x02\x00\x01"


MALFORMED = {
    "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "publish before connect": b"\x30\x05\x00\x01ax!",
    "remaining length of 5 bytes": b"\x10\xff\xff\xff\xff\x01",
    "over the packet limit": b"\x10" + encode_length(2 << 20) + b"x" * 1000,
    "client id not utf-8": b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02\xff\xfe",
    "truncated connect": b"\x10\x04\x00\x04MQ",
    "reserved connect flag": b"\x10\x0d\x00\x04MQTT\x04\x03\x00\x3c\x00\x01a",
    "second connect": connect_packet(b"m2") + connect_packet(b"m2"),
    "publish qos 3": connect_packet(b"m3") + b"\x36\x07\x00\x01a\x00\x01hi",
    "publish to a wildcard": connect_packet(b"m4") + b"\x30\x04\x00\x01#x",
    "subscribe bad flags": connect_packet(b"m5") + b"\x80\x06\x00\x01\x00\x01a\x01",
    "subscribe qos 3": connect_packet(b"m6") + b"\x82\x06\x00\x01\x00\x01a\x03",
    "subscribe empty": connect_packet(b"m7") + b"\x82\x02\x00\x01",
    "pubrel": connect_packet(b"m8") + b"\x62\x02\x00\x01",
}


def test_malformed_input_closes_that_client_only(mini: MiniBroker) -> None:
    with Subscriber(mini.port, "#") as bystander:
        for what, data in MALFORMED.items():
            sock = raw_client(mini.port, data)
            try:
                got = read_until_closed(sock)
            except TimeoutError:
                pytest.fail(f"{what}: the broker kept the connection open")
            assert got in (b"", b"\x20\x02\x00\x00"), what  # at most a CONNACK first
        client = mqtt_client(mini.port, "after")
        try:
            publish(client, "after/malformed", b"fine")
            bystander.wait_for(lambda m: m.payload == b"fine")  # connected all along
        finally:
            client.disconnect()
            client.loop_stop()
    assert_still_serving(mini.port)


def test_half_a_packet_then_the_rest_is_one_packet(mini: MiniBroker) -> None:
    data = connect_packet(b"slow") + b"\xc0\x00"
    sock = raw_client(mini.port)
    with sock:
        for byte in data:  # one byte per segment: the reader must reassemble
            sock.sendall(bytes([byte]))
            time.sleep(0.002)
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        assert sock.recv(2) == b"\xd0\x00"


# ------------------------------------------------------------ edged demo


def demo_env(**extra: str) -> dict[str, str]:
    # Only the interpreter's own directory on PATH: mosquitto is not found there.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGED_", "NOTIFY_"))}
    return {**env, "PATH": str(Path(sys.executable).parent), **extra}


def test_edged_demo_end_to_end_on_the_embedded_broker() -> None:
    proc = subprocess.run([sys.executable, "-m", "edged", "demo", "--count", "3"], check=False,
                          env=demo_env(EDGED_DEMO_BROKER="embedded"), cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lines[0].startswith("broker: embedded Python MQTT broker on 127.0.0.1:")
    assert "demo only" in lines[0]
    seqs = [line for line in lines if line.startswith("seq ")]
    assert len(seqs) == 3
    assert all("-> floats [" in line for line in lines if "int8 per_tensor" in line)
    assert "status: online" in lines
    assert lines[-1] == "daemon stopped cleanly (exit 0)"


def test_edged_demo_still_prefers_mosquitto_when_installed() -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed: the embedded path is the one tested above")
    proc = subprocess.run([sys.executable, "-m", "edged", "demo", "--count", "1"], check=False,
                          env=demo_env(PATH=os.environ.get("PATH", "")), cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0].startswith("broker: private mosquitto on 127.0.0.1:")


def test_edged_demo_rejects_an_unknown_broker_choice_in_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "edged", "demo", "--count", "1"], check=False,
                          env=demo_env(EDGED_DEMO_BROKER="rabbit"), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("edged demo: EDGED_DEMO_BROKER='rabbit': must be auto, "
                                   "embedded or mosquitto")


def test_edged_demo_help_documents_the_broker_choice() -> None:
    proc = subprocess.run([sys.executable, "-m", "edged", "demo", "--help"], check=False,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "EDGED_DEMO_BROKER=auto|embedded|mosquitto" in text
    assert "embedded pure-Python demo broker" in text
