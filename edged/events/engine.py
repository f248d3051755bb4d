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

from edged.decode.results import Detection
from edged.events.tracker import Box, Track, Tracker, TrackerSettings
from edged.events.zones import Line, Point, Zone, anchor_of

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
    anchor: Point
    announced_score: float
    announced_at: float


class EventEngine:
    def __init__(self, settings: EventSettings | None = None, zones: Sequence[Zone] = (),
                 lines: Sequence[Line] = (), tracker: TrackerSettings | None = None) -> None:
        self.settings = settings or EventSettings()
        self.zones, self.lines = tuple(zones), tuple(lines)
        # A track outlives its object's hold: one that comes back keeps its id.
        self.tracker = Tracker(tracker or TrackerSettings(max_age_s=self.settings.hold_s))
        self._objects: dict[int, _Object] = {}
        self._occupancy: dict[tuple[str, str], int] = {}

    def step(self, detections: Sequence[Detection], t: float, frame_size: tuple[int, int]
             ) -> tuple[list[Event], dict[tuple[str, str], int] | None]:
        """This frame's events, and the occupancy when it changed (else None)."""
        s = self.settings
        wanted = [d for d in detections if not s.labels or d.label in s.labels]
        events: list[Event] = []
        seen = self.tracker.update(wanted, t)
        for track, zones in zip(seen, self._zones_of(seen, frame_size), strict=True):
            anchor = anchor_of(track.box, "bottom_center")
            obj = self._objects.get(track.id)
            if obj is None:
                if self._counts(track, t):
                    self._objects[track.id] = _Object(track, zones, anchor, track.best_score, t)
                    events.append(_event("new", track, zones))
                continue
            events += self._changes(obj, zones, anchor, t, frame_size)
        for tid, obj in list(self._objects.items()):
            if t - obj.track.last_seen >= s.hold_s:
                del self._objects[tid]
                events.append(_event("end", obj.track, obj.zones, end=obj.track.last_seen))
        return events, self._occupancy_if_changed()

    def _counts(self, track: Track, t: float) -> bool:
        s = self.settings
        floor = s.label_min_score.get(track.label or "", s.min_score)
        return (track.hits >= s.min_frames and t - track.first_seen >= s.min_s
                and track.best_score >= floor)

    def _zones_of(self, tracks: list[Track], frame_size: tuple[int, int]
                  ) -> list[tuple[str, ...]]:
        """Each track's zones, by its zone's anchor; all tracks against a zone at once."""
        if not self.zones or not tracks:
            return [()] * len(tracks)
        labels = [tr.label for tr in tracks]
        anchors = {kind: np.array([anchor_of(tr.box, kind) for tr in tracks])
                   for kind in {z.anchor for z in self.zones}}
        inside = np.stack([z.contains(anchors[z.anchor], labels, frame_size)
                           for z in self.zones], axis=1)
        names = [z.name for z in self.zones]
        return [tuple(n for n, hit in zip(names, row, strict=True) if hit) for row in inside]

    def _changes(self, obj: _Object, zones: tuple[str, ...], anchor: Point, t: float,
                 frame_size: tuple[int, int]) -> list[Event]:
        s, track = self.settings, obj.track
        entered = tuple(z for z in zones if z not in obj.zones)
        left = tuple(z for z in obj.zones if z not in zones)
        crossed = tuple((line.name, way) for line in self.lines
                        if (way := line.crossing(obj.anchor, anchor, frame_size)) is not None)
        why = (("zone",) if entered or left else ()) + (("line",) if crossed else ())
        if track.best_score >= obj.announced_score + s.better_by:
            why += ("score",)
        if not why and s.update_every_s and t - obj.announced_at >= s.update_every_s:
            why = ("periodic",)
        obj.zones, obj.anchor = zones, anchor
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
        now = self.occupancy()
        if now == self._occupancy:
            return None
        self._occupancy = now
        return now


def _event(kind: EventType, track: Track, zones: tuple[str, ...], **extra: Any) -> Event:
    return Event(kind, track.id, track.label_id, track.label, track.score, track.best_score,
                 track.box, zones, track.first_seen, **extra)
