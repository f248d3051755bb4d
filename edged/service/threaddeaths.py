"""Threads of the daemon that end with an exception: told at once, never left to a watchdog.

A thread that dies is a bug (the pipeline, MQTT and capture threads catch what
bad input can raise), and without it the daemon only looks alive: frames stop
while `stats` still says `running`. `ThreadDeaths.install()` takes
`threading.excepthook`; the daemon's housekeeping asks `news()` every tick and,
the first time, tells systemd (`WATCHDOG=trigger`, so `Restart=` acts now), the
stats topic (`last_error`) and STATUS=.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("edged")


class ThreadDeaths:
    def __init__(self) -> None:
        self.reasons: list[str] = []  # appended by the dying thread, read by housekeeping
        self._told = 0

    def install(self) -> None:
        threading.excepthook = self._hook

    def _hook(self, args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        exc = args.exc_value
        text = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
        why = f"thread {name} died: {args.exc_type.__name__}" + (f": {text}" if text else "")
        log.error("%s", why, exc_info=exc)
        self.reasons.append(why)

    @property
    def healthy(self) -> bool:
        return not self.reasons

    def news(self) -> bool:
        """True once per batch of deaths not yet reported."""
        fresh = len(self.reasons) > self._told
        self._told = len(self.reasons)
        return fresh

    def summary(self) -> str:
        return "; ".join(self.reasons)
