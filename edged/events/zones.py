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


# Each anchor as a (4, 2) matrix: boxes (N, 4) @ it -> the points (N, 2), in one call.
_ANCHOR_OF: dict[str, NDArray[np.float64]] = {
    "bottom_center": np.array([[0.5, 0], [0, 0], [0.5, 0], [0, 1]], dtype=np.float64),
    "center": np.array([[0.5, 0], [0, 0.5], [0.5, 0], [0, 0.5]], dtype=np.float64),
    "top_center": np.array([[0.5, 0], [0, 1], [0.5, 0], [0, 0]], dtype=np.float64),
}


def anchors_of(boxes: NDArray[np.float64], kind: Anchor) -> NDArray[np.float64]:
    """(N, 2): each (N, 4) box's anchor point, x1 y1 x2 y2 in frame pixels."""
    return np.asarray(boxes @ _ANCHOR_OF[kind])


def edges(polygon: tuple[Point, ...]) -> NDArray[np.float64]:
    """(5, E): for each edge from vertex i to the one before it, j: y_i, y_j, then c, 1
    and -dx/dy such that a point's ray to the left crosses the edge's line where
    x - y dx/dy < c (the last two rows a matrix: every point against every edge in one
    product)."""
    p = np.asarray(polygon, dtype=np.float64)
    q = np.roll(p, 1, axis=0)
    dy = q[:, 1] - p[:, 1]
    slope = (q[:, 0] - p[:, 0]) / np.where(dy == 0, 1.0, dy)  # a flat edge never spans a y
    return np.stack([p[:, 1], q[:, 1], p[:, 0] - slope * p[:, 1], np.ones(len(p)), -slope])


def points_in_polygons(points: NDArray[np.float64], polygon_edges: NDArray[np.float64],
                       starts: NDArray[np.intp]) -> NDArray[np.bool_]:
    """(N, Z): which of the (N, 2) points lie in each polygon, by the even-odd rule (a
    point exactly on an edge may fall either side); the polygons' edges side by side,
    `starts` where each polygon's begin (`zone_edges`): one pass, not one per zone."""
    y = points[:, 1:]
    yi, yj, c = polygon_edges[:3, None, :]
    crossing = ((yi > y) != (yj > y)) & (points @ polygon_edges[3:] < c)
    return np.asarray(np.logical_xor.reduceat(crossing, starts, axis=1))


def zone_edges(zones: tuple[Zone, ...], frame_size: tuple[int, int]
               ) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """The zones' edges side by side and where each zone's begin, for `points_in_polygons`
    (per frame size: the engine keeps them)."""
    parts = [edges(z.scaled(frame_size)) for z in zones]
    starts = np.cumsum([0] + [p.shape[1] for p in parts[:-1]]).astype(np.intp)
    return np.concatenate(parts, axis=1), starts


@dataclass(frozen=True, slots=True)
class LineSet:
    """Lines in frame pixels, for `line_crossings` (per frame size: the engine keeps one).
    A point p's side of a -> b is (b - a) x (p - a) = p @ normal + offset: > 0 right of
    it as seen on the image (y down), < 0 left, 0 on it."""

    ends: NDArray[np.float64]  # (L, 4): ax ay bx by
    normal: NDArray[np.float64]  # (2, L)
    offset: NDArray[np.float64]  # (L,)

    @classmethod
    def of(cls, lines: tuple[Line, ...], frame_size: tuple[int, int]) -> LineSet:
        h, w = frame_size
        ends = np.array([(ln.a[0] * w, ln.a[1] * h, ln.b[0] * w, ln.b[1] * h) if ln.normalized
                         else (*ln.a, *ln.b) for ln in lines], dtype=np.float64).reshape(-1, 4)
        ax, ay, bx, by = ends.T
        return cls(ends, np.stack([ay - by, bx - ax]), (by - ay) * ax - (bx - ax) * ay)


def line_crossings(lines: LineSet, before: NDArray[np.float64], after: NDArray[np.float64]
                   ) -> NDArray[np.int8]:
    """(N, L): which way each anchor's step from `before` to `after` ((N, 2) each) crossed
    each line: +1 "in", -1 "out", 0 none. On a line counts as its left, so a step onto
    it and one off it make one crossing; the step must cross the segment itself, not the
    line's extension. Every point against every line in a few calls; the segment test
    only for the steps that changed side (few: most objects are nowhere near a line)."""
    right0 = before @ lines.normal + lines.offset > 0
    right1 = after @ lines.normal + lines.offset > 0
    out = np.zeros(right0.shape, dtype=np.int8)
    steps, which = np.nonzero(right0 != right1)
    if len(steps):
        ax, ay, bx, by = lines.ends[which].T
        p, d = before[steps], after[steps] - before[steps]
        # The step's own line must separate the segment's ends.
        sa = d[:, 0] * (ay - p[:, 1]) - d[:, 1] * (ax - p[:, 0])
        sb = d[:, 0] * (by - p[:, 1]) - d[:, 1] * (bx - p[:, 0])
        hit = (sa > 0) != (sb > 0)
        out[steps[hit], which[hit]] = np.where(right1[steps[hit], which[hit]], 1, -1)
    return out


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
        """(N,): `line_crossings` for this line alone."""
        return line_crossings(LineSet.of((self,), frame_size), before, after)[:, 0]
