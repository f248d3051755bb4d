"""Home Assistant MQTT discovery: one device-based config message per device.

Home Assistant's device discovery (2024.11+) takes every entity of a device in
one retained message on `<discovery_prefix>/device/<object_id>/config`::

    {"dev": {...}, "o": {...}, "qos": 0,
     "cmps": {"<component id>": {"p": "sensor", "uniq_id": ..., "stat_t": ...,
                                 "val_tpl": "{{ value_json.fps }}", ...}, ...}}

`dev` (device) and `o` (origin) are required at the root; each component needs
`p` (platform) and `uniq_id`. Keys use Home Assistant's documented
abbreviations. Entities read edged's own topics, nothing is published for
Home Assistant alone: the retained status (availability and a connectivity
sensor, whose attributes say why it is offline and where the model runs), the
retained stats (fps, inference time, delegate, CPU fallback, worker restarts)
and, for JSON results with a decoder, the results (top class and score, or
object counts per class).

When: on every (re)connect and whenever Home Assistant's birth message
(`<discovery_prefix>/status` = `online`) arrives, so a restarted Home
Assistant or a broker that lost its retained messages sees the device again.
Disabled: an edged config left on the broker earlier is cleared with an
empty retained message, which is how Home Assistant removes a device.
Enabled: an entity of an earlier config (retained, or announced before a
reload) that this one lacks is sent as a platform-only component, which is
how device discovery removes one entity (events turned off, a zone removed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson

from edged import __version__
from edged.mqtt.cameradiscovery import UNSAFE, CameraEntities, camera_components, sensor
from edged.mqtt.commanddiscovery import command_components
from edged.mqtt.publisher import Publisher

log = logging.getLogger("edged.discovery")

ORIGIN: Final = "edged"

_AVAILABLE: Final = "{{ value_json.state }}"
# Why it is offline (a fatal stop's error) and where the model runs, as attributes.
_STATUS_ATTRIBUTES: Final = (
    "{{ {'reason': value_json.reason, 'error': value_json.error | default(''), "
    "'delegate': value_json.delegate | default(''), "
    "'fallback': value_json.fallback | default('')} | tojson }}")
def object_id(device_id: str) -> str:
    """The device's discovery object id: `edged_<device id>`, `.` and any
    other character Home Assistant refuses replaced by `_`."""
    return "edged_" + UNSAFE.sub("_", device_id)


def discovery_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/device/{object_id(device_id)}/config"


def _board_components(oid: str, stats: str, board: tuple[str, ...]
                      ) -> dict[str, dict[str, Any]]:
    """Temperatures and throttling, for the figures this board reports."""
    diag = {"ent_cat": "diagnostic"}
    temp = {"unit_of_meas": "°C", "dev_cla": "temperature", "stat_cla": "measurement",
            "sug_dsp_prc": 1, **diag}
    comps: dict[str, dict[str, Any]] = {}
    if "soc_temp_c" in board:
        comps["soc_temp"] = sensor(oid, "soc_temp", "SoC temperature", stats,
                                    "{{ value_json.soc_temp_c }}", **temp)
    if "edgetpu_temp_c" in board:
        comps["edgetpu_temp"] = sensor(oid, "edgetpu_temp", "Edge TPU temperature", stats,
                                        "{{ value_json.edgetpu_temp_c }}", **temp)
    if "throttled" in board:
        comps["throttled"] = {
            "p": "binary_sensor", "name": "Throttled", "uniq_id": f"{oid}_throttled",
            "dev_cla": "problem", "stat_t": stats,
            "val_tpl": "{{ 'ON' if value_json.throttled | default([]) else 'OFF' }}",
            "json_attr_t": stats,
            "json_attr_tpl": "{{ {'now': value_json.throttled | default([]), 'since_boot': "
                             "value_json.throttled_since_boot | default([])} | tojson }}",
            **diag}
    return comps


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """What discovery needs from the config, and no more (service builds it)."""

    device_id: str
    topic_base: str  # <prefix>/<device id>
    enabled: bool = False  # homeassistant.enabled
    prefix: str = "homeassistant"  # homeassistant.discovery_prefix
    name: str = ""  # homeassistant.name; empty: "edged <device id>"
    board: tuple[str, ...] = ()  # the health figures the board reports (soc_temp_c, ...)
    cameras: tuple[CameraEntities, ...] = (CameraEntities(),)  # results, events, per camera
    # Remote commands on: their controls, and every [[cameras]] id (switched off too).
    commands: tuple[str, ...] | None = None


def discovery_config(s: DiscoverySettings, *, model: str, decoder: str) -> dict[str, Any]:
    """The device discovery payload for these settings, model file and decoder kind."""
    dev_id = s.device_id
    oid = object_id(dev_id)
    base = s.topic_base
    status, stats = f"{base}/status", f"{base}/stats"
    avty = [{"t": status, "val_tpl": _AVAILABLE}]
    diag = {"ent_cat": "diagnostic"}
    cmps: dict[str, dict[str, Any]] = {
        "status": {"p": "binary_sensor", "name": "Online", "uniq_id": f"{oid}_status",
                   "dev_cla": "connectivity", "stat_t": status, "val_tpl": _AVAILABLE,
                   "pl_on": "online", "pl_off": "offline", "json_attr_t": status,
                   "json_attr_tpl": _STATUS_ATTRIBUTES, **diag},
        "fps": sensor(oid, "fps", "Inference rate", stats, "{{ value_json.fps }}",
                       unit_of_meas="fps", stat_cla="measurement", sug_dsp_prc=1,
                       ic="mdi:speedometer"),
        "inference_ms": sensor(oid, "inference_ms", "Inference time", stats,
                                "{{ value_json.invoke_ms_p50 }}", unit_of_meas="ms",
                                dev_cla="duration", stat_cla="measurement", sug_dsp_prc=1),
        "latency_ms": sensor(oid, "latency_ms", "Latency", stats,
                              "{{ value_json.latency_ms_p50 }}", unit_of_meas="ms",
                              dev_cla="duration", stat_cla="measurement", sug_dsp_prc=1),
        "delegate": sensor(oid, "delegate", "Delegate", stats, "{{ value_json.delegate }}",
                            ic="mdi:chip", **diag),
        # On while the model runs on the CPU instead of the configured delegate; the
        # reason (often longer than a state's 255 characters) is an attribute.
        "fallback": {"p": "binary_sensor", "name": "CPU fallback", "uniq_id": f"{oid}_fallback",
                     "dev_cla": "problem", "stat_t": stats,
                     "val_tpl": "{{ 'ON' if value_json.fallback | default('') else 'OFF' }}",
                     "json_attr_t": stats,
                     "json_attr_tpl": "{{ {'reason': value_json.fallback | default('')} "
                                      "| tojson }}", **diag},
        "worker_restarts": sensor(oid, "worker_restarts", "Worker restarts", stats,
                                   "{{ value_json.worker_restarts }}",
                                   stat_cla="total_increasing", ic="mdi:restart", **diag),
    }
    cmps.update(_board_components(oid, stats, s.board))
    for camera in s.cameras:
        cmps.update(camera_components(oid, base, camera, decoder))
    if s.commands is not None:
        cmps.update(command_components(oid, base, s.commands))
    for key, comp in cmps.items():
        if key != "status":  # the connectivity sensor must still say "off" when offline
            comp["avty"] = avty
    return {
        "dev": {"ids": [oid], "name": s.name or f"edged {dev_id}",
                "mf": "edged", "mdl": model, "sw": __version__, "sn": dev_id},
        "o": {"name": ORIGIN, "sw": __version__},
        "qos": 0,
        "cmps": cmps,
    }


class _Births:
    """Home Assistant's birth message, answered at most every ANSWER_S and logged at
    most every LOG_S: anyone who may publish on the topic can send thousands, and
    the config is retained, so a restarted Home Assistant that asks twice in a
    few seconds has it already."""

    ANSWER_S: Final = 10.0
    LOG_S: Final = 600.0

    def __init__(self) -> None:
        self._answered = self._logged = float("-inf")
        self._unlogged = 0

    def arrived(self, now: float) -> tuple[bool | None, int]:
        """None: leave it; True: answer and log it; False: answer quietly. With the
        count of birth messages not logged before this one."""
        if now - self._logged >= self.LOG_S:
            self._answered = self._logged = now
            unlogged, self._unlogged = self._unlogged, 0
            return True, unlogged
        self._unlogged += 1
        if now - self._answered < self.ANSWER_S:
            return None, self._unlogged
        self._answered = now
        return False, self._unlogged


def _platforms(config: dict[str, Any]) -> dict[str, str]:
    """Component -> platform, of the components that are more than a removal."""
    cmps = config.get("cmps")
    return {k: str(v["p"]) for k, v in cmps.items()
            if isinstance(v, dict) and "p" in v and len(v) > 1} if isinstance(cmps, dict) else {}


def _is_ours(payload: bytes) -> bool:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("o"), dict) \
        and doc["o"].get("name") == ORIGIN


class Discovery:
    """Keeps one device's discovery config on the broker, through `publisher`.

    Build it before `publisher.start()` (it subscribes on every connect).
    Enabled: `announce(config)` publishes now (when connected), again on every
    reconnect and on Home Assistant's birth message. Disabled: a config of
    ours found retained on the broker is cleared.
    """

    def __init__(self, publisher: Publisher, s: DiscoverySettings) -> None:
        self.enabled = s.enabled
        self.topic = discovery_topic(s.prefix, s.device_id)
        self.birth_topic = f"{s.prefix}/status"
        self._publisher = publisher
        self._payload: bytes | None = None
        self._config: dict[str, Any] | None = None
        # Components announced before (by this run, or the config found retained) and
        # their platforms: one that is gone is removed with a platform-only entry.
        self._before: dict[str, str] = {}
        self._births = _Births()
        if self.enabled:
            publisher.watch(self.birth_topic, self._on_birth)
            publisher.watch(self.topic, self._on_previous, once=True)
            publisher.add_connect_hook(self._send)
        else:
            # Only what was retained there, once: not a standing subscription anyone
            # may flood (the publisher refuses oversized messages in any case).
            publisher.watch(self.topic, self._on_left_behind, once=True)

    def announce(self, config: dict[str, Any]) -> None:
        """Set (or change) the config; published now if connected."""
        if not self.enabled:
            return
        if self._config is not None:
            self._before.update(_platforms(self._config))
        self._config = config
        self._render()

    def _render(self) -> None:
        if self._config is None:
            return
        cmps = self._config["cmps"]
        gone = {k: {"p": p} for k, p in self._before.items() if k not in cmps}
        payload = orjson.dumps({**self._config, "cmps": {**cmps, **gone}})
        if payload == self._payload:
            return
        self._payload = payload
        if self._publisher.is_connected():
            self._send()

    def _on_previous(self, payload: bytes) -> None:
        """The config retained from an earlier run: entities it had and this one has
        not (zones or labels removed, events turned off) are removed."""
        if payload and _is_ours(payload):
            self._before.update(_platforms(orjson.loads(payload)))
            self._render()

    def _send(self) -> None:
        if self._payload is not None:
            self._publisher.publish_control(self.topic, self._payload)

    def _on_birth(self, payload: bytes) -> None:
        if payload.strip() != b"online":
            return
        say, unlogged = self._births.arrived(time.monotonic())
        if say is None:
            return
        if say:
            log.info("Home Assistant is online: announcing %s again%s", self.topic,
                     f" ({unlogged} birth messages since this was last logged)"
                     if unlogged else "")
        self._send()

    def _on_left_behind(self, payload: bytes) -> None:
        if payload and _is_ours(payload):
            log.info("homeassistant.enabled = false: removing %s", self.topic)
            self._publisher.publish_control(self.topic, b"")
