"""Tracking, zones and debounced events on scripted scenes (issue 18's engine).

The scenes are detections along known paths, as a detector would give them
for objects rendered moving through known zones; the expected event sequence
is written out in full.
"""

from __future__ import annotations

import numpy as np

from edged.decode.results import Detection
from edged.events.engine import EventEngine, EventSettings
from edged.events.tracker import (
    BEST,
    HITS,
    SCORE,
    Tracker,
    TrackerSettings,
    areas,
    overlapping,
    pair_iou,
)
from edged.events.zones import Line, Zone, anchors_of, points_in_polygons, zone_edges

FRAME = (480, 640)
DRIVEWAY = Zone("driveway", ((200, 200), (440, 200), (440, 480), (200, 480)))
GARAGE = Zone("garage", ((0.75, 0.0), (1.0, 0.0), (1.0, 0.5), (0.75, 0.5)), normalized=True)
GATE = Line("gate", (320, 480), (320, 0))  # drawn upwards: walking to its right is "in"


def person(x: float, score: float = 0.9) -> Detection:
    return Detection(0, "person", score, (x, 300.0, x + 40, 420.0))


def car(score: float = 0.8) -> Detection:
    return Detection(2, "car", score, (500.0, 100.0, 620.0, 200.0))


def test_a_person_crossing_the_driveway_and_a_parked_car() -> None:
    engine = EventEngine(EventSettings(min_frames=3, hold_s=1.0), zones=[DRIVEWAY, GARAGE],
                         lines=[GATE])
    log: list[tuple[str, int, str | None, tuple[str, ...], tuple[str, ...]]] = []
    occupancy = []
    t = 0.0
    for frame in range(60):  # 6 s at 10 fps: the person walks 10 px a frame from x = 100
        t = frame / 10
        dets = [car()] + ([person(100 + 10 * frame)] if frame < 50 else [])
        events, occ = engine.step(dets, t, FRAME)
        log += [(e.type, e.track_id, e.label, e.zones, e.why) for e in events]
        if occ is not None:
            occupancy.append((t, occ))
    car_id, person_id = 1, 2
    assert log == [
        ("new", car_id, "car", ("garage",), ()),
        ("new", person_id, "person", (), ()),
        # bottom-centre x = 120 + 10 f: in the driveway from x > 200 (f = 9) ...
        ("update", person_id, "person", ("driveway",), ("zone",)),
        ("update", person_id, "person", ("driveway",), ("line",)),  # 320: the gate, inwards
        ("update", person_id, "person", (), ("zone",)),  # ... out past x = 440 (f = 33)
        ("end", person_id, "person", (), ()),  # 1 s after the last sighting at f = 49
    ]
    assert occupancy[0] == (0.2, {(None, "car"): 1, ("garage", "car"): 1, (None, "person"): 1})
    assert occupancy[-1][1][(None, "person")] == 0  # listed at 0 once gone: a retained "off"
    assert occupancy[-1][1][("driveway", "person")] == 0


def test_flicker_does_not_end_a_track_nor_start_another() -> None:
    """A detection missing every third frame, and a frame at a low score."""
    engine = EventEngine(EventSettings(min_frames=3, hold_s=0.5))
    types = []
    for frame in range(40):
        dets = [] if frame % 3 == 2 else [person(100 + 5 * frame, 0.3 if frame == 10 else 0.9)]
        events, _ = engine.step(dets, frame / 10, FRAME)
        types += [(e.type, e.track_id) for e in events]
    assert types == [("new", 1)]
    assert engine.tracker.ids == [1]


def test_a_low_score_detection_keeps_a_track_but_never_starts_one() -> None:
    tracker = Tracker(TrackerSettings(high_score=0.5, low_score=0.1))
    assert tracker.update([person(100, 0.3)], 0.0).tolist() == []
    (track,) = tracker.update([person(100, 0.9)], 0.1).tolist()
    assert tracker.update([person(105, 0.2)], 0.2).tolist() == [track]
    assert tracker.ids == [1]
    assert tracker.table[track, HITS] == 2 and tracker.table[track, BEST] == 0.9


def test_a_strong_detection_wins_a_track_over_a_weak_one_that_fits_it_better() -> None:
    """ByteTrack's order: confident detections match first, even against a weak one
    with the higher IoU; the weak one left over starts nothing."""
    tracker = Tracker(TrackerSettings(high_score=0.5, low_score=0.1, match_iou=0.3))
    tracker.update([person(100, 0.9)], 0.0)
    weak_exact, strong_near = person(100, 0.3), person(115, 0.8)
    rows = tracker.update([weak_exact, strong_near], 0.1)
    assert rows.tolist() == [0] and tracker.ids == [1]
    assert tracker.table[0, SCORE] == 0.8 and tracker.table[0, 0] == 115.0


def test_two_people_crossing_keep_their_ids() -> None:
    """Walking towards each other and past: the predicted boxes keep them apart."""
    tracker = Tracker()
    ids: dict[int, list[float]] = {}
    for f in range(30):
        a = Detection(0, "person", 0.9, (100 + 12 * f, 300.0, 140 + 12 * f, 420.0))
        b = Detection(0, "person", 0.9, (500 - 12 * f, 310.0, 540 - 12 * f, 430.0))
        for row in tracker.update([a, b], f / 10).tolist():
            ids.setdefault(tracker.ids[row], []).append(float(tracker.table[row, 0]))
    assert sorted(ids) == [1, 2]
    assert ids[1] == sorted(ids[1]) and ids[2] == sorted(ids[2], reverse=True)


def test_labels_and_per_label_scores() -> None:
    engine = EventEngine(EventSettings(min_frames=2, labels=("person", "car"),
                                       label_min_score={"car": 0.85}))
    kinds = []
    for f in range(5):
        events, _ = engine.step([person(100), car(0.8), Detection(5, "dog", 0.9,
                                                                 (400, 100, 450, 150))],
                                f / 10, FRAME)
        kinds += [(e.type, e.label) for e in events]
    assert kinds == [("new", "person")]  # the car never reaches 0.85; dogs are not counted


def test_a_better_score_and_periodic_updates() -> None:
    engine = EventEngine(EventSettings(min_frames=1, better_by=0.1, update_every_s=1.0))
    whys = []
    for f, score in enumerate([0.6, 0.65, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8,
                               0.8, 0.8]):
        events, _ = engine.step([person(100, score)], f / 10, FRAME)
        whys += [(f, e.type, e.why) for e in events]
    assert whys == [(0, "new", ()), (2, "update", ("score",)), (12, "update", ("periodic",))]


def _inside(zones: tuple[Zone, ...], points: list[tuple[float, float]]) -> list[list[bool]]:
    edges, starts = zone_edges(zones, FRAME)
    return points_in_polygons(np.array(points), edges, starts).tolist()


def test_zone_geometry() -> None:
    square = Zone("z", ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)))
    triangle = Zone("t", ((20.0, 0.0), (30.0, 0.0), (20.0, 10.0)))
    assert _inside((square, triangle), [(5, 5), (15, 5), (5, -1), (21, 1), (29, 9)]) == [
        [True, False], [False, False], [False, False], [False, True], [False, False]]
    assert GARAGE.scaled(FRAME)[2] == (640.0, 240.0)
    # A box leaning into the zone does not count until its feet are in it.
    boxes = np.array([[150.0, 100.0, 210.0, 190.0], [190.0, 300.0, 230.0, 420.0]])
    feet = anchors_of(boxes, "bottom_center")
    assert feet.tolist() == [[180.0, 190.0], [210.0, 420.0]]
    assert _inside((DRIVEWAY,), feet.tolist()) == [[False], [True]]
    assert anchors_of(boxes, "center")[0].tolist() == [180.0, 145.0]
    assert anchors_of(boxes, "top_center")[0].tolist() == [180.0, 100.0]


def test_a_zone_for_some_labels_counts_no_other() -> None:
    cars_only = Zone("garage", DRIVEWAY.polygon, labels=("car",))
    engine = EventEngine(EventSettings(min_frames=1), zones=[cars_only])
    parked = Detection(2, "car", 0.9, (250.0, 300.0, 350.0, 400.0))
    events, occupancy = engine.step([person(250), parked], 0.0, FRAME)
    assert {e.label: e.zones for e in events} == {"person": (), "car": ("garage",)}
    assert occupancy == {(None, "person"): 1, (None, "car"): 1, ("garage", "car"): 1}


def test_line_crossing_direction_and_extent() -> None:
    def ways(line: Line, steps: list[tuple[tuple[float, float], tuple[float, float]]]
             ) -> list[int]:
        before, after = (np.array([s[k] for s in steps]) for k in (0, 1))
        return line.crossings(before, after, FRAME).tolist()

    # Rightwards across the upward gate is "in" (+1), back is "out" (-1), short of it nothing.
    assert ways(GATE, [((300, 100), (340, 100)), ((340, 100), (300, 100)),
                       ((300, 100), (310, 100))]) == [1, -1, 0]
    short = Line("short", (320, 0), (320, 50))
    assert ways(short, [((300, 100), (340, 100))]) == [0]  # past its end
    # Onto the line and then off it: one crossing, not two.
    assert ways(GATE, [((300, 100), (320, 100)), ((320, 100), (340, 100))]) == [0, 1]
    half = Line("half", (0.5, 1.0), (0.5, 0.0), normalized=True)  # the gate, normalized
    assert ways(half, [((300, 100), (340, 100))]) == [1]


def test_overlapping_pairs_and_their_iou() -> None:
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 5, 0, 15]], dtype=np.float64)
    b = np.array([[5, 0, 15, 10], [-5, 9, 5, 9]], dtype=np.float64)  # the last two: | and -
    rows, cols = overlapping(a, b)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 0), (0, 1), (2, 1)]
    iou = pair_iou(a[rows], b[cols], areas(a)[rows] + areas(b)[cols])
    assert np.allclose(iou, [50 / 150, 0.0, 0.0])  # the empty boxes: 0, not a 0 / 0
    assert overlapping(a, np.zeros((0, 4)))[0].shape == (0,)
