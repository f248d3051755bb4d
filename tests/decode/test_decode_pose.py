"""Pose decoding: pure mapping, then the real MoveNet on squat.bmp."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from decode_helpers import Letterbox, Stretch, letterbox_to, read_rgb, run_model, stretch_to

from edged.decode import COCO_KEYPOINTS, DecodeError, decode_pose
from edged.numerics.tensors import TensorInfo

INFO = TensorInfo(0, "StatefulPartitionedCall:0", (1, 1, 17, 3), np.dtype(np.float32))


def test_keypoints_are_named_and_mapped_to_frame_pixels() -> None:
    out = np.zeros((1, 1, 17, 3), np.float32)
    out[0, 0, :, 0] = np.linspace(0.0, 1.0, 17)  # y
    out[0, 0, :, 1] = 0.5  # x
    out[0, 0, :, 2] = 0.25
    out[0, 0, 0, 2] = 0.75
    pose = decode_pose(out, INFO, input_wh=(192, 192), geometry=Stretch(640, 480, 192, 192))
    assert [k.name for k in pose.keypoints] == list(COCO_KEYPOINTS)
    assert pose.keypoints[0].name == "nose" and pose.keypoints[16].name == "right_ankle"
    assert (pose.keypoints[16].x, pose.keypoints[16].y) == pytest.approx((320.0, 480.0))
    assert pose.keypoints[0].score == 0.75
    assert pose.score == pytest.approx((0.75 + 16 * 0.25) / 17)
    j = pose.to_json()
    assert j["keypoints"][16] == {"name": "right_ankle", "x": 320.0, "y": 480.0, "score": 0.25}


def test_letterbox_is_undone() -> None:
    out = np.zeros((1, 1, 17, 3), np.float32)
    out[0, 0, 0] = (0.5, 0.5, 1.0)  # centre of the input is the centre of the frame
    out[0, 0, 1] = (140 / 640 + 0.001, 0.0, 1.0)  # just below the top bar, at the left edge
    pose = decode_pose(out, INFO, input_wh=(640, 640), geometry=Letterbox(1280, 720, 640, 640))
    assert (pose.keypoints[0].x, pose.keypoints[0].y) == pytest.approx((640.0, 360.0))
    # float32 model output: 1e-4 px.
    assert (pose.keypoints[1].x, pose.keypoints[1].y) == pytest.approx((0.0, 1.28), abs=1e-4)


def test_wrong_shape_is_a_one_line_error() -> None:
    bad = TensorInfo(0, "multipose", (1, 6, 56), np.dtype(np.float32))
    with pytest.raises(DecodeError, match=r"^output 'multipose': shape \[1, 6, 56\] is not a "
                                          r"single-pose keypoint head \[1, 1, K, 3\]"):
        decode_pose(np.zeros((1, 6, 56), np.float32), bad, input_wh=(1, 1),
                    geometry=Stretch(1, 1, 1, 1))


def _reference(path: Path) -> np.ndarray:
    with path.open() as fh:
        return np.array([[float(r["keypoint_x"]), float(r["keypoint_y"])]
                         for r in csv.DictReader(fh)])


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_real_movenet_on_squat(shared_models: Path, resize: str) -> None:
    rgb = read_rgb(shared_models / "squat.bmp")
    h, w = rgb.shape[:2]
    if resize == "stretch":
        pixels, geo = stretch_to(rgb, 192, 192), Stretch(w, h, 192, 192)
    else:
        pixels, geo = letterbox_to(rgb, 192, 192)
    infos, raw = run_model(shared_models / "movenet_single_pose_lightning_ptq.tflite", pixels)
    pose = decode_pose(raw[0], infos[0], input_wh=(192, 192), geometry=geo)
    model = raw[0].reshape(17, 3).astype(np.float64)
    # Exactly the model's float output, moved into frame pixels.
    for kp, (y, x, score) in zip(pose.keypoints, model, strict=True):
        assert (kp.x, kp.y) == pytest.approx(geo.to_frame(x * 192, y * 192), abs=1e-9)
        assert kp.score == score
    # Loosely the published keypoints (its resize differs from ours).
    got = np.array([[k.x / w, k.y / h] for k in pose.keypoints])
    assert np.abs(got - _reference(shared_models / "movenet_single_pose_lightning_ptq_reference"
                                                    ".csv")).max() < 0.06
