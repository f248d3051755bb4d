"""Named zones (polygons) and lines on a camera's frame, and where a box stands in them.

A track is in a zone by one point of its box, the anchor: bottom-centre by
default, where a person's feet or a car's wheels touch the ground, so a
tall box leaning over a zone's edge does not count until the object is in
it. Coordinates are frame pixels, or normalized (0..1 of the frame) and
scaled once per frame size. Lines count crossings with a direction: from
the left of a -> b to its right, as seen on the image, is "in"; back is "out".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Anchor = Literal["bottom_center", "center", "top_center"]
Point = tuple[float, float]


def anchor_of(box: tuple[float, float, float, float], anchor: Anchor) -> Point:
    x1, y1, x2, y2 = box
    cx = (x1 + x2) / 2
    return (cx, y2) if anchor == "bottom_center" else (cx, y1) if anchor == "top_center" else (
        cx, (y1 + y2) / 2)


def point_in_polygon(p: Point, polygon: tuple[Point, ...]) -> bool:
    """Even-odd rule; a point exactly on an edge may fall either side."""
    x, y = p
    inside = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def edges(polygon: tuple[Point, ...]) -> NDArray[np.float64]:
    """(4, E): each edge's x_i, y_i, x_j, y_j (j the previous vertex), for `points_in_polygon`."""
    p = np.asarray(polygon, dtype=np.float64)
    q = np.roll(p, 1, axis=0)
    return np.stack([p[:, 0], p[:, 1], q[:, 0], q[:, 1]])


def points_in_polygon(points: NDArray[np.float64], polygon_edges: NDArray[np.float64]
                      ) -> NDArray[np.bool_]:
    """`point_in_polygon` for (N, 2) points at once: every edge against every point."""
    x, y = points[:, :1], points[:, 1:]
    xi, yi, xj, yj = polygon_edges[:, None, :]
    spans = (yi > y) != (yj > y)
    dy = np.where(yj == yi, 1.0, yj - yi)
    crossing = spans & (x < (xj - xi) * (y - yi) / dy + xi)
    return np.asarray(np.count_nonzero(crossing, axis=1) % 2 == 1)


def points_in_polygons(points: NDArray[np.float64], polygon_edges: NDArray[np.float64],
                       starts: NDArray[np.intp]) -> NDArray[np.bool_]:
    """(N, Z): `points_in_polygon` for several polygons in one pass, their edges side by
    side (`starts`: where each polygon's edges begin); one pass, not one per zone."""
    x, y = points[:, :1], points[:, 1:]
    xi, yi, xj, yj = polygon_edges[:, None, :]
    spans = (yi > y) != (yj > y)
    dy = np.where(yj == yi, 1.0, yj - yi)
    crossing = spans & (x < (xj - xi) * (y - yi) / dy + xi)
    return np.asarray(np.add.reduceat(crossing, starts, axis=1) % 2 == 1)


def zone_edges(zones: tuple[Zone, ...], frame_size: tuple[int, int]
               ) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """The zones' edges side by side and where each zone's begin, for `points_in_polygons`."""
    parts = [_edges_at(z, frame_size) for z in zones]
    starts = np.cumsum([0] + [p.shape[1] for p in parts[:-1]]).astype(np.intp)
    return np.concatenate(parts, axis=1), starts


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    polygon: tuple[Point, ...]
    normalized: bool = False
    anchor: Anchor = "bottom_center"
    labels: tuple[str, ...] = ()  # empty: every label

    def __post_init__(self) -> None:
        if len(self.polygon) < 3:
            raise ValueError(f"zone {self.name!r}: a polygon needs 3 points or more, "
                             f"got {len(self.polygon)}")

    def scaled(self, frame_size: tuple[int, int]) -> tuple[Point, ...]:
        if not self.normalized:
            return self.polygon
        h, w = frame_size
        return tuple((x * w, y * h) for x, y in self.polygon)

    def contains(self, anchors: NDArray[np.float64], labels: list[str | None],
                 frame_size: tuple[int, int]) -> NDArray[np.bool_]:
        """Which of the (N, 2) anchors, with their labels, are in the zone."""
        inside = points_in_polygon(anchors, _edges_at(self, frame_size))
        if self.labels:
            inside &= np.array([label in self.labels for label in labels], dtype=bool)
        return inside

    def holds(self, box: tuple[float, float, float, float], label: str | None,
              frame_size: tuple[int, int]) -> bool:
        if self.labels and label not in self.labels:
            return False
        return point_in_polygon(anchor_of(box, self.anchor), self.scaled(frame_size))


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    a: Point
    b: Point
    normalized: bool = False
    anchor: Anchor = "bottom_center"

    def crossing(self, before: Point, after: Point, frame_size: tuple[int, int]
                 ) -> Literal["in", "out"] | None:
        """Which way the anchor's step from `before` to `after` crossed the segment."""
        h, w = frame_size
        a, b = (((self.a[0] * w, self.a[1] * h), (self.b[0] * w, self.b[1] * h))
                if self.normalized else (self.a, self.b))
        # On the line counts as its left: a step onto it and one off it make one crossing.
        right0, right1 = _side(a, b, before) > 0, _side(a, b, after) > 0
        if right0 == right1:
            return None
        # The step must cross the segment itself, not the line's extension.
        if (_side(before, after, a) > 0) == (_side(before, after, b) > 0):
            return None
        return "in" if right1 else "out"


    def crossings(self, before: NDArray[np.float64], after: NDArray[np.float64],
                  frame_size: tuple[int, int]) -> NDArray[np.int8]:
        """`crossing` for (N, 2) steps at once: +1 "in", -1 "out", 0 none."""
        h, w = frame_size
        a, b = (((self.a[0] * w, self.a[1] * h), (self.b[0] * w, self.b[1] * h))
                if self.normalized else (self.a, self.b))
        right0, right1 = _sides(a, b, before) > 0, _sides(a, b, after) > 0
        # The step's own line must separate the segment's ends (vectorized _side).
        dx, dy = after[:, 0] - before[:, 0], after[:, 1] - before[:, 1]
        sa = dx * (a[1] - before[:, 1]) - dy * (a[0] - before[:, 0])
        sb = dx * (b[1] - before[:, 1]) - dy * (b[0] - before[:, 0])
        hit = (right0 != right1) & ((sa > 0) != (sb > 0))
        return np.where(hit, np.where(right1, 1, -1), 0).astype(np.int8)


def _sides(a: Point, b: Point, p: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray((b[0] - a[0]) * (p[:, 1] - a[1]) - (b[1] - a[1]) * (p[:, 0] - a[0]))


def _side(a: Point, b: Point, p: Point) -> float:
    """> 0 when p is right of a -> b as seen on the image (y down), < 0 left, 0 on it."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


@functools.lru_cache(maxsize=64)
def _edges_at(zone: Zone, frame_size: tuple[int, int]) -> NDArray[np.float64]:
    return edges(zone.scaled(frame_size))
