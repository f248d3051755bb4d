"""Detections associated across frames into tracks with stable ids.

ByteTrack's idea without its Kalman filter: confident detections are matched
to tracks first, then the low-score ones may only keep an existing track
alive (a person half-hidden behind a car scores 0.2 for a few frames; that
should not end their track, nor start a new one). A track's box is predicted
one step ahead with a smoothed constant velocity, enough at the 5-30 frames/s
a Pi runs at. Matching is greedy by IoU within a label (no Hungarian
assignment, so no scipy): with the few dozen objects a camera sees it picks
the same pairs in practice, and costs tens of microseconds.

Why not a packaged tracker: norfair pulls in scipy and filterpy, the ByteTrack
packages torch or lap/cython_bbox; each is more than edged's whole runtime
dependency set on a Pi, for ~100 lines of arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edged.decode.results import Detection

Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    high_score: float = 0.5  # detections at or above start tracks and match first
    low_score: float = 0.1  # below high: may keep a track alive, never start one
    match_iou: float = 0.3  # predicted box vs detection, to be the same object
    max_age_s: float = 2.0  # unmatched this long, a track is dropped (events: their hold_s)


@dataclass(slots=True, eq=False)
class Track:
    """One object followed across frames (mutable: the tracker updates it in place;
    compared by identity)."""

    id: int
    label_id: int
    label: str | None
    box: Box
    score: float
    best_score: float
    first_seen: float
    last_seen: float
    hits: int = 1
    missed: int = 0
    velocity: tuple[float, float] = (0.0, 0.0)  # box centre, pixels per frame


def iou_matrix(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """IoU of every box in `a` (N, 4) with every box in `b` (M, 4), x1 y1 x2 y2."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_pairs(iou: NDArray[np.float64], same_label: NDArray[np.bool_], floor: float
                 ) -> list[tuple[int, int]]:
    """(row, column) pairs, best IoU first, each row and column used once."""
    scores = np.where(same_label, iou, 0.0)
    rows, cols = np.nonzero(scores >= floor)
    if not len(rows) or (np.bincount(rows).max() == 1 and np.bincount(cols).max() == 1):
        # No track or detection has a rival (objects apart, the usual case): all pairs.
        return list(zip(rows.tolist(), cols.tolist(), strict=True))
    order = np.argsort(-scores[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


class Tracker:
    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, detections: Sequence[Detection], t: float) -> list[Track]:
        """Match this frame's detections; returns the tracks seen in it (new ones included).
        Tracks not seen age by one frame and are dropped `max_age_s` after their last match."""
        s = self.settings
        strong = [d for d in detections if d.score >= s.high_score]
        weak = [d for d in detections if s.low_score <= d.score < s.high_score]
        seen: list[Track] = []
        unmatched = self._match(self.tracks, strong, t, seen)
        if weak:
            self._match([tr for tr in self.tracks if tr.last_seen != t], weak, t, seen)
        kept = []
        for track in self.tracks:  # a track matched now has last_seen == t
            if track.last_seen != t:
                if t - track.last_seen > s.max_age_s:
                    continue
                track.missed += 1
            kept.append(track)
        for det in unmatched:
            track = Track(self._next_id, det.label_id, det.label, det.box, det.score, det.score,
                          t, t)
            self._next_id += 1
            kept.append(track)
            seen.append(track)
        self.tracks = kept
        return seen

    def _match(self, tracks: list[Track], dets: list[Detection], t: float, seen: list[Track]
               ) -> list[Detection]:
        if not tracks or not dets:
            return list(dets)
        # Each track's box one step ahead (its velocity times the frames since it was
        # seen), for all tracks at once.
        state = np.array([(*tr.box, *tr.velocity, tr.missed + 1, tr.label_id) for tr in tracks],
                         dtype=np.float64)
        boxes, velocity, steps, labels_t = state[:, :4], state[:, 4:6], state[:, 6:7], state[:, 7]
        boxes_t = boxes + np.tile(velocity * steps, 2)
        found = np.array([(*d.box, d.label_id) for d in dets], dtype=np.float64)
        boxes_d, labels_d = found[:, :4], found[:, 4]
        pairs = greedy_pairs(iou_matrix(boxes_t, boxes_d), labels_t[:, None] == labels_d[None, :],
                             self.settings.match_iou)
        if not pairs:
            return list(dets)
        rows, cols = (np.array(v) for v in zip(*pairs, strict=True))
        # Velocities, all pairs at once: smoothed, so one jittery box does not throw the
        # prediction off.
        old = (boxes[rows, :2] + boxes[rows, 2:]) / 2
        new = (boxes_d[cols, :2] + boxes_d[cols, 2:]) / 2
        smoothed = (0.5 * velocity[rows] + 0.5 * (new - old) / steps[rows]).tolist()
        for (r, c), (vx, vy) in zip(pairs, smoothed, strict=True):
            # The one per-track step left in Python: inlined, as it runs ~50 times a frame.
            track, det = tracks[r], dets[c]
            track.velocity = (vx, vy)
            track.box, track.score, track.last_seen = det.box, det.score, t
            track.best_score = max(track.best_score, det.score)
            track.hits += 1
            track.missed = 0
            seen.append(track)
        matched = set(cols.tolist())
        return [d for i, d in enumerate(dets) if i not in matched]
