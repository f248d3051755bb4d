"""The sections of the configuration file, one pydantic model each.

Every field has a description (the annotated `config/edged.toml` is generated
from them by `edged.configdoc`) and a default that works. Cross-field rules
live in each section's validator and report every broken key at once.
"""

from __future__ import annotations

import os
import re
import socket
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from edged.configtext import ConfigError, os_error, show
from edged.modelfile import SSD_ROLES


def _to_path(value: Any) -> Any:
    # Paths are written as strings; strict mode would otherwise demand Path objects.
    if isinstance(value, str):
        if not value:
            raise ValueError("must not be empty")
        return Path(value)
    return value


def _base_dir(info: ValidationInfo) -> Path | None:
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    return Path(base) if base is not None else None


def _resolve(path: Path, info: ValidationInfo) -> Path:
    path = path.expanduser()
    base = _base_dir(info)
    return base / path if base is not None and not path.is_absolute() else path


FilePath = Annotated[Path, BeforeValidator(_to_path), AfterValidator(_resolve)]


def _cross(problems: list[tuple[str, str]]) -> None:
    """Raise every cross-field problem of a section at once, each against its key."""
    if problems:
        raise PydanticCustomError(
            "edged_cross", "{summary}",
            {"problems": problems, "summary": "; ".join(f"{k}: {m}" for k, m in problems)},
        )


class Section(BaseModel):
    # strict: a quoted "1883" or `true` for a number is a mistake worth naming,
    # not something to coerce silently.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


_TOPIC_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def default_device_id() -> str:
    """The host name, made safe for an MQTT topic level (no `+`, `#` or `/`)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()).strip("-.")
    return cleaned[:64] or "edged"


def packaged_model() -> Path:
    """The bundled digits classifier, so the default config runs out of the box."""
    return Path(str(resources.files("edged") / "data" / "digits_int8.tflite"))


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


SourceKind = Literal["synthetic", "picamera2", "v4l2", "stream", "video", "folder"]


class SourceConfig(Section):
    kind: SourceKind = Field(default="synthetic", description=(
        "Where frames come from: synthetic (a moving test pattern), picamera2 (Raspberry Pi "
        "camera), v4l2 (USB/V4L2 camera via OpenCV), stream (RTSP or HTTP MJPEG URL), video "
        "(a video file), folder (images in a directory, in name order)."))
    uri: str = Field(default="", description=(
        "v4l2: device path or index (\"/dev/video0\", \"0\"; empty = 0); stream: rtsp://, "
        "rtsps://, http:// or https:// URL; video: file; folder: directory; picamera2: camera "
        "index (empty = 0). Ignored for synthetic. Relative paths are relative to this file."))
    width: int = Field(default=640, ge=16, le=8192, description="Capture width in pixels.")
    height: int = Field(default=480, ge=16, le=8192, description="Capture height in pixels.")
    fps: float = Field(default=30.0, gt=0, le=1000, description=(
        "Requested capture rate in frames per second (the camera may deliver less)."))
    loop: bool = Field(default=True, description=(
        "video and folder: start again at the end instead of stopping."))
    reopen_backoff_s: float = Field(default=1.0, gt=0, le=3600, description=(
        "First wait before reopening a source that failed or ended; doubles each time."))
    reopen_backoff_max_s: float = Field(default=30.0, gt=0, le=3600, description=(
        "Longest wait between reopen attempts."))
    lores: bool = Field(default=True, description=(
        "picamera2: let the ISP scale a second (lores) stream to the model's input size, so "
        "the CPU does not resize. Only for stretch resizing."))

    @model_validator(mode="after")
    def _consistent(self) -> SourceConfig:
        problems = []
        if self.kind in ("stream", "video", "folder") and not self.uri:
            problems.append(("uri", f'required when kind = "{self.kind}"'))
        if self.kind == "stream" and self.uri and not re.match(r"(?i)^(rtsps?|https?)://",
                                                              self.uri):
            problems.append(("uri", f"must be an rtsp://, rtsps://, http:// or https:// URL "
                                    f"(got {show(self.uri)})"))
        if self.kind in ("v4l2", "picamera2") and self.uri and not (
                self.uri.isdigit() or (self.kind == "v4l2" and self.uri.startswith("/dev/"))):
            wanted = "a device path such as /dev/video0 or an index" if self.kind == "v4l2" \
                else "a camera index such as 0"
            problems.append(("uri", f"must be {wanted} (got {show(self.uri)})"))
        if self.reopen_backoff_max_s < self.reopen_backoff_s:
            problems.append(("reopen_backoff_max_s", f"must be >= reopen_backoff_s "
                                                     f"({self.reopen_backoff_s})"))
        _cross(problems)
        return self

    @field_validator("uri")
    @classmethod
    def _relative_to_config(cls, uri: str, info: ValidationInfo) -> str:
        if uri and info.data.get("kind") in ("video", "folder"):
            return str(_resolve(Path(uri), info))
        return uri


class PreprocessConfig(Section):
    resize: Literal["stretch", "letterbox", "crop"] = Field(default="stretch", description=(
        "How a frame is fitted to the model input: stretch (ignore aspect ratio), letterbox "
        "(keep aspect ratio, pad the rest with pad_value), crop (keep aspect ratio, cut the "
        "centre). Detections are mapped back to frame pixels either way."))
    pad_value: int = Field(default=0, ge=0, le=255, description="Letterbox padding pixel value.")
    color_order: Literal["rgb", "bgr"] = Field(default="rgb", description=(
        "Channel order the model expects. One-channel models get grayscale automatically."))
    mean: list[float] = Field(default_factory=list, max_length=4, description=(
        "Per-channel mean in pixel units, f = (pixel - mean) / std: 0, 1 or one value per "
        "channel. Empty: derived from the input tensor's own quantization range."))
    std: list[float] = Field(default_factory=list, max_length=4, description=(
        "Per-channel std, as mean. Give both or neither."))

    @model_validator(mode="after")
    def _normalization(self) -> PreprocessConfig:
        problems = []
        if bool(self.mean) != bool(self.std):
            missing = "std" if self.mean else "mean"
            problems.append((missing, "give mean and std together, or leave both empty"))
        if any(s == 0 for s in self.std):
            problems.append(("std", "values must not be 0"))
        if len(self.mean) > 1 and len(self.std) > 1 and len(self.mean) != len(self.std):
            problems.append(("std", f"{len(self.std)} values but mean has {len(self.mean)}"))
        _cross(problems)
        return self


class ModelConfig(Section):
    path: FilePath = Field(
        default_factory=packaged_model, examples=["/etc/edged/model.tflite"], description=(
        "The .tflite model run on the CPU (and the fallback when the Edge TPU fails). "
        "Default: the bundled int8 digits classifier."))
    edgetpu_path: FilePath | None = Field(
        default=None, examples=["/etc/edged/model_edgetpu.tflite"], description=(
        "Optional model compiled for the Edge TPU (*_edgetpu.tflite), used when "
        "inference.delegate = \"edgetpu\". Unset: path is used on the Edge TPU too."))
    labels: FilePath | None = Field(
        default=None, examples=["/etc/edged/labels.txt"], description=(
        "Optional labels file: one label a line, or \"<id> <label>\" lines."))


_EDGETPU_DEVICE = re.compile(r"^((usb|pci)(:\d+)?|:\d+)?$")


def _options(value: Any) -> Any:
    # Delegate options are strings on the C side; let people write 4 or true.
    if isinstance(value, dict):
        return {k: ("true" if v is True else "false" if v is False else str(v))
                if isinstance(v, int | float) else v for k, v in value.items()}
    return value


class InferenceConfig(Section):
    runtime: Literal["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"] = Field(
        default="auto", description=(
            "Python TFLite runtime; auto = the first installed of ai_edge_litert, "
            "tflite_runtime, tensorflow."))
    delegate: Literal["cpu", "edgetpu", "external"] = Field(default="cpu", description=(
        "Where the model runs: cpu, edgetpu (Coral), or external (a TFLite delegate "
        "library, see external_library)."))
    edgetpu_device: str = Field(default="", description=(
        "Which Edge TPU: \"usb\", \"usb:N\", \"pci\", \"pci:N\", \":N\" (N-th of any kind), "
        "or empty for the first found."))
    edgetpu_library: str = Field(default="libedgetpu.so.1", description=(
        "The Edge TPU runtime library (name on the loader path, or a full path)."))
    external_library: str = Field(default="", description=(
        "delegate = \"external\": the delegate's shared library."))
    external_options: Annotated[dict[str, str], BeforeValidator(_options)] = Field(
        default_factory=dict, description=(
            "delegate = \"external\": options passed to the library, as a table."))
    fallback: Literal["cpu", "fail"] = Field(default="cpu", description=(
        "When the delegate cannot load or keeps failing: cpu = carry on with model.path on "
        "the CPU (and say so on the status topic), fail = exit so systemd restarts us."))
    cpu_fallback_after: int = Field(default=3, ge=1, le=1000, description=(
        "Inference worker failures in a row before falling back to the CPU."))
    num_threads: int = Field(default=2, ge=0, le=64, description=(
        "CPU threads for the interpreter; 0 = the runtime's default."))
    max_fps: float = Field(default=0.0, ge=0, le=1000, description=(
        "Upper limit on inferences per second; 0 = as fast as the model goes."))
    invoke_timeout_s: float = Field(default=10.0, gt=0, le=3600, description=(
        "A worker that takes longer than this for one frame is considered hung and restarted."))
    restart_backoff_s: float = Field(default=0.5, gt=0, le=3600, description=(
        "First wait before restarting a failed inference worker; doubles each time."))
    restart_backoff_max_s: float = Field(default=30.0, gt=0, le=3600, description=(
        "Longest wait between worker restarts."))

    @model_validator(mode="after")
    def _consistent(self) -> InferenceConfig:
        problems = []
        if not _EDGETPU_DEVICE.match(self.edgetpu_device):
            problems.append(("edgetpu_device", f'must be "usb", "usb:N", "pci", "pci:N", ":N" '
                                               f"or empty (got {show(self.edgetpu_device)})"))
        if self.delegate == "external" and not self.external_library:
            problems.append(("external_library", 'required when delegate = "external"'))
        if self.delegate == "edgetpu" and not self.edgetpu_library:
            problems.append(("edgetpu_library", 'required when delegate = "edgetpu"'))
        if self.restart_backoff_max_s < self.restart_backoff_s:
            problems.append(("restart_backoff_max_s",
                             f"must be >= restart_backoff_s ({self.restart_backoff_s})"))
        _cross(problems)
        return self


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
        "Longest wait between reconnect attempts."))

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
        levels = self.topic_prefix.split("/")
        if not self.topic_prefix or any(not lv or set(lv) & set("+#") for lv in levels) \
                or self.topic_prefix.startswith("$"):
            problems.append(("topic_prefix", "must be topic levels separated by '/', without "
                                             f"'+', '#', a leading '$' or empty levels "
                                             f"(got {show(self.topic_prefix)})"))
        if self.reconnect_max_s < self.reconnect_min_s:
            problems.append(("reconnect_max_s", f"must be >= reconnect_min_s "
                                                f"({self.reconnect_min_s})"))
        _cross(problems)
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

    @model_validator(mode="after")
    def _consistent(self) -> OutputConfig:
        problems = []
        if not self.include_raw and self.decoder == "none":
            problems.append(("include_raw", 'false with decoder = "none" would publish nothing'))
        if self.classes_keep and self.classes_ignore:
            problems.append(("classes_ignore", "set classes_keep or classes_ignore, not both"))
        if self.ssd_outputs:
            problems.extend(("ssd_outputs", p) for p in _ssd_output_problems(self.ssd_outputs))
        _cross(problems)
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
