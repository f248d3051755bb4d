"""Config sections for the tools edged plugs into: Home Assistant and Prometheus.

Kept apart from `edged.config.frames` and `edged.config.publish` (the daemon's
own stages) so each file stays readable; `edged.config` puts them all in one
`Config`.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from edged.config.sections import FilePath, Section, topic_levels_problem


class HomeAssistantConfig(Section):
    enabled: bool = Field(default=False, description=(
        "Announce this device to Home Assistant by MQTT discovery (one retained "
        "<discovery_prefix>/device/<id>/config message: availability, fps, inference time, "
        "delegate, worker restarts and the top decoded result). Turning it off removes the "
        "device from Home Assistant (the retained config is cleared)."))
    discovery_prefix: str = Field(default="homeassistant", description=(
        "Home Assistant's discovery prefix (its MQTT integration setting). Home Assistant's "
        "birth message on <discovery_prefix>/status makes edged announce itself again."))
    name: str = Field(default="", max_length=64, description=(
        "Device name shown in Home Assistant; empty = \"edged <device.id>\"."))

    @field_validator("discovery_prefix")
    @classmethod
    def _topic(cls, value: str) -> str:
        problem = topic_levels_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class MetricsConfig(Section):
    textfile: FilePath | None = Field(
        default=None, examples=["/var/lib/node_exporter/textfile_collector/edged.prom"],
        description=(
            "Write the stats figures as Prometheus metrics to this file (atomically, at every "
            "stats interval) for node_exporter's textfile collector. edged opens no HTTP "
            "port. Unset = no file."))

    @field_validator("textfile")
    @classmethod
    def _prom_suffix(cls, value: FilePath | None) -> FilePath | None:
        if value is not None and value.suffix != ".prom":
            raise ValueError("must end in .prom (node_exporter's textfile collector reads "
                             "only *.prom files)")
        return value
