"""Pure decoders: model outputs (arrays + `TensorInfo`) -> small immutable results.

Select one with `decode_kind(configured, outputs)` (`auto` infers it from
output names and shapes and says why), then call `decode(...)` per frame.
Every result is in FRAME pixel coordinates and has `to_json()`.

Sizes passed as `input_wh` are (WIDTH, HEIGHT) of the model input, named so
because `edged.preprocess.Geometry.input_size` is (height, width).
"""

from edged.decode.classification import class_scores, decode_classification, top_classes
from edged.decode.detection import DetectionSettings, decode_ssd, ssd_outputs
from edged.decode.dispatch import (
    DECODERS,
    Decoded,
    DecoderKind,
    DecodeSettings,
    check_kind,
    decode,
    decode_kind,
    decoded_json,
    infer_kind,
    prepare_labels,
    ssd_names_for,
)
from edged.decode.labels import Labels, LabelsError, load_labels, parse_labels
from edged.decode.pose import COCO_KEYPOINTS, decode_pose
from edged.decode.results import (
    MASK_ENCODING,
    ClassFilter,
    ClassFraction,
    Classification,
    DecodeError,
    Detection,
    FrameMapping,
    Keypoint,
    Pose,
    SegmentationMask,
    SegmentationSummary,
)
from edged.decode.segmentation import summarize_segmentation
from edged.decode.yolo import decode_yolo, nms, quantized_threshold

__all__ = [
    "COCO_KEYPOINTS",
    "DECODERS",
    "MASK_ENCODING",
    "ClassFilter",
    "ClassFraction",
    "Classification",
    "DecodeError",
    "DecodeSettings",
    "Decoded",
    "DecoderKind",
    "Detection",
    "DetectionSettings",
    "FrameMapping",
    "Keypoint",
    "Labels",
    "LabelsError",
    "Pose",
    "SegmentationMask",
    "SegmentationSummary",
    "check_kind",
    "class_scores",
    "decode",
    "decode_classification",
    "decode_kind",
    "decode_pose",
    "decode_ssd",
    "decode_yolo",
    "decoded_json",
    "infer_kind",
    "load_labels",
    "nms",
    "parse_labels",
    "prepare_labels",
    "quantized_threshold",
    "ssd_names_for",
    "ssd_outputs",
    "summarize_segmentation",
    "top_classes",
]
