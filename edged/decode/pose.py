"""Single-pose keypoint heads (MoveNet): [1, 1, 17, 3] of (y, x, score).

y and x are normalised to the MODEL INPUT (0..1 across its height/width), so
they are scaled to model-input pixels and then mapped to the frame, which
undoes a letterbox or crop exactly.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from edged.decode.detection import checked_wh
from edged.decode.results import DecodeError, FrameMapping, Keypoint, Pose, real_values
from edged.numerics.tensors import TensorInfo

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)


def pose_keypoint_count(info: TensorInfo) -> int:
    """Keypoints of a single-pose head [1, 1, K, 3] (or [1, K, 3]); DecodeError otherwise."""
    shape = info.shape
    if (len(shape) == 4 and shape[:2] == (1, 1) and shape[3] == 3) or (
            len(shape) == 3 and shape[0] == 1 and shape[2] == 3 and shape[1] > 1):
        return shape[-2]
    raise DecodeError(f"output {info.name!r}: shape {list(shape)} is not a single-pose "
                      f"keypoint head [1, 1, K, 3] (y, x, score)")


def decode_pose(values: ArrayLike, info: TensorInfo, *, input_wh: tuple[int, int],
                geometry: FrameMapping, names: tuple[str, ...] | None = None) -> Pose:
    """All keypoints, in frame pixels, with the model's scores; pose score = their mean."""
    k = pose_keypoint_count(info)
    if names is None:
        names = COCO_KEYPOINTS if k == len(COCO_KEYPOINTS) else tuple(
            f"keypoint_{i}" for i in range(k))
    if len(names) != k:
        raise DecodeError(f"output {info.name!r}: {k} keypoints but {len(names)} names")
    yxs = np.asarray(real_values(values, info), dtype=np.float64).reshape(k, 3)
    in_w, in_h = checked_wh(input_wh)
    keypoints = []
    for name, (y, x, score) in zip(names, yxs.tolist(), strict=True):
        fx, fy = geometry.to_frame(x * in_w, y * in_h)
        keypoints.append(Keypoint(name, float(fx), float(fy), float(score)))
    return Pose(float(yxs[:, 2].mean()) if k else 0.0, tuple(keypoints))
