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
  paho calls happen on that thread, or on a thread sending a result while that
  one waits in `select` (`PublishLoop.send_here`), under one lock either way.

TLS is configured once, before the first connect; there is no code path that
connects without it when it is configured.

This module is the front, `Publisher`, whose methods any thread may call. The
network thread is `edged.mqtt.loop.PublishLoop`, a module of its own so that
what runs where stays plain; the two share only an `Outbox` (queues, counters,
wake-up), which lives with the settings in `edged.mqtt.settings`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt

from edged.mqtt.loop import PublishLoop
from edged.mqtt.payload import encode_stats, encode_status
from edged.mqtt.settings import (
    Outbox,
    PublisherCounters,
    PublisherError,
    PublisherSettings,
    TlsSettings,
    check_settings,
    describe_error,
)
from edged.system.threads import NamedThread

__all__ = ["Publisher", "PublisherCounters", "PublisherError", "PublisherSettings",
           "TlsSettings", "describe_error"]

log = logging.getLogger("edged.publish")


class Publisher:
    """Thread-safe front: `publish_result` and `publish_stats` from any thread."""

    def __init__(self, settings: PublisherSettings, *, rng: random.Random | None = None) -> None:
        s = settings
        check_settings(s)
        self.settings = s
        base = f"{s.prefix.rstrip('/')}/{s.device_id}"
        self.results_topic, self.status_topic, self.stats_topic = (
            f"{base}/results", f"{base}/status", f"{base}/stats")
        self._out = Outbox(s.queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._successor: Publisher | None = None  # set by a reload's take_over()
        self.client_id = s.client_id or f"edged-{s.device_id}"
        try:
            self._loop = PublishLoop(s, self._out, self._stop, client_id=self.client_id,
                                     results_topic=self.results_topic,
                                     status_topic=self.status_topic,
                                     stats_topic=self.stats_topic, rng=rng or random.Random())
        except BaseException:
            self._out.close_wake()  # a reload retried with a bad TLS file must not leak fds
            raise

    @property
    def _client(self) -> mqtt.Client:
        """The paho client; the network thread's alone while it runs."""
        return self._loop.client

    def start(self) -> None:
        if self._stop.is_set():
            raise RuntimeError("a stopped Publisher cannot start again; build a new one")
        if self._thread is not None:
            return
        self._thread = NamedThread(target=self._loop.run, name="edged-mqtt", daemon=True)
        self._thread.start()

    def publish_result(self, payload: bytes, topic: str | None = None) -> None:
        """Queue one result for `topic` (default: the device's results topic); never
        waits for the network. Sent from this thread when the network thread is idle
        (`PublishLoop.send_here`), else by that thread."""
        out = self._out
        limit = self.settings.max_payload_bytes
        if limit is not None and len(payload) > limit:
            out.too_large(len(payload), f"max_payload_bytes {limit}")
            return
        with out.lock:
            successor = self._successor
            full = successor is None and len(out.queue) == out.queue.maxlen
            if full:
                out.n["dropped"] += 1  # deque(maxlen) discards the oldest on append
            if successor is None:
                out.queue.append((topic or self.results_topic, payload))
        if successor is not None:  # raced a reload's hand-over: the new connection takes it
            successor.publish_result(payload, topic)
            return
        if full and not out.drop_logged:
            out.drop_logged = True
            log.warning("MQTT: result queue full (%d): dropping the oldest until the broker "
                        "takes them again", self.settings.queue_size)
        if not self._loop.send_here():
            out.wake()

    def publish_stats(self, figures: Mapping[str, Any]) -> None:
        """Latest figures win; older unsent ones are replaced, not queued."""
        payload = encode_stats(self.settings.device_id, figures)
        with self._out.lock:
            self._out.pending_stats = payload
        self._out.wake()

    def set_status(self, reason: str, fields: Mapping[str, Any]) -> None:
        """What the retained `online` status says from now on: its reason
        ("connected", "source ended") and the daemon's fields (`delegate`,
        `fallback`). Sent at once when connected, and on every connect."""
        out = self._out
        with out.lock:
            out.online_reason, out.status_fields = reason, dict(fields)
        if self._loop.connected:
            self.publish_control(self.status_topic, encode_status(
                self.settings.device_id, "online", reason, time.time(), fields))

    def publish_control(self, topic: str, payload: bytes) -> None:
        """Queue one retained message (QoS of the status topic) for a topic of
        the caller's; sent ahead of results, never dropped, but replaced by a newer
        one for the same topic not yet sent (retained: only the latest counts, and
        a flood of requests must not queue a copy each). Any thread."""
        with self._out.lock:
            control = self._out.control
            for i, (queued, _) in enumerate(control):
                if queued == topic:
                    control[i] = (topic, payload)
                    break
            else:
                control.append((topic, payload))
        self._out.wake()

    def publish_event(self, topic: str, payload: bytes) -> None:
        """Queue one message that is not retained (an event) for a topic of the
        caller's, at the results' QoS, ahead of results; bounded, the oldest
        dropped (counted) when an outage fills it. Any thread."""
        with self._out.lock:
            events = self._out.events
            if len(events) == events.maxlen:
                self._out.n["events_dropped"] += 1
            events.append((topic, payload))
        self._out.wake()

    def add_connect_hook(self, hook: Callable[[], None]) -> None:
        """`hook()` runs on the network thread after every successful connect and,
        when connected now, once right away on the caller's thread. It should only
        queue messages (any thread may), and may run twice around a reconnect."""
        self._loop.connect_hooks.append(hook)
        if self._loop.connected:
            hook()

    def watch(self, topic: str, handler: Callable[..., None], *, once: bool = False,
              retain: bool = False) -> None:
        """Subscribe to exactly `topic` (QoS 0) on every connect, or with `once` until
        the first message or until what the broker retained there had its chance;
        `handler(payload)` runs on the network thread (`handler(payload, retained)`
        with `retain`). Set before `start`. Messages over
        `edged.mqtt.inbound.MAX_INBOUND_BYTES` are refused unread."""
        self._loop.inbound.watch(topic, handler, once=once, retain=retain)

    def stop(self, timeout: float = 2.0, *, reason: str = "stopped", error: str = "") -> None:
        """Deliver what can be delivered within `drain_timeout_s`, publish
        `offline` (with `reason`, and `error` when a fatal problem stops the
        daemon), disconnect cleanly (so the broker drops the will)."""
        with self._out.lock:
            self._out.offline_reason = reason
            if error:
                self._out.status_fields = {**self._out.status_fields, "error": error}
        self._stop.set()
        self._out.wake()
        if self._thread is None:
            self._out.close_wake()
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
            kinds = dict(old._loop.inflight_kinds)
            unacked = [(m.topic, bytes(m.payload))
                       for mid, m in list(old._client._out_messages.items())
                       if kinds.get(mid) == "result"]
        except (AttributeError, RuntimeError):
            unacked = []
        mine, theirs = self._out, old._out
        with theirs.lock:
            carried, counts = unacked + list(theirs.queue), dict(theirs.n)
            counts["published"] -= len(unacked)  # counted again when this one sends them
            control, events = list(theirs.control), list(theirs.events)
            theirs.queue.clear()
            theirs.control.clear()
            theirs.events.clear()
            old._successor = self
        with mine.lock:
            merged = carried + list(mine.queue)
            overflow = max(0, len(merged) - self.settings.queue_size)
            mine.queue.clear()
            mine.queue.extend(merged[overflow:])
            for key, value in counts.items():
                mine.n[key] += value
            mine.n["dropped"] += overflow
            mine.control.extendleft(reversed(control))
            mine.events.extendleft(reversed(events))
        mine.wake()

    def counters(self) -> PublisherCounters:
        with self._out.lock:
            n = dict(self._out.n)
            queued, err = len(self._out.queue), self._out.last_error
        return PublisherCounters(state=self._loop.state, connected=self._loop.connected,
                                 queued=queued, inflight=self._loop.inflight_results,
                                 last_error=err, **n)

    def is_connected(self) -> bool:
        return self._loop.connected

    def network_alive(self) -> bool:
        """For the watchdog: the network thread runs and has not stalled."""
        t = self._thread
        stall = self.settings.connect_timeout_s + 5.0
        return (t is not None and t.is_alive() and self._loop.crashed is None
                and time.monotonic() - self._loop.beat < stall)

    def wait_connected(self, timeout: float) -> bool:
        return self._wait(lambda: self._loop.connected, timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Connected with nothing queued or unacknowledged (for tests and shutdown)."""
        return self._wait(lambda: self._loop.connected and not self._out.queue
                          and self._loop.inflight_results == 0, timeout)

    def _wait(self, cond: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True
