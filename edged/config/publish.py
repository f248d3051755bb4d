"""Config sections for what leaves the device: its name, MQTT, result messages, logs.

The device id names this edged in every topic, `mqtt` is the broker
connection, `output` what a result message contains, `logging` what is said
on stderr. Kept apart from `edged.config.frames` (source to inference), which
decides what is computed, not how it is told.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from edged.config.sections import FilePath, Section, raise_cross_field, topic_levels_problem
from edged.config.text import ConfigError, os_error, show
from edged.decode.detection import SSD_ROLES

_TOPIC_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def default_device_id() -> str:
    """The host name, made safe for an MQTT topic level (no `+`, `#` or `/`)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()).strip("-.")
    return cleaned[:64] or "edged"


class DeviceConfig(Section):
    id: str = Field(
        default_factory=default_device_id, examples=["camera-1"], description=(
        "Name of this device in MQTT topics (<topic_prefix>/<id>/...). Letters, digits, "
        "'.', '_' and '-' only. Default: the host name with other characters replaced by '-'."))

    @field_validator("id")
    @classmethod
    def _topic_level(cls, value: str) -> str:
        if not 1 <= len(value) <= 64 or not _TOPIC_SAFE.match(value):
            raise ValueError("must be 1 to 64 letters, digits, '.', '_' or '-', "
                             "as it is an MQTT topic level")
        return value


def _protocol(value: Any) -> Any:
    return "5" if value == 5 and not isinstance(value, bool) else value


class MqttConfig(Section):
    host: str = Field(default="localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description=(
        "Broker port (usually 1883 plain, 8883 with TLS)."))
    tls: bool = Field(default=False, description=(
        "Connect with TLS (mqtts), verifying the broker's certificate. There is deliberately no "
        "option to skip verification: for a private CA, set ca_file."))
    ca_file: FilePath | None = Field(
        default=None, examples=["/etc/edged/ca.crt"], description=(
        "CA certificate(s) to verify the broker with; unset = the system's CA store."))
    cert_file: FilePath | None = Field(
        default=None, examples=["/etc/edged/client.crt"], description=(
        "Client certificate for mutual TLS (needs key_file)."))
    key_file: FilePath | None = Field(
        default=None, examples=["/etc/edged/client.key"], description=(
        "Private key of cert_file, unencrypted PEM; keep it chmod 600."))
    username: str = Field(default="", description="User name; empty = no authentication.")
    password_file: FilePath | None = Field(
        default=None, examples=["/etc/edged/mqtt-password"], description=(
        "File holding the password (trailing newline ignored); keep it chmod 600."))
    password_env: str = Field(default="", description=(
        "Name of an environment variable holding the password (e.g. set by systemd's "
        "EnvironmentFile=)."))
    password: SecretStr | None = Field(
        default=None, examples=["do-not-put-it-here"], description=(
        "Inline password: allowed but warned about; prefer password_file or password_env."))
    client_id: str = Field(default="", max_length=256, description=(
        "MQTT client id; empty = \"edged-<device.id>\". Must be unique on the broker."))
    protocol: Annotated[Literal["3.1.1", "5"], BeforeValidator(_protocol)] = Field(
        default="3.1.1", description="MQTT protocol version: \"3.1.1\" or \"5\".")
    keepalive_s: int = Field(default=30, ge=5, le=65535, description=(
        "Keepalive interval; a dead link is noticed after about 1.5 times this."))
    topic_prefix: str = Field(default="edged", description=(
        "First topic level(s): results go to <topic_prefix>/<device.id>/results."))
    qos_results: int = Field(default=1, ge=0, le=2, description="QoS of result messages.")
    qos_status: int = Field(default=1, ge=0, le=2, description="QoS of status and stats messages.")
    retain_results: bool = Field(default=False, description="Retain the latest result message.")
    message_expiry_s: int = Field(default=0, ge=0, le=4294967295, description=(
        "MQTT 5 only: results older than this are discarded by the broker; 0 = never."))
    queue_size: int = Field(default=1000, ge=1, le=1000000, description=(
        "Results kept while the broker is unreachable; when full the oldest is dropped "
        "(and counted in stats)."))
    reconnect_min_s: float = Field(default=1.0, gt=0, le=3600, description=(
        "First wait before reconnecting to the broker; doubles, with jitter."))
    reconnect_max_s: float = Field(default=60.0, gt=0, le=3600, description=(
        "Longest wait between reconnect attempts to a broker that answers but refuses or "
        "fails (authentication, TLS). While its port takes no connection at all (broker "
        "down, network out) edged retries within 5 s, so a returning broker is found at "
        "once."))

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        problems = []
        if "/" in self.host or " " in self.host:
            problems.append(("host", f"must be a host name or address, not a URL (got "
                                     f"{show(self.host)}); for mqtts:// set tls = true"))
        if not self.tls:
            # Never let a TLS setting be silently ignored: that would be plain text.
            for key in ("ca_file", "cert_file", "key_file"):
                if getattr(self, key) is not None:
                    problems.append((key, "set but tls = false; set tls = true "
                                          "(the connection would otherwise be plain text)"))
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            other = "cert_file" if missing == "key_file" else "key_file"
            problems.append((missing, f"required when {other} is set (mutual TLS needs both)"))
        sources = [k for k in ("password_file", "password_env", "password")
                   if getattr(self, k) not in (None, "")]
        if len(sources) > 1:
            problems.append((sources[1], f"set only one of password_file, password_env and "
                                         f"password (also set: {sources[0]})"))
        if sources and not self.username and self.protocol == "3.1.1":
            problems.append((sources[0], "needs username (MQTT 3.1.1 sends no password "
                                         "without a user name)"))
        if self.message_expiry_s and self.protocol != "5":
            problems.append(("message_expiry_s", 'needs protocol = "5" (MQTT 3.1.1 has no '
                                                 "message expiry)"))
        problem = topic_levels_problem(self.topic_prefix)
        if problem:
            problems.append(("topic_prefix", f"{problem} (got {show(self.topic_prefix)})"))
        if self.reconnect_max_s < self.reconnect_min_s:
            problems.append(("reconnect_max_s", f"must be >= reconnect_min_s "
                                                f"({self.reconnect_min_s})"))
        raise_cross_field(problems)
        return self

    def resolve_password(self) -> str | None:
        """The password, read now from wherever it is configured; None without one.

        Read at use time rather than at load time so a rotated password file is
        picked up at the next connect, and so the secret is not held in the
        config object longer than needed.
        """
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            try:
                text = Path(self.password_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise ConfigError([f"mqtt.password_file: cannot read {self.password_file}: "
                                   f"{os_error(exc)}"]) from None
            secret = text.rstrip("\r\n")
            if not secret:
                raise ConfigError([f"mqtt.password_file: {self.password_file} is empty"])
            return secret
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise ConfigError([f"mqtt.password_env: environment variable "
                                   f"{self.password_env} is not set or empty"])
            return value
        return None


Decoder = Literal["none", "auto", "classification", "detection", "pose", "segmentation"]


class OutputConfig(Section):
    encoding: Literal["json", "binary"] = Field(default="json", description=(
        "Result payload: json (readable, float lists) or binary (little-endian float32 "
        "tensors with a small header; no size limit)."))
    include_raw: bool = Field(default=True, description=(
        "Publish every dequantized output tensor. With a decoder, false publishes only the "
        "decoded results."))
    max_values: int = Field(default=65536, ge=1, le=100000000, description=(
        "Most raw values in one JSON result message. A model whose outputs are larger fails "
        "check-config: use encoding = \"binary\", a decoder with include_raw = false, or "
        "raise this."))
    decoder: Decoder = Field(default="none", description=(
        "Turn raw outputs into answers: none, auto (inferred from output names and shapes), "
        "classification, detection, pose, segmentation."))
    top_k: int = Field(default=5, ge=1, le=1000, description=(
        "classification: most classes reported; detection: most boxes reported."))
    min_score: float = Field(default=0.25, ge=0, le=1, description=(
        "Results scoring below this are not reported."))
    nms_iou: float = Field(default=0.45, gt=0, le=1, description=(
        "detection: boxes of one class overlapping more than this (IoU) are merged."))
    classes_keep: list[str] = Field(default_factory=list, description=(
        "Report only these labels (empty = all)."))
    classes_ignore: list[str] = Field(default_factory=list, description=(
        "Never report these labels."))
    min_box_area: float = Field(default=0.0, ge=0, description=(
        "detection: smaller boxes (area in frame pixels) are not reported."))
    ssd_outputs: dict[str, str] = Field(default_factory=dict, description=(
        "detection: which output is which of an SSD post-process head, by the names edged "
        "inspect shows, e.g. {boxes = \"...\", classes = \"...\", scores = \"...\", count = "
        "\"...\"}. Needed only when the model file has no TFLite_Detection_PostProcess op to "
        "tell (empty = from the model file)."))
    segmentation_mask: int = Field(default=0, ge=0, le=1024, description=(
        "segmentation: also publish the class map, downscaled so its longer side is at most "
        "this many pixels, one uint8 class id per pixel (0 = no mask)."))
    stats_interval_s: float = Field(default=10.0, ge=1, le=86400, description=(
        "Seconds between retained stats messages (fps, timings, drops, delegate)."))
    publish: Literal["results", "events", "both"] = Field(default="results", description=(
        "results: a message per frame on <device>/results; events: only tracked objects' "
        "events, occupancy and snapshots ([events], a detection decoder); both."))

    @model_validator(mode="after")
    def _consistent(self) -> OutputConfig:
        problems = []
        if not self.include_raw and self.decoder == "none":
            problems.append(("include_raw", 'false with decoder = "none" would publish nothing'))
        if self.classes_keep and self.classes_ignore:
            problems.append(("classes_ignore", "set classes_keep or classes_ignore, not both"))
        if self.publish != "results" and self.decoder not in ("detection", "auto"):
            problems.append(("publish", f'"{self.publish}" needs detections: decoder = '
                             f'"detection" (or "auto" on a detection model), not '
                             f'"{self.decoder}"'))
        if self.ssd_outputs:
            problems.extend(("ssd_outputs", p) for p in _ssd_output_problems(self.ssd_outputs))
        raise_cross_field(problems)
        return self


def _ssd_output_problems(names: dict[str, str]) -> list[str]:
    roles = ", ".join(SSD_ROLES)
    problems = [f"unknown role {k!r} (the roles are {roles})" for k in names
                if k not in SSD_ROLES]
    missing = [r for r in SSD_ROLES if r not in names]
    if missing:
        problems.append(f"no tensor for {', '.join(missing)} (name all four: {roles})")
    problems += [f"{k}: empty tensor name" for k, v in names.items() if not v]
    seen: dict[str, str] = {}
    for k, v in names.items():
        if v and v in seen:
            problems.append(f"{seen[v]} and {k} name the same tensor {v!r}")
        seen.setdefault(v, k)
    return problems


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class LoggingConfig(Section):
    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = (
        Field(default="info", description="Least severe messages logged."))
