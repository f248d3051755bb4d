"""What a reload restarts, decided in one place (`plan_reload`), the events stage too."""

from __future__ import annotations

from typing import Any

import pytest

from edged.config import Config
from edged.config.cameras import Camera
from edged.service.reload import plan_camera, plan_reload


def _with(section: str, **values: Any) -> Config:
    base = Config()
    return base.model_copy(update={section: getattr(base, section).model_copy(update=values)})


@pytest.mark.parametrize(("section", "values", "fresh_events"), [
    ("output", {"top_k": 3}, False),  # decode/encode only: the tracks stay
    ("output", {"encoding": "binary"}, False),
    ("model", {"labels": "labels.txt"}, False),
    ("output", {"include_raw": False, "decoder": "detection"}, False),
    ("events", {"min_frames": 5}, True),
    ("output", {"min_score": 0.2}, True),  # the tracker's low score
    ("source", {"name": "porch"}, True),  # the camera in every topic
    ("mqtt", {"topic_prefix": "home"}, True),  # a new connection, new topics
    ("device", {"id": "pi-2"}, True),
])
def test_only_what_an_events_stage_is_made_of_starts_a_fresh_one(
        section: str, values: dict[str, Any], fresh_events: bool) -> None:
    plan = plan_reload(Config(), _with(section, **values))
    assert plan.changed == (section,)
    assert plan.events is fresh_events
    assert plan.deliver  # each of these rebuilds decode/encode


def test_an_unchanged_file_restarts_nothing() -> None:
    plan = plan_reload(Config(), Config())
    assert plan.restarts() == "nothing" and not plan.events and not plan.deliver


def test_a_new_model_keeps_the_events_stage() -> None:
    plan = plan_reload(Config(), _with("model", path="other.tflite"))
    assert plan.worker and plan.deliver and not plan.events  # the same camera, other boxes


def test_a_camera_moved_to_another_worker_or_topic_rebuilds_its_stages() -> None:
    cfg = Config()
    one = Camera("porch", True, 0.0, cfg)  # the file's one camera: the device's topic
    entry = Camera("porch", True, 0.0, cfg, index=0)  # the same, now cameras[0]
    moved = Camera("porch", True, 0.0, cfg, index=0, model="birds")
    assert plan_camera(entry, entry, new_worker=False).restarts() == "nothing"
    assert plan_camera(one, entry, new_worker=False).deliver  # its results topic moved
    for plan in (plan_camera(entry, moved, new_worker=False),
                 plan_camera(entry, entry, new_worker=True)):
        assert plan.preprocess and plan.deliver  # built for the worker's model
        assert not plan.events and not plan.source  # same camera: tracks and source stay
