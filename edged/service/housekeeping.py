"""The daemon's main thread, every half second: READY=1, the watchdog, STATUS=,
the stats topic and the retained status's words.

It also runs while the daemon waits for a model to load (no Coral yet), so a
daemon that waits on purpose is "up" for systemd and says what it waits for
(`edged.service.lifecycle` has the contract). A friend of `edged.service.daemon.Daemon`: it
reads the running parts through it, because a reload replaces them.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from edged.service import lifecycle
from edged.service.notify import HealthCheck, WatchdogGate

if TYPE_CHECKING:
    from edged.service.daemon import Daemon

log = logging.getLogger("edged")

TICK_S = 0.5
STATUS_EVERY_S = 5.0


class Housekeeping:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.ready_sent = False
        d = daemon
        self.gate = WatchdogGate(d.notifier, [
            HealthCheck("no frames inferred recently", self._frames_progressing),
            HealthCheck("pipeline thread stalled", self._pipeline_alive),
            HealthCheck("a thread died", lambda: d.deaths.healthy),
            # Through the daemon: a reload may replace the publisher.
            HealthCheck("MQTT network thread dead",
                        lambda: d.publisher is not None and d.publisher.network_alive()),
        ])
        self._next_tick = self._next_status = self._next_stats = 0.0
        self._say_status = lifecycle.StatusSayer()

    def tick(self) -> None:
        d, gate = self.d, self.gate
        if not self.ready_sent:
            waiting = lifecycle.waiting_for(d.supervisors, d.captures)
            if d.first_result.is_set() or waiting:
                self.ready_sent = True
                d.notifier.ready(d._status_line())
                log.info("ready: %s", "first result published" if d.first_result.is_set()
                         else f"waiting for {waiting}")
        shown = gate.failing
        gate.tick()
        now = time.monotonic()
        death = d.deaths.news()
        if death:  # to systemd's watchdog (Restart= then acts) and to subscribers, now
            d.notifier.notify("WATCHDOG=trigger")
        # A health change is told at once, not at the next 5 s refresh.
        if now >= self._next_status or gate.failing != shown or death:
            d.notifier.status(d._status_line(gate.failing))
            self._next_status = now + STATUS_EVERY_S
        if now >= self._next_stats or death:
            d._report()
            self._next_stats = now + d.cfg.output.stats_interval_s
        self._say_status(d.publisher, d.supervisors, d.captures, d.commands.updater.current)

    def tick_while_waiting(self) -> bool:
        """Polled while the worker waits to load (no Coral yet); True to stop waiting."""
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + TICK_S
            self.tick()
        return self.d.stop_requested.is_set()

    def _frames_progressing(self) -> bool:
        # Waiting on purpose (a camera retried, a worker restarted, a finite source
        # that ended) is not a fault: withholding the watchdog would have systemd
        # restart edged for what it already handles (or replay an ended video).
        d = self.d
        return d.frames() or bool(lifecycle.waiting_for(d.supervisors, d.captures))

    def _pipeline_alive(self) -> bool:
        d = self.d
        limit = max(30.0, d.cfg.inference.invoke_timeout_s * 3)
        # A group not started yet, or being replaced: the main thread is at work on it.
        return all(g.thread.is_alive() and time.monotonic() - g.pipeline.heartbeat < limit
                   for g in list(d.groups.values())
                   if g.pipeline is not None and g.thread is not None)
