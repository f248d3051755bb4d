"""Tracks into events and occupancy: debounced, so flicker never makes or ends an object.

An object counts once its track has been seen `min_frames` times over at
least `min_s` seconds with a best score of at least its label's minimum:
then a `new` event. While it lasts: `update` when it enters or leaves a
zone, crosses a line, improves its best score by `better_by`, or every
`update_every_s`. It ends `hold_s` after it was last seen: `end`. A
detection missing for a frame or two (every third frame, say) is inside the
hold and changes nothing. Occupancy counts, per zone and label, the objects
that have begun and not ended; `step` returns it only when it changed, for a
retained topic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from edged.decode.results import Detection
from edged.events.tracker import (
    BEFORE,
    BEST,
    BOX,
    FIRST,
    HITS,
    ID,
    LABEL,
    LAST,
    SCORE,
    Box,
    Tracker,
    TrackerSettings,
)
from edged.events.zones import (
    Anchor,
    Line,
    LineSet,
    Zone,
    anchors_of,
    line_crossings,
    points_in_polygons,
    zone_edges,
)

EventType = Literal["new", "update", "end"]
# The tracker's rows' first ten columns (box, score, label, the box before) @ this ->
# each track's bottom-centre anchor, now and at the sighting before, in one call.
_STEP = np.zeros((10, 4))
_STEP[BOX, 0:2] = _STEP[BEFORE, 2:4] = np.array([[0.5, 0], [0, 0], [0.5, 0], [0, 1]])


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    track_id: int
    label_id: int
    label: str | None
    score: float
    best_score: float
    box: Box
    zones: tuple[str, ...]
    start: float
    end: float | None = None
    why: tuple[str, ...] = ()  # update: zone, line, score, periodic
    entered: tuple[str, ...] = ()
    left: tuple[str, ...] = ()
    crossed: tuple[tuple[str, str], ...] = ()  # (line, "in" | "out")

    def to_json(self, clock: float = 0.0) -> dict[str, Any]:
        """`clock`: added to start and end (the engine runs on the monotonic clock;
        messages carry wall-clock times)."""
        doc: dict[str, Any] = {
            "type": self.type, "id": self.track_id, "label_id": self.label_id,
            "label": self.label, "score": round(self.score, 4),
            "best_score": round(self.best_score, 4),
            "box": [round(v, 1) for v in self.box], "zones": list(self.zones),
            "start": round(self.start + clock, 3),
            "end": round(self.end + clock, 3) if self.end is not None else None}
        if self.type == "update":
            doc.update(why=list(self.why), entered=list(self.entered), left=list(self.left),
                       crossed=[{"line": n, "direction": d} for n, d in self.crossed])
        return doc


@dataclass(frozen=True, slots=True)
class EventSettings:
    min_frames: int = 3
    min_s: float = 0.0
    hold_s: float = 2.0
    min_score: float = 0.5  # a label's best score must reach this to count
    label_min_score: Mapping[str, float] = field(default_factory=dict)
    better_by: float = 0.05  # an update when the best score improves by this much
    update_every_s: float = 0.0  # 0: no periodic updates
    labels: tuple[str, ...] = ()  # empty: every label counts


class EventEngine:
    """Per frame, the work is whole-column numpy over the tracker's table (anchors, every
    zone and line against every object at once, who began, changed or ended); Python
    touches a track only for an event. `edged bench` times it with 50 objects
    (events_50_detections)."""

    def __init__(self, settings: EventSettings | None = None, zones: Sequence[Zone] = (),
                 lines: Sequence[Line] = (), tracker: TrackerSettings | None = None) -> None:
        self.settings = settings or EventSettings()
        self.zones, self.lines = tuple(zones), tuple(lines)
        # A track outlives its object's hold: one that comes back keeps its id.
        self.tracker = Tracker(tracker or TrackerSettings(max_age_s=self.settings.hold_s))
        # Beside the tracker's table, row for row: each track's zones as a bit mask, and
        # whether it is an object (has begun and not ended), with what was last announced.
        self._code = np.zeros(0, np.int64)
        self._state = np.zeros((0, 3))  # counted (1.0 or 0.0), announced best score, time
        self._counts: dict[tuple[str | None, str], int] = {}
        self._occupancy: dict[tuple[str | None, str], int] = {}  # as last returned
        self._dirty = False  # an object began, ended or moved between zones
        self._names: dict[int, tuple[str, ...]] = {0: ()}
        self._bits = 1 << np.arange(len(self.zones), dtype=np.int64)
        self._by_anchor: dict[Anchor, list[int]] = {}
        for z, zone in enumerate(self.zones):
            self._by_anchor.setdefault(zone.anchor, []).append(z)
        self._edges: dict[tuple[Anchor, tuple[int, int]],
                          tuple[NDArray[np.float64], NDArray[np.intp]]] = {}
        self._line_cache: dict[tuple[int, int], LineSet] = {}
        self._label_cache: tuple[int, NDArray[np.float64], list[NDArray[np.float64]]] | None = None

    def step(self, detections: Sequence[Detection], t: float, frame_size: tuple[int, int]
             ) -> tuple[list[Event], dict[tuple[str | None, str], int] | None]:
        """This frame's events, and the occupancy when it changed (else None)."""
        s, tracker = self.settings, self.tracker
        wanted = [d for d in detections if d.label in s.labels] if s.labels else detections
        seen = tracker.update(wanted, t)
        grown = len(tracker) - len(self._code)
        if grown:
            self._code = np.concatenate([self._code, np.zeros(grown, np.int64)])
            self._state = np.concatenate([self._state, np.zeros((grown, 3))])
        events = self._seen(seen, t, frame_size) if len(seen) else []
        last = tracker.table[:, LAST]
        age = t - last.min() if len(last) else 0.0
        if age < s.hold_s and age <= tracker.settings.max_age_s:  # nothing ends nor goes: the
            return events, self._occupancy_if_changed()  # usual frame, for one call
        ending = ((t - last >= s.hold_s) & (self._state[:, 0] > 0)).nonzero()[0]
        if len(ending):
            for i in ending.tolist():
                code = int(self._code[i])
                events.append(self._event("end", i, self._zone_names(code),
                                          end=float(tracker.table[i, LAST])))
                self._count(i, code, -1)
            self._state[ending, 0] = 0.0
        keep = tracker.prune(t)
        if keep is not None:
            self._code, self._state = self._code[keep], self._state[keep]
        return events, self._occupancy_if_changed()

    def _seen(self, seen: NDArray[np.intp], t: float, frame_size: tuple[int, int]
              ) -> list[Event]:
        """new and update events of the tracks seen this frame: which began or changed is
        decided for all of them at once."""
        s, table = self.settings, self.tracker.table
        rows = table[seen]
        steps = rows[:, :10] @ _STEP  # each anchor now, then at the sighting before
        codes = self._zone_codes(rows, steps[:, :2], frame_size)
        ways = self._crossings(steps, frame_size)
        state = self._state[seen]
        counted, best = state[:, 0] > 0, rows[:, BEST]
        news = (codes != self._code[seen]) | (best >= state[:, 1] + s.better_by)
        if ways is not None:
            news[ways.nonzero()[0]] = True
        if s.update_every_s:
            news |= t - state[:, 2] >= s.update_every_s
        acts = counted & news
        if not counted.all():
            acts |= (~counted & (rows[:, HITS] >= s.min_frames) & (t - rows[:, FIRST] >= s.min_s)
                     & (best >= self._floors(rows[:, LABEL])))
        events: list[Event] = []
        for k in acts.nonzero()[0].tolist():
            i, code = int(seen[k]), int(codes[k])
            if not counted[k]:
                self._state[i] = (1.0, best[k], t)
                self._code[i] = code
                self._count(i, code, 1)
                events.append(self._event("new", i, self._zone_names(code)))
                continue
            crossed = () if ways is None else tuple(
                (line.name, "in" if w > 0 else "out")
                for line, w in zip(self.lines, ways[k].tolist(), strict=True) if w)
            events += self._changes(i, code, crossed, t)
        return events

    def _floors(self, labels: NDArray[np.float64]) -> NDArray[np.float64] | float:
        """Each label's minimum best score."""
        s = self.settings
        if not s.label_min_score:
            return s.min_score
        floors, _ = self._by_label()
        return floors[labels.astype(np.intp)]

    def _by_label(self) -> tuple[NDArray[np.float64], list[NDArray[np.float64]]]:
        """Per label id (the tracker's names, as they grow): its minimum score, and the
        label ids each zone counts."""
        names = self.tracker.names
        cache = self._label_cache
        if cache is None or cache[0] != len(names):
            s = self.settings
            floors = np.full(max(names, default=0) + 1, s.min_score)
            for label_id, name in names.items():
                floors[label_id] = s.label_min_score.get(name or "", s.min_score)
            per_zone = [np.array([i for i, n in names.items() if n in z.labels], np.float64)
                        for z in self.zones]
            cache = self._label_cache = (len(names), floors, per_zone)
        return cache[1], cache[2]

    def _zone_codes(self, rows: NDArray[np.float64], bottom: NDArray[np.float64],
                    frame_size: tuple[int, int]) -> NDArray[np.int64]:
        """Each track's zones as a bit mask: every track against every zone's edges at
        once."""
        if not self.zones:
            return np.zeros(len(rows), np.int64)
        codes = None
        for kind, which in self._by_anchor.items():
            key = (kind, frame_size)
            if key not in self._edges:
                self._edges[key] = zone_edges(tuple(self.zones[z] for z in which), frame_size)
            points = bottom if kind == "bottom_center" else anchors_of(rows[:, BOX], kind)
            found = points_in_polygons(points, *self._edges[key]) @ self._bits[which]
            codes = found if codes is None else codes | found
        assert codes is not None
        for z, zone in enumerate(self.zones):
            if zone.labels:
                codes[~np.isin(rows[:, LABEL], self._by_label()[1][z])] &= ~(1 << z)
        return np.asarray(codes)

    def _zone_names(self, code: int) -> tuple[str, ...]:
        names = self._names.get(code)
        if names is None:
            names = self._names[code] = tuple(
                z.name for bit, z in enumerate(self.zones) if code >> bit & 1)
        return names

    def _crossings(self, steps: NDArray[np.float64], frame_size: tuple[int, int]
                   ) -> NDArray[np.int8] | None:
        """(tracks, lines): which way each track's anchor crossed each line in its step
        from the sighting before (+1 in, -1 out, 0 none); None without lines."""
        if not self.lines:
            return None
        lines = self._line_cache.get(frame_size)
        if lines is None:
            lines = self._line_cache[frame_size] = LineSet.of(self.lines, frame_size)
        return line_crossings(lines, steps[:, 2:], steps[:, :2])

    def _changes(self, i: int, code: int, crossed: tuple[tuple[str, str], ...], t: float
                 ) -> list[Event]:
        s = self.settings
        best = float(self.tracker.table[i, BEST])
        was, zones = self._zone_names(int(self._code[i])), self._zone_names(code)
        entered = tuple(z for z in zones if z not in was)
        left = tuple(z for z in was if z not in zones)
        why = (("zone",) if entered or left else ()) + (("line",) if crossed else ())
        if best >= self._state[i, 1] + s.better_by:
            why += ("score",)
        if not why and s.update_every_s and t - self._state[i, 2] >= s.update_every_s:
            why = ("periodic",)
        if code != self._code[i]:
            self._count(i, int(self._code[i]), -1)
            self._count(i, code, 1)
            self._code[i] = code
        if not why:
            return []
        self._state[i, 1:] = (best, t)
        return [self._event("update", i, zones, why=why, entered=entered, left=left,
                            crossed=crossed)]

    def _event(self, kind: EventType, i: int, zones: tuple[str, ...], **extra: Any) -> Event:
        r = self.tracker.table[i].tolist()
        label_id = int(r[LABEL])
        return Event(kind, int(r[ID]), label_id, self.tracker.names.get(label_id), r[SCORE],
                     r[BEST], (r[0], r[1], r[2], r[3]), zones, r[FIRST], **extra)

    def occupancy(self) -> dict[tuple[str | None, str], int]:
        """(zone, or None for the whole frame, label) -> objects that have begun and not
        ended; every zone and label seen so far stays listed, at 0 once empty (a
        retained "off")."""
        return dict(self._counts)

    def _count(self, i: int, code: int, by: int) -> None:
        """Occupancy kept by the events that change it (object begun, ended, moved between
        zones), not recounted each frame."""
        label_id = int(self.tracker.table[i, LABEL])
        label = self.tracker.names.get(label_id) or str(label_id)
        counts = self._counts
        for where in (None, *self._zone_names(code)):
            counts[(where, label)] = counts.get((where, label), 0) + by
        self._dirty = True

    def _occupancy_if_changed(self) -> dict[tuple[str | None, str], int] | None:
        if not self._dirty:
            return None
        self._dirty = False
        if self._counts == self._occupancy:
            return None
        self._occupancy = dict(self._counts)
        return dict(self._counts)
