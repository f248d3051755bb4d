"""Payloads and topics of the events stage: events, occupancy, snapshots.

Topics, per camera (`<base>` is `<prefix>/<device_id>`):

* `<base>/<camera>/events` - one message per event (`new`, `update`, `end`),
  not retained, at the results' QoS;
* `<base>/<camera>/occupancy` - retained: objects present per zone and label
  (`all` is the whole frame), republished on every change and fresh (zeros)
  at every start;
* `<base>/<camera>/snapshot/<label>` and `<base>/<camera>/snapshot` (any
  label) - retained raw JPEG of the latest new or better-score event.

Schemas: `edged/schemas/event-v1.schema.json`, `occupancy-v1.schema.json`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from edged.mqtt.payload import SCHEMA_VERSION

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def topic_level(name: str) -> str:
    """A label as one topic level: anything but letters, digits, '_' and '-' becomes
    '_' ("traffic light" -> traffic_light; never '+', '#' or '/')."""
    return _UNSAFE.sub("_", name).strip("_") or "_"


ALL = "all"  # occupancy's key for the whole frame (a zone may not take the name)


def camera_topics(base: str, camera: str) -> dict[str, str]:
    root = f"{base}/{camera}"
    return {"events": f"{root}/events", "occupancy": f"{root}/occupancy",
            "snapshot": f"{root}/snapshot", "results": f"{root}/results"}


def snapshot_topic(base: str, camera: str, label: str | None = None) -> str:
    topic = camera_topics(base, camera)["snapshot"]
    return topic if label is None else f"{topic}/{topic_level(label)}"


def encode_event(device_id: str, camera: str, at: float, event: Mapping[str, Any],
                 snapshot: str | None) -> bytes:
    """`event`: `edged.events.engine.Event.to_json` (wall-clock times); `at`: the
    frame's capture time; `snapshot`: the topic its JPEG goes to, if one does."""
    doc: dict[str, Any] = {"schema": SCHEMA_VERSION, "device_id": device_id, "camera": camera,
                           "at": round(at, 3), **event, "snapshot": snapshot}
    return orjson.dumps(doc)


def encode_occupancy(device_id: str, camera: str, at: float,
                     zones: Mapping[str, Mapping[str, int]]) -> bytes:
    return orjson.dumps({"schema": SCHEMA_VERSION, "device_id": device_id, "camera": camera,
                         "at": round(at, 3), "zones": zones})
