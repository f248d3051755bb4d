"""Home Assistant controls for remote commands (issue 20): each sends a command
(`edged.mqtt.commands`) and shows the value in effect, from the stats' `settings`.

Device: "Min score" and "Max inference rate" numbers, a "Publish" select
(results, events, both), a "Reload" button. Per
`[[cameras]]` entry, switched off ones too (else one switched off could not be
switched on again): an "Enabled" switch and a "Max inference rate" number.
"""

from __future__ import annotations

from typing import Any

import orjson

_SETTINGS = "(value_json.settings | default({}))"


def _set(key: str) -> str:
    """A command template: {"key": key, "value": <the entity's value>}."""
    return '{"key": ' + orjson.dumps(key).decode() + ', "value": {{ value }}}'


def _number(oid: str, key: str, name: str, *, cmd_t: str, setting: str, value: str,
            **limits: Any) -> dict[str, Any]:
    return {"p": "number", "name": name, "uniq_id": f"{oid}_{key}", "cmd_t": cmd_t,
            "cmd_tpl": _set(setting), "stat_t": "", "val_tpl": value, "mode": "box",
            "ent_cat": "config", **limits}


def command_components(oid: str, base: str, cameras: tuple[str, ...]
                       ) -> dict[str, dict[str, Any]]:
    stats, set_topic = f"{base}/stats", f"{base}/cmd/set"
    comps = {
        "set_min_score": _number(oid, "set_min_score", "Min score", cmd_t=set_topic,
                                 setting="output.min_score",
                                 value="{{ " + _SETTINGS + ".min_score | default(0) }}",
                                 min=0, max=1, step=0.01, ic="mdi:filter"),
        "set_max_fps": _number(oid, "set_max_fps", "Max inference rate", cmd_t=set_topic,
                               setting="inference.max_fps",
                               value="{{ " + _SETTINGS + ".max_fps | default(0) }}",
                               min=0, max=100, step=0.5, unit_of_meas="fps",
                               ic="mdi:speedometer"),
        "set_publish": {
            "p": "select", "name": "Publish", "uniq_id": f"{oid}_set_publish",
            "cmd_t": set_topic, "cmd_tpl": '{"key": "output.publish", "value": "{{ value }}"}',
            "stat_t": stats, "val_tpl": "{{ " + _SETTINGS + ".publish | default('results') }}",
            "ops": ["results", "events", "both"], "ent_cat": "config", "ic": "mdi:send"},
        "reload": {"p": "button", "name": "Reload", "uniq_id": f"{oid}_reload",
                   "cmd_t": f"{base}/cmd/reload", "pl_prs": "{}", "ent_cat": "config",
                   "ic": "mdi:reload"},
    }
    for cam in cameras:
        mine = (f"({_SETTINGS}.cameras | default({{}}))[{orjson.dumps(cam).decode()}] "
                "| default({})")
        cmd_t = f"{base}/{cam}/cmd/set"
        comps[f"{cam}_enabled"] = {
            "p": "switch", "name": f"{cam} Enabled", "uniq_id": f"{oid}_{cam}_enabled",
            "cmd_t": cmd_t, "pl_on": '{"key": "enabled", "value": true}',
            "pl_off": '{"key": "enabled", "value": false}', "stat_t": stats,
            "val_tpl": "{{ 'ON' if (" + mine + ").enabled | default(true) else 'OFF' }}",
            "stat_on": "ON", "stat_off": "OFF", "ent_cat": "config", "ic": "mdi:cctv"}
        comps[f"{cam}_set_max_fps"] = _number(
            oid, f"{cam}_set_max_fps", f"{cam} Max inference rate", cmd_t=cmd_t,
            setting="max_fps", value="{{ (" + mine + ").max_fps | default(0) }}", min=0,
            max=100, step=0.5, unit_of_meas="fps", ic="mdi:speedometer")
    for comp in comps.values():
        if comp.get("stat_t") == "":
            comp["stat_t"] = stats
    return comps
