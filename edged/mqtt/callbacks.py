"""paho's callbacks on the MQTT network thread, apart from the loop that drives it.

`edged.mqtt.loop.PublishLoop` inherits them: they run on its thread (paho
calls them from `loop_read`/`loop_write`) and change its state, declared
here, so what the loop owns and what a callback may touch are both plain.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edged.mqtt.inbound import Inbound
from edged.mqtt.payload import StatusState, encode_status
from edged.mqtt.settings import (
    Outbox,
    PublisherSettings,
    guarded,
    reason_text,
    socket_error_text,
)

log = logging.getLogger("edged.publish")  # not __name__: see publish_setup
FLAP_S = 5.0  # a connection lost sooner than this after CONNACK counts as flapping


class PahoCallbacks:
    """Connect, disconnect and publish acknowledgements; what they change."""

    settings: PublisherSettings
    _out: Outbox
    _stop: threading.Event
    client_id: str
    results_topic: str
    status_topic: str
    connect_hooks: list[Callable[[], None]]
    inbound: Inbound
    state: str
    connected: bool
    _inflight: dict[int, str]
    inflight_results: int
    _stats_mid: int | None
    _offline_done: bool
    _logged_failures: set[str]
    _connected_at: float
    _flapping: bool
    _loss_said: bool
    _sock_error: str | None
    _server_max: int

    def _failure(self, reason: str) -> None:
        with self._out.lock:
            self._out.n["connect_failures"] += 1
            self._out.last_error = reason
        if reason not in self._logged_failures and len(self._logged_failures) < 8:
            # once per distinct reason (a few alternate), not once per retry
            log.warning("MQTT %s:%d: %s; retrying with backoff", self.settings.host,
                        self.settings.port, reason)
            self._logged_failures.add(reason)


    def publish_status(self, client: mqtt.Client, state: StatusState, reason: str
                       ) -> int | None:
        """The retained status with the daemon's fields; its mid when acknowledged."""
        info = client.publish(self.status_topic,
                              encode_status(self.settings.device_id, state, reason, time.time(),
                                            self._out.status_fields),
                              qos=self.settings.status_qos, retain=True)
        return info.mid if self.settings.status_qos else None

    @guarded(log)
    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, rc: ReasonCode,
                    props: Any) -> None:
        if rc.is_failure:
            self._failure(f"broker refused the connection: {reason_text(rc)}")
            return
        self.connected = True
        self.state = "connected"
        with self._out.lock:
            self._out.n["connects"] += 1
            failures = self._out.n["connect_failures"]
            self._out.last_error = None
        self._connected_at = time.monotonic()
        if not self._flapping or self._loss_said:  # a logged loss is followed by its end
            log.info("MQTT: connected to %s:%d as %s%s", self.settings.host,
                     self.settings.port, self.client_id,
                     f" ({failures} failed attempts so far)" if self._logged_failures else "")
        if not self._flapping:
            self._logged_failures.clear()
        self._out.drop_logged = False
        # MQTT 5 brokers may announce the largest packet they accept; a bigger
        # one would cost the connection, so such results are not sent at all.
        self._server_max = int(getattr(props, "MaximumPacketSize", 0) or 0)
        mid = self.publish_status(client, "online", self._out.online_reason)
        if mid is not None:
            self._inflight[mid] = "status"
        self.inbound.on_connect(client)
        for hook in self.connect_hooks:
            hook()

    @guarded(log)
    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, rc: ReasonCode,
                       _props: Any) -> None:
        out = self._out
        was = self.connected
        self.connected = False
        self._stats_mid = None  # paho re-sends it; a newer one may go meanwhile
        if not was or self._stop.is_set():
            return
        reason = self._sock_error or (
            "closed by the broker" if rc.value == 0x80 else reason_text(rc))
        with out.lock:
            out.last_error = f"connection lost: {reason}"
            queued = len(out.queue)
        self._flapping = time.monotonic() - self._connected_at < FLAP_S
        if not self._flapping:
            self._logged_failures.clear()  # it had been working: this loss is news
        self._loss_said = out.last_error not in self._logged_failures
        if not self._loss_said:
            return
        if self._flapping:
            self._logged_failures.add(out.last_error)
        log.warning("MQTT %s:%d: connection lost (%s); %d results queued, retrying with backoff%s",
                    self.settings.host, self.settings.port, reason, queued,
                    " (dropped right after connecting: logged once while that goes on)"
                    if self._flapping else "")

    @guarded(log)
    def _on_publish(self, _c: mqtt.Client, _ud: Any, mid: int, rc: ReasonCode,
                    _props: Any) -> None:
        out = self._out
        kind = self._inflight.pop(mid, None)
        if kind == "result":
            self.inflight_results -= 1
            with out.lock:
                if rc.is_failure:
                    out.n["rejected"] += 1
                    first = out.last_error != f"broker refused a result: {reason_text(rc)}"
                    out.last_error = f"broker refused a result: {reason_text(rc)}"
                else:
                    out.n["acked"] += 1
                    first = False
            if first:
                log.error("MQTT: %s (topic %s)", out.last_error, self.results_topic)
        elif kind == "stats":
            self._stats_mid = None
        elif kind == "offline":
            self._offline_done = True

    def paho_error(self, text: str) -> None:
        # The only place paho tells why a socket read/write failed.
        self._sock_error = socket_error_text(text.split(": ", 1)[-1])
        log.debug("paho: %s", text)
