"""Object detection: settings, the SSD post-process head, and the shared finishing step.

The SSD head (`TFLite_Detection_PostProcess`) already ran NMS inside the
model: four float outputs, boxes [1, N, 4] (ymin, xmin, ymax, xmax normalised
to the model input), classes [1, N], scores [1, N], count [1]. Its outputs are
told apart by NAME, then checked by shape; classes and scores have the same
shape and plausible values either way, so they are never guessed from values.
Raw YOLO heads are in `edged.decode.yolo`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edged.decode.labels import Labels
from edged.decode.results import (
    ClassFilter,
    DecodeError,
    Detection,
    FrameMapping,
    real_values,
    score_threshold,
)
from edged.numerics.tensors import TensorInfo

SSD_NAME = re.compile(r"TFLite_Detection_PostProcess(?::(\d+))?$")
# TFLite_Detection_PostProcess's outputs, in the order the op writes them (its
# kernel's fixed output list; the tensor names are whatever the converter chose).
SSD_ROLES = ("boxes", "classes", "scores", "count")


def ssd_roles_in_op_order(op_outputs: Sequence[int]) -> dict[str, int]:
    """Role -> tensor index, from the op's outputs in op order (the model file's
    `ssd_outputs`); empty when the model has no such op."""
    if len(op_outputs) != len(SSD_ROLES):
        return {}
    return dict(zip(SSD_ROLES, op_outputs, strict=True))


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    """Field-tunable detection knobs; `min_box_area` is in frame pixels squared."""

    min_score: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    max_candidates: int = 1000  # best-scoring anchors (any class) considered at all
    min_box_area: float = 0.0
    classes: ClassFilter = field(default_factory=ClassFilter)

    def __post_init__(self) -> None:
        checks = (("min_score", self.min_score, math.isfinite(self.min_score)),
                  ("iou_threshold", self.iou_threshold, 0.0 <= self.iou_threshold <= 1.0),
                  ("max_detections", self.max_detections, self.max_detections >= 1),
                  ("max_candidates", self.max_candidates, self.max_candidates >= 1),
                  ("min_box_area", self.min_box_area,
                   math.isfinite(self.min_box_area) and self.min_box_area >= 0.0))
        for name, value, ok in checks:
            if not ok:
                raise DecodeError(f"detection setting {name}: invalid value {value!r}")


def checked_wh(input_wh: tuple[int, int]) -> tuple[float, float]:
    w, h = input_wh
    if w <= 0 or h <= 0:
        raise DecodeError(f"model input size must be positive, got {w}x{h}")
    return float(w), float(h)


def finish_detections(boxes: NDArray[np.float64], class_ids: NDArray[Any], scores: NDArray[Any],
                      *, geometry: FrameMapping, settings: DetectionSettings,
                      labels: Labels | None) -> tuple[Detection, ...]:
    """Model-pixel boxes (best first) -> frame-pixel Detections after the area filter."""
    out: list[Detection] = []
    for box, class_id, score in zip(boxes.tolist(), class_ids.tolist(), scores.tolist(),
                                    strict=True):
        frame_box = tuple(float(v) for v in geometry.box_to_frame(*box))
        if not all(math.isfinite(v) for v in frame_box):
            continue  # a NaN box from a broken model locates nothing
        det = Detection(int(class_id), labels.get(int(class_id)) if labels else None,
                        float(score), (frame_box[0], frame_box[1], frame_box[2], frame_box[3]))
        if det.area < settings.min_box_area:
            continue
        out.append(det)
        if len(out) == settings.max_detections:
            break
    return tuple(out)


def _ssd_shape_ok(role: str, shape: tuple[int, ...]) -> bool:
    if role == "boxes":
        return len(shape) == 3 and shape[0] == 1 and shape[2] == 4
    if role == "count":
        return shape in ((1,), ())
    return len(shape) == 2 and shape[0] == 1


def _ssd_by_shape_is_plausible(infos: Sequence[TensorInfo]) -> bool:
    shapes = sorted((len(i.shape), i.shape[-1] if i.shape else 0) for i in infos)
    return len(infos) == 4 and [r for r, _ in shapes] in ([1, 2, 2, 3], [0, 2, 2, 3])


def ssd_outputs(infos: Sequence[TensorInfo], names: Mapping[str, str | int] | None = None
                ) -> dict[str, int]:
    """Role ("boxes", "classes", "scores", "count") -> position in `infos`.

    `names` maps each role to a tensor name or tensor index, for models whose
    outputs are not named `TFLite_Detection_PostProcess[:1|:2|:3]` (a TF2
    export names them `StatefulPartitionedCall:N` in an order the converter
    chose; the custom op's own output list in the model file says which is which).
    """
    roles: dict[str, int] = {}
    if names:
        by_key: dict[str | int, int] = {}
        for pos, info in enumerate(infos):
            by_key[info.name] = pos
            by_key[info.index] = pos
        for role in SSD_ROLES:
            if role not in names:
                raise DecodeError(f"SSD output names: no tensor given for {role!r}")
            if names[role] not in by_key:
                known = ", ".join(sorted(i.name for i in infos))
                raise DecodeError(f"SSD output names: {role} tensor {names[role]!r} is not an "
                                  f"output of the model ({known})")
            roles[role] = by_key[names[role]]
        if len(set(roles.values())) != 4:
            raise DecodeError("SSD output names: the four roles must name four different "
                              "tensors")
    else:
        for pos, info in enumerate(infos):
            match = SSD_NAME.search(info.name)
            if match is None:
                continue
            suffix = int(match.group(1) or 0)
            if suffix < len(SSD_ROLES):
                roles[SSD_ROLES[suffix]] = pos
        if len(roles) != 4:
            if _ssd_by_shape_is_plausible(infos):
                raise DecodeError(
                    "SSD-like outputs " + ", ".join(repr(i.name) for i in infos)
                    + " are not named TFLite_Detection_PostProcess[:1|:2|:3] and classes and "
                      "scores have the same shape; name the SSD outputs in the config")
            missing = [r for r in SSD_ROLES if r not in roles]
            raise DecodeError(f"no SSD post-process output for {', '.join(missing)} (expected "
                              f"4 outputs named TFLite_Detection_PostProcess[:1|:2|:3])")
    for role, pos in roles.items():
        info = infos[pos]
        if not _ssd_shape_ok(role, info.shape):
            want = {"boxes": "[1, N, 4]", "count": "[1]"}.get(role, "[1, N]")
            raise DecodeError(f"SSD {role} output {info.name!r}: shape {list(info.shape)} "
                              f"is not {want}")
    n = infos[roles["boxes"]].shape[1]
    for role in ("classes", "scores"):
        if infos[roles[role]].shape[1] != n:
            raise DecodeError(f"SSD {role} output {infos[roles[role]].name!r}: "
                              f"{infos[roles[role]].shape[1]} entries but {n} boxes")
    return roles


def decode_ssd(values: Sequence[ArrayLike], infos: Sequence[TensorInfo], *,
               input_wh: tuple[int, int], geometry: FrameMapping,
               settings: DetectionSettings | None = None, labels: Labels | None = None,
               names: Mapping[str, str | int] | None = None) -> tuple[Detection, ...]:
    """Detections from the four SSD post-process outputs (`values` in `infos` order).

    Only the first `count` entries are read: the rest are stale padding.
    """
    s = settings or DetectionSettings()
    roles = ssd_outputs(infos, names)
    arr = {role: real_values(values[pos], infos[pos]) for role, pos in roles.items()}
    n = infos[roles["boxes"]].shape[1]
    count_value = float(np.asarray(arr["count"]).reshape(-1)[0])
    count = min(max(int(count_value), 0), n) if math.isfinite(count_value) else 0
    # Entries past `count` are stale memory (NaN, huge values): never even convert them.
    boxes = np.asarray(arr["boxes"]).reshape(n, 4)[:count].astype(np.float64)
    class_ids = np.rint(np.asarray(arr["classes"]).reshape(n)[:count].astype(np.float64))
    scores = np.asarray(arr["scores"]).reshape(n)[:count]
    keep = scores >= score_threshold(s.min_score, scores.dtype)
    if not s.classes.is_open:
        keep &= np.array([s.classes.allows(int(c), labels.get(int(c)) if labels else None)
                          for c in class_ids], dtype=bool)
    boxes, class_ids, scores = boxes[keep], class_ids[keep].astype(np.int64), scores[keep]
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    in_w, in_h = checked_wh(input_wh)
    ymin, xmin, ymax, xmax = (boxes[order, k] for k in range(4))
    model_boxes = np.stack([xmin * in_w, ymin * in_h, xmax * in_w, ymax * in_h], axis=1)
    return finish_detections(model_boxes, class_ids[order], scores[order], geometry=geometry,
                             settings=s, labels=labels)
