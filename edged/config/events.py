"""Config of the events stage: tracking, zones, lines, debounce, snapshots.

Off until `output.publish` is "events" or "both"; then detections become
tracks, events on `<camera>/events`, retained occupancy and snapshots (see
docs/events.md). Zones and lines are arrays of tables:

    [[events.zones]]
    name = "driveway"
    points = [[0.0, 0.55], [0.6, 0.55], [0.6, 1.0], [0.0, 1.0]]
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from edged.config.sections import Section, raise_cross_field

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
Anchor = Literal["bottom_center", "center", "top_center"]
Units = Literal["normalized", "pixels"]
# Occupancy's key for the whole frame (edged.mqtt.eventpayload.ALL, which config may not
# import; a test holds them equal): no zone may take it.
WHOLE_FRAME = "all"
_NAME_RULE = "1 to 64 letters, digits, '_' or '-' (it is a topic level)"


def _point_problems(points: list[list[float]], units: Units) -> list[str]:
    problems = [f"point {i + 1} {p}: needs two numbers, x and y" for i, p in enumerate(points)
                if len(p) != 2]
    if units == "normalized" and not problems:
        problems += [f"point {i + 1} {p}: outside 0..1 (units = \"normalized\"; use units = "
                     f"\"pixels\" for frame pixels)" for i, p in enumerate(points)
                     if not all(0.0 <= v <= 1.0 for v in p)]
    return problems


def _shape_problems(name: str, points: list[list[float]], units: Units
                    ) -> list[tuple[str, str]]:
    """A zone's or a line's name and points, against their keys."""
    problems = [] if NAME.match(name) else [("name", f"{name!r}: must be {_NAME_RULE}")]

    return problems + [("points", p) for p in _point_problems(points, units)]


class ZoneConfig(Section):
    name: str = Field(examples=["driveway"], description=(
        f"The zone's name in topics and events: {_NAME_RULE}; not \"all\", occupancy's "
        "key for the whole frame."))
    points: list[list[float]] = Field(min_length=3, max_length=64, examples=[
        [[0.0, 0.55], [0.6, 0.55], [0.6, 1.0], [0.0, 1.0]]], description=(
        "The polygon's corners, [[x, y], ...], in order around it (3 or more)."))
    units: Units = Field(default="normalized", description=(
        "normalized: 0..1 of the frame's width and height; pixels: frame pixels."))
    anchor: Anchor = Field(default="bottom_center", description=(
        "Which point of a box must be inside: bottom_center (where feet or wheels touch the "
        "ground), center, top_center."))
    labels: list[str] = Field(default_factory=list, description=(
        "Only these labels count in this zone (empty = every label events counts)."))

    @model_validator(mode="after")
    def _valid(self) -> ZoneConfig:
        problems = _shape_problems(self.name, self.points, self.units)
        if self.name == WHOLE_FRAME:
            problems.append(("name", f"{self.name!r}: is occupancy's key for the whole "
                                     "frame; name the zone otherwise"))
        raise_cross_field(problems)
        return self


class LineConfig(Section):
    name: str = Field(examples=["gate"], description=f"The line's name in events: {_NAME_RULE}.")
    points: list[list[float]] = Field(min_length=2, max_length=2, examples=[
        [[0.7, 0.4], [0.7, 1.0]]], description=(
        "Its two ends [[x1, y1], [x2, y2]]. Crossing from the left of the first -> second "
        "direction to its right (as seen on the image) is \"in\", back is \"out\"."))
    units: Units = Field(default="normalized", description=(
        "normalized: 0..1 of the frame's width and height; pixels: frame pixels."))

    @model_validator(mode="after")
    def _valid(self) -> LineConfig:
        raise_cross_field(_shape_problems(self.name, self.points, self.units))
        return self


class SnapshotConfig(Section):
    enabled: bool = Field(default=True, description=(
        "Publish a JPEG on an object's new event and when its best score improves, retained "
        "on <camera>/snapshot/<label> (Home Assistant's image entity shows it)."))
    crop: bool = Field(default=False, description=(
        "true: the object's box (with 10% margin); false: the whole frame."))
    boxes: bool = Field(default=True, description="Draw the object's box and label on it.")
    max_width: int = Field(default=640, ge=32, le=4096, description=(
        "Scaled down to at most this many pixels wide (never up)."))
    quality: int = Field(default=80, ge=10, le=100, description="JPEG quality.")


class EventsConfig(Section):
    labels: list[str] = Field(default_factory=list, description=(
        "Labels that make events and occupancy (empty = every label). Home Assistant gets "
        "occupancy entities for these labels."))
    min_frames: int = Field(default=3, ge=1, le=1000, description=(
        "Frames an object must be seen in before its new event (debounce)."))
    min_s: float = Field(default=0.0, ge=0, le=3600, description=(
        "Seconds an object must have been seen before its new event (debounce)."))
    hold_s: float = Field(default=2.0, gt=0, le=3600, description=(
        "An object ends this long after it was last seen; a detection missing for less "
        "changes nothing."))
    min_score: float = Field(default=0.5, ge=0, le=1, description=(
        "An object counts once its best score reaches this; detections at or above it start "
        "tracks (weaker ones down to output.min_score only keep tracks alive)."))
    label_min_score: dict[str, float] = Field(default_factory=dict, description=(
        "Per-label min_score, e.g. {person = 0.6, car = 0.7}."))
    better_by: float = Field(default=0.05, gt=0, le=1, description=(
        "An update event (and a new snapshot) when an object's best score improves by this."))
    update_every_s: float = Field(default=0.0, ge=0, le=86400, description=(
        "Also an update event this often while an object lasts (0 = never)."))
    match_iou: float = Field(default=0.3, gt=0, le=1, description=(
        "Overlap (IoU) of a track's predicted box with a detection, to be the same object."))
    zones: list[ZoneConfig] = Field(default_factory=list, max_length=64, description=(
        "Named polygons on the frame: events say which zones an object is in, occupancy is "
        "counted per zone."))
    lines: list[LineConfig] = Field(default_factory=list, max_length=64, description=(
        "Named lines: an update event when an object crosses one, with its direction."))
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig, description=(
        "The JPEG published with new and better-score events."))

    @model_validator(mode="after")
    def _consistent(self) -> EventsConfig:
        problems = [("label_min_score", f"{k}: {v} is outside 0..1")
                    for k, v in self.label_min_score.items() if not 0.0 <= v <= 1.0]
        for key, names in (("zones", [z.name for z in self.zones]),
                           ("lines", [ln.name for ln in self.lines])):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                problems.append((key, f"names must be unique: {', '.join(dup)} more than once"))
        raise_cross_field(problems)
        return self
