"""Settings, counters, error wording and the configured paho client of the
MQTT publisher (`edged.mqtt.publisher`), and the `Outbox` where its thread-safe front
and its network thread (`edged.mqtt.loop`) meet."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edged.mqtt.inbound import BoundedClient
from edged.mqtt.payload import encode_status, validate_device_id

BINARY_CONTENT_TYPE = "application/vnd.edged.result-v1+binary"
# One logger for the whole publisher: operators and tests filter on `edged.mqtt.publisher`.
log = logging.getLogger("edged.publish")


def _accept_puback_packet_too_large() -> None:
    """mosquitto 2.0 answers a PUBLISH over its `message_size_limit` with a
    PUBACK carrying 0x95 "Packet too large", a code MQTT 5 lists only for
    CONNACK and DISCONNECT. paho then calls the PUBACK malformed and drops the
    connection, and after the reconnect re-sends the same message: a loop that
    never delivers anything again. Accepting the code turns it into one
    refused result (counted, logged) and the connection carries on."""
    packets = ReasonCode.names.get(149, {}).get("Packet too large")
    if packets is not None and PacketTypes.PUBACK not in packets:
        packets.append(PacketTypes.PUBACK)


_accept_puback_packet_too_large()


class PublisherError(ValueError):
    """Settings the publisher cannot use; one line naming the key or file."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """`ca_file` None: the system's trust store (a public broker's certificate)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    device_id: str
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "edged"
    client_id: str = ""  # "" -> "edged-<device_id>"; two clients with one id evict each other
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = None
    results_qos: int = 1
    results_retain: bool = False
    status_qos: int = 1
    stats_qos: int = 1
    stats_retain: bool = True
    message_expiry_s: int | None = None  # MQTT 5 only
    queue_size: int = 100
    max_inflight: int = 20
    max_payload_bytes: int | None = None
    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    drain_timeout_s: float = 1.0  # on stop: time to deliver what is queued


@dataclass(frozen=True, slots=True)
class PublisherCounters:
    """Result counts since start. `published`: handed to the broker (first
    send); `acked`: confirmed by PUBACK (QoS 1/2 only); `rejected`: refused in
    a PUBACK (MQTT 5: ACL, size); `dropped`: discarded oldest-first because the
    queue was full; `too_large`: over `max_payload_bytes`, never sent;
    `queued`/`inflight`: now."""

    state: str
    connected: bool
    published: int
    acked: int
    rejected: int
    dropped: int
    too_large: int
    queued: int
    inflight: int
    connects: int
    connect_failures: int
    last_error: str | None
    events_published: int = 0  # event messages (non-retained, beside results) sent
    events_dropped: int = 0  # discarded oldest-first: EVENTS_QUEUE full in an outage


def describe_error(exc: BaseException) -> str:
    """One line for why a connect attempt failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or str(exc)).replace("_", " ").lower()
        return f"TLS: {reason}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "connect timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def tls_hint(s: PublisherSettings, reason: str, *, handshake: bool) -> str:
    """What to check when a TLS connection was cut off before the broker answered.

    OpenSSL reports a missing client certificate as an EOF or a reset as often
    as with the "certificate required" alert, and a plain-text listener as a
    reset: the bare reason would not tell the operator which file to fix."""
    text = reason.lower()
    if s.tls is None or not any(w in text for w in ("reset", "eof", "certificate required")):
        return ""
    hints = []
    if handshake and "certificate required" not in text:
        hints.append(f"is port {s.port} a TLS listener?")
    if s.tls.cert_file is None:
        hints.append("does the broker require a client certificate (mqtt.cert_file, "
                     "mqtt.key_file)?")
    return f" ({' Or '.join(hints)})" if hints else ""


def check_settings(s: PublisherSettings) -> None:
    """What the type hints cannot say; one line naming the key."""
    validate_device_id(s.device_id)
    if any(c in s.prefix for c in "+#\0") or s.prefix.startswith("/") or not s.prefix:
        raise PublisherError(f"mqtt.prefix {s.prefix!r}: must be a topic without wildcards")
    for name in ("results_qos", "status_qos", "stats_qos"):
        if getattr(s, name) not in (0, 1, 2):
            raise PublisherError(f"mqtt.{name}: must be 0, 1 or 2")
    if s.queue_size < 1 or s.max_inflight < 1:
        raise PublisherError("mqtt.queue_size and mqtt.max_inflight must be >= 1")


F = TypeVar("F", bound=Callable[..., None])


def guarded(log: logging.Logger) -> Callable[[F], F]:
    """For callbacks on the network thread: an exception is logged, never
    propagated (paho's `suppress_exceptions` is the second line of defence)."""

    def decorate(method: F) -> F:
        def wrapper(*args: Any) -> None:
            try:
                method(*args)
            except Exception:
                log.exception("MQTT: error in %s (ignored, the connection carries on)",
                              method.__name__)

        return wrapper  # type: ignore[return-value]

    return decorate


_SSL_NOISE = re.compile(r"\[SSL: [A-Z0-9_]+\]\s*|\s*\(_ssl\.c:\d+\)")


def socket_error_text(text: str) -> str:
    """paho's socket error line, without OpenSSL's source locations."""
    cleaned = _SSL_NOISE.sub("", text).strip()
    return f"TLS: {cleaned}" if ("SSL" in text or "_ssl" in text) else cleaned


def reason_text(rc: Any) -> str:
    """A paho ReasonCode as a lower-case phrase ("not authorised")."""
    return str(rc).lower().replace("authorized", "authorised")


class _PahoErrors(logging.Handler):
    """Hands paho's error lines to the network thread; never raises into paho."""

    def __init__(self, on_error: Callable[[str], None]) -> None:
        super().__init__(logging.ERROR)
        self.on_error = on_error

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.on_error(record.getMessage())
        except Exception:
            log.debug("paho error line not understood: %r", record.msg)


def paho_error_logger(on_error: Callable[[str], None]) -> logging.Logger:
    """A logger for paho's `enable_logger` that passes only errors, to `on_error`.

    Outside the logging tree: nothing propagates to edged's handlers or the root."""
    logger = logging.Logger("edged.paho", logging.ERROR)
    logger.addHandler(_PahoErrors(on_error))
    return logger


def make_client(s: PublisherSettings, client_id: str, status_topic: str) -> BoundedClient:
    """A paho client with everything but the callbacks configured."""
    v5 = s.protocol == "5"
    client = BoundedClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else True,
        reconnect_on_failure=False,
    )
    client.suppress_exceptions = True
    client.connect_timeout = s.connect_timeout_s
    # Our window plus the status, stats and a couple of control (discovery)
    # messages, so paho never parks a message in its own queue (it re-sends
    # nothing after a parked one on reconnect).
    client.max_inflight_messages_set(s.max_inflight + 4)
    client.will_set(status_topic, encode_status(s.device_id, "offline", "connection lost"),
                    qos=s.status_qos, retain=True)
    if s.username is not None:
        client.username_pw_set(s.username, s.password)
    if s.tls is not None:
        t = s.tls
        if (t.cert_file is None) != (t.key_file is None):
            raise PublisherError("mqtt.tls: cert_file and key_file go together")
        for key, path in (("ca_file", t.ca_file), ("cert_file", t.cert_file),
                          ("key_file", t.key_file)):
            if path is not None and not Path(path).is_file():
                raise PublisherError(f"mqtt.{key}: {path}: no such file")
        try:
            client.tls_set(ca_certs=str(t.ca_file) if t.ca_file else None,
                           certfile=str(t.cert_file) if t.cert_file else None,
                           keyfile=str(t.key_file) if t.key_file else None,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, OSError) as exc:
            raise PublisherError(f"mqtt.tls: cannot load {t.ca_file or 'the system CA store'}"
                                 f"{' / ' + str(t.cert_file) if t.cert_file else ''}: "
                                 f"{describe_error(exc)}") from None
    return client


def result_properties(s: PublisherSettings) -> dict[bool, Properties | None]:
    """Per encoding (binary?): the MQTT 5 properties, built once."""
    if s.protocol != "5":
        return {False: None, True: None}
    out: dict[bool, Properties | None] = {}
    for binary in (False, True):
        p = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if s.message_expiry_s:
            p.MessageExpiryInterval = s.message_expiry_s
        p.ContentType = BINARY_CONTENT_TYPE if binary else "application/json"
        if not binary:
            p.PayloadFormatIndicator = 1
        out[binary] = p
    return out


EVENTS_QUEUE = 1000  # a day of events for a busy camera; an outage's worth is plenty


class Outbox:
    """What the front (`Publisher`) hands the network thread (`PublishLoop`),
    and all that both of them change; `lock` guards the deques, `n` and
    `last_error`. `wake()` ends the network thread's `select`."""

    def __init__(self, queue_size: int) -> None:
        self.lock = threading.Lock()
        # Results as (topic, payload): a camera's own topic, or the device's.
        self.queue: deque[tuple[str, bytes]] = deque(maxlen=queue_size)
        self.pending_stats: bytes | None = None
        # Retained "control" messages (e.g. Home Assistant discovery): never dropped,
        # sent before results.
        self.control: deque[tuple[str, bytes]] = deque()
        # Events (not retained, rarer than results and each one news): sent before
        # results, bounded like them, oldest dropped first.
        self.events: deque[tuple[str, bytes]] = deque(maxlen=EVENTS_QUEUE)
        self.n = dict.fromkeys(("published", "acked", "rejected", "dropped", "too_large",
                                "connects", "connect_failures", "events_published",
                                "events_dropped"), 0)
        self.last_error: str | None = None
        # What status messages say besides the state (Publisher.set_status, stop):
        # the reason an online / offline one gives, the daemon's fields (delegate...).
        self.online_reason = "connected"
        self.offline_reason = "stopped"
        self.status_fields: dict[str, Any] = {}
        self.drop_logged = False
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.wake_pending = False

    def too_large(self, size: int, limit: str) -> None:
        with self.lock:
            self.n["too_large"] += 1
            first = self.n["too_large"] == 1
            self.last_error = f"result of {size} bytes exceeds {limit}; not sent"
        if first:  # the same every frame: once is enough, the counter tells the rest
            log.error("MQTT: %s (binary encoding or a decoder makes results smaller)",
                      self.last_error)

    def wake(self) -> None:
        """Any thread, after queueing: make sure the network thread looks soon.

        `wake_pending` means it will look at the queues again without another
        byte: one is in the socket, or it is pumping, or paho's window or the
        socket stopped it and a PUBACK or a writable socket will wake it. That
        saves a send(), and a wake-up of the network thread, per result while it
        is busy. Only `pumped()` clears it."""
        if self.wake_pending:
            return
        self.wake_pending = True
        with contextlib.suppress(OSError):  # full: a wake-up is already pending
            self.wake_w.send(b"\0")

    def drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self.wake_r.recv(4096):
                pass

    def pumped(self, *, stats_sendable: bool) -> bool:
        """Network thread, right after it fed paho everything queued: from now on a
        new message needs a wake-up again. True when more has landed meanwhile.

        Cleared after the queues were read, never before: clearing before the
        drain let a wake() in between leave the flag set with the socket empty,
        and every later result waited for a PUBACK or the 1 s select timeout."""
        self.wake_pending = False
        with self.lock:
            return bool(self.queue or self.control or self.events) or (
                stats_sendable and self.pending_stats is not None)

    def close_wake(self) -> None:
        # A daemon that rebuilds its publisher on reload must not leak the pair.
        self.wake_r.close()
        self.wake_w.close()
