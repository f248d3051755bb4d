"""A cascade's pure parts: which detections are classified, the crop of each, and the
answers attached (edged.decode.cascade)."""

from __future__ import annotations

from edged.decode.cascade import CropRule, attach, crops_to_classify
from edged.decode.results import Classification, Detection


def _det(score: float, box: tuple[float, float, float, float], label: str = "bird"
         ) -> Detection:
    return Detection(0, label, score, box)


def test_the_highest_scoring_first_at_most_max_crops_above_min_score_of_the_labels() -> None:
    found = [_det(0.6, (0, 0, 10, 10)), _det(0.9, (20, 20, 30, 30)),
             _det(0.4, (40, 40, 50, 50)), _det(0.8, (60, 60, 70, 70), "cat"),
             _det(0.7, (80, 80, 90, 90))]
    rule = CropRule(min_score=0.5, labels=frozenset({"bird"}), max_crops=2, padding=0.0)
    assert [i for i, _ in crops_to_classify(found, (100, 100), rule)] == [1, 4]
    every = CropRule(min_score=0.5, max_crops=16, padding=0.0)
    assert [i for i, _ in crops_to_classify(found, (100, 100), every)] == [1, 3, 4, 0]


def test_a_crop_takes_the_classifiers_aspect_about_the_box_centre_then_the_padding() -> None:
    tall = [_det(0.9, (40.0, 20.0, 60.0, 80.0))]  # 20 x 60, centre (50, 50)
    rule = CropRule(min_score=0.0, padding=0.0)
    assert crops_to_classify(tall, (200, 200), rule) == [(0, (20, 20, 80, 80))]
    padded = CropRule(min_score=0.0, padding=0.25)  # 60 + 2 * 15 = 90 a side
    assert crops_to_classify(tall, (200, 200), padded) == [(0, (5, 5, 95, 95))]
    # A classifier input twice as wide as high: the crop is too (x1 = -10, clipped).
    assert crops_to_classify(tall, (200, 200), rule, aspect=2.0) == [(0, (0, 20, 110, 80))]


def test_crops_round_outwards_and_clip_to_the_frame() -> None:
    near_edge = [_det(0.9, (90.4, 0.6, 99.5, 9.7))]
    rule = CropRule(min_score=0.0, padding=0.0)
    (_, (x1, y1, x2, y2)), = crops_to_classify(near_edge, (96, 96), rule)
    assert (x1, y1, x2, y2) == (90, 0, 96, 10)
    outside = [_det(0.9, (120.0, 120.0, 130.0, 130.0))]
    assert crops_to_classify(outside, (96, 96), rule) == []


def test_answers_attach_to_their_detections_in_order_and_ride_in_its_json() -> None:
    found = (_det(0.9, (0, 0, 1, 1)), _det(0.8, (2, 2, 3, 3)))
    robin = (Classification(3, "robin", 0.75),)
    out = attach(found, {1: robin})
    assert out[0] == found[0] and out[1].classes == robin and out[1].box == found[1].box
    assert "classes" not in out[0].to_json()
    assert out[1].to_json()["classes"] == [{"label_id": 3, "label": "robin", "score": 0.75}]
