"""Detection decoding: the SSD post-process head, raw YOLO heads (float and int8), NMS."""

from __future__ import annotations

import numpy as np
import pytest
from decode_helpers import Letterbox, Stretch

from edged.bench.decode import realistic_yolo_head
from edged.decode import (
    ClassFilter,
    DecodeError,
    Detection,
    DetectionSettings,
    Labels,
    decode_ssd,
    decode_yolo,
    nms,
    ssd_outputs,
)
from edged.numerics.quantize import dequantize
from edged.numerics.tensors import TensorInfo

F32 = np.dtype(np.float32)


def ssd_infos(n: int = 4, prefix: str = "TFLite_Detection_PostProcess") -> list[TensorInfo]:
    # Deliberately not in role order: roles come from names.
    return [TensorInfo(1, f"{prefix}:2", (1, n), F32), TensorInfo(0, prefix, (1, n, 4), F32),
            TensorInfo(3, f"{prefix}:3", (1,), F32), TensorInfo(2, f"{prefix}:1", (1, n), F32)]


def ssd_values() -> list[np.ndarray]:
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.6, 0.6],
                       [0.2, 0.2, 0.3, 0.3]]], np.float32)
    classes = np.array([[0.0, 2.0, 1.0, 0.0]], np.float32)
    scores = np.array([[0.9, 0.8, 0.2, 0.99]], np.float32)  # entry 3 is stale padding
    count = np.array([3.0], np.float32)
    return [scores, boxes, count, classes]


def test_ssd_roles_by_name() -> None:
    assert ssd_outputs(ssd_infos()) == {"scores": 0, "boxes": 1, "count": 2, "classes": 3}


def test_ssd_honours_count_threshold_and_maps_boxes() -> None:
    geo = Stretch(640, 480, 300, 300)
    labels = Labels.from_names(["person", "bicycle", "car"])
    dets = decode_ssd(ssd_values(), ssd_infos(), input_wh=(300, 300), geometry=geo,
                      settings=DetectionSettings(min_score=0.5), labels=labels)
    assert [(d.label_id, d.label) for d in dets] == [(0, "person"), (2, "car")]
    assert dets[0].box == pytest.approx((0.2 * 640, 0.1 * 480, 0.6 * 640, 0.5 * 480))
    assert dets[1].box == pytest.approx((0.0, 0.0, 640.0, 480.0))
    assert dets[0].score == pytest.approx(0.9)


def test_ssd_filters_classes_area_and_caps() -> None:
    geo = Stretch(100, 100, 300, 300)
    infos, values = ssd_infos(), ssd_values()
    kw = {"input_wh": (300, 300), "geometry": geo}
    only_car = DetectionSettings(min_score=0.1, classes=ClassFilter.of(keep=[2]))
    assert [d.label_id for d in decode_ssd(values, infos, settings=only_car, **kw)] == [2]
    big = DetectionSettings(min_score=0.1, min_box_area=0.5 * 100 * 100)
    assert [d.label_id for d in decode_ssd(values, infos, settings=big, **kw)] == [2]
    one = DetectionSettings(min_score=0.1, max_detections=1)
    assert [d.label_id for d in decode_ssd(values, infos, settings=one, **kw)] == [0]
    values[2] = np.array([0.0], np.float32)
    assert decode_ssd(values, infos, settings=one, **kw) == ()


def test_ssd_unnamed_outputs_need_names_and_then_work() -> None:
    infos = ssd_infos(prefix="StatefulPartitionedCall")
    infos = [TensorInfo(i.index, f"out{i.index}", i.shape, i.dtype) for i in infos]
    with pytest.raises(DecodeError, match=r"^SSD-like outputs 'out1', 'out0', 'out3', 'out2' are "
                                          r"not named .* classes and scores have the same "
                                          r"shape; name the SSD outputs in the config$"):
        ssd_outputs(infos)
    names = {"boxes": "out0", "classes": "out2", "scores": "out1", "count": "out3"}
    dets = decode_ssd(ssd_values(), infos, input_wh=(300, 300), geometry=Stretch(1, 1, 1, 1),
                      settings=DetectionSettings(min_score=0.5), names=names)
    assert [d.label_id for d in dets] == [0, 2]
    with pytest.raises(DecodeError, match=r"^SSD output names: scores tensor 'nope' is not an "
                                          r"output of the model \(out0, out1, out2, out3\)$"):
        ssd_outputs(infos, {**names, "scores": "nope"})


def test_ssd_wrong_shape_is_named() -> None:
    infos = ssd_infos()
    infos[1] = TensorInfo(0, "TFLite_Detection_PostProcess", (1, 4, 5), F32)
    with pytest.raises(DecodeError, match=r"^SSD boxes output 'TFLite_Detection_PostProcess': "
                                          r"shape \[1, 4, 5\] is not \[1, N, 4\]$"):
        ssd_outputs(infos)


def test_settings_are_validated() -> None:
    with pytest.raises(DecodeError, match=r"^detection setting iou_threshold: invalid value 1.5$"):
        DetectionSettings(iou_threshold=1.5)
    with pytest.raises(DecodeError, match=r"^detection setting min_score: invalid value nan$"):
        DetectionSettings(min_score=float("nan"))


def test_nms_keeps_best_and_drops_overlaps() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], float)
    scores = np.array([0.8, 0.9, 0.7, 0.6])
    # 1 beats 0 (IoU 0.68) and 3 (IoU 0.72); 2 is apart.
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    # 0 survives 1 (0.68 <= 0.7) and then suppresses 3 (IoU 0.95).
    assert nms(boxes, scores, 0.7).tolist() == [1, 0, 2]
    assert nms(boxes, scores, 0.96).tolist() == [1, 0, 2, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def head(cands: list[tuple[float, float, float, float, int, float]], classes: int = 3,
         n: int = 50) -> np.ndarray:
    """A float [1, 4+C, N] head with the given (cx, cy, w, h, class, score) candidates first."""
    f = np.zeros((4 + classes, n), np.float32)
    f[0:4] = 0.5
    for j, (cx, cy, w, h, c, s) in enumerate(cands):
        f[0:4, j] = (cx, cy, w, h)
        f[4 + c, j] = s
    return f[None]


CANDS = [(100, 100, 40, 40, 0, 0.9), (102, 101, 40, 40, 0, 0.8),  # same object, same class
         (102, 101, 40, 40, 1, 0.7),  # same place, other class: kept (class-aware)
         (300, 200, 20, 10, 2, 0.6), (50, 50, 4, 4, 2, 0.1)]


def test_yolo_float_channels_first_and_last_agree() -> None:
    f = head(CANDS)
    info = TensorInfo(0, "out", f.shape, F32)
    geo = Stretch(640, 640, 640, 640)
    dets = decode_yolo(f, info, input_wh=(640, 640), geometry=geo)
    assert [(d.label_id, round(d.score, 3)) for d in dets] == [(0, 0.9), (1, 0.7), (2, 0.6)]
    assert dets[0].box == (80.0, 80.0, 120.0, 120.0)
    t = np.ascontiguousarray(f.transpose(0, 2, 1))
    info_t = TensorInfo(0, "out", t.shape, F32)
    assert decode_yolo(t, info_t, input_wh=(640, 640), geometry=geo) == dets


def test_yolo_normalised_boxes_and_letterbox_mapping() -> None:
    cands = [(cx / 640, cy / 640, w / 640, h / 640, c, s) for cx, cy, w, h, c, s in CANDS]
    f = head(cands)
    info = TensorInfo(0, "out", f.shape, F32)
    geo = Letterbox(1280, 720, 640, 640)  # scale 0.5, 140 px bars top and bottom
    dets = decode_yolo(f, info, input_wh=(640, 640), geometry=geo)
    x1, y1, x2, y2 = dets[0].box
    assert (x1, x2) == pytest.approx((160.0, 240.0), abs=1e-3)
    assert (y1, y2) == pytest.approx((0.0, 0.0), abs=1e-3)  # inside the top bar: clipped
    x1, y1, x2, y2 = dets[2].box
    assert (x1, y1, x2, y2) == pytest.approx((580.0, 110.0, 620.0, 130.0), abs=1e-3)
    pixels = decode_yolo(head(CANDS), info, input_wh=(640, 640), geometry=geo)
    forced = decode_yolo(f, info, input_wh=(640, 640), geometry=geo, box_units="normalized")
    assert forced == dets
    assert [(d.label_id, d.score) for d in pixels] == [(d.label_id, d.score) for d in dets]
    for a, b in zip(pixels, dets, strict=True):
        assert a.box == pytest.approx(b.box, abs=1e-3)


def test_yolo_filters_min_area_keep_ignore_and_max() -> None:
    f = head(CANDS)
    info = TensorInfo(0, "out", f.shape, F32)
    labels = Labels.from_names(["person", "car", "dog"])
    kw = {"input_wh": (640, 640), "geometry": Stretch(640, 640, 640, 640), "labels": labels}

    def ids(**settings: object) -> list[int]:
        return [d.label_id for d in decode_yolo(f, info, settings=DetectionSettings(
            **settings), **kw)]  # type: ignore[arg-type]

    assert ids(classes=ClassFilter.of(ignore=["person"])) == [1, 2]
    assert ids(classes=ClassFilter.of(keep=["dog", "car"])) == [1, 2]
    assert ids(min_box_area=1000) == [0, 1]
    assert ids(max_detections=1) == [0]
    assert ids(min_score=0.05) == [0, 1, 2, 2]
    assert ids(min_score=0.95) == []
    assert ids(iou_threshold=0.99) == [0, 0, 1, 2]
    dets = decode_yolo(f, info, settings=DetectionSettings(), **kw)
    assert dets[0] == Detection(0, "person", pytest.approx(0.9), (80.0, 80.0, 120.0, 120.0))


def test_yolo_bad_shapes_are_one_line_errors() -> None:
    info = TensorInfo(0, "out", (1, 64, 64), F32)
    with pytest.raises(DecodeError, match=r"^output 'out': shape \[1, 64, 64\] is square; set "
                                          r"the YOLO layout"):
        decode_yolo(np.zeros((1, 64, 64), np.float32), info, input_wh=(64, 64),
                    geometry=Stretch(1, 1, 1, 1))
    info = TensorInfo(0, "out", (1, 4, 100), F32)
    with pytest.raises(DecodeError, match=r"has 4 values per candidate; a YOLO head needs 4 "
                                          r"box values and at least 1 class$"):
        decode_yolo(np.zeros((1, 4, 100), np.float32), info, input_wh=(64, 64),
                    geometry=Stretch(1, 1, 1, 1))


def test_realistic_int8_head_raw_equals_dequantized() -> None:
    raw, info = realistic_yolo_head()
    kw = {"input_wh": (640, 640), "geometry": Letterbox(1280, 720, 640, 640)}
    fast = decode_yolo(raw, info, **kw)
    slow = decode_yolo(dequantize(raw, info), info, **kw)
    assert fast == slow
    assert len(fast) == 6  # six objects, their duplicate anchors suppressed
    assert len({d.label_id for d in fast}) <= 6


def test_nms_stops_at_max_out_and_refused_boxes_do_not_suppress() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10.5], [20, 20, 30, 30], [40, 40, 50, 50]],
                     float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5, max_out=2).tolist() == [0, 2]
    # Box 0 refused: it no longer suppresses box 1.
    assert nms(boxes, scores, 0.5, accept=lambda i: i != 0).tolist() == [1, 2, 3]


def test_yolo_small_box_does_not_suppress_a_big_one() -> None:
    # A tiny high-score box inside a big one of the same class, with IoU above threshold.
    f = head([(100, 100, 10, 10, 0, 0.9), (100, 100, 11, 11, 0, 0.8)])
    info = TensorInfo(0, "out", f.shape, F32)
    dets = decode_yolo(f, info, input_wh=(640, 640), geometry=Stretch(640, 640, 640, 640),
                       settings=DetectionSettings(min_box_area=110))
    assert [d.score for d in dets] == [pytest.approx(0.8)]
