"""The MQTT publisher's network thread: its connection loop (paho's callbacks, which
run on it, are in `edged.mqtt.callbacks`).

`edged.mqtt.publisher.Publisher` is the thread-safe front (its docstring says why we
drive paho's external loop ourselves); this is the one thread behind it. The
two meet only at an `Outbox` (in `edged.mqtt.settings`): the queued results,
control messages, events and pending stats, the counters and the wake-up socket, under
one lock. The paho client and all that is in flight or about the connection
belong to `PublishLoop` and are changed under its `lock`: by the network thread,
or by a thread sending a result while that one waits (`send_here`); the front
only reads a few of its fields (`state`, `connected`, `inflight_results`,
`beat`, `crashed`). Kept apart from the front so that what may run on which
thread is plain from the module.
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import socket
import threading
import time
from collections.abc import Callable

from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edged.mqtt.backoff import backoff_delay, retry_cap, unreachable
from edged.mqtt.callbacks import PahoCallbacks
from edged.mqtt.inbound import Inbound
from edged.mqtt.payload import BINARY_MAGIC
from edged.mqtt.settings import (
    Outbox,
    PublisherSettings,
    describe_error,
    make_client,
    paho_error_logger,
    result_properties,
    tls_hint,
)

log = logging.getLogger("edged.publish")  # not __name__: see publish_setup
ACK_BATCH_S = 0.02  # while acks are due, how long they may wait to be read (see _serve)
SENDING_S = 0.2  # after a send_here, how long the next ack may wait (none in flight when read)


class PublishLoop(PahoCallbacks):
    """The network thread (`run`) and the paho client it alone drives; paho's callbacks,
    which run on it too, are in `edged.mqtt.callbacks`."""

    def __init__(self, settings: PublisherSettings, out: Outbox, stop: threading.Event, *,
                 client_id: str, results_topic: str, status_topic: str, stats_topic: str,
                 rng: random.Random) -> None:
        s = settings
        self.settings = s
        self._out = out
        self._stop = stop
        self.client_id = client_id
        self.results_topic, self.status_topic, self.stats_topic = (
            results_topic, status_topic, stats_topic)
        self._rng = rng
        # Filled by the front; hooks and subscriptions are renewed on every connect.
        self.connect_hooks: list[Callable[[], None]] = []
        self.inbound = Inbound(s.protocol == "5")
        # Changed under `lock` (paho's callbacks run under it too).
        self.state = "new"
        self._inflight: dict[int, str] = {}
        self.inflight_results = 0
        self._stats_mid: int | None = None
        self._offline_mid: int | None = None
        self._offline_done = False
        self.connected = False
        self._logged_failures: set[str] = set()  # since the last good connection
        # A broker that drops us right after every connect (an oversized packet
        # it will not take, re-sent on each reconnect) would log two lines every
        # few milliseconds: while connections stay that short, each reason is
        # logged once; `connects` in the counters tells how often.
        self._connected_at = 0.0
        self._flapping = False
        self._loss_said = False  # the last loss was logged: say when it is over
        self._sock_error: str | None = None
        self._unreachable = False  # the last attempt found no TCP listener (see retry_cap)
        self._server_max = 0
        self.beat = time.monotonic()
        self.crashed: str | None = None
        # Held by whoever calls paho: this thread but in its select, or `send_here`.
        self.lock = threading.Lock()
        self._sending_until = 0.0
        self.send_here_failed = False
        self.client = make_client(s, self.client_id, self.status_topic)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        # Not `on_log`: paho would format a debug line for every packet sent and
        # received to hand it over (a tenth of this thread's CPU at 400 results/s).
        # A logger of paho's own is asked `isEnabledFor` first; only errors pass.
        self.client.enable_logger(paho_error_logger(self.paho_error))
        self.inbound.attach(self.client)
        self._props = result_properties(s)

    def run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                self.beat = time.monotonic()
                self.state = "connecting"
                with self.lock:
                    connected = self._connect()
                if connected:
                    connects, failures = self._out.n["connects"], self._out.n["connect_failures"]
                    self._serve()
                    if self._out.n["connects"] > connects:
                        attempt = 0
                    elif self._out.n["connect_failures"] == failures and not self._stop.is_set():
                        why = self._sock_error or "no reason given"
                        self._failure(f"connection closed before CONNACK: {why}"
                                      + tls_hint(self.settings, why, handshake=False))
                if self._stop.is_set():
                    break
                self.state = "disconnected"
                self._sleep(backoff_delay(attempt, self.settings.backoff_min_s,
                                          retry_cap(self.settings, self._unreachable),
                                          self._rng))
                attempt = min(attempt + 1, 30)
        except Exception as exc:
            self.crashed = describe_error(exc)
            log.exception("MQTT: network thread failed")
        finally:
            self.state = "stopped"
            self.connected = False
            self._out.close_wake()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            self.beat = time.monotonic()
            left = deadline - self.beat
            if left <= 0:
                return
            self._stop.wait(min(left, 1.0))

    def _connect(self) -> bool:
        s = self.settings
        self._sock_error = None
        self._unreachable = False
        try:
            self.client.connect(s.host, s.port, keepalive=s.keepalive_s,
                                properties=self.inbound.connect_properties())
        except Exception as exc:
            self._unreachable = unreachable(exc)
            why = describe_error(exc)
            self._failure(why + tls_hint(s, why, handshake=True))
            return False
        # paho leaves Nagle on: a result written while the broker has not yet
        # acknowledged the previous packet would wait for that ACK (up to the
        # peer's delayed-ACK timer). Results are latency-sensitive, one packet each.
        sock = self.client.socket()
        if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True

    def _serve(self) -> None:
        """One connection, from CONNECT sent until it is lost or we stop."""
        client, out = self.client, self._out
        sock = client.socket()
        closing_until: float | None = None
        read_at = 0.0
        while sock is not None and client.socket() is sock:
            self.beat = now = time.monotonic()
            want_w = [sock] if client.want_write() else []
            timeout = 0.05 if closing_until is not None or self._stop.is_set() else 1.0
            # Acks in batches (a wake-up preempts the model): while messages are in flight
            # or `send_here` sends, a PUBACK does not wake this thread; it reads them later.
            inflight = len(self._inflight)
            lazy = (self.connected and closing_until is None and not self._stop.is_set()
                    and inflight < self.settings.max_inflight // 2
                    and (inflight > 0 or now < self._sending_until))
            if lazy:  # at 5 results/s, two looks a result as before send_here, not ten
                batch = ACK_BATCH_S if inflight else SENDING_S
                timeout = min(timeout, max(read_at + batch - now, 0.0))
            try:
                readable, _, _ = select.select([out.wake_r] if lazy else [sock, out.wake_r],
                                               want_w, [], timeout)
            except (OSError, ValueError):
                break
            with self.lock:
                if client.socket() is not sock:  # lost while a result was sent from elsewhere
                    break
                if self._stop.is_set():
                    if not self.connected:
                        break
                    if closing_until is None:
                        closing_until = now + self.settings.drain_timeout_s
                    if self._close_step(time.monotonic(), closing_until):
                        return
                if out.wake_r in readable:
                    out.drain_wake()
                if lazy or sock in readable:
                    # Non-blocking: with nothing to read, paho's loop_read is one recv.
                    if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                    read_at = time.monotonic()
                if not self._service(now, pump=closing_until is None):
                    break
        with self.lock:
            if client.socket() is not None:  # we left first (stop before CONNACK, select error)
                client._sock_close()
            if self.connected:
                lost = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
                self._on_disconnect(client, None, None, lost, None)

    def _service(self, now: float, *, pump: bool) -> bool:
        """After a wake-up: feed paho, write, keep the connection alive. False: it is lost."""
        client, out = self.client, self._out
        if self.connected and pump:
            # Again while messages landed during the pump: their wake() found a
            # look pending and sent nothing (see Outbox.pumped).
            while self._pump() and out.pumped(stats_sendable=self._stats_mid is None):
                pass
        if client.want_write() and client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        if client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        if self.connected:
            self.inbound.tick(client, now)
        return True

    def send_here(self) -> bool:
        """Any thread, after queueing a result: while the network thread waits in its
        select, feed paho here (paho then writes the packet itself): that thread is not
        woken per result. False when it must look (busy, not connected, stopping, paho's
        window or the socket full): then `Outbox.wake()`."""
        if (not self.connected or self._stop.is_set() or self.send_here_failed
                or not self.lock.acquire(blocking=False)):
            return False
        try:
            if not self.connected or self._stop.is_set() or self.client.socket() is None:
                return False
            self._sending_until = time.monotonic() + SENDING_S
            return self._pump() and not self.client.want_write()
        except Exception as exc:  # an optimisation that fails is turned off, not retried
            self.send_here_failed = True
            log.error("MQTT: sending from the pipeline's thread failed (%s); the network "
                      "thread sends everything from now on", describe_error(exc))
            return False
        finally:
            self.lock.release()

    def _close_step(self, now: float, until: float) -> bool:
        """Clean stop: drain (results, events, figures), `offline`, DISCONNECT; True when done."""
        client, out = self.client, self._out
        if self._offline_mid is None and not self._offline_done:
            if (out.queue or out.events or out.pending_stats is not None) and now < until:
                self._pump()
                return False
            if self.inflight_results and now < until:
                return False
            mid = self.publish_status(client, "offline", self._out.offline_reason)
            if mid is not None:
                self._offline_mid = mid
                self._inflight[mid] = "offline"
            else:
                self._offline_done = True
        if not self._offline_done and now < until + 0.5:
            return False
        client.disconnect()
        deadline = time.monotonic() + 0.5
        while client.want_write() and time.monotonic() < deadline:
            if client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            time.sleep(0.005)
        if client.socket() is not None:
            client._sock_close()
        self.connected = False
        log.info("MQTT: disconnected cleanly (offline published)")
        return True

    def _pump(self) -> bool:
        """Feed paho from our queue while its window and the socket have room.

        True when it stopped because everything queued was taken; False when
        paho's window or the socket stopped it (a PUBACK or a writable socket
        wakes this thread for the rest)."""
        client, s, out = self.client, self.settings, self._out
        # Control and events share paho's window with results (sized for them plus
        # status and stats): a burst of snapshots or events must not park messages
        # in paho's own queue, which it does not re-send after a reconnect.
        # Events first: "a car arrived" reaches subscribers before the count it changed.
        while out.events and not client.want_write() and self._room():
            with out.lock:
                topic, body = out.events.popleft()
                out.n["events_published"] += 1
            info = client.publish(topic, body, qos=s.results_qos, retain=False)
            if s.results_qos:
                self._inflight[info.mid] = "event"
        if out.events:
            return False
        while out.control and not client.want_write() and self._room():
            with out.lock:
                topic, body = out.control.popleft()
            info = client.publish(topic, body, qos=s.status_qos, retain=True)
            if s.status_qos:
                self._inflight[info.mid] = "control"
        if out.control:
            return False
        if self._stats_mid is None and out.pending_stats is not None:
            with out.lock:
                stats, out.pending_stats = out.pending_stats, None
            if stats is not None and self._server_max and len(stats) + 128 > self._server_max:
                # Sending it would cost the connection (MQTT 5 brokers announce their limit).
                out.too_large(len(stats), f"the broker's maximum packet size "
                              f"{self._server_max} (stats)")
            elif stats is not None:
                info = client.publish(self.stats_topic, stats, qos=s.stats_qos,
                                      retain=s.stats_retain)
                if s.stats_qos and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._stats_mid = info.mid
                    self._inflight[info.mid] = "stats"
        while not client.want_write():  # unsent bytes: the socket is the bottleneck
            if s.results_qos and (self.inflight_results >= s.max_inflight or not self._room()):
                return False
            with out.lock:
                if not out.queue:
                    return True
                topic, payload = out.queue.popleft()
            limit = self._server_max
            if limit and len(payload) + len(topic) + 64 > limit:
                out.too_large(len(payload), f"the broker's maximum packet size {limit}")
                continue
            info = client.publish(topic, payload, qos=s.results_qos,
                                  retain=s.results_retain,
                                  properties=self._props[payload[:4] == BINARY_MAGIC])
            if s.results_qos:
                # paho keeps a QoS>0 message even when the send failed (NO_CONN)
                # and sends it after the reconnect: it is in flight either way.
                self._inflight[info.mid] = "result"
                self.inflight_results += 1
            elif info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                with out.lock:  # QoS 0 not sent: back where it was, unless newer filled it
                    if len(out.queue) < s.queue_size:
                        out.queue.appendleft((topic, payload))
                    else:
                        out.n["dropped"] += 1
                return False
            with out.lock:
                out.n["published"] += 1
        return False

    @property
    def inflight_kinds(self) -> dict[int, str]:
        """What each message in flight is (result, event, control, stats, offline), by mid."""
        return self._inflight

    def _room(self) -> bool:
        """paho's window (max_inflight + 4) has room, keeping two for status and stats."""
        return len(self._inflight) < self.settings.max_inflight + 2
