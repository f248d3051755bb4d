"""Config sections for the frame path: source, preprocess, model, inference.

Where frames come from, how they become the model's input, and which model
runs where. Kept apart from `edged.config.publish` (what leaves the device)
because the two halves change for different reasons: a new camera or
delegate touches this file, a new broker or payload setting the other.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from edged.config.sections import FilePath, Section, raise_cross_field, resolve_path
from edged.config.text import show


def packaged_model() -> Path:
    """The bundled digits classifier, so the default config runs out of the box."""
    return Path(str(resources.files("edged") / "data" / "digits_int8.tflite"))


SourceKind = Literal["synthetic", "picamera2", "v4l2", "stream", "video", "folder"]


class SourceConfig(Section):
    kind: SourceKind = Field(default="synthetic", description=(
        "Where frames come from: synthetic (a moving test pattern), picamera2 (Raspberry Pi "
        "camera), v4l2 (USB/V4L2 camera via OpenCV), stream (RTSP or HTTP MJPEG URL), video "
        "(a video file), folder (images in a directory, in name order)."))
    name: str = Field(default="camera", pattern=r"^[A-Za-z0-9_-]{1,64}$", description=(
        "This camera's id in its own topics (<device>/<name>/events, snapshots, occupancy) "
        "and in Home Assistant: 1 to 64 letters, digits, '_' or '-'."))
    uri: str = Field(default="", description=(
        "v4l2: device path or index (\"/dev/video0\", \"0\"; empty = 0); stream: rtsp://, "
        "rtsps://, http:// or https:// URL; video: file; folder: directory; picamera2: camera "
        "index (empty = 0). Ignored for synthetic. Relative paths are relative to this file."))
    width: int = Field(default=640, ge=16, le=8192, description="Capture width in pixels.")
    height: int = Field(default=480, ge=16, le=8192, description="Capture height in pixels.")
    fps: float = Field(default=30.0, gt=0, le=1000, description=(
        "Requested capture rate in frames per second (the camera may deliver less). An "
        "HTTP MJPEG stream's frames beyond it are dropped before decoding; a JPEG "
        "snapshot URL is asked at most this often."))
    loop: bool = Field(default=True, description=(
        "video and folder: start again at the end instead of stopping."))
    reopen_backoff_s: float = Field(default=1.0, gt=0, le=3600, description=(
        "First wait before reopening a source that failed or ended; doubles each time."))
    reopen_backoff_max_s: float = Field(default=30.0, gt=0, le=3600, description=(
        "Longest wait between reopen attempts."))
    lores: bool = Field(default=True, description=(
        "picamera2: let the ISP scale a second (lores) stream to the model's input size, so "
        "the CPU does not resize. Only for stretch resizing."))
    v4l2_format: Literal["auto", "mjpeg", "uncompressed"] = Field(default="auto", description=(
        "v4l2: auto = ask the camera for MJPEG (most USB webcams reach their full size and "
        "rate only so) and decode its JPEGs in edged as jpeg_decode says, only the frames "
        "the model takes; a camera without MJPEG keeps its own format. mjpeg = MJPEG or the "
        "camera is refused (one line; retried). uncompressed = the format OpenCV picks "
        "(uncompressed first), every frame converted by OpenCV."))
    jpeg_decode: Literal["reduced", "full"] = Field(default="reduced", description=(
        "stream (http(s) MJPEG or JPEG snapshot URLs), v4l2 cameras in MJPEG and folder "
        "JPEGs: reduced = decode each "
        "at 1/2, 1/4 or 1/8 of its size, the smallest still at least the model's input (and "
        "events' snapshot max_width wide); whole when a cascade crops the frames. About half "
        "the CPU of a whole 1080p decode and resize. Boxes, zones and min_box_area stay in "
        "the camera's own pixels. full = decode every pixel."))
    jpeg_decode_thread: Literal["auto", "camera", "pipeline"] = Field(
        default="auto", description=(
            "stream (http(s) MJPEG) and v4l2 cameras in MJPEG: where their JPEGs are "
            "decoded. pipeline = by the pipeline once it takes a frame (a frame the model "
            "never takes costs no decode; but the one pipeline thread decodes every "
            "camera's frames in turn). camera = on the camera's own thread as each "
            "arrives, in parallel with the pipeline and the other cameras (several 1080p "
            "cameras before a Coral). auto = camera while the pipeline is what limits the "
            "results (it waits under 10 % of its time), decoding is 40 % of its time or "
            "more (all cameras), the idle cores cover twice the decodes wasted on frames "
            "never taken and a decode takes at most 70 % of the time between frames; "
            "else pipeline. Each change is logged."))

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
        raise_cross_field(problems)
        return self

    @field_validator("uri")
    @classmethod
    def _relative_to_config(cls, uri: str, info: ValidationInfo) -> str:
        if uri and info.data.get("kind") in ("video", "folder"):
            return str(resolve_path(Path(uri), info))
        return uri


class PreprocessConfig(Section):
    resize: Literal["stretch", "letterbox", "crop"] = Field(default="stretch", description=(
        "How a frame is fitted to the model input: stretch (ignore aspect ratio), letterbox "
        "(keep aspect ratio, pad the rest with pad_value), crop (keep aspect ratio, cut the "
        "centre). Detections are mapped back to frame pixels either way."))
    pad_value: int = Field(default=0, ge=0, le=255, description="Letterbox padding pixel value.")
    interpolation: Literal["auto", "area", "linear", "nearest"] = Field(
        default="auto", description=(
            "How frames are resized: auto = a frame more than twice the input's size is "
            "halved with pixel averaging (cheap) until within 2x, then bilinear (within 2x "
            "it changes the model's answers less than a one-pixel shift of the frame does). "
            "area = exact averaging in one step (several ms for a 1080p frame on a Pi), linear "
            "or nearest = those alone (alias when shrinking more than 2x)."))
    color_order: Literal["rgb", "bgr"] = Field(default="rgb", description=(
        "Channel order the model expects. One-channel models get grayscale automatically."))
    mean: list[float] = Field(default_factory=list, max_length=4, description=(
        "Per-channel mean in pixel units, f = (pixel - mean) / std: 0, 1 or one value per "
        "channel. Empty: derived from the input tensor's own quantization range."))
    std: list[float] = Field(default_factory=list, max_length=4, description=(
        "Per-channel std, as mean. Give both or neither."))
    layout: Literal["auto", "nhwc", "nchw"] = Field(default="auto", description=(
        "Axis order of the model's image input: auto reads it from the tensor's shape "
        "([1, H, W, C] is nhwc, [1, C, H, W] with C = 1 or 3 is nchw, as PyTorch and "
        "Ultralytics LiteRT exports have); set it only for a shape that fits both."))

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
        raise_cross_field(problems)
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
        "the CPU (and say so on the status and stats topics), fail = never the CPU: wait "
        "for the device, retrying (a missing delegate library exits 78)."))
    cpu_fallback_after: int = Field(default=3, ge=1, le=1000, description=(
        "Inference worker failures in a row before falling back to the CPU."))
    failback: bool = Field(default=True, description=(
        "After a CPU fallback: watch for the Edge TPU (or external delegate) to return, "
        "start a worker on it beside the CPU one, and switch back once it has given a "
        "good result. false = stay on the CPU until edged restarts."))
    failback_interval_s: float = Field(default=60.0, ge=1, le=86400, description=(
        "At most one switch between the CPU and the accelerator per this many seconds; "
        "after a failed try or a relapse the wait doubles, up to 16 times this."))
    overlap: bool = Field(default=True, description=(
        "On an accelerator, load each model twice and prepare the next frame while the "
        "device runs this one, so the device never waits for edged (docs/coral.md, "
        "section 4); false = one interpreter, frames one after the other (half the "
        "model's host memory). No effect on the CPU."))
    num_threads: int = Field(default=2, ge=0, le=64, description=(
        "CPU threads for the interpreter; 0 = the runtime's default. Fewer threads than "
        "cores leaves a core to edged's own threads (capture, pipeline, MQTT) and each "
        "invoke runs at the model's own speed; one per core gives more results/s, but "
        "slower invokes (on 2 cores, 2 threads gave about 1.4x the results/s of 1). "
        "Compare on your device with `edged bench --threads N`."))
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
        raise_cross_field(problems)
        return self
