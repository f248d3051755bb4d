"""What the publisher receives: its few subscriptions, held to a size, kept narrow.

edged publishes; it subscribes only where a feature needs to hear something
(Home Assistant's birth message; once at start, its own discovery topic, to
remove a config an earlier run left). Whoever may publish on such a topic
can send edged anything, so:

* subscriptions are exact topics (no wildcards), at QoS 0 (no acknowledgement
  per message in a flood), and a "once" subscription is dropped again right
  after the broker has delivered what it retained there;
* no message larger than `MAX_INBOUND_BYTES` is ever held. MQTT 5 says so in
  CONNECT (Maximum Packet Size: the broker must not send a larger packet).
  MQTT 3.1.1 cannot, and paho reads a whole packet into memory (one retained
  200 MB message took the daemon from 72 MB to 650 MB), so `BoundedClient`
  refuses a packet as soon as its length is read, before its body: the
  connection is closed, the subscriptions are given up for this connection's
  publisher (one ERROR line names them), and the next connection goes on
  without them. The broker's own cap is mosquitto's `message_size_limit`.

Runs on the network thread (`edged.mqtt.loop`), like every paho call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edged.mqtt.acks import QuickAcks

log = logging.getLogger("edged.publish")

MAX_INBOUND_BYTES: Final = 256 * 1024  # a discovery config is a few kB, a birth message 6 B
_READ_CHUNK: Final = 64 * 1024  # paho asks recv() for a whole packet's length at once
ONCE_GRACE_S: Final = 2.0  # after SUBACK: brokers that send retained messages late


class InboundTooLargeError(ConnectionAbortedError):
    """A packet from the broker over `MAX_INBOUND_BYTES`; paho then drops the connection."""


class BoundedClient(QuickAcks):
    """A paho client that never holds an incoming packet over `max_inbound` bytes
    (and reads a result's PUBACK quickly, `edged.mqtt.acks`)."""

    max_inbound: int = MAX_INBOUND_BYTES
    on_too_large: Callable[[int], None] | None = None

    def _sock_recv(self, bufsize: int) -> bytes:
        packet: dict[str, Any] = getattr(self, "_in_packet", {})
        size = int(packet.get("remaining_length", 0)) if packet.get("have_remaining") else 0
        if size > self.max_inbound:
            if self.on_too_large is not None:
                self.on_too_large(size)
            raise InboundTooLargeError(f"message too large ({size} bytes)")
        # paho asks for the packet's whole remaining length: recv() would allocate it.
        return bytes(super()._sock_recv(min(bufsize, _READ_CHUNK)))


@dataclass
class _Watch:
    handler: Callable[..., None]  # (payload) or, with `retain`, (payload, retained)
    once: bool
    retain: bool = False
    subscribed_mid: int | None = None
    expires: float | None = None  # once: when to unsubscribe (set by SUBACK)


class Inbound:
    """The publisher's subscriptions and what arrives on them (network thread only,
    except `watch`, which is called before the thread starts)."""

    def __init__(self, connect_props: bool) -> None:
        self._watches: dict[str, _Watch] = {}
        self._v5 = connect_props
        self.given_up = False
        self.received = 0

    def watch(self, topic: str, handler: Callable[..., None], *, once: bool,
              retain: bool = False) -> None:
        self._watches[topic] = _Watch(handler, once, retain)

    def attach(self, client: BoundedClient) -> None:
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_too_large = self._too_large

    def connect_properties(self) -> Properties | None:
        """MQTT 5: the largest packet we take (the broker must not send a larger one)."""
        if not self._v5:
            return None
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.MaximumPacketSize = MAX_INBOUND_BYTES
        return props

    def on_connect(self, client: mqtt.Client) -> None:
        for topic, w in list(self._watches.items()):
            w.expires = None
            if self.given_up:
                continue
            _rc, mid = client.subscribe(topic, qos=0)
            w.subscribed_mid = mid

    def tick(self, client: mqtt.Client, now: float) -> None:
        """Drop the "once" subscriptions whose retained message had its chance."""
        for topic, w in list(self._watches.items()):
            if w.once and w.expires is not None and now >= w.expires:
                self._forget(client, topic)

    def _forget(self, client: mqtt.Client, topic: str) -> None:
        self._watches.pop(topic, None)
        client.unsubscribe(topic)

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, mid: int, _codes: Any,
                      _props: Any) -> None:
        for w in self._watches.values():
            if w.subscribed_mid == mid and w.once:
                w.expires = time.monotonic() + ONCE_GRACE_S

    def _on_message(self, client: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        self.received += 1
        w = self._watches.get(msg.topic)
        if w is None:
            return  # arrived between UNSUBSCRIBE and its acknowledgement
        try:
            if w.retain:
                w.handler(bytes(msg.payload), bool(msg.retain))
            else:
                w.handler(bytes(msg.payload))
        except Exception:
            log.exception("MQTT: error handling a message on %s (ignored)", msg.topic)
        if w.once:
            self._forget(client, msg.topic)

    def _too_large(self, size: int) -> None:
        if self.given_up:
            return
        self.given_up = True
        log.error("MQTT: refused a message of %d bytes from the broker (edged takes at most "
                  "%d) on %s; no longer subscribing there (who publishes there? mosquitto's "
                  "message_size_limit caps it on the broker)", size, MAX_INBOUND_BYTES,
                  ", ".join(self._watches) or "a topic edged does not subscribe to")
