"""When the publisher's network thread tries the broker again.

Exponential backoff with "equal jitter" between `reconnect_min_s` and
`reconnect_max_s`, so a fleet that lost its broker together does not come back
in lockstep and no device hammers a broker that refuses it. But while the
broker's port takes no connection at all (the broker is down, the network is
out), an attempt costs the broker nothing, a refused or unanswered SYN, and a
60 s cap would leave a returning broker unused for up to a minute (measured:
33 s after a 60 s outage): then the wait stays under `UNREACHABLE_MAX_S`.
"""

from __future__ import annotations

import errno
import random
import socket
import ssl
from typing import Final, Protocol

__all__ = ["UNREACHABLE_MAX_S", "backoff_delay", "retry_cap", "unreachable"]

UNREACHABLE_MAX_S: Final = 5.0
_UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH,
                                 errno.EHOSTDOWN, errno.ETIMEDOUT})


class _Backoff(Protocol):
    @property
    def backoff_max_s(self) -> float: ...


def backoff_delay(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0-based).

    Exponential, capped, with "equal jitter": at least half the step, so no
    device hammers the broker, and a random other half, so a fleet that lost
    the broker together does not come back in lockstep."""
    cap = float(min(max_s, min_s * 2 ** min(attempt, 30)))
    return cap / 2 + rng.uniform(0, cap / 2)


def unreachable(exc: BaseException) -> bool:
    """True when a connect attempt got no TCP connection (no broker to burden); False
    when one answered and then refused or failed (TLS, authentication, a drop)."""
    if isinstance(exc, ssl.SSLError):
        return False
    if isinstance(exc, TimeoutError | socket.timeout | socket.gaierror):
        return True
    return isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS


def retry_cap(s: _Backoff, no_listener: bool) -> float:
    """The longest wait before the next attempt: `backoff_max_s` once a broker answered
    (refusals and TLS failures are not hammered), at most UNREACHABLE_MAX_S while none
    did (`backoff_delay` keeps its jitter, so a fleet does not come back in lockstep)."""
    return min(s.backoff_max_s, UNREACHABLE_MAX_S) if no_listener else s.backoff_max_s
