"""The configuration file: loading, validation messages and warnings.

Every field has a default that works, so an empty file runs the demo
(synthetic frames, the bundled digits model, a broker on localhost). Relative
paths are relative to the directory of the config file, because under
systemd the working directory is `/`. The sections themselves are in
`edged.config.frames` (source to inference), `edged.config.publish` (device,
mqtt, output, logging) and `edged.config.integrations`, on the base in
`edged.config.sections`; the daemon's own are re-exported here.

Problems are reported as `file:line: section.key: message`, all of them at
once, never as a traceback; see `load_config`.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, model_validator

from edged.config.arrays import arrays_behind
from edged.config.cameras import (
    Camera,
    CameraConfig,
    camera_problems,
    camera_sections,
    cameras_of,
)
from edged.config.cascade import CascadeConfig, cascade_problems
from edged.config.commands import CommandsConfig, commands_problems
from edged.config.events import EventsConfig
from edged.config.frames import (
    InferenceConfig,
    ModelConfig,
    PreprocessConfig,
    SourceConfig,
    packaged_model,
)
from edged.config.integrations import HomeAssistantConfig, MetricsConfig
from edged.config.models import (
    ModelEntry,
    accelerators,
    model_sections,
    models_problems,
    worker_keys,
)
from edged.config.overrides import OverrideError, with_overrides
from edged.config.publish import (
    DeviceConfig,
    LoggingConfig,
    MqttConfig,
    OutputConfig,
    default_device_id,
)
from edged.config.sections import Section, raise_cross_field
from edged.config.text import (
    ConfigError,
    KeyPath,
    key_lines,
    line_of,
    os_error,
    show,
    syntax_error,
)
from edged.config.updates import UpdatesConfig, updates_problems
from edged.config.wording import messages

__all__ = [
    "ARRAYS", "DEFAULT_PATH", "SECTIONS", "Camera", "CameraConfig", "Config", "ConfigError",
    "ConfigFile", "DeviceConfig", "HomeAssistantConfig",
    "InferenceConfig", "LoggingConfig", "MetricsConfig", "ModelConfig", "MqttConfig",
    "OutputConfig", "PreprocessConfig", "SourceConfig",
    "config_warnings", "default_device_id", "default_path", "load_config", "packaged_model",
    "read_config", "read_toml",
]


DEFAULT_PATH = "/etc/edged/edged.toml"


def default_path() -> str:
    """The file `edged run` and `edged check-config` read when given none."""
    return os.environ.get("EDGED_CONFIG") or DEFAULT_PATH


class Config(Section):
    """The whole file: one attribute per section."""

    device: DeviceConfig = Field(
        default_factory=DeviceConfig, description="This device: its name in MQTT topics.")
    source: SourceConfig = Field(
        default_factory=SourceConfig, description="Where frames come from.")
    preprocess: PreprocessConfig = Field(
        default_factory=PreprocessConfig, description="How a frame becomes the model's input.")
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="The model files.")
    inference: InferenceConfig = Field(
        default_factory=InferenceConfig, description=(
            "Runtime, delegate (CPU, Edge TPU, external) and the supervised inference worker."))
    mqtt: MqttConfig = Field(
        default_factory=MqttConfig,
        description="The broker connection and what is published where.")
    output: OutputConfig = Field(
        default_factory=OutputConfig, description="What a result message contains.")
    events: EventsConfig = Field(
        default_factory=EventsConfig, description=(
            "Detections into tracked objects, zones, debounced events, occupancy and "
            "snapshots; on when output.publish is \"events\" or \"both\"."))
    cascade: CascadeConfig = Field(
        default_factory=CascadeConfig, description=(
            "A classifier on crops of the detections, its answer attached to each "
            "(docs/cascade.md); off unless model is set."))
    commands: CommandsConfig = Field(
        default_factory=CommandsConfig, description=(
            "Remote commands over MQTT, persisted in an overrides file (docs/fleet.md); off."))
    updates: UpdatesConfig = Field(
        default_factory=UpdatesConfig, description=(
            "New [model] files over MQTT: signed, checked, rolled back (docs/fleet.md); off."))
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig, description="Logging, to stderr (journald under systemd).")
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig,
        description="Home Assistant MQTT discovery (off unless enabled).")
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig,
        description="Prometheus metrics as a textfile for node_exporter (no HTTP port).")
    cameras: list[CameraConfig] = Field(default_factory=list, max_length=16, description=(
        "Several cameras sharing the model (docs/cameras.md): each one is [source] and the "
        "other sections with its own keys replaced. None: the one camera of [source]."))
    models: list[ModelEntry] = Field(default_factory=list, max_length=8, description=(
        "Models besides [model], each on its accelerator, for the cameras that name it "
        "(cameras.model); each model in use runs in a worker of its own, the models on one "
        "Edge TPU in one worker together."))

    # Each camera's sections, validated with the file's context (relative paths).
    _camera_sections: list[dict[str, Section]] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _cameras(self, info: ValidationInfo) -> Config:
        top, context = self.sections(), info.context
        cameras, models = list(enumerate(self.cameras)), list(enumerate(self.models))
        enabled = [(i, c) for i, c in cameras if c.enabled]
        by_model = {entry.id: model_sections(top, entry, index, context)[0]
                    for index, entry in models}
        raise_cross_field(camera_problems(top, cameras, context) + models_problems(
            top, models, [(i, c.model) for i, c in enabled], context) + cascade_problems(
            self.cascade, [(i, c.model, c.cascade) for i, c in enabled],
            [m.id for m in self.models], worker_keys(accelerators(top, by_model)))
            + commands_problems(self.commands, self.mqtt)
            + updates_problems(self.updates, self.commands))
        self._camera_sections = [
            {**camera_sections(top, camera, index, context)[0], **by_model.get(camera.model, {})}
            for index, camera in cameras]
        return self

    def camera_list(self) -> list[Camera]:
        """Every camera, each as the one-camera config it amounts to (the file's one
        camera, [source], when it has no [[cameras]])."""
        return cameras_of(self, self._camera_sections)

    def sections(self) -> dict[str, Section]:
        """Every section by name (the arrays of tables, such as cameras, are not)."""
        return {name: getattr(self, name) for name in SECTIONS}

    @property
    def client_id(self) -> str:
        """The MQTT client id in effect."""
        return self.mqtt.client_id or f"edged-{self.device.id}"

    @property
    def topic_base(self) -> str:
        """`<topic_prefix>/<device id>`, under which every topic lives."""
        return f"{self.mqtt.topic_prefix}/{self.device.id}"


SECTIONS: dict[str, type[Section]] = {
    name: info.annotation for name, info in Config.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, Section)
}
ARRAYS: dict[str, type[Section]] = {  # top-level [[name]] tables
    "cameras": CameraConfig, "models": ModelEntry}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class ConfigFile:
    """A config as loaded, with the text it came from, to place messages on lines."""

    path: Path
    config: Config
    text: str = ""
    lines: Mapping[KeyPath, int] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()  # the commands' settings merged over the file's

    def problem(self, key: str, message: str, *, warning: bool = False) -> str:
        """A message about dotted `key`, placed on its line in this file."""
        return format_problem(self.path, self.lines, tuple(key.split(".")), message,
                              warning=warning)


def where(path: Path | str, lines: Mapping[KeyPath, int], loc: tuple[str | int, ...]) -> str:
    """`file:line` of a key, or just `file` when the key is not written in it."""
    line = line_of(lines, loc)
    return f"{path}:{line}" if line is not None else f"{path}"


def format_problem(path: Path | str, lines: Mapping[KeyPath, int],
                   loc: tuple[str | int, ...], message: str, *, warning: bool = False) -> str:
    """One line: `file:line: [warning: ]section.key: message`."""
    key = dotted(loc)
    prefix = f"{where(path, lines, loc)}: " + ("warning: " if warning else "")
    return f"{prefix}{key}: {message}" if key else f"{prefix}{message}"


def dotted(loc: tuple[str | int, ...]) -> str:
    """`mqtt.port`, `preprocess.mean[2]`, `camera."my key"`: a key path as TOML writes it."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + (part if _BARE_KEY.match(part) else show(part, 60))
    return out


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; raise `ConfigError` listing every problem."""
    return read_config(path).config


def read_toml(shown: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and its TOML document; ConfigError (one line) when unreadable."""
    try:
        text = shown.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"{shown}: cannot read: {os_error(exc)}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{shown}: cannot read: not UTF-8 text (byte "
                           f"0x{exc.object[exc.start]:02x} at offset {exc.start})"]) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, words = syntax_error(str(exc), text)
        place = f"{shown}:{line}" if line is not None else f"{shown}"
        raise ConfigError([f"{place}: TOML syntax error: {words}"]) from None


def read_config(path: str | os.PathLike[str]) -> ConfigFile:
    """As `load_config`, keeping the text and key lines for later messages."""
    shown = Path(path)
    text, data = read_toml(shown)
    lines = key_lines(text)
    base_dir = shown.absolute().parent
    context = {"base_dir": base_dir}
    try:
        data, overrides = with_overrides(data, base_dir)
    except OverrideError as exc:
        raise ConfigError([str(exc)]) from None
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as exc:
        found = messages(exc) + _cross_checks_behind(data, messages(exc), context)
        numbered = [(line_of(lines, loc), format_problem(shown, lines, loc, message))
                    for loc, message in found]
        # File order, as a compiler reports; problems with no line (defaults) last.
        numbered.sort(key=lambda item: item[0] if item[0] is not None else 1 << 30)
        problems = [text for _, text in numbered]
        raise ConfigError(sorted(set(problems), key=problems.index)) from None
    return ConfigFile(shown, config, text, lines, overrides)


def _cross_checks_behind(data: dict[str, Any], reported: list[tuple[tuple[str | int, ...], str]],
                         context: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """The cross-field problems a section's field errors kept from being checked.

    pydantic runs a section's cross-field validator only when all its fields
    are valid; to report every problem in one go, validate the section again
    without the broken keys and keep what it says about the other keys.
    """
    broken: dict[str, set[str]] = {}
    for loc, _ in reported:
        if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], str):
            broken.setdefault(loc[0], set()).add(loc[1])
    found: list[tuple[tuple[str | int, ...], str]] = []
    for section, keys in broken.items():
        model, values = SECTIONS.get(section), data.get(section)
        if model is None or not isinstance(values, dict):
            continue
        try:
            model.model_validate({k: v for k, v in values.items() if k not in keys},
                                 context=context)
        except ValidationError as exc:
            found.extend(((section, *loc), message) for loc, message in messages(exc)
                         if loc and loc[0] not in keys)
    return found + arrays_behind(data, SECTIONS, context)


def config_warnings(path: str | os.PathLike[str], config: Config) -> list[str]:
    """Problems that do not stop edged from running but should be fixed.

    Files holding secrets that others can read, inline secrets, and passwords
    sent without TLS. Each is one line naming the file or key and the fix.
    """
    shown = Path(path)
    try:
        lines = key_lines(shown.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        lines = {}
    warnings = []
    mqtt = config.mqtt
    if mqtt.password is not None:
        warnings.append(format_problem(
            shown, lines, ("mqtt", "password"), "inline password; move it to a file "
            "(password_file) or the environment (password_env)", warning=True))
        warnings.extend(_exposed(shown, "holds mqtt.password"))
    if mqtt.password_file is not None:
        warnings.extend(_exposed(Path(mqtt.password_file), "holds the MQTT password"))
    if mqtt.key_file is not None:
        warnings.extend(_exposed(Path(mqtt.key_file), "holds the TLS private key"))
    has_password = mqtt.password is not None or mqtt.password_file or mqtt.password_env
    if has_password and not mqtt.tls and mqtt.host not in ("localhost", "127.0.0.1", "::1"):
        warnings.append(format_problem(
            shown, lines, ("mqtt", "tls"), f"the password goes to {mqtt.host} in plain text; "
            "set tls = true", warning=True))
    if mqtt.tls and mqtt.port == 1883:
        warnings.append(format_problem(
            shown, lines, ("mqtt", "port"), "TLS on port 1883, the plain-text port; "
            "TLS brokers usually listen on 8883", warning=True))
    return warnings


def _exposed(path: Path, what: str) -> list[str]:
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return []  # missing files are check-config errors, not warnings
    if mode & 0o077:
        return [f"{path}: warning: {what} and is readable by others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"]
    return []
