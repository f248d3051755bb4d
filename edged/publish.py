"""MQTT publishing that never blocks the pipeline and never loses its thread.

Topics, per device (fleet: the device id is in every topic and payload):

* `<prefix>/<device_id>/results` - results; QoS and retain configurable; MQTT 5
  message expiry when configured;
* `<prefix>/<device_id>/status`  - retained: `online` on every connect,
  `offline` as the last will and sent explicitly on a clean stop;
* `<prefix>/<device_id>/stats`   - retained, whenever the caller publishes figures.

Why not paho's own machinery:

* paho's `max_queued_messages` refuses the NEWEST message when full; a camera
  wants the newest. Results wait in our bounded deque (drop-oldest, counted)
  and are fed to paho only while its in-flight window has room, so paho never
  holds more than `max_inflight` of them. Results already in flight when the
  connection drops are re-sent by paho after the reconnect (at-least-once).
* paho's reconnect loop has no jitter (a fleet would stampede a broker coming
  back from an outage) and swallows the reason a connect failed. One thread of
  ours runs paho's external-loop API (`loop_read`/`loop_write`/`loop_misc` on
  `select`), connects, backs off with jitter and records a one-line reason.
  Every paho call happens on that thread, so paho needs no locking of ours.

TLS is configured once, before the first connect; there is no code path that
connects without it when it is configured.
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edged.payload import BINARY_MAGIC, encode_stats, encode_status
from edged.publish_setup import (
    PublisherCounters,
    PublisherError,
    PublisherSettings,
    TlsSettings,
    backoff_delay,
    check_settings,
    describe_error,
    guarded,
    make_client,
    reason_text,
    result_properties,
    socket_error_text,
    tls_hint,
)

__all__ = ["Publisher", "PublisherCounters", "PublisherError", "PublisherSettings",
           "TlsSettings", "describe_error"]

log = logging.getLogger(__name__)
FLAP_S = 5.0  # a connection lost sooner than this after CONNACK counts as flapping

class Publisher:
    """Thread-safe front: `publish_result` and `publish_stats` from any thread."""

    def __init__(self, settings: PublisherSettings, *, rng: random.Random | None = None) -> None:
        s = settings
        check_settings(s)
        self.settings = s
        base = f"{s.prefix.rstrip('/')}/{s.device_id}"
        self.results_topic, self.status_topic, self.stats_topic = (
            f"{base}/results", f"{base}/status", f"{base}/stats")
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._queue: deque[bytes] = deque(maxlen=s.queue_size)
        self._pending_stats: bytes | None = None
        # Retained "control" messages (e.g. Home Assistant discovery): never dropped,
        # sent before results; hooks and watches are renewed on every connect.
        self._control: deque[tuple[str, bytes]] = deque()
        self._connect_hooks: list[Callable[[], None]] = []
        self._watches: dict[str, Callable[[bytes], None]] = {}
        self._n = dict.fromkeys(("published", "acked", "rejected", "dropped", "too_large",
                                 "connects", "connect_failures"), 0)
        self._last_error: str | None = None
        self._state = "new"
        # Network-thread-only state (paho callbacks run there too).
        self._inflight: dict[int, str] = {}
        self._inflight_results = 0
        self._stats_mid: int | None = None
        self._offline_mid: int | None = None
        self._offline_done = False
        self._connected = False
        self._logged_failures: set[str] = set()  # since the last good connection
        # A broker that drops us right after every connect (an oversized packet
        # it will not take, re-sent on each reconnect) would log two lines every
        # few milliseconds: while connections stay that short, each reason is
        # logged once; `connects` in the counters tells how often.
        self._connected_at = 0.0
        self._flapping = False
        self._sock_error: str | None = None
        self._drop_logged = False
        self._server_max = 0
        self._stop = threading.Event()
        self._beat = time.monotonic()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._thread: threading.Thread | None = None
        self._crashed: str | None = None
        self._successor: Publisher | None = None  # set by a reload's take_over()
        self.client_id = s.client_id or f"edged-{s.device_id}"
        self._client = make_client(s, self.client_id, self.status_topic)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_log = self._on_log
        self._client.on_message = self._on_message
        self._props = result_properties(s)

    # --------------------------------------------------- any-thread API

    def start(self) -> None:
        if self._stop.is_set():
            raise RuntimeError("a stopped Publisher cannot start again; build a new one")
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="edged-mqtt", daemon=True)
        self._thread.start()

    def publish_result(self, payload: bytes) -> None:
        """Queue one result; O(1), never waits for the network."""
        limit = self.settings.max_payload_bytes
        if limit is not None and len(payload) > limit:
            self._too_large(len(payload), f"max_payload_bytes {limit}")
            return
        with self._lock:
            successor = self._successor
            full = successor is None and len(self._queue) == self._queue.maxlen
            if full:
                self._n["dropped"] += 1  # deque(maxlen) discards the oldest on append
            if successor is None:
                self._queue.append(payload)
        if successor is not None:  # raced a reload's hand-over: the new connection takes it
            successor.publish_result(payload)
            return
        if full and not self._drop_logged:
            self._drop_logged = True
            log.warning("MQTT: result queue full (%d): dropping the oldest until the broker "
                        "takes them again", self.settings.queue_size)
        self._wake()

    def _too_large(self, size: int, limit: str) -> None:
        with self._lock:
            self._n["too_large"] += 1
            first = self._n["too_large"] == 1
            self._last_error = f"result of {size} bytes exceeds {limit}; not sent"
        if first:  # the same every frame: once is enough, the counter tells the rest
            log.error("MQTT: %s (binary encoding or a decoder makes results smaller)",
                      self._last_error)

    def publish_stats(self, figures: Mapping[str, Any]) -> None:
        """Latest figures win; older unsent ones are replaced, not queued."""
        payload = encode_stats(self.settings.device_id, figures)
        with self._lock:
            self._pending_stats = payload
        self._wake()

    def publish_control(self, topic: str, payload: bytes) -> None:
        """Queue one retained message (QoS of the status topic) for a topic of
        the caller's; sent ahead of results, never dropped. Any thread."""
        with self._lock:
            self._control.append((topic, payload))
        self._wake()

    def add_connect_hook(self, hook: Callable[[], None]) -> None:
        """`hook()` runs on the network thread after every successful connect
        (and right away when connected now); it should only queue messages."""
        self._connect_hooks.append(hook)
        if self._connected:
            hook()

    def watch(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Subscribe to `topic` (QoS 1) on every connect; `handler(payload)`
        runs on the network thread for each message. Set before `start`."""
        self._watches[topic] = handler

    def stop(self, timeout: float = 2.0) -> None:
        """Deliver what can be delivered within `drain_timeout_s`, publish
        `offline`, disconnect cleanly (so the broker drops the will)."""
        self._stop.set()
        self._wake()
        if self._thread is None:
            self._close_wake()
        else:
            self._thread.join(timeout)

    def take_over(self, old: Publisher) -> None:
        """A reload's new connection inherits what the stopped `old` still holds.

        Queued results go ahead of this queue's (they are older), counters
        carry on from old's, and results that reach `old` from now on are
        forwarded here: a reload during a broker outage loses nothing silently.
        Call after `old.stop()` and before `start()`.
        """
        try:
            # Sent but not acknowledged when `old` lost its broker: paho would
            # re-send them after a reconnect that `old` will not make now.
            unacked = [bytes(m.payload) for m in list(old._client._out_messages.values())
                       if m.topic == old.results_topic]
        except (AttributeError, RuntimeError):
            unacked = []
        with old._lock:
            carried, counts = unacked + list(old._queue), dict(old._n)
            counts["published"] -= len(unacked)  # counted again when this one sends them
            control = list(old._control)
            old._queue.clear()
            old._control.clear()
            old._successor = self
        with self._lock:
            merged = carried + list(self._queue)
            overflow = max(0, len(merged) - self.settings.queue_size)
            self._queue.clear()
            self._queue.extend(merged[overflow:])
            for key, value in counts.items():
                self._n[key] += value
            self._n["dropped"] += overflow
            self._control.extendleft(reversed(control))
        self._wake()

    def counters(self) -> PublisherCounters:
        with self._lock:
            n = dict(self._n)
            queued, err = len(self._queue), self._last_error
        return PublisherCounters(state=self._state, connected=self._connected, queued=queued,
                                 inflight=self._inflight_results, last_error=err, **n)

    def is_connected(self) -> bool:
        return self._connected

    def network_alive(self) -> bool:
        """For the watchdog: the network thread runs and has not stalled."""
        t = self._thread
        stall = self.settings.connect_timeout_s + 5.0
        return (t is not None and t.is_alive() and self._crashed is None
                and time.monotonic() - self._beat < stall)

    def wait_connected(self, timeout: float) -> bool:
        return self._wait(lambda: self._connected, timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Connected with nothing queued or unacknowledged (for tests and shutdown)."""
        return self._wait(lambda: self._connected and not self._queue
                          and self._inflight_results == 0, timeout)

    def _wait(self, cond: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def _wake(self) -> None:
        if self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(OSError):  # full: a wake-up is already pending
            self._wake_w.send(b"\0")

    # ------------------------------------------------- network thread

    def _run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                self._beat = time.monotonic()
                self._state = "connecting"
                if self._connect():
                    connects, failures = self._n["connects"], self._n["connect_failures"]
                    self._serve()
                    if self._n["connects"] > connects:
                        attempt = 0
                    elif self._n["connect_failures"] == failures and not self._stop.is_set():
                        why = self._sock_error or "no reason given"
                        self._failure(f"connection closed before CONNACK: {why}"
                                      + tls_hint(self.settings, why, handshake=False))
                if self._stop.is_set():
                    break
                self._state = "disconnected"
                self._sleep(backoff_delay(attempt, self.settings.backoff_min_s,
                                          self.settings.backoff_max_s, self._rng))
                attempt = min(attempt + 1, 30)
        except Exception as exc:
            self._crashed = describe_error(exc)
            log.exception("MQTT: network thread failed")
        finally:
            self._state = "stopped"
            self._connected = False
            self._close_wake()

    def _close_wake(self) -> None:
        # A daemon that rebuilds its publisher on reload must not leak the pair.
        self._wake_r.close()
        self._wake_w.close()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            self._beat = time.monotonic()
            left = deadline - self._beat
            if left <= 0:
                return
            self._stop.wait(min(left, 1.0))

    def _connect(self) -> bool:
        s = self.settings
        self._sock_error = None
        try:
            self._client.connect(s.host, s.port, keepalive=s.keepalive_s)
        except Exception as exc:
            why = describe_error(exc)
            self._failure(why + tls_hint(s, why, handshake=True))
            return False
        # paho leaves Nagle on: a result written while the broker has not yet
        # acknowledged the previous packet would wait for that ACK (up to the
        # peer's delayed-ACK timer). Results are latency-sensitive, one packet each.
        sock = self._client.socket()
        if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True

    def _failure(self, reason: str) -> None:
        with self._lock:
            self._n["connect_failures"] += 1
            self._last_error = reason
        if reason not in self._logged_failures and len(self._logged_failures) < 8:
            # once per distinct reason (a few alternate), not once per retry
            log.warning("MQTT %s:%d: %s; retrying with backoff", self.settings.host,
                        self.settings.port, reason)
            self._logged_failures.add(reason)

    def _serve(self) -> None:
        """One connection, from CONNECT sent until it is lost or we stop."""
        client = self._client
        sock = client.socket()
        closing_until: float | None = None
        while sock is not None and client.socket() is sock:
            self._beat = now = time.monotonic()
            if self._stop.is_set():
                if not self._connected:
                    break
                if closing_until is None:
                    closing_until = now + self.settings.drain_timeout_s
                if self._close_step(now, closing_until):
                    return
            want_w = [sock] if client.want_write() else []
            timeout = 0.05 if closing_until is not None else 1.0
            try:
                readable, _, _ = select.select([sock, self._wake_r], want_w, [], timeout)
            except (OSError, ValueError):
                break
            if self._wake_r in readable:
                self._drain_wake()
            if sock in readable and client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if self._connected and closing_until is None:
                self._pump()
            if client.want_write() and client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        if client.socket() is not None:  # we left first (stop before CONNACK, select error)
            client._sock_close()
        if self._connected:
            lost = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
            self._on_disconnect(client, None, None, lost, None)

    def _close_step(self, now: float, until: float) -> bool:
        """Clean stop: drain, then `offline`, then DISCONNECT. True when done."""
        client = self._client
        if self._offline_mid is None and not self._offline_done:
            if self._queue and now < until:
                self._pump()
                return False
            if self._inflight_results and now < until:
                return False
            info = client.publish(self.status_topic,
                                  encode_status(self.settings.device_id, "offline", "stopped",
                                                time.time()),
                                  qos=self.settings.status_qos, retain=True)
            if self.settings.status_qos:
                self._offline_mid = info.mid
                self._inflight[info.mid] = "offline"
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
        self._connected = False
        log.info("MQTT: disconnected cleanly (offline published)")
        return True

    def _drain_wake(self) -> None:
        self._wake_pending = False
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _pump(self) -> None:
        """Feed paho from our queue while its window and the socket have room."""
        client, s = self._client, self.settings
        while self._control and not client.want_write():
            with self._lock:
                topic, body = self._control.popleft()
            client.publish(topic, body, qos=s.status_qos, retain=True)
        if self._stats_mid is None and self._pending_stats is not None:
            with self._lock:
                stats, self._pending_stats = self._pending_stats, None
            if stats is not None and self._server_max and len(stats) + 128 > self._server_max:
                # Sending it would cost the connection (MQTT 5 brokers announce their limit).
                self._too_large(len(stats), f"the broker's maximum packet size "
                                f"{self._server_max} (stats)")
            elif stats is not None:
                info = client.publish(self.stats_topic, stats, qos=s.stats_qos,
                                      retain=s.stats_retain)
                if s.stats_qos and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._stats_mid = info.mid
                    self._inflight[info.mid] = "stats"
        while not client.want_write():  # unsent bytes: the socket is the bottleneck
            if s.results_qos and self._inflight_results >= s.max_inflight:
                return
            with self._lock:
                if not self._queue:
                    return
                payload = self._queue.popleft()
            limit = self._server_max
            if limit and len(payload) + len(self.results_topic) + 64 > limit:
                self._too_large(len(payload), f"the broker's maximum packet size {limit}")
                continue
            info = client.publish(self.results_topic, payload, qos=s.results_qos,
                                  retain=s.results_retain,
                                  properties=self._props[payload[:4] == BINARY_MAGIC])
            if s.results_qos:
                # paho keeps a QoS>0 message even when the send failed (NO_CONN)
                # and sends it after the reconnect: it is in flight either way.
                self._inflight[info.mid] = "result"
                self._inflight_results += 1
            elif info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                with self._lock:  # QoS 0 not sent: back where it was, unless newer filled it
                    if len(self._queue) < s.queue_size:
                        self._queue.appendleft(payload)
                    else:
                        self._n["dropped"] += 1
                return
            with self._lock:
                self._n["published"] += 1

    # ----------------------------------------------- paho callbacks

    @guarded(log)
    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, rc: ReasonCode,
                    props: Any) -> None:
        if rc.is_failure:
            self._failure(f"broker refused the connection: {reason_text(rc)}")
            return
        self._connected = True
        self._state = "connected"
        with self._lock:
            self._n["connects"] += 1
            failures = self._n["connect_failures"]
            self._last_error = None
        self._connected_at = time.monotonic()
        if not self._flapping:
            log.info("MQTT: connected to %s:%d as %s%s", self.settings.host,
                     self.settings.port, self.client_id,
                     f" ({failures} failed attempts so far)" if self._logged_failures else "")
            self._logged_failures.clear()
        self._drop_logged = False
        # MQTT 5 brokers may announce the largest packet they accept; a bigger
        # one would cost the connection, so such results are not sent at all.
        self._server_max = int(getattr(props, "MaximumPacketSize", 0) or 0)
        info = client.publish(self.status_topic,
                              encode_status(self.settings.device_id, "online", "connected",
                                            time.time()),
                              qos=self.settings.status_qos, retain=True)
        if self.settings.status_qos:
            self._inflight[info.mid] = "status"
        if self._watches:
            client.subscribe([(topic, 1) for topic in self._watches])
        for hook in self._connect_hooks:
            hook()

    @guarded(log)
    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        handler = self._watches.get(msg.topic)
        if handler is not None:
            handler(bytes(msg.payload))

    @guarded(log)
    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, rc: ReasonCode,
                       _props: Any) -> None:
        was = self._connected
        self._connected = False
        self._stats_mid = None  # paho re-sends it; a newer one may go meanwhile
        if not was or self._stop.is_set():
            return
        reason = self._sock_error or (
            "closed by the broker" if rc.value == 0x80 else reason_text(rc))
        with self._lock:
            self._last_error = f"connection lost: {reason}"
            queued = len(self._queue)
        self._flapping = time.monotonic() - self._connected_at < FLAP_S
        if not self._flapping:
            self._logged_failures.clear()  # it had been working: this loss is news
        if self._last_error in self._logged_failures:
            return
        if self._flapping:
            self._logged_failures.add(self._last_error)
        log.warning("MQTT %s:%d: connection lost (%s); %d results queued, retrying with backoff%s",
                    self.settings.host, self.settings.port, reason, queued,
                    " (dropped right after connecting: logged once while that goes on)"
                    if self._flapping else "")

    @guarded(log)
    def _on_publish(self, _c: mqtt.Client, _ud: Any, mid: int, rc: ReasonCode,
                    _props: Any) -> None:
        kind = self._inflight.pop(mid, None)
        if kind == "result":
            self._inflight_results -= 1
            with self._lock:
                if rc.is_failure:
                    self._n["rejected"] += 1
                    first = self._last_error != f"broker refused a result: {reason_text(rc)}"
                    self._last_error = f"broker refused a result: {reason_text(rc)}"
                else:
                    self._n["acked"] += 1
                    first = False
            if first:
                log.error("MQTT: %s (topic %s)", self._last_error, self.results_topic)
        elif kind == "stats":
            self._stats_mid = None
        elif kind == "offline":
            self._offline_done = True

    @guarded(log)
    def _on_log(self, _c: mqtt.Client, _ud: Any, level: int, buf: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            # The only place paho tells why a socket read/write failed.
            self._sock_error = socket_error_text(buf.split(": ", 1)[-1])
            log.debug("paho: %s", buf)
