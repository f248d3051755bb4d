"""Detections associated across frames into tracks with stable ids.

ByteTrack's idea without its Kalman filter: confident detections are matched
to tracks first, then the low-score ones may only keep an existing track
alive (a person half-hidden behind a car scores 0.2 for a few frames; that
should not end their track, nor start a new one). A track's box is predicted
one step ahead with a smoothed constant velocity, enough at the 5-30 frames/s
a Pi runs at. Matching is greedy by IoU within a label (no Hungarian
assignment, so no scipy): with the few dozen objects a camera sees it picks
the same pairs in practice, and costs tens of microseconds.

The tracks are the rows of one float table, updated by whole-column array
operations: a frame costs a fixed few dozen numpy calls whatever its objects,
and no Python object per track is made or read (that conversion, not the
arithmetic, was most of a frame's cost).

Why not a packaged tracker: norfair pulls in scipy and filterpy, the ByteTrack
packages torch or lap/cython_bbox; each is more than edged's whole runtime
dependency set on a Pi, for ~100 lines of arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
from numpy.typing import NDArray

from edged.decode.results import Detection

Box = tuple[float, float, float, float]
FloatArray = NDArray[np.float64]
Rows = NDArray[np.intp]

# The table's columns: first a detection's own (`detections_array`), so a match copies
# them in one slice; then BEFORE, the box at the sighting before the last one (a line
# crossing is the step between them), and VELOCITY, each box edge's in px/frame (the box
# one step ahead is BOX + VELOCITY, with no per-frame reshaping).
BOX, SCORE, LABEL, DETECTION = slice(0, 4), 4, 5, slice(0, 6)
BEFORE, VELOCITY = slice(6, 10), slice(10, 14)
BEST, FIRST, LAST, HITS, MISSED, ID = range(14, 20)  # LAST, HITS, MISSED side by side
COLUMNS = 20
_NONE: Rows = np.zeros(0, np.intp)
_KEEP_HITS = np.array([0.0, 1.0, 0.0])  # LAST, HITS, MISSED


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    high_score: float = 0.5  # detections at or above start tracks and match first
    low_score: float = 0.1  # below high: may keep a track alive, never start one
    match_iou: float = 0.3  # predicted box vs detection, to be the same object
    max_age_s: float = 2.0  # unmatched this long, a track is dropped (events: their hold_s)


def detections_array(detections: Sequence[Detection]) -> FloatArray:
    """(D, 6): x1 y1 x2 y2 score label_id, one row per detection."""
    # Concatenated, not unpacked: measurably faster, and this runs on every frame.
    flat = chain.from_iterable([d.box + (d.score, d.label_id) for d in detections])  # noqa: RUF005
    return np.fromiter(flat, np.float64, 6 * len(detections)).reshape(-1, 6)


def overlapping(a: FloatArray, b: FloatArray) -> tuple[Rows, Rows]:
    """(rows, columns): the pairs of a box in `a` (N, 4) and one in `b` (M, 4) whose
    areas overlap, x1 y1 x2 y2. Four comparisons of every pair: the cheapest all-pairs
    test, after which IoU is computed for the few pairs it leaves."""
    ax1, ay1, ax2, ay2 = np.ascontiguousarray(a.T)
    bx1, by1, bx2, by2 = np.ascontiguousarray(b.T)
    hit = np.less.outer(ax1, bx2)
    hit &= np.greater.outer(ax2, bx1)
    hit &= np.less.outer(ay1, by2)
    hit &= np.greater.outer(ay2, by1)
    rows, cols = np.divmod(hit.ravel().nonzero()[0], len(b))
    return rows, cols


def pair_iou(a: FloatArray, b: FloatArray, union: FloatArray) -> FloatArray:
    """(P,): the IoU of each box in `a` (P, 4) with the box in the same row of `b`, boxes
    known to overlap; `union`: the sum of their areas (the areas are taken once per box
    rather than once per pair). Column by column: numpy's per-call cost is the whole
    cost at these sizes, and 1-D calls are its cheapest."""
    inter = ((np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]))
             * (np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])))
    # + a speck: two empty boxes can overlap (a | and a - crossing), with a union of 0.
    return np.asarray(inter / (union - inter + 1e-12))


def areas(boxes: FloatArray) -> FloatArray:
    return np.asarray((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def greedy_pairs(rows: Rows, cols: Rows, key: FloatArray) -> tuple[Rows, Rows]:
    """The pairs kept, highest key first, each row and column used once; in the order
    given (`overlapping`'s: by row)."""
    if len(rows) < 2 or (len(set(rows.tolist())) == len(rows)
                         and len(set(cols.tolist())) == len(cols)):
        # No track or detection has a rival (objects apart, the usual case): all pairs.
        return rows, cols
    order = np.argsort(-key, kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    keep = []
    for k, r, c in zip(order.tolist(), rows[order].tolist(), cols[order].tolist(),
                       strict=True):
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            keep.append(k)
    keep.sort()
    return rows[keep], cols[keep]


class Tracker:
    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        self.table: FloatArray = np.zeros((0, COLUMNS))
        self.names: dict[int, str | None] = {}  # label_id -> label, as the detections say
        self._next_id = 1

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> list[int]:
        return [int(i) for i in self.table[:, ID]]

    def update(self, detections: Sequence[Detection], t: float) -> Rows:
        """Match this frame's detections; returns the rows of the tracks seen in it, new
        ones (appended at the end) included. Rows are stable until `prune`."""
        if not detections:  # the empty frame, the commonest: no arrays made
            if len(self.table):
                self.table[:, MISSED] += 1
            return _NONE
        found = self._array(detections)
        s, table = self.settings, self.table
        if len(found) and found[:, SCORE].min() < s.low_score:  # decoders seldom leave any
            found = found[found[:, SCORE] >= s.low_score]
        strong = found[:, SCORE] >= s.high_score
        rows, cols = self._match(found, strong)
        if len(rows):
            # Gathered, updated as one small block, scattered back: a few calls, whatever
            # the count. Every track seen (a steady scene): the table itself, as the rows
            # come sorted and once each.
            whole = len(rows) == len(table)
            block, f = table if whole else table[rows], found[cols]
            # Smoothed, so one jittery box does not throw the prediction off.
            block[:, VELOCITY] += (f[:, BOX] - block[:, BOX]) / (block[:, MISSED, None] + 1)
            block[:, VELOCITY] /= 2
            block[:, BEFORE] = block[:, BOX]
            block[:, DETECTION] = f  # box, score (and the label, the same)
            np.maximum(block[:, BEST], f[:, SCORE], out=block[:, BEST])
            seen = block[:, LAST:MISSED + 1]  # last seen now, one more hit, missed -1 (+1
            seen *= _KEEP_HITS  # below, with the tracks not seen): two calls for three
            seen += (t, 1.0, -1.0)
            if not whole:
                table[rows] = block
        table[:, MISSED] += 1
        strong[cols] = False  # the strong detections left start tracks
        fresh = found[strong]
        if not len(fresh):
            return rows
        new = np.zeros((len(fresh), COLUMNS))
        new[:, DETECTION] = fresh
        new[:, BEFORE] = fresh[:, BOX]
        new[:, BEST] = fresh[:, SCORE]
        new[:, FIRST] = new[:, LAST] = t
        new[:, HITS] = 1
        new[:, ID] = np.arange(self._next_id, self._next_id + len(fresh))
        self._next_id += len(fresh)
        self.table = np.concatenate([table, new])
        return np.concatenate([rows, np.arange(len(table), len(self.table))])

    def prune(self, t: float) -> Rows | None:
        """Drop the tracks unmatched for longer than max_age_s; the rows kept (for tables
        kept beside this one), or None when none was dropped."""
        last = self.table[:, LAST]
        if not len(last) or t - last.min() <= self.settings.max_age_s:
            return None
        alive = t - last <= self.settings.max_age_s
        keep = alive.nonzero()[0]
        self.table = self.table[keep]
        return keep

    def _array(self, detections: Sequence[Detection]) -> FloatArray:
        for d in detections:
            if d.label_id not in self.names:
                self.names[d.label_id] = d.label
        return detections_array(detections)

    def _match(self, found: FloatArray, strong: NDArray[np.bool_]) -> tuple[Rows, Rows]:
        """Strong detections first, then weak ones onto the tracks left: one greedy pass
        whose key ranks every strong pair above every weak one."""
        table, s = self.table, self.settings
        if not len(table) or not len(found):
            return _NONE, _NONE
        # Each track one step ahead: its velocity times the frames since it was seen.
        ahead = table[:, BOX] + table[:, VELOCITY] * (table[:, MISSED, None] + 1)
        rows, cols = overlapping(ahead, found[:, BOX])
        f = found[cols]
        iou = pair_iou(ahead[rows], f, areas(ahead)[rows] + areas(found)[cols])
        fit = (iou >= s.match_iou) & (table[rows, LABEL] == f[:, LABEL])
        rows, cols = rows[fit], cols[fit]
        return greedy_pairs(rows, cols, iou[fit] + strong[cols])
