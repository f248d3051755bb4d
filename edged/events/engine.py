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
from edged.events.tracker import Box, Track, Tracker, TrackerSettings
from edged.events.zones import (
    Anchor,
    Line,
    Point,
    Zone,
    anchors_of,
    points_in_polygons,
    zone_edges,
)

EventType = Literal["new", "update", "end"]
ALL = "all"  # the occupancy key for the whole frame


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


@dataclass(slots=True)
class _Object:
    track: Track
    zones: tuple[str, ...]
    code: int  # the zones as a bit mask, compared each frame instead of the names
    anchor: Point
    announced_score: float
    announced_at: float


class EventEngine:
    """Per frame, the work that grows with the objects is numpy (anchors, every zone and
    line against every object at once); Python touches an object only when something
    about it may have changed. `edged bench` times it with 50 objects
    (events_50_detections)."""

    def __init__(self, settings: EventSettings | None = None, zones: Sequence[Zone] = (),
                 lines: Sequence[Line] = (), tracker: TrackerSettings | None = None) -> None:
        self.settings = settings or EventSettings()
        self.zones, self.lines = tuple(zones), tuple(lines)
        # A track outlives its object's hold: one that comes back keeps its id.
        self.tracker = Tracker(tracker or TrackerSettings(max_age_s=self.settings.hold_s))
        self._objects: dict[int, _Object] = {}
        self._occupancy: dict[tuple[str, str], int] = {}
        self._dirty = False  # an object began, ended or moved between zones
        self._names: dict[int, tuple[str, ...]] = {0: ()}
        self._bits = 1 << np.arange(len(self.zones), dtype=np.int64)
        self._by_anchor: dict[Anchor, list[int]] = {}
        for z, zone in enumerate(self.zones):
            self._by_anchor.setdefault(zone.anchor, []).append(z)
        self._edge_cache: dict[tuple[Anchor, tuple[int, int]],
                               tuple[NDArray[np.float64], NDArray[np.intp]]] = {}

    def step(self, detections: Sequence[Detection], t: float, frame_size: tuple[int, int]
             ) -> tuple[list[Event], dict[tuple[str, str], int] | None]:
        """This frame's events, and the occupancy when it changed (else None)."""
        s = self.settings
        wanted = [d for d in detections if not s.labels or d.label in s.labels]
        events: list[Event] = []
        seen = self.tracker.update(wanted, t)
        if seen:
            boxes = np.array([tr.box for tr in seen], dtype=np.float64)
            anchors = anchors_of(boxes, "bottom_center")
            codes = self._zone_codes(seen, boxes, anchors, frame_size)
            crossed = self._crossings(seen, anchors, frame_size)
            points = anchors.tolist()
        for i, track in enumerate(seen):
            obj = self._objects.get(track.id)
            anchor = (points[i][0], points[i][1])
            if obj is None:
                if self._counts(track, t):
                    zones = self._zone_names(codes[i])
                    self._objects[track.id] = _Object(track, zones, codes[i], anchor,
                                                      track.best_score, t)
                    self._dirty = True
                    events.append(_event("new", track, zones))
                continue
            if (codes[i] == obj.code and not crossed[i]
                    and track.best_score < obj.announced_score + s.better_by
                    and not (s.update_every_s and t - obj.announced_at >= s.update_every_s)):
                obj.anchor = anchor  # nothing to tell: the common case, kept cheap
                continue
            events += self._changes(obj, codes[i], crossed[i], anchor, t)
        for tid, obj in list(self._objects.items()):
            if t - obj.track.last_seen >= s.hold_s:
                del self._objects[tid]
                self._dirty = True
                events.append(_event("end", obj.track, obj.zones, end=obj.track.last_seen))
        return events, self._occupancy_if_changed()

    def _counts(self, track: Track, t: float) -> bool:
        s = self.settings
        floor = s.label_min_score.get(track.label or "", s.min_score)
        return (track.hits >= s.min_frames and t - track.first_seen >= s.min_s
                and track.best_score >= floor)

    def _zone_codes(self, tracks: list[Track], boxes: NDArray[np.float64],
                    bottom: NDArray[np.float64], frame_size: tuple[int, int]) -> list[int]:
        """Each track's zones as a bit mask: every track against a zone at once."""
        if not self.zones:
            return [0] * len(tracks)
        inside = np.zeros((len(tracks), len(self.zones)), dtype=bool)
        for kind, which in self._by_anchor.items():
            edges, starts = self._edges(kind, frame_size)
            points = bottom if kind == "bottom_center" else anchors_of(boxes, kind)
            inside[:, which] = points_in_polygons(points, edges, starts)
        for z, zone in enumerate(self.zones):
            if zone.labels:
                inside[:, z] &= np.array([tr.label in zone.labels for tr in tracks], dtype=bool)
        return list((inside @ self._bits).tolist())

    def _edges(self, kind: Anchor, frame_size: tuple[int, int]
               ) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
        key = (kind, frame_size)
        if key not in self._edge_cache:
            zones = tuple(self.zones[z] for z in self._by_anchor[kind])
            self._edge_cache[key] = zone_edges(zones, frame_size)
        return self._edge_cache[key]

    def _zone_names(self, code: int) -> tuple[str, ...]:
        names = self._names.get(code)
        if names is None:
            names = self._names[code] = tuple(
                z.name for bit, z in enumerate(self.zones) if code >> bit & 1)
        return names

    def _crossings(self, tracks: list[Track], after: NDArray[np.float64],
                   frame_size: tuple[int, int]) -> list[tuple[tuple[str, str], ...]]:
        """Per track, the lines its anchor crossed since the last frame, with their way."""
        none: list[tuple[tuple[str, str], ...]] = [()] * len(tracks)
        if not self.lines:
            return none
        objects = self._objects
        before = np.array([objects[tr.id].anchor if tr.id in objects else (np.nan, np.nan)
                           for tr in tracks], dtype=np.float64)
        before = np.where(np.isnan(before), after, before)  # no object yet: no step
        for line in self.lines:
            ways = line.crossings(before, after, frame_size)
            for i in np.flatnonzero(ways).tolist():
                none[i] = (*none[i], (line.name, "in" if ways[i] > 0 else "out"))
        return none

    def _changes(self, obj: _Object, code: int, crossed: tuple[tuple[str, str], ...],
                 anchor: Point, t: float) -> list[Event]:
        s, track = self.settings, obj.track
        zones = self._zone_names(code)
        entered = tuple(z for z in zones if z not in obj.zones)
        left = tuple(z for z in obj.zones if z not in zones)
        why = (("zone",) if entered or left else ()) + (("line",) if crossed else ())
        if track.best_score >= obj.announced_score + s.better_by:
            why += ("score",)
        if not why and s.update_every_s and t - obj.announced_at >= s.update_every_s:
            why = ("periodic",)
        if code != obj.code:
            self._dirty = True
        obj.zones, obj.code, obj.anchor = zones, code, anchor
        if not why:
            return []
        obj.announced_score, obj.announced_at = track.best_score, t
        return [_event("update", track, zones, why=why, entered=entered, left=left,
                       crossed=crossed)]

    def occupancy(self) -> dict[tuple[str, str], int]:
        """(zone or "all", label) -> objects that have begun and not ended; every zone and
        label seen so far stays listed, at 0 once empty (a retained "off")."""
        counts = dict.fromkeys(self._occupancy, 0)
        for obj in self._objects.values():
            label = obj.track.label or str(obj.track.label_id)
            for where in (ALL, *obj.zones):
                counts[(where, label)] = counts.get((where, label), 0) + 1
        return counts

    def _occupancy_if_changed(self) -> dict[tuple[str, str], int] | None:
        if not self._dirty:
            return None
        self._dirty = False
        now = self.occupancy()
        if now == self._occupancy:
            return None
        self._occupancy = now
        return now


def _event(kind: EventType, track: Track, zones: tuple[str, ...], **extra: Any) -> Event:
    return Event(kind, track.id, track.label_id, track.label, track.score, track.best_score,
                 track.box, zones, track.first_seen, **extra)
