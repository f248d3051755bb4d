"""A small embedded MQTT 3.1.1 broker: `edged demo`'s fallback when mosquitto
is not installed.

A DEMO FALLBACK, not a production broker: for anything beyond the demo run a
real broker (mosquitto). It listens on 127.0.0.1 only, so nothing off the
machine can reach it; it has no authentication (user names and passwords are
read and ignored) and no TLS.

What it does, enough for edged's publisher, `edged listen` and paho clients:
CONNECT/CONNACK; SUBSCRIBE/SUBACK with `+` and `#` (granted QoS is
min(requested, 1)); UNSUBSCRIBE/UNSUBACK; PUBLISH at QoS 0 and 1 (PUBACK to
the publisher; each subscriber receives min(publish QoS, granted QoS), QoS 1
with its own packet id, and its PUBACKs are accepted); retained messages (an
empty retained payload clears the topic; a new subscription gets them with the
retain flag); the last will whenever a connection ends without DISCONNECT
(socket closed, protocol error, keep-alive silent for 1.5x its interval,
client id taken over by a new connection); PINGREQ/PINGRESP.

What it refuses, by design:

* protocol levels other than 4 (MQTT 3.1.1), MQTT 5 included: CONNACK return
  code 1 "unacceptable protocol version", then close. edged's default
  `mqtt.protocol = "3.1.1"` is what to use against it.
* PUBLISH at QoS 2: the client is disconnected (as a protocol error, so its
  will is published). A subscription asking for QoS 2 is granted QoS 1.
* persistent sessions: every session is clean. clean session 0 is accepted,
  CONNACK says no session is present, and nothing is kept for an absent
  client. QoS 1 deliveries are never re-sent: TCP delivers them, or the
  connection (and with it the session) ends.
* packets over `max_packet` bytes (1 MiB) or malformed ones, and subscribers
  that fall more than 8 MiB behind: that client is closed; the broker and its
  other clients carry on.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

from edged import minibroker_wire as wire
from edged.minibroker_wire import ProtocolError

__all__ = ["HOST", "MiniBroker", "ProtocolError"]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # never 0.0.0.0: an unauthenticated broker must stay on this machine
MAX_BACKLOG = 8 << 20  # bytes queued for one slow reader before it is dropped
MAX_CLIENTS = 256
CONNECT_TIMEOUT_S = 10.0  # a socket that never sends CONNECT


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    peer: str
    opened: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    client_id: str | None = None  # None until CONNECT is accepted
    keepalive_s: float = 0.0
    last_seen: float = 0.0
    will: tuple[str, bytes, int, bool] | None = None
    subs: dict[str, int] = field(default_factory=dict)
    unacked: set[int] = field(default_factory=set)
    next_mid: int = 0
    closed: bool = False


class MiniBroker:
    """`port = MiniBroker().start()` ... `stop()`, or `with MiniBroker() as b: b.port`.
    One background thread runs every connection on one selector."""

    def __init__(self, port: int = 0, *, max_packet: int = wire.MAX_PACKET) -> None:
        self._want_port, self.max_packet = port, max_packet
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._clients: set[_Client] = set()
        self._by_id: dict[str, _Client] = {}
        self._retained: dict[str, tuple[bytes, int]] = {}
        self._auto_ids = itertools.count(1)
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the listening socket is bound to, as the kernel reports it."""
        if self._address is None:
            raise RuntimeError("the broker is not started")
        return self._address

    @property
    def port(self) -> int:
        return self.address[1]

    def start(self) -> int:
        if self._thread is not None:
            return self.port
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, self._want_port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"embedded broker: cannot listen on {HOST}:"
                                     f"{self._want_port}: {exc.strerror}") from exc
        sock.listen(64)
        sock.setblocking(False)
        self._listener = sock
        self._address = (str(sock.getsockname()[0]), int(sock.getsockname()[1]))
        self._sel.register(sock, selectors.EVENT_READ, "listener")
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="edged-minibroker", daemon=True)
        self._thread.start()
        return self.port

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self._wake_r.close()
            self._wake_w.close()

    def __enter__(self) -> MiniBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:  # the broker thread; every method below runs on it
        while not self._stopping.is_set():
            try:
                for key, events in self._sel.select(timeout=0.5):
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    else:
                        self._service(key.data, events)
                self._expire(time.monotonic())
            except Exception:  # a bug must cost one loop turn, never the broker
                log.exception("embedded broker: internal error (carrying on)")
        for c in list(self._clients):
            self._drop(c, "broker stopping", will=False)
        for s in (self._listener, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._sel.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            if len(self._clients) >= MAX_CLIENTS:
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            now = time.monotonic()
            c = _Client(sock, f"{addr[0]}:{addr[1]}", now, last_seen=now)
            self._clients.add(c)
            self._sel.register(sock, selectors.EVENT_READ, c)

    def _service(self, c: _Client, events: int) -> None:
        if c.closed:
            return
        try:
            if events & selectors.EVENT_READ:
                data = c.sock.recv(65536)
                if not data:
                    self._drop(c, "connection closed without DISCONNECT")
                    return
                c.inbuf += data
                c.last_seen = time.monotonic()
                if c.client_id is None and c.inbuf[0] != wire.CONNECT << 4:
                    # Not MQTT at all (an HTTP probe...): say so now, not at the timeout.
                    raise ProtocolError(f"first byte {c.inbuf[0]:#04x} is not CONNECT")
                pos = 0  # one deletion per read, not one per packet
                while not c.closed and (
                        found := wire.decode_length(c.inbuf, self.max_packet, pos)):
                    length, head = found
                    if len(c.inbuf) < pos + head + length:
                        break
                    first, body = c.inbuf[pos], bytes(c.inbuf[pos + head:pos + head + length])
                    pos += head + length
                    self._handle(c, first, body)
                del c.inbuf[:pos]
            if events & selectors.EVENT_WRITE and not c.closed:
                self._flush(c)
        except ProtocolError as exc:
            log.warning("embedded broker: %s (%s): %s; closing it", c.client_id or "client",
                        c.peer, exc)
            self._drop(c, f"protocol error: {exc}")
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._drop(c, f"socket error: {exc.strerror or exc}")

    def _expire(self, now: float) -> None:
        for c in list(self._clients):
            if c.client_id is None and now - c.opened > CONNECT_TIMEOUT_S:
                self._drop(c, "no CONNECT in time")
            elif c.keepalive_s and now - c.last_seen > 1.5 * c.keepalive_s:
                self._drop(c, "keep-alive expired")

    def _handle(self, c: _Client, first: int, body: bytes) -> None:
        kind, flags = first >> 4, first & 0x0F
        if c.client_id is None and kind != wire.CONNECT:
            raise ProtocolError(f"packet type {kind} before CONNECT")
        if kind == wire.PUBLISH:
            self._on_publish(c, flags, body)
        elif kind in (wire.SUBSCRIBE, wire.UNSUBSCRIBE) and flags == 2:
            (self._on_subscribe if kind == wire.SUBSCRIBE else self._on_unsubscribe)(c, body)
        elif flags:
            raise ProtocolError(f"packet type {kind} with flags {flags:#x}")
        elif kind == wire.CONNECT and c.client_id is None:
            self._on_connect(c, body)
        elif kind == wire.PUBACK:
            c.unacked.discard(wire.Reader(body).u16())
        elif kind == wire.PINGREQ:
            self._send(c, bytes([wire.PINGRESP << 4, 0]))
        elif kind == wire.DISCONNECT:
            self._drop(c, "disconnected", will=False)
        else:
            raise ProtocolError(f"unexpected packet type {kind}")

    def _on_connect(self, c: _Client, body: bytes) -> None:
        r = wire.Reader(body)
        name, level, flags, keepalive = r.blob(), r.u8(), r.u8(), r.u16()
        if name != b"MQTT" or level != 4:
            self._refuse(c, 1, f"protocol {name.decode('latin-1')!r} level {level} "
                               "(only MQTT 3.1.1, level 4)")
            return
        if flags & 0x01 or (flags & 0x40 and not flags & 0x80):
            raise ProtocolError(f"invalid CONNECT flags {flags:#x}")
        client_id = r.text()
        will = None
        if flags & 0x04:
            topic, payload, qos = r.text(), r.blob(), (flags >> 3) & 3
            if qos == 3 or not wire.valid_topic(topic):
                raise ProtocolError(f"invalid will (topic {topic!r}, QoS {qos})")
            will = (topic, payload, qos, bool(flags & 0x20))
        elif flags & 0x38:
            raise ProtocolError("will QoS or retain set without a will")
        if flags & 0x80:
            r.text()  # no authentication: loopback-only demo broker
        if flags & 0x40:
            r.blob()
        if not client_id:
            if not flags & 0x02:
                self._refuse(c, 2, "empty client id without clean session")
                return
            client_id = f"minibroker-{next(self._auto_ids)}"
        old = self._by_id.get(client_id)
        if old is not None:
            self._drop(old, "client id taken over by a new connection")
        c.client_id, c.keepalive_s, c.will = client_id, float(keepalive), will
        self._by_id[client_id] = c
        log.debug("embedded broker: %s connected from %s", client_id, c.peer)
        self._send(c, bytes([wire.CONNACK << 4, 2, 0, 0]))  # session present 0: clean only

    def _refuse(self, c: _Client, code: int, why: str) -> None:
        log.warning("embedded broker: refused %s: %s", c.peer, why)
        self._send(c, bytes([wire.CONNACK << 4, 2, 0, code]))
        self._drop(c, why, will=False)

    def _on_publish(self, c: _Client, flags: int, body: bytes) -> None:
        qos, retain = (flags >> 1) & 3, bool(flags & 1)
        if qos == 3:
            raise ProtocolError("PUBLISH with QoS 3")
        if qos == 2:
            raise ProtocolError("QoS 2 is not supported by the embedded broker")
        r = wire.Reader(body)
        topic = r.text()
        if not wire.valid_topic(topic):
            raise ProtocolError(f"PUBLISH to invalid topic {topic!r}")
        mid = r.u16() if qos else 0
        if qos and not mid:
            raise ProtocolError("PUBLISH with packet id 0")
        self._publish(topic, r.rest(), qos, retain)
        if qos:
            self._send(c, wire.packet(wire.PUBACK << 4, mid.to_bytes(2, "big")))

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if retain:
            if payload:
                self._retained[topic] = (payload, qos)
            else:
                self._retained.pop(topic, None)
        for other in list(self._by_id.values()):
            granted = max((q for f, q in other.subs.items() if wire.topic_matches(f, topic)),
                          default=-1)
            if granted >= 0:  # retain flag 0: this is a live delivery, not a stored one
                self._deliver(other, topic, payload, min(qos, granted), False)

    def _deliver(self, c: _Client, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        var = wire.mqtt_str(topic.encode())
        if qos:
            mid = self._next_mid(c)
            if mid is None:
                self._drop(c, "65535 QoS 1 deliveries unacknowledged")
                return
            var += mid.to_bytes(2, "big")
        self._send(c, bytes([wire.PUBLISH << 4 | min(qos, 1) << 1 | retain])
                   + wire.encode_length(len(var) + len(payload)) + var + payload)

    def _next_mid(self, c: _Client) -> int | None:
        for _ in range(65535):
            c.next_mid = c.next_mid % 65535 + 1
            if c.next_mid not in c.unacked:
                c.unacked.add(c.next_mid)
                return c.next_mid
        return None

    def _on_subscribe(self, c: _Client, body: bytes) -> None:
        r = wire.Reader(body)
        mid, pairs = r.u16(), []
        while r.left():
            filt, qos = r.text(), r.u8()
            if qos > 2:
                raise ProtocolError(f"SUBSCRIBE with QoS {qos}")
            pairs.append((filt, min(qos, 1) if wire.valid_filter(filt) else 0x80))
        if not pairs:
            raise ProtocolError("SUBSCRIBE without a topic filter")
        for filt, granted in pairs:
            if granted != 0x80:
                c.subs[filt] = granted
        codes = bytes(granted for _, granted in pairs)
        self._send(c, wire.packet(wire.SUBACK << 4, mid.to_bytes(2, "big") + codes))
        for filt, granted in pairs:
            for topic, (payload, qos) in list(self._retained.items()):
                if granted != 0x80 and wire.topic_matches(filt, topic) and not c.closed:
                    self._deliver(c, topic, payload, min(qos, granted), True)

    def _on_unsubscribe(self, c: _Client, body: bytes) -> None:
        r = wire.Reader(body)
        mid = r.u16()
        if not r.left():
            raise ProtocolError("UNSUBSCRIBE without a topic filter")
        while r.left():
            c.subs.pop(r.text(), None)
        self._send(c, wire.packet(wire.UNSUBACK << 4, mid.to_bytes(2, "big")))

    def _send(self, c: _Client, data: bytes) -> None:
        if c.closed:
            return
        if len(c.outbuf) + len(data) > MAX_BACKLOG:
            self._drop(c, f"more than {MAX_BACKLOG} bytes unread (slow reader)")
            return
        c.outbuf += data
        self._flush(c)

    def _flush(self, c: _Client) -> None:
        try:
            sent = c.sock.send(c.outbuf) if c.outbuf else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._drop(c, f"socket error: {exc.strerror or exc}")
            return
        del c.outbuf[:sent]
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.outbuf else 0)
        if self._sel.get_key(c.sock).events != want:
            self._sel.modify(c.sock, want, c)

    def _drop(self, c: _Client, why: str, *, will: bool = True) -> None:
        if c.closed:
            return
        c.closed = True
        self._clients.discard(c)
        if c.client_id is not None and self._by_id.get(c.client_id) is c:
            del self._by_id[c.client_id]
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(c.sock)
        with contextlib.suppress(OSError):
            if c.outbuf:  # e.g. a refusing CONNACK: one last best-effort send
                c.sock.send(c.outbuf)
        c.sock.close()
        log.debug("embedded broker: %s (%s) closed: %s", c.client_id, c.peer, why)
        if will and c.will is not None:
            topic, payload, qos, retain = c.will
            self._publish(topic, payload, min(qos, 1), retain)
