"""The events stage's parts without a daemon: snapshots, the event queue, entities, config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import orjson
import pytest

from edged.config import Config
from edged.decode.results import Detection
from edged.events.snapshot import SnapshotSettings, render_snapshot
from edged.mqtt.eventdiscovery import EventEntities, event_components
from edged.mqtt.eventpayload import topic_level
from edged.mqtt.publisher import Publisher, PublisherSettings
from edged.mqtt.settings import EVENTS_QUEUE
from edged.service.eventstage import EventStage, SnapshotEncoder

ROOT = Path(__file__).resolve().parents[2]


def _jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_snapshot_of_the_frame_is_scaled_to_max_width_and_shows_the_box() -> None:
    frame = np.zeros((720, 1280, 3), np.uint8)
    shot = _jpeg(render_snapshot(frame, (640, 360, 800, 600), "person 0.91",
                                 SnapshotSettings(max_width=640, quality=90)))
    assert shot.shape == (360, 640, 3)
    # The box is drawn (orange: strong red in BGR) at half scale: left edge x = 320.
    assert shot[200, 320, 2] > 150 and shot[100, 100].max() < 30
    assert frame.max() == 0  # the frame itself is never drawn on


def test_snapshot_cropped_to_the_object_with_a_margin() -> None:
    frame = np.full((480, 640), 90, np.uint8)  # grey sources give HxW
    shot = _jpeg(render_snapshot(frame, (100, 100, 200, 300), "", SnapshotSettings(
        crop=True, boxes=False)))
    assert shot.shape == (240, 120, 3)  # 100x200 and 10% on every side
    assert abs(int(shot[120, 60, 0]) - 90) <= 2


def test_events_queue_is_bounded_and_drops_the_oldest_counted() -> None:
    pub = Publisher(PublisherSettings(device_id="d", host="127.0.0.1", port=1))
    try:
        for i in range(EVENTS_QUEUE + 5):
            pub.publish_event("t/events", str(i).encode())
        counters = pub.counters()
        assert counters.events_dropped == 5
        assert pub._out.events[0] == ("t/events", b"5")
    finally:
        pub.stop()


def test_stage_publishes_fresh_occupancy_then_events_with_wall_clock_times() -> None:
    cfg = Config.model_validate({
        "device": {"id": "d"}, "source": {"name": "porch"},
        "output": {"decoder": "detection", "publish": "events"},
        "events": {"min_frames": 2, "hold_s": 1.0, "labels": ["person"],
                   "zones": [{"name": "steps", "points": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}],
                   "snapshot": {"enabled": False}}})
    pub = Publisher(PublisherSettings(device_id="d", host="127.0.0.1", port=1))
    try:
        stage = EventStage(cfg, pub, SnapshotEncoder())
        stage.start()
        topic, body = pub._out.control[-1]
        assert topic == "edged/d/porch/occupancy"
        assert orjson.loads(body)["zones"] == {"all": {"person": 0}, "steps": {"person": 0}}
        frame = np.zeros((100, 100, 3), np.uint8)
        person = Detection(0, "person", 0.9, (10.0, 40.0, 30.0, 90.0))
        for i in range(2):
            stage.step([person], frame, 1_800_000_000.0 + i, 50.0 + i)
        (topic, body), = pub._out.events
        event = orjson.loads(body)
        assert topic == "edged/d/porch/events"
        assert (event["type"], event["zones"], event["camera"]) == ("new", ["steps"], "porch")
        assert event["start"] == 1_800_000_000.0 and event["at"] == 1_800_000_001.0
        assert event["snapshot"] is None
        assert orjson.loads(pub._out.control[-1][1])["zones"]["steps"] == {"person": 1}
    finally:
        pub.stop()


def test_entities_need_labels_listed_except_the_event_and_any_label_image() -> None:
    none = event_components("edged_d", "edged/d", EventEntities("cam", ("a",)))
    assert set(none) == {"cam_event", "cam_snapshot"}
    some = event_components("edged_d", "edged/d", EventEntities(
        "cam", ("a",), ("traffic light",), snapshots=False))
    assert set(some) == {"cam_event", "cam_all_traffic_light_occupied",
                         "cam_all_traffic_light_count", "cam_a_traffic_light_occupied",
                         "cam_a_traffic_light_count"}
    assert topic_level("traffic light") == "traffic_light"
    assert topic_level("a/b+#") == "a_b"


@pytest.mark.parametrize(("text", "expected"), [
    ('[output]\npublish = "events"\n',
     ':2: output.publish: "events" needs detections: decoder = "detection" (or "auto" on a '
     'detection model), not "none"'),
    ('[output]\ndecoder = "detection"\npublish = "events"\n[[events.zones]]\nname = "a b"\n'
     'points = [[0, 0], [1, 0], [1, 1]]\n',
     ":5: events.zones[0].name: 'a b': must be 1 to 64 letters, digits, '_' or '-' (it is a "
     "topic level)"),
    ('[output]\ndecoder = "detection"\npublish = "events"\n[[events.zones]]\nname = "a"\n'
     'points = [[0, 0], [1, 0], [1, 1]]\n[[events.zones]]\nname = "a"\n'
     'points = [[0, 0], [2, 0], [1, 1]]\n',
     ':9: events.zones[1].points: point 2 [2.0, 0.0]: outside 0..1 (units = "normalized"; '
     'use units = "pixels" for frame pixels)'),
    ('[[events.zones]]\nname = "all"\npoints = [[0, 0], [1, 0], [1, 1]]\n',
     ":2: events.zones[0].name: 'all': is occupancy's key for the whole frame; name the zone "
     "otherwise"),
    ('[events]\nlines = [{name = "gate", points = [[0, 0]]}]\n',
     ":2: events.lines[0].points: list should have at least 2 items"),
])
def test_config_errors_name_the_file_line_and_key(tmp_path: Path, text: str, expected: str
                                                  ) -> None:
    path = tmp_path / "edged.toml"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "edged", "check-config", str(path)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert out.returncode == 1
    assert any(line.startswith(f"{path}{expected}") for line in out.stderr.splitlines()), \
        out.stderr


def test_run_refuses_events_on_a_model_that_is_not_a_detector(tmp_path: Path) -> None:
    """What check-config says, `edged run` says too, with the file, and exits 78: a
    restart cannot mend it."""
    path = tmp_path / "edged.toml"
    path.write_text(f'[model]\npath = "{ROOT / "tests/data/models/digits_int8.tflite"}"\n'
                    '[mqtt]\nport = 9\n[output]\ndecoder = "auto"\npublish = "both"\n')
    out = subprocess.run([sys.executable, "-m", "edged", "run", "--config", str(path)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert out.returncode == 78, out.stderr
    assert f'{path}: output.publish: "both" needs detections; this model\'s outputs decode ' \
        "as classification" in out.stderr


def test_the_whole_frame_key_is_one_name_in_config_and_payload() -> None:
    from edged.config.events import WHOLE_FRAME
    from edged.mqtt.eventpayload import ALL

    assert WHOLE_FRAME == ALL

