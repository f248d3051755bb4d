"""Home Assistant entities of the events stage (see `edged.mqtt.discovery`).

Per camera: for every zone (and `all`, the whole frame) and every label of
`events.labels`, an occupancy binary_sensor and a count sensor, both read
from the retained occupancy topic; an event entity fed by the events topic
(`new`, `update`, `end`, with the object as attributes); an image entity per
label and one for any label, fed by the retained snapshot topics. Labels must
be listed for their entities: with none listed, only the event and the
any-label image exist (a model's 80 labels times every zone would flood Home
Assistant with entities nobody asked for).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from edged.mqtt.eventpayload import ALL, camera_topics, snapshot_topic, topic_level

EVENT_TYPES = ("new", "update", "end")
_EVENT_TEMPLATE = (
    "{{ {'event_type': value_json.type, 'id': value_json.id, 'label': value_json.label, "
    "'score': value_json.best_score, 'zones': value_json.zones, "
    "'snapshot': value_json.snapshot} | tojson }}")


@dataclass(frozen=True, slots=True)
class EventEntities:
    camera: str
    zones: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    snapshots: bool = True


def _count(zone: str, label: str) -> str:
    z, lb = orjson.dumps(zone).decode(), orjson.dumps(label).decode()
    return f"(value_json.zones[{z}] | default({{}}))[{lb}] | default(0)"


def event_components(oid: str, base: str, e: EventEntities) -> dict[str, dict[str, Any]]:
    topics = camera_topics(base, e.camera)
    occupancy, cam = topics["occupancy"], e.camera
    comps: dict[str, dict[str, Any]] = {}
    for zone in (ALL, *e.zones):
        where = "" if zone == ALL else f" {zone}"
        for label in e.labels:
            key = f"{cam}_{topic_level(zone)}_{topic_level(label)}"
            comps[f"{key}_occupied"] = {
                "p": "binary_sensor", "name": f"{cam}{where} {label}",
                "uniq_id": f"{oid}_{key}_occupied", "dev_cla": "occupancy",
                "stat_t": occupancy,
                "val_tpl": "{{ 'ON' if " + _count(zone, label) + " > 0 else 'OFF' }}"}
            comps[f"{key}_count"] = {
                "p": "sensor", "name": f"{cam}{where} {label} count",
                "uniq_id": f"{oid}_{key}_count", "stat_t": occupancy,
                "val_tpl": "{{ " + _count(zone, label) + " }}", "stat_cla": "measurement",
                "ic": "mdi:counter"}
    comps[f"{cam}_event"] = {
        "p": "event", "name": f"{cam} object", "uniq_id": f"{oid}_{cam}_event",
        "stat_t": topics["events"], "evt_typ": list(EVENT_TYPES), "val_tpl": _EVENT_TEMPLATE,
        "ic": "mdi:motion-sensor"}
    if e.snapshots:
        for one in (None, *e.labels):
            key = f"{cam}_snapshot" + ("" if one is None else f"_{topic_level(one)}")
            comps[key] = {
                "p": "image", "name": f"{cam} {one or 'object'} snapshot",
                "uniq_id": f"{oid}_{key}", "img_t": snapshot_topic(base, cam, one),
                "cont_type": "image/jpeg"}
    return comps
