"""Home Assistant entities of a camera: its results, its figures and its events.

A config with one `[source]` keeps the device-level entities it always had
(`top_class`, read from `<device>/results`); with `[[cameras]]`, each camera
gets its own, prefixed with its id (`porch_top_class`, named "porch Top class",
read from `<device>/porch/results`), its inference rate and a source problem
sensor from the stats' `cameras`, and its events entities
(`edged.mqtt.eventdiscovery`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

from edged.mqtt.eventdiscovery import EventEntities, event_components
from edged.mqtt.eventpayload import camera_topics

# Home Assistant allows only these in an object id.
UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# Results templates: a missing `decoded` (a frame the decoder skipped) must not
# break the entity, hence the `default` filters.
_CLASSES: Final = "{% set c = (value_json.decoded | default({})).classes | default([]) %}"
_DETECTIONS: Final = "{% set d = (value_json.decoded | default({})).detections | default([]) %}"
_POSES: Final = "{% set p = (value_json.decoded | default({})).poses | default([]) %}"
_COUNTS: Final = (
    _DETECTIONS + "{% set ns = namespace(c={}) %}{% for x in d %}"
    "{% set k = (x.label if x.label is not none else x.label_id) | string %}"
    "{% set ns.c = dict(ns.c, **{k: ns.c.get(k, 0) + 1}) %}{% endfor %}{{ ns.c | tojson }}")


def sensor(oid: str, key: str, name: str, topic: str, template: str, **extra: Any
            ) -> dict[str, Any]:
    return {"p": "sensor", "name": name, "uniq_id": f"{oid}_{key}", "stat_t": topic,
            "val_tpl": template, **extra}


# The first class's label, or its id when the model has no labels file.
_TOP_LABEL = _CLASSES + ("{{ ((c[0].label if c[0].label is not none else c[0].label_id)"
                         " if c else 'none') }}")


# A cascade's answer (docs/cascade.md) on the best scoring detection it classified.
_CLASSIFIED: Final = (_DETECTIONS + "{% set k = d | selectattr('classes', 'defined') "
                      "| selectattr('classes') | list %}")
_TOP_CLASSIFIED: Final = _CLASSIFIED + (
    "{{ ((k[0].classes[0].label if k[0].classes[0].label is not none "
    "else k[0].classes[0].label_id) if k else 'none') }}")
_CLASSIFIED_ATTRIBUTES: Final = _CLASSIFIED + (
    "{{ {'score': (k[0].classes[0].score if k else 0), 'detection': "
    "(k[0].label if k else none), 'classified': k | count} | tojson }}")


def _result_components(oid: str, kind: str, topic: str, class_names: list[str],
                       cascade: bool = False) -> dict[str, dict[str, Any]]:
    """Entities fed by a results topic, per decoder kind (`cascade`: a classifier
    answers on the detections)."""
    meas = {"stat_cla": "measurement"}
    if kind == "classification":
        return {
            "top_class": sensor(oid, "top_class", "Top class", topic, _TOP_LABEL, ic="mdi:tag"),
            "top_score": sensor(oid, "top_score", "Top score", topic,
                                 _CLASSES + "{{ c[0].score if c else 0 }}",
                                 sug_dsp_prc=2, **meas),
        }
    if kind == "detection":
        comps = {"objects": sensor(oid, "objects", "Objects", topic,
                                    _DETECTIONS + "{{ d | count }}", ic="mdi:shape",
                                    json_attr_t=topic, json_attr_tpl=_COUNTS, **meas)}
        if cascade:
            comps["top_classified"] = sensor(
                oid, "top_classified", "Classified as", topic, _TOP_CLASSIFIED,
                ic="mdi:tag-search", json_attr_t=topic, json_attr_tpl=_CLASSIFIED_ATTRIBUTES)
        for name in class_names:
            key = "count_" + UNSAFE.sub("_", name.lower())
            comps[key] = sensor(
                oid, key, f"{name} count", topic,
                _DETECTIONS + "{{ d | selectattr('label', 'eq', " + orjson.dumps(name).decode()
                + ") | list | count }}", **meas)
        return comps
    if kind == "pose":
        return {"pose_score": sensor(oid, "pose_score", "Pose score", topic,
                                      _POSES + "{{ p[0].score if p else 0 }}",
                                      sug_dsp_prc=2, **meas)}
    if kind == "segmentation":
        return {
            "top_class": sensor(oid, "top_class", "Largest class", topic,
                                 _TOP_LABEL, ic="mdi:tag"),
            "top_fraction": sensor(oid, "top_fraction", "Largest class fraction", topic,
                                    _CLASSES + "{{ c[0].fraction if c else 0 }}",
                                    sug_dsp_prc=2, **meas),
        }
    return {}


@dataclass(frozen=True, slots=True)
class CameraEntities:
    """A camera's part of the discovery config (the service builds it from the config)."""

    camera: str | None = None  # its [[cameras]] id; None: the file's one camera
    json_results: bool = True  # output.encoding == "json": HA cannot read binary
    classes_keep: tuple[str, ...] = ()
    decoder: str | None = None  # its decoder kind; None: the one discovery_config is given
    events: EventEntities | None = None  # output.publish events/both
    cascade: bool = False  # [cascade]: a classifier's answers on its detections


def camera_components(oid: str, base: str, c: CameraEntities, decoder: str
                      ) -> dict[str, dict[str, Any]]:
    kind = c.decoder or decoder
    if c.camera is None:
        comps = _result_components(oid, kind, f"{base}/results", list(c.classes_keep),
                                   c.cascade) if c.json_results else {}
    else:
        cam = c.camera
        comps = {f"{cam}_{key}": {**comp, "name": f"{cam} {comp['name']}",
                                  "uniq_id": f"{oid}_{cam}_{key}"}
                 for key, comp in (_result_components(
                     oid, kind, camera_topics(base, cam)["results"], list(c.classes_keep),
                     c.cascade) if c.json_results else {}).items()}
        comps.update(_camera_figures(oid, f"{base}/stats", cam))
    if c.events is not None:
        comps.update(event_components(oid, base, c.events))
    return comps


def _camera_figures(oid: str, stats: str, cam: str) -> dict[str, dict[str, Any]]:
    """The camera's inference rate and whether its source is down, from the stats."""
    mine = f"(value_json.cameras | default({{}}))[{orjson.dumps(cam).decode()}] | default({{}})"
    return {
        f"{cam}_fps": sensor(oid, f"{cam}_fps", f"{cam} Inference rate", stats,
                             "{{ (" + mine + ").fps | default(0) }}", unit_of_meas="fps",
                             stat_cla="measurement", sug_dsp_prc=1, ic="mdi:speedometer"),
        f"{cam}_source": {
            "p": "binary_sensor", "name": f"{cam} Source problem",
            "uniq_id": f"{oid}_{cam}_source", "dev_cla": "problem", "stat_t": stats,
            "val_tpl": "{{ 'OFF' if (" + mine + ").source | default('running') == 'running' "
                       "else 'ON' }}",
            "json_attr_t": stats,
            "json_attr_tpl": "{{ {'state': (" + mine + ").source | default(''), 'error': (" +
                             mine + ").last_error | default('')} | tojson }}",
            "ent_cat": "diagnostic"},
    }
