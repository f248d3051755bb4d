"""Helpers for the ecosystem tests: Home Assistant's discovery rules, its
templates, the Prometheus text format, and daemons for fleet tests."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

from daemon_helpers import FRAMES
from jinja2.sandbox import ImmutableSandboxedEnvironment

# --------------------------------------------------------- Home Assistant

# The keys edged may use, by their documented abbreviations (Home Assistant's
# "supported abbreviations in MQTT discovery messages"): a typo here would be
# silently ignored by Home Assistant, so the test refuses any other key.
ROOT_KEYS = {"dev", "o", "cmps", "qos", "avty", "stat_t", "e"}
DEVICE_KEYS = {"ids", "name", "mf", "mdl", "sw", "hw", "sn", "cu", "sa", "mdl_id", "cns"}
ORIGIN_KEYS = {"name", "sw", "url"}
AVAILABILITY_KEYS = {"t", "val_tpl", "pl_avail", "pl_not_avail"}
COMPONENT_KEYS = {
    "sensor": {"p", "name", "uniq_id", "stat_t", "val_tpl", "avty", "avty_mode", "unit_of_meas",
               "dev_cla", "stat_cla", "ent_cat", "ic", "sug_dsp_prc", "exp_aft", "frc_upd",
               "json_attr_t", "json_attr_tpl", "en", "qos"},
    "binary_sensor": {"p", "name", "uniq_id", "stat_t", "val_tpl", "avty", "avty_mode",
                      "dev_cla", "ent_cat", "ic", "pl_on", "pl_off", "exp_aft", "en", "qos",
                      "json_attr_t", "json_attr_tpl"},
    "event": {"p", "name", "uniq_id", "stat_t", "val_tpl", "evt_typ", "avty", "avty_mode",
              "dev_cla", "ent_cat", "ic", "en", "qos", "json_attr_t", "json_attr_tpl"},
    "image": {"p", "name", "uniq_id", "img_t", "img_e", "cont_type", "url_t", "url_tpl", "avty",
              "avty_mode", "ent_cat", "ic", "en", "qos"},
    # The controls of remote commands (edged.mqtt.commanddiscovery).
    "number": {"p", "name", "uniq_id", "cmd_t", "cmd_tpl", "stat_t", "val_tpl", "min", "max",
               "step", "mode", "unit_of_meas", "dev_cla", "ent_cat", "ic", "avty", "avty_mode",
               "en", "qos", "ret", "opt", "json_attr_t", "json_attr_tpl"},
    "select": {"p", "name", "uniq_id", "cmd_t", "cmd_tpl", "stat_t", "val_tpl", "ops",
               "ent_cat", "ic", "avty", "avty_mode", "en", "qos", "ret", "opt", "json_attr_t",
               "json_attr_tpl"},
    "switch": {"p", "name", "uniq_id", "cmd_t", "stat_t", "val_tpl", "pl_on", "pl_off",
               "stat_on", "stat_off", "dev_cla", "ent_cat", "ic", "avty", "avty_mode", "en",
               "qos", "ret", "opt", "json_attr_t", "json_attr_tpl"},
    "button": {"p", "name", "uniq_id", "cmd_t", "cmd_tpl", "pl_prs", "dev_cla", "ent_cat", "ic",
               "avty", "avty_mode", "en", "qos", "ret", "json_attr_t", "json_attr_tpl"},
}
SENSOR_STATE_CLASSES = {"measurement", "total", "total_increasing"}
_OBJECT_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def check_device_discovery(topic: str, doc: dict[str, Any], prefix: str = "homeassistant"
                           ) -> None:
    """The device-based discovery payload rules from Home Assistant's MQTT docs."""
    parts = topic.split("/")
    assert parts[:-3] == prefix.split("/") and parts[-3] == "device" and parts[-1] == "config", \
        topic
    assert _OBJECT_ID.match(parts[-2]), f"object id {parts[-2]!r} has characters HA refuses"
    assert set(doc) <= ROOT_KEYS, set(doc) - ROOT_KEYS
    assert {"dev", "o", "cmps"} <= set(doc), "dev, o and cmps are required"
    assert set(doc["dev"]) <= DEVICE_KEYS and (doc["dev"].get("ids") or doc["dev"].get("cns"))
    assert set(doc["o"]) <= ORIGIN_KEYS and doc["o"].get("name"), "origin needs a name"
    assert doc["cmps"], "at least one component"
    # A component given by its platform alone is how device discovery removes it.
    live = {k: c for k, c in doc["cmps"].items() if set(c) != {"p"}}
    unique_ids = [c.get("uniq_id") for c in live.values()]
    assert all(unique_ids) and len(set(unique_ids)) == len(unique_ids), unique_ids
    for key, comp in doc["cmps"].items():
        assert _OBJECT_ID.match(key), key
        platform = comp.get("p")
        assert platform in COMPONENT_KEYS, f"{key}: platform {platform!r}"
        assert set(comp) <= COMPONENT_KEYS[platform], (key, set(comp) - COMPONENT_KEYS[platform])
        if key not in live:
            continue
        if platform == "image":
            assert comp.get("img_t") or comp.get("url_t"), f"{key}: no image topic"
            continue
        if platform in ("number", "select", "switch", "button"):
            assert comp.get("cmd_t"), f"{key}: a control needs its command topic"
        if platform == "button":
            continue  # pressed, never in a state
        if platform == "select":
            assert comp.get("ops"), f"{key}: a select needs its options"
        if platform == "event":
            assert comp.get("evt_typ"), f"{key}: an event entity needs its event types"
        assert comp.get("stat_t") or doc.get("stat_t"), f"{key}: no state topic"
        if "stat_cla" in comp:
            assert comp["stat_cla"] in SENSOR_STATE_CLASSES, key
        for item in comp.get("avty", []):
            assert set(item) <= AVAILABILITY_KEYS and item.get("t"), (key, item)
        for tpl_key in ("val_tpl", "json_attr_tpl"):
            if tpl_key in comp:
                _env().parse(comp[tpl_key])  # syntax


def _env() -> ImmutableSandboxedEnvironment:
    # Home Assistant renders templates in an immutable sandbox as well.
    return ImmutableSandboxedEnvironment()


def render(template: str, payload: bytes) -> str:
    """A value template as Home Assistant renders it for one MQTT message."""
    text = payload.decode()
    try:
        value_json = json.loads(text)
    except ValueError:
        value_json = None
    return _env().from_string(template).render(value=text, value_json=value_json).strip()


# --------------------------------------------------------------- Prometheus

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_prom(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset[tuple[str, str]]],
                                                         float]]:
    """The text exposition format (0.0.4), strictly: (types by family, samples).

    Fails on anything node_exporter's parser would refuse: a sample before its
    TYPE, a family split in two, duplicate series, malformed labels or values."""
    assert text.endswith("\n"), "must end with a newline"
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    finished: set[str] = set()
    current = ""
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, kind, name, *rest = line.split(" ", 3)
            if name != current:
                assert name not in finished, f"line {n}: family {name} split"
                if current:
                    finished.add(current)
                current = name
            if kind == "TYPE":
                assert rest and rest[0] in ("gauge", "counter"), f"line {n}: {line}"
                assert name not in types, f"line {n}: second TYPE for {name}"
                types[name] = rest[0]
            continue
        assert not line.startswith("#") and line, f"line {n}: {line!r}"
        m = _SAMPLE.match(line)
        assert m, f"line {n}: not a sample: {line!r}"
        name, _, body, value = m.groups()
        assert name == current and name in types, f"line {n}: {name} without its TYPE"
        if types[name] == "counter":
            assert name.endswith("_total"), f"counter {name} must end in _total"
        labels = []
        rest = body or ""
        while rest:
            lm = _LABEL.match(rest)
            assert lm, f"line {n}: bad labels {body!r}"
            raw = lm.group(2)
            labels.append((lm.group(1), raw.replace('\\"', '"').replace("\\n", "\n")
                           .replace("\\\\", "\\")))
            rest = rest[lm.end():]
        key = (name, frozenset(labels))
        assert key not in samples, f"line {n}: duplicate series"
        number = float(value)
        assert not math.isnan(number), f"line {n}: NaN"
        samples[key] = number
    return types, samples


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    """The one sample of `name` whose labels include `labels`."""
    found = [v for (n, ls), v in samples.items()
             if n == name and set(labels.items()) <= set(ls)]
    assert len(found) == 1, f"{name} {labels}: {len(found)} samples"
    return found[0]


# ------------------------------------------------------------------ frames

def copy_frames(dst: Path, pattern: str = "digit_*.png") -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(FRAMES.glob(pattern)):
        shutil.copy(f, dst)
    return dst
