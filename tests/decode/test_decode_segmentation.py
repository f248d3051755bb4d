"""Segmentation summaries: fractions, letterbox bars, the mask encoding, and real DeepLab."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from decode_helpers import letterbox_to, read_rgb, run_model, stretch_to

from edged.decode import (
    MASK_ENCODING,
    DecodeError,
    Labels,
    SegmentationMask,
    load_labels,
    summarize_segmentation,
)
from edged.numerics.tensors import TensorInfo

ARGMAX = TensorInfo(0, "ArgMax", (1, 4, 6), np.dtype(np.int64))
IDS = np.array([[0, 0, 1, 1, 2, 2],
                [0, 0, 1, 1, 2, 2],
                [0, 0, 0, 0, 2, 2],
                [3, 3, 0, 0, 2, 2]], np.int64)[None]


def test_fractions_largest_first_with_labels() -> None:
    labels = Labels.from_names(["background", "cat", "dog", "person"])
    summary = summarize_segmentation(IDS, ARGMAX, labels=labels)
    assert [(c.label, c.fraction) for c in summary.classes] == [
        ("background", 10 / 24), ("dog", 8 / 24), ("cat", 4 / 24), ("person", 2 / 24)]
    assert summary.mask is None
    only_big = summarize_segmentation(IDS, ARGMAX, min_fraction=0.2)
    assert [c.label_id for c in only_big.classes] == [0, 2]


def test_content_box_leaves_out_letterbox_bars() -> None:
    ids = np.zeros((1, 8, 8), np.int64)
    ids[0, 2:6, :] = 5  # the frame's content rows; rows 0-1 and 6-7 are bars
    info = TensorInfo(0, "ArgMax", (1, 8, 8), np.dtype(np.int64))
    summary = summarize_segmentation(ids, info, content_box=(0, 4, 16, 12), input_wh=(16, 16))
    assert [(c.label_id, c.fraction) for c in summary.classes] == [(5, 1.0)]


def test_mask_is_nearest_downscaled_uint8_row_major_base64() -> None:
    summary = summarize_segmentation(IDS, ARGMAX, mask_max_side=3)
    mask = summary.mask
    assert mask is not None and (mask.width, mask.height) == (3, 2)
    assert mask.to_array().tolist() == [[0, 1, 2], [3, 0, 2]]
    j = summary.to_json()["mask"]
    assert j == {"width": 3, "height": 2, "encoding": MASK_ENCODING,
                 "data": base64.b64encode(bytes([0, 1, 2, 3, 0, 2])).decode()}
    full = summarize_segmentation(IDS, ARGMAX, mask_max_side=100).mask
    assert full is not None and full.to_array().tolist() == IDS[0].tolist()


def test_per_class_scores_quantized_and_float() -> None:
    scores = np.zeros((1, 4, 6, 4), np.float32)
    for c in range(4):
        scores[0, ..., c] = (IDS[0] == c) * 0.9 + 0.05
    f_info = TensorInfo(0, "logits", (1, 4, 6, 4), np.dtype(np.float32))
    q_info = TensorInfo(0, "logits", (1, 4, 6, 4), np.dtype(np.uint8), (1 / 255,), (0,))
    raw = np.round(scores * 255).astype(np.uint8)
    expected = summarize_segmentation(IDS, ARGMAX)
    assert summarize_segmentation(scores, f_info) == expected
    assert summarize_segmentation(raw, q_info) == expected


def test_errors_are_one_line() -> None:
    info = TensorInfo(0, "x", (1, 10), np.dtype(np.float32))
    with pytest.raises(DecodeError, match=r"^output 'x': shape \[1, 10\] \(float32\) is not a "
                                          r"segmentation map"):
        summarize_segmentation(np.zeros((1, 10), np.float32), info)
    big = IDS.copy()
    big[0, 0, 0] = 300
    with pytest.raises(DecodeError, match=r"^output 'ArgMax': class id 300 does not fit the "
                                          r"uint8 mask encoding$"):
        summarize_segmentation(big, ARGMAX, mask_max_side=2)
    with pytest.raises(ValueError, match=r"^mask: 3 bytes for 2x2$"):
        SegmentationMask(2, 2, b"abc")


@pytest.mark.parametrize(("photo", "dominant", "second"),
                         [("grace_hopper.bmp", "person", "background"),
                          ("cat.bmp", "background", "cat")])
def test_real_deeplab_argmax(shared_models: Path, photo: str, dominant: str, second: str
                             ) -> None:
    model = shared_models / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    labels = load_labels(shared_models / "pascal_voc_segmentation_labels.txt")
    rgb = read_rgb(shared_models / photo)
    infos, raw = run_model(model, stretch_to(rgb, 513, 513))
    assert raw[0].dtype == np.int64 and infos[0].shape == (1, 513, 513)
    summary = summarize_segmentation(raw[0], infos[0], labels=labels, mask_max_side=64)
    assert [c.label for c in summary.classes] == [dominant, second]
    assert sum(c.fraction for c in summary.classes) == pytest.approx(1.0)
    assert summary.classes[0].fraction > 0.55
    assert summary.mask is not None and (summary.mask.width, summary.mask.height) == (64, 64)
    # Letterboxed, the bars are excluded: the same two classes, nothing from padding.
    pixels, geo = letterbox_to(rgb, 513, 513)
    infos, raw = run_model(model, pixels)
    boxed = summarize_segmentation(raw[0], infos[0], labels=labels,
                                   content_box=geo.content_box, input_wh=(513, 513))
    assert [c.label for c in boxed.classes] == [dominant, second]
