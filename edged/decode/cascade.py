"""A cascade's pure parts: which detections a classifier looks at, where, and
attaching its answers (issue 17). The classifier itself runs in the worker
(`edged.service.cascade` feeds it)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from edged.decode.results import Classification, Detection


@dataclass(frozen=True, slots=True)
class CropRule:
    """Which detections are classified, and how much context each crop keeps."""

    min_score: float = 0.5
    labels: frozenset[str] = frozenset()  # empty: every label
    max_crops: int = 3
    padding: float = 0.1  # of the box's width and height, on every side


def crops_to_classify(detections: Sequence[Detection], frame_wh: tuple[int, int],
                      rule: CropRule, aspect: float = 1.0
                      ) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(index into `detections`, crop x1, y1, x2, y2 in whole frame pixels) for at most
    `max_crops` detections, the highest scoring first. Each box is widened or heightened
    about its centre to `aspect` (the classifier input's width / height, so resizing
    does not distort the object), grown by `padding` on every side, rounded outwards
    and clipped to the frame. A box with no pixel inside the frame is skipped."""
    width, height = frame_wh
    chosen = sorted((i for i, d in enumerate(detections) if d.score >= rule.min_score
                     and (not rule.labels or (d.label or str(d.label_id)) in rule.labels)),
                    key=lambda i: -detections[i].score)
    crops: list[tuple[int, tuple[int, int, int, int]]] = []
    for i in chosen:
        if len(crops) == rule.max_crops:
            break
        x1, y1, x2, y2 = detections[i].box
        w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        w, h = max(w, h * aspect), max(h, w / aspect)
        half_w, half_h = w * (0.5 + rule.padding), h * (0.5 + rule.padding)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        box = (max(0, math.floor(cx - half_w)), max(0, math.floor(cy - half_h)),
               min(width, math.ceil(cx + half_w)), min(height, math.ceil(cy + half_h)))
        if box[2] > box[0] and box[3] > box[1]:
            crops.append((i, box))
    return crops


def attach(detections: Sequence[Detection],
           classified: Mapping[int, tuple[Classification, ...]]) -> tuple[Detection, ...]:
    """`detections` with each classified one's classes attached, in the same order."""
    return tuple(replace(d, classes=classified[i]) if i in classified else d
                 for i, d in enumerate(detections))
