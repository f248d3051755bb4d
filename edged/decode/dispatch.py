"""Choosing a decoder (`output.decoder`, with `auto`) and running it on one frame's outputs.

`auto` looks only at output names, shapes and dtypes, which are fixed when the
model loads; values change per frame and would let the choice flip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from numpy.typing import ArrayLike

from edged.decode.classification import decode_classification, num_classes
from edged.decode.detection import (
    SSD_NAME,
    DetectionSettings,
    decode_ssd,
    ssd_outputs,
    ssd_roles_in_op_order,
)
from edged.decode.labels import Labels
from edged.decode.pose import decode_pose, pose_keypoint_count
from edged.decode.results import (
    ClassFilter,
    Classification,
    DecodeError,
    Detection,
    FrameMapping,
    Pose,
    SegmentationSummary,
)
from edged.decode.segmentation import segmentation_layout, summarize_segmentation
from edged.decode.yolo import BoxUnits, YoloLayout, decode_yolo, yolo_layout
from edged.numerics.tensors import TensorInfo

DecoderKind = Literal["none", "classification", "detection", "pose", "segmentation"]
DECODERS: tuple[str, ...] = (*get_args(DecoderKind), "auto")
Decoded = (tuple[Classification, ...] | tuple[Detection, ...] | Pose | SegmentationSummary
           | None)


def _describe(outputs: Sequence[TensorInfo]) -> str:
    return ", ".join(f"{o.name!r} {list(o.shape)} {o.dtype}" for o in outputs)


def _is_ssd(outputs: Sequence[TensorInfo]) -> bool:
    return any(SSD_NAME.search(o.name) for o in outputs)


def _yolo_reason(o: TensorInfo) -> str | None:
    """Why `o` looks like a YOLO head, or None when it does not."""
    if len(o.shape) != 3 or o.shape[0] != 1 or (o.dtype.kind in "iu" and not o.is_quantized):
        return None
    small, large = sorted(o.shape[1:])
    # Candidates far outnumber 4 + classes in every YOLO export; a float image-like
    # map [1, H, W] does not have that shape.
    if small < 5 or large < 4 * small:
        return None
    first, classes, n = yolo_layout(o)
    layout = "[1, 4+C, N]" if first else "[1, N, 4+C]"
    return (f"one output {o.name!r} {list(o.shape)}: YOLO-style head {layout}, {n} candidates "
            f"x (4 box values + {classes} classes)")


def infer_kind(outputs: Sequence[TensorInfo], ssd_names: Mapping[str, str | int] | None = None
               ) -> tuple[DecoderKind, str]:
    """The decoder for these outputs and why, or a one-line DecodeError saying why not.

    `outputs` must be described after `allocate_tensors()`: before it the SSD
    post-process outputs report shape []. `ssd_names` are the SSD roles when
    the model file (or the config) says which tensor is which.
    """
    if not outputs:
        raise DecodeError("decoder auto: the model has no outputs")
    if ssd_names:
        try:
            roles = ssd_outputs(outputs, ssd_names)
        except DecodeError as exc:
            raise DecodeError(f"decoder auto: {exc}") from None
        named = ", ".join(f"{role} {outputs[pos].name!r}" for role, pos in roles.items())
        return "detection", f"SSD post-process head ({named})"
    if _is_ssd(outputs) or len(outputs) == 4:
        try:
            ssd_outputs(outputs)
        except DecodeError as exc:
            if _is_ssd(outputs) or "name the SSD outputs" in str(exc):
                raise DecodeError(f"decoder auto: {exc}") from None
        else:
            return "detection", ("4 outputs named TFLite_Detection_PostProcess[:1|:2|:3]: "
                                 "SSD post-process head (boxes, classes, scores, count)")
    if len(outputs) > 1:
        raise DecodeError(f"decoder auto: {len(outputs)} outputs ({_describe(outputs)}) are not "
                          f"a layout edged recognises; set output.decoder")
    o = outputs[0]
    if len(o.shape) == 4 and o.shape[:2] == (1, 1) and o.shape[3] == 3:
        k = pose_keypoint_count(o)
        return "pose", f"one output {o.name!r} {list(o.shape)}: single-pose head, {k} keypoints"
    try:
        layout = segmentation_layout(o)
    except DecodeError:
        pass
    else:
        what = "ArgMax class map" if layout == "argmax" else "per-class score map"
        return "segmentation", f"one output {o.name!r} {list(o.shape)} {o.dtype}: {what}"
    dims = [d for d in o.shape if d != 1]
    if len(dims) == 1 and (o.dtype.kind == "f" or o.is_quantized):
        return "classification", (f"one output {o.name!r} {list(o.shape)}: "
                                  f"a score for each of {dims[0]} classes")
    reason = _yolo_reason(o)
    if reason is not None:
        return "detection", reason
    raise DecodeError(f"decoder auto: output {o.name!r} {list(o.shape)} {o.dtype} is not a "
                      f"classification, detection, pose or segmentation layout; "
                      f"set output.decoder")


def check_kind(kind: DecoderKind, outputs: Sequence[TensorInfo],
               ssd_names: Mapping[str, str | int] | None = None) -> None:
    """A one-line DecodeError when the configured decoder cannot read these outputs."""
    try:
        if kind == "classification":
            _single(outputs, kind)
            num_classes(outputs[0])
        elif kind == "detection":
            if len(outputs) == 4 or _is_ssd(outputs) or ssd_names:
                ssd_outputs(outputs, ssd_names)
            else:
                yolo_layout(_single(outputs, kind))
        elif kind == "pose":
            pose_keypoint_count(_single(outputs, kind))
        elif kind == "segmentation":
            segmentation_layout(_single(outputs, kind))
    except DecodeError as exc:
        raise DecodeError(f"decoder {kind}: {exc}") from None


def _single(outputs: Sequence[TensorInfo], kind: str) -> TensorInfo:
    if len(outputs) != 1:
        raise DecodeError(f"wants one output, the model has {len(outputs)} "
                          f"({_describe(outputs)})")
    return outputs[0]


def ssd_names_for(configured: Mapping[str, str], from_file: Sequence[int]
                  ) -> tuple[dict[str, str | int] | None, str]:
    """The SSD roles to decode with and where they came from; the config wins.
    `from_file`: the post-process op's output tensors in op order (modelfile)."""
    if configured:
        return dict(configured), "roles from output.ssd_outputs"
    if from_file:
        return (dict(ssd_roles_in_op_order(from_file)),
                "roles from the model file's TFLite_Detection_PostProcess op")
    return None, ""


def decode_kind(configured: str, outputs: Sequence[TensorInfo],
                ssd_names: Mapping[str, str | int] | None = None) -> tuple[DecoderKind, str]:
    """Resolve `output.decoder` for a model: (kind, reason to log)."""
    if configured == "auto":
        return infer_kind(outputs, ssd_names)
    if configured not in DECODERS:
        raise DecodeError(f"output.decoder: unknown decoder {configured!r} "
                          f"(choose one of {', '.join(DECODERS)})")
    kind: DecoderKind = configured  # type: ignore[assignment]
    check_kind(kind, outputs, ssd_names)
    return kind, "configured"


@dataclass(frozen=True, slots=True)
class DecodeSettings:
    """Every field-tunable decoder knob (hot-reloadable: a new value per reload)."""

    min_score: float = 0.25
    top_k: int = 5
    iou_threshold: float = 0.45
    max_detections: int = 100
    min_box_area: float = 0.0
    classes: ClassFilter = field(default_factory=ClassFilter)
    mask_max_side: int | None = None
    yolo_layout: YoloLayout = "auto"
    box_units: BoxUnits = "auto"
    ssd_names: Mapping[str, str | int] | None = None

    def detection(self) -> DetectionSettings:
        return DetectionSettings(min_score=self.min_score, iou_threshold=self.iou_threshold,
                                 max_detections=self.max_detections,
                                 min_box_area=self.min_box_area, classes=self.classes)


def prepare_labels(kind: DecoderKind, labels: Labels, outputs: Sequence[TensorInfo]) -> Labels:
    """Labels aligned to the model's class count where the outputs reveal it (see `notes`)."""
    if kind == "classification":
        return labels.align(num_classes(outputs[0]))
    if kind == "detection" and len(outputs) == 1:
        return labels.align(yolo_layout(outputs[0])[1])
    if kind == "segmentation" and segmentation_layout(outputs[0]) == "scores":
        return labels.align(outputs[0].shape[3])
    return labels  # SSD class ids and ArgMax maps do not say how many classes exist


def decode(kind: DecoderKind, values: Sequence[ArrayLike], outputs: Sequence[TensorInfo], *,
           settings: DecodeSettings, input_wh: tuple[int, int], geometry: FrameMapping,
           labels: Labels | None = None, content_box: tuple[float, float, float, float] | None
           = None) -> Decoded:
    """One frame's outputs (raw or dequantized, in `outputs` order) -> decoded result."""
    s = settings
    if kind == "none":
        return None
    if kind == "classification":
        return decode_classification(values[0], outputs[0], top_k=s.top_k,
                                     min_score=s.min_score, labels=labels, classes=s.classes)
    if kind == "detection":
        if len(outputs) == 1:
            return decode_yolo(values[0], outputs[0], input_wh=input_wh, geometry=geometry,
                               settings=s.detection(), labels=labels, layout=s.yolo_layout,
                               box_units=s.box_units)
        return decode_ssd(values, outputs, input_wh=input_wh, geometry=geometry,
                          settings=s.detection(), labels=labels, names=s.ssd_names)
    if kind == "pose":
        return decode_pose(values[0], outputs[0], input_wh=input_wh, geometry=geometry)
    return summarize_segmentation(values[0], outputs[0], labels=labels, content_box=content_box,
                                  input_wh=input_wh, mask_max_side=s.mask_max_side)


def decoded_json(kind: DecoderKind, result: Decoded) -> dict[str, Any] | None:
    """The payload form: {"kind": ..., <kind-specific key>: ...}."""
    if result is None:
        return None
    if isinstance(result, Pose):
        return {"kind": kind, "poses": [result.to_json()]}
    if isinstance(result, SegmentationSummary):
        return {"kind": kind, **result.to_json()}
    key = "classes" if kind == "classification" else "detections"
    return {"kind": kind, key: [r.to_json() for r in result]}
