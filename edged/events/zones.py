"""Named zones (polygons) and lines on a camera's frame, and where boxes stand in them.

A track is in a zone by one point of its box, the anchor: bottom-centre by
default, where a person's feet or a car's wheels touch the ground, so a
tall box leaning over a zone's edge does not count until the object is in
it. Coordinates are frame pixels, or normalized (0..1 of the frame) and
scaled once per frame size. Lines count crossings with a direction: from
the left of a -> b to its right, as seen on the image, is "in"; back is "out".
Everything here takes all of a frame's objects at once (the engine's per-frame
cost is its count of array calls, not its objects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Anchor = Literal["bottom_center", "center", "top_center"]
Point = tuple[float, float]


def anchors_of(boxes: NDArray[np.float64], kind: Anchor) -> NDArray[np.float64]:
    """(N, 2): each (N, 4) box's anchor point, x1 y1 x2 y2 in frame pixels."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    y = boxes[:, 3] if kind == "bottom_center" else boxes[:, 1] if kind == "top_center" else (
        (boxes[:, 1] + boxes[:, 3]) / 2)
    return np.stack([cx, y], axis=1)


def edges(polygon: tuple[Point, ...]) -> NDArray[np.float64]:
    """(4, E): each edge's x_i, y_i, x_j, y_j (j the previous vertex)."""
    p = np.asarray(polygon, dtype=np.float64)
    q = np.roll(p, 1, axis=0)
    return np.stack([p[:, 0], p[:, 1], q[:, 0], q[:, 1]])


def points_in_polygons(points: NDArray[np.float64], polygon_edges: NDArray[np.float64],
                       starts: NDArray[np.intp]) -> NDArray[np.bool_]:
    """(N, Z): which of the (N, 2) points lie in each polygon, by the even-odd rule (a
    point exactly on an edge may fall either side); the polygons' edges side by side,
    `starts` where each polygon's begin (`zone_edges`): one pass, not one per zone."""
    x, y = points[:, :1], points[:, 1:]
    xi, yi, xj, yj = polygon_edges[:, None, :]
    spans = (yi > y) != (yj > y)
    dy = np.where(yj == yi, 1.0, yj - yi)
    crossing = spans & (x < (xj - xi) * (y - yi) / dy + xi)
    return np.asarray(np.add.reduceat(crossing, starts, axis=1) % 2 == 1)


def zone_edges(zones: tuple[Zone, ...], frame_size: tuple[int, int]
               ) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """The zones' edges side by side and where each zone's begin, for `points_in_polygons`
    (per frame size: the engine keeps them)."""
    parts = [edges(z.scaled(frame_size)) for z in zones]
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


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    a: Point
    b: Point
    normalized: bool = False

    def crossings(self, before: NDArray[np.float64], after: NDArray[np.float64],
                  frame_size: tuple[int, int]) -> NDArray[np.int8]:
        """Which way each anchor's step from `before` to `after` ((N, 2) each) crossed the
        segment: +1 "in", -1 "out", 0 none. On the line counts as its left, so a step
        onto it and one off it make one crossing; the step must cross the segment
        itself, not the line's extension."""
        h, w = frame_size
        a, b = (((self.a[0] * w, self.a[1] * h), (self.b[0] * w, self.b[1] * h))
                if self.normalized else (self.a, self.b))
        right0, right1 = _sides(a, b, before) > 0, _sides(a, b, after) > 0
        # The step's own line must separate the segment's ends.
        dx, dy = after[:, 0] - before[:, 0], after[:, 1] - before[:, 1]
        sa = dx * (a[1] - before[:, 1]) - dy * (a[0] - before[:, 0])
        sb = dx * (b[1] - before[:, 1]) - dy * (b[0] - before[:, 0])
        hit = (right0 != right1) & ((sa > 0) != (sb > 0))
        return np.where(hit, np.where(right1, 1, -1), 0).astype(np.int8)


def _sides(a: Point, b: Point, p: NDArray[np.float64]) -> NDArray[np.float64]:
    """> 0 where p is right of a -> b as seen on the image (y down), < 0 left, 0 on it."""
    return np.asarray((b[0] - a[0]) * (p[:, 1] - a[1]) - (b[1] - a[1]) * (p[:, 0] - a[0]))
