"""Classification decoding: pure top-k on arrays, then the real mobilenet on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from decode_helpers import read_rgb, run_model, stretch_to

from edged.decode import (
    ClassFilter,
    Classification,
    DecodeError,
    Labels,
    class_scores,
    decode_classification,
    load_labels,
    prepare_labels,
    top_classes,
)
from edged.numerics.tensors import TensorInfo

U8 = TensorInfo(0, "probs", (1, 5), np.dtype(np.uint8), (1 / 256,), (0,))
F32 = TensorInfo(0, "logits", (1, 5), np.dtype(np.float32))


def test_top_k_above_threshold_best_first_ties_by_id() -> None:
    scores = np.array([0.1, 0.5, 0.2, 0.5, 0.05], np.float32)
    got = top_classes(scores, top_k=3, min_score=0.1)
    assert [(c.label_id, c.score) for c in got] == [(1, 0.5), (3, 0.5), (2, pytest.approx(0.2))]
    assert top_classes(scores, top_k=5, min_score=0.6) == ()


def test_threshold_is_inclusive_and_exact_for_float32() -> None:
    scores = np.array([np.float32(0.3), np.nextafter(np.float32(0.3), np.float32(0))],
                      np.float32)
    # 0.3 is not a float32; float32(0.3) > 0.3, the next one down is < 0.3.
    assert [c.label_id for c in top_classes(scores, min_score=0.3)] == [0]


def test_raw_and_dequantized_inputs_give_the_same_answer() -> None:
    raw = np.array([[10, 200, 30, 0, 128]], np.uint8)
    floats = class_scores(raw, U8)
    assert floats.dtype == np.float32 and floats[1] == 200 / 256
    assert decode_classification(raw, U8, top_k=2) == decode_classification(floats, U8, top_k=2)
    assert decode_classification(raw, U8, top_k=2) == (
        Classification(1, None, 200 / 256), Classification(4, None, 0.5))


def test_labels_and_keep_ignore_by_name_or_id() -> None:
    labels = Labels.from_names(["cat", "dog", "Bird", "fish", "cow"])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
    got = top_classes(scores, top_k=2, labels=labels, classes=ClassFilter.of(ignore=["CAT", 2]))
    assert [(c.label_id, c.label) for c in got] == [(1, "dog"), (3, "fish")]
    got = top_classes(scores, top_k=5, labels=labels, classes=ClassFilter.of(keep=["bird", 4]))
    assert [c.label for c in got] == ["Bird", "cow"]
    assert ClassFilter.of(keep=["dgo", "cat"]).unknown_names(labels.names()) == ["dgo"]


def test_json_is_plain() -> None:
    c = Classification(653, "military uniform", float(np.float32(0.93359375)))
    assert c.to_json() == {"label_id": 653, "label": "military uniform", "score": 0.933594}


def test_bad_shape_and_top_k_are_one_line_errors() -> None:
    bad = TensorInfo(0, "feat", (1, 7, 7, 16), np.dtype(np.float32))
    with pytest.raises(DecodeError, match=r"^output 'feat': shape \[1, 7, 7, 16\] is not a "
                                          r"class score vector like \[1, C\]$"):
        class_scores(np.zeros((1, 7, 7, 16), np.float32), bad)
    with pytest.raises(DecodeError, match=r"^top_k must be >= 1, got 0$"):
        decode_classification(np.zeros((1, 5), np.float32), F32, top_k=0)


@pytest.mark.parametrize(("photo", "class_id", "label"),
                         [("cat.bmp", 286, "Egyptian cat"),
                          ("grace_hopper.bmp", 653, "military uniform")])
def test_real_mobilenet_on_real_photos(shared_models: Path, photo: str, class_id: int,
                                       label: str) -> None:
    model = shared_models / "mobilenet_v2_1.0_224_quant.tflite"
    infos, raw = run_model(model, stretch_to(read_rgb(shared_models / photo), 224, 224))
    labels = prepare_labels("classification", load_labels(shared_models / "imagenet_labels.txt"),
                            infos)
    assert labels.offset == 0 and labels.notes == ()  # 1001 outputs, 1001 labels
    top = decode_classification(raw[0], infos[0], top_k=3, labels=labels)
    assert (top[0].label_id, top[0].label) == (class_id, label)
    assert top[0].score > 0.5


def test_real_mobilenet_with_a_1000_line_labels_file(shared_models: Path, tmp_path: Path) -> None:
    lines = (shared_models / "imagenet_labels.txt").read_text().splitlines()
    short = tmp_path / "imagenet_1000.txt"
    short.write_text("\n".join(lines[1:]) + "\n")  # without "background"
    model = shared_models / "mobilenet_v2_1.0_224_quant.tflite"
    infos, raw = run_model(model, stretch_to(read_rgb(shared_models / "cat.bmp"), 224, 224))
    labels = prepare_labels("classification", load_labels(short), infos)
    assert labels.offset == 1
    assert labels.notes == ("labels file 'imagenet_1000.txt' has 1000 labels for 1001 outputs: "
                            "output 0 is taken as an unlabelled background class "
                            "(label n names output n+1)",)
    top = decode_classification(raw[0], infos[0], top_k=1, labels=labels)
    assert (top[0].label_id, top[0].label) == (286, "Egyptian cat")
