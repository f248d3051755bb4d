"""The board's temperatures and throttling in the stats, and one line when they turn bad.

A Pi on a weak supply or in a hot case slows down without a word: the
firmware caps the clock, the Edge TPU driver throttles the TPU past its trip
point, and results/s drop for no visible reason. The figures go to the stats
(and Home Assistant, and the metrics textfile); the journal gets one WARNING
when under-voltage, throttling or an Edge TPU trip point starts, and one INFO
line when it ends, never a line per report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edged.system.health import apex_temperatures, read_throttled, soc_temperature_c

log = logging.getLogger("edged")

FIGURES = ("soc_temp_c", "edgetpu_temp_c", "throttled", "throttled_since_boot")


class BoardHealth:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self._now: tuple[str, ...] = ()
        self._hot: frozenset[str] = frozenset()

    def available(self) -> tuple[str, ...]:
        """The figures this board reports (Home Assistant gets entities for these)."""
        return tuple(k for k in FIGURES if k in self.figures(quiet=True))

    def figures(self, *, quiet: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        soc = soc_temperature_c(self.root)
        if soc is not None:
            out["soc_temp_c"] = round(soc, 1)
        apex = apex_temperatures(self.root)
        if apex:
            out["edgetpu_temp_c"] = round(max(a.temp_c for a in apex), 1)
        throttled = read_throttled(self.root)
        if throttled is not None:
            out["throttled"] = list(throttled.now)
            out["throttled_since_boot"] = list(throttled.since_boot)
        if quiet:
            return out
        now = throttled.now if throttled is not None else ()
        if now != self._now:
            if now:
                log.warning("the board reports %s (get_throttled=0x%x): results may slow "
                            "down; edged doctor says what to do", ", ".join(now),
                            throttled.word if throttled else 0)
            else:
                log.info("the board no longer reports under-voltage or throttling")
            self._now = now
        hot = frozenset(a.name for a in apex if a.throttling)
        for a in apex:
            if a.name in hot - self._hot:
                log.warning("Edge TPU %s at %.1f °C, past its first trip point (%g °C): the "
                            "driver throttles it; cool the card", a.name, a.temp_c,
                            min(a.trip_points_c))
            elif a.name in self._hot - hot:
                log.info("Edge TPU %s back to %.1f °C, below its trip points", a.name,
                         a.temp_c)
        self._hot = hot
        return out
