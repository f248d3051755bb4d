"""The systemd notify protocol (sd_notify(3)), written out in a few lines.

systemd passes ``NOTIFY_SOCKET`` (a file-system path, or an abstract socket
address written with a leading ``@``); a service sends newline-separated
``KEY=VALUE`` fields in one datagram per message. Every call here builds a
fresh datagram and ``sendto``s it: nothing stays connected, so a restarted
systemd (``daemon-reexec``) or a late socket is picked up on the next message.
Failures never raise: the first one of an outage is logged, the rest are
quiet until a send succeeds again. Without ``NOTIFY_SOCKET`` every method is a
no-op returning ``False``, so the daemon run by hand needs no special case.

Readiness: edged sends ``READY=1`` once the model is loaded and the first
frame has been through it (not on MQTT connect: a broker outage at boot must
not hold the unit in "activating" until ``TimeoutStartSec=`` kills it).

The watchdog is gated on health (:class:`WatchdogGate`): ``WATCHDOG=1`` goes
out at half of ``WATCHDOG_USEC`` only while every check holds, so a stalled
camera or a dead MQTT network thread lets systemd kill and restart the service.

Not the ``sdnotify`` package: it connects once at start-up and swallows every
error, so a lost socket silently ends readiness and watchdog pings for good.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "HealthCheck",
    "Notifier",
    "ProgressMonitor",
    "WatchdogGate",
    "monotonic_usec",
]

log = logging.getLogger("edged.notify")

# The variables systemd sets for the main process; children must not act on them.
_ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text: str) -> str:
    # A newline inside a value would start a new field: "STATUS=x\nREADY=1".
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


def _socket_address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        # Abstract namespace: a leading NUL byte, the rest is the name (not NUL-terminated).
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:..." (systemd 254+, VMs): not something a Pi hands us


class Notifier:
    """Sends sd_notify messages; every method is a no-op without a socket.

    ``watchdog_usec``/``watchdog_pid`` are the raw ``WATCHDOG_USEC`` and
    ``WATCHDOG_PID`` values; :meth:`watchdog_interval` applies them.
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
    ) -> None:
        self._address_text = address
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        self._failing = False
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        if not address:
            return
        parsed = _socket_address(address)
        if parsed is None:
            log.warning(
                "NOTIFY_SOCKET=%s: unsupported address (expected /path or @abstract); "
                "systemd notifications disabled",
                address,
            )
            return
        self._address = parsed
        try:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        except OSError as exc:
            log.warning("NOTIFY_SOCKET=%s: cannot create a datagram socket: %s", address, exc)
            self._address = None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        unset_environment: bool = False,
    ) -> Notifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID from ``environ`` (default os.environ).

        ``unset_environment=True`` removes them from ``os.environ`` afterwards so
        that worker processes never inherit them (with ``NotifyAccess=main`` their
        messages would only earn "reception only permitted for main PID" lines
        in the journal). The daemon's main process should pass True.
        """
        env = os.environ if environ is None else environ
        usec = _positive_int(env.get("WATCHDOG_USEC"))
        pid = _positive_int(env.get("WATCHDOG_PID"))
        notifier = cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=usec, watchdog_pid=pid)
        if unset_environment:
            for key in _ENV_KEYS:
                os.environ.pop(key, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def address(self) -> str | None:
        """NOTIFY_SOCKET as given (``@name`` for abstract addresses)."""
        return self._address_text if self.enabled else None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields as one datagram. True if it was sent."""
        if self._sock is None or self._address is None or not fields:
            return False
        payload = "\n".join(fields).encode() + b"\n"
        try:
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "systemd notify to %s failed: %s (further failures not logged until it works)",
                    self._address_text,
                    exc,
                )
            return False
        if self._failing:
            self._failing = False
            log.info("systemd notify to %s works again", self._address_text)
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *self._status_field(status))

    def status(self, text: str) -> bool:
        """A one-line STATUS= that `systemctl status edged` shows verbatim."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *self._status_field(status))

    def reloading(self, status: str | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC=; follow it with ready() when done.

        MONOTONIC_USEC lets systemd 253+ (Type=notify-reload) match the reload
        to the request; systemd 252 ignores the field. Harmless either way.
        """
        return self.notify(
            "RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", *self._status_field(status)
        )

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the start/stop timeout fires (slow model loads)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None if not asked for.

        As sd_watchdog_enabled(3): WATCHDOG_PID, when set, must be our own pid;
        otherwise the watchdog belongs to another process (we are a child that
        inherited the environment).
        """
        if self._sock is None or self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @staticmethod
    def _status_field(status: str | None) -> tuple[str, ...]:
        return () if status is None else (f"STATUS={_one_line(status)}",)


def _positive_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number > 0 else None


@dataclass(frozen=True)
class HealthCheck:
    """A named predicate; the name is what the journal and STATUS= show when it fails."""

    name: str
    predicate: Callable[[], bool]


class ProgressMonitor:
    """A predicate: has something progressed within the last ``window`` seconds?

    Call :meth:`beat` on each processed frame; the monitor is healthy for
    ``window`` seconds after the last beat. It starts healthy (construction
    counts as a beat), which is the start-up grace before the first frame.
    """

    def __init__(self, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if window <= 0:
            raise ValueError(f"progress window must be positive, got {window}")
        self.window = window
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        # One float store: safe to call from another thread without a lock.
        self._last = self._clock()

    def age(self) -> float:
        """Seconds since the last beat."""
        return self._clock() - self._last

    def __call__(self) -> bool:
        return self.age() <= self.window


class WatchdogGate:
    """Sends WATCHDOG=1 at ``interval`` only while every check holds.

    Designed to be ticked from the daemon's main loop (any rate faster than the
    interval): :meth:`tick` is cheap when no ping is due, evaluates the checks
    when one is, and keeps re-evaluating on every tick while a check fails, so
    pings resume on the first tick after recovery. ``interval`` defaults to
    ``notifier.watchdog_interval()``; with no watchdog configured the checks
    are still evaluated (at 1 s) so :attr:`failing` can feed STATUS=.
    """

    def __init__(
        self,
        notifier: Notifier,
        checks: Sequence[HealthCheck],
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier
        self._checks = tuple(checks)
        configured = notifier.watchdog_interval() if interval is None else interval
        self._send = configured is not None
        self.interval = configured if configured is not None else 1.0
        self._clock = clock
        self._next_due = clock()  # first tick pings at once
        self._failing: tuple[str, ...] = ()
        self._raised: set[str] = set()

    @property
    def failing(self) -> tuple[str, ...]:
        """Names of the checks that failed at the last evaluation (empty = healthy)."""
        return self._failing

    def tick(self) -> bool:
        """Ping if due and healthy. True when a WATCHDOG=1 was sent."""
        now = self._clock()
        if now < self._next_due:
            return False
        failing = tuple(c.name for c in self._checks if not self._holds(c))
        if failing != self._failing:
            if failing:
                log.warning("watchdog withheld: %s", ", ".join(failing))
            else:
                log.info("watchdog resumed: all health checks pass again")
            self._failing = failing
        if failing:
            return False  # _next_due unchanged: re-check on every tick until healthy
        self._next_due = now + self.interval
        return self._notifier.watchdog() if self._send else False

    def _holds(self, check: HealthCheck) -> bool:
        try:
            ok = bool(check.predicate())
        except Exception:
            # A broken check withholds the ping (and says why once), never kills the loop.
            if check.name not in self._raised:
                self._raised.add(check.name)
                log.exception("health check %r raised", check.name)
            return False
        self._raised.discard(check.name)
        return ok
