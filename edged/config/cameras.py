"""Several cameras in one daemon (`[[cameras]]`), each the one-camera file it amounts to.

A file without `[[cameras]]` is one camera, `[source]`, as it always was. With
them, each camera is written as what differs from the top-level sections:

    [[cameras]]
    id = "porch"
    max_fps = 5
    [cameras.source]
    kind = "stream"
    uri = "rtsp://porch.local/stream1"
    [cameras.output]
    min_score = 0.6

Its `source`, `preprocess`, `output` and `events` are the top-level sections
with those keys replaced, validated whole, so a camera's mistake is reported
on its own line (`cameras[0].source.uri`) with the words the top-level key
would get. The cameras share the model, and so the worker's normalization:
`preprocess.mean`, `std` and `layout` are set once, in `[preprocess]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError

from edged.config.cascade import CascadeConfig
from edged.config.events import EventsConfig
from edged.config.frames import PreprocessConfig, SourceConfig
from edged.config.publish import OutputConfig
from edged.config.sections import Section, ids_given_twice
from edged.config.wording import messages

if TYPE_CHECKING:
    from edged.config import Config

CAMERA_ID = r"^[A-Za-z0-9_-]{1,64}$"

# The sections a camera may change, and the keys it may not (with why).
OVERRIDABLE: dict[str, type[Section]] = {
    "source": SourceConfig, "preprocess": PreprocessConfig, "output": OutputConfig,
    "events": EventsConfig, "cascade": CascadeConfig,
}
SHARED_KEYS = {
    ("source", "name"): "a camera's name is its id; set cameras.id",
    **{("preprocess", key): "the cameras share the model's worker, which normalizes "
       "their frames: set it once, in [preprocess]" for key in ("mean", "std", "layout")},
}

Problems = list[tuple[tuple[str | int, ...], str]]


class CameraConfig(Section):
    id: str = Field(pattern=CAMERA_ID, examples=["porch"], description=(
        "The camera's id: in its topics (<prefix>/<device>/<id>/results, events, occupancy, "
        "snapshots) and its Home Assistant entities; 1 to 64 letters, digits, '_' or '-'."))
    enabled: bool = Field(default=True, description=(
        "false: the camera is not opened (kept in the file, switched off)."))
    model: str = Field(default="", pattern=r"^([A-Za-z0-9_-]{1,64})?$", description=(
        "Which model runs on its frames: a [[models]] id; empty: the [model] section. "
        "The cameras of one model share its worker, in turn."))
    max_fps: float = Field(default=0.0, ge=0, le=1000, description=(
        "This camera's inferences per second at most; 0 = inference.max_fps. Cameras "
        "sharing the model are served in turn, each its newest frame."))
    source: dict[str, Any] = Field(default_factory=dict, examples=[
        {"kind": "stream", "uri": "rtsp://porch.local/stream1"}], description=(
        "Keys of [source] that differ for this camera (written [cameras.source])."))
    preprocess: dict[str, Any] = Field(default_factory=dict, description=(
        "Keys of [preprocess] that differ (resize, color_order, pad; not mean, std or "
        "layout, which the cameras share with the model)."))
    output: dict[str, Any] = Field(default_factory=dict, examples=[{"min_score": 0.6}],
                                   description="Keys of [output] that differ.")
    events: dict[str, Any] = Field(default_factory=dict, description=(
        "Keys of [events] that differ (zones and lines are this camera's own when given)."))
    cascade: dict[str, Any] = Field(default_factory=dict, description=(
        "Keys of [cascade] that differ (the cameras of one model share its classifier)."))


def camera_sections(top: dict[str, Section], camera: CameraConfig, index: int,
                    context: Any = None) -> tuple[dict[str, Section], Problems]:
    """The camera's sections (the top-level ones with its keys replaced, validated),
    and what is wrong with its keys, each at `cameras[index].section.key`."""
    sections: dict[str, Section] = {}
    problems: Problems = []
    for name, model in OVERRIDABLE.items():
        changes: dict[str, Any] = getattr(camera, name)
        problems += [(("cameras", index, name, key), SHARED_KEYS[(name, key)])
                     for key in changes if (name, key) in SHARED_KEYS]
        changes = {k: v for k, v in changes.items() if (name, k) not in SHARED_KEYS}
        if name == "source":
            changes["name"] = camera.id
        if not changes:
            sections[name] = top[name]
            continue
        try:
            sections[name] = model.model_validate(
                {**top[name].model_dump(), **changes}, context=context)
        except ValidationError as exc:
            problems += [(("cameras", index, *loc), message)
                         for loc, message in messages(exc, (name,))]
            sections[name] = top[name]
    return sections, problems


def camera_problems(top: dict[str, Section], cameras: Sequence[tuple[int, CameraConfig]],
                    context: Any = None) -> Problems:
    """Every camera's problems (each given with its index in the file), and the ids
    given twice."""
    problems: Problems = ids_given_twice("cameras", [(i, c.id) for i, c in cameras])[0]
    for index, camera in cameras:
        problems += camera_sections(top, camera, index, context)[1]
    if cameras and not any(camera.enabled for _, camera in cameras):
        problems.append((("cameras", cameras[0][0], "enabled"), "every camera is switched "
                         "off: edged would run with nothing to do (switch one on)"))
    return problems


@dataclass(frozen=True)
class Camera:
    """One camera as the daemon runs it: the one-camera config it amounts to (its
    source, preprocess, output and events; everything else shared)."""

    id: str
    enabled: bool
    max_fps: float  # in effect: its own, else inference.max_fps
    config: Config
    index: int | None = None  # in [[cameras]]; None: the file's one camera ([source])
    model: str = ""  # its [[models]] id; "": the [model] section

    @property
    def topic_id(self) -> str | None:
        """Its id in its results topic and payload; None for a file's one camera, whose
        results keep the device's topic."""
        return self.id if self.index is not None else None

    @property
    def key(self) -> str:
        """Where its keys are written: `cameras[1]`, or "" for the top-level sections."""
        return f"cameras[{self.index}]" if self.index is not None else ""


def cameras_of(config: Config, resolved: list[dict[str, Section]]) -> list[Camera]:
    """Every camera of `config` (`resolved`: each one's sections, as validated)."""
    if not config.cameras:
        return [Camera(config.source.name, True, config.inference.max_fps, config)]
    return [Camera(camera.id, camera.enabled, camera.max_fps or config.inference.max_fps,
                   config.model_copy(update={**sections, "cameras": [], "models": [
                       entry for entry in config.models  # its cascade's classifier
                       if entry.id and entry.id == _cascade_model(sections, config)]}),
                   index, camera.model)
            for index, (camera, sections) in enumerate(zip(config.cameras, resolved,
                                                            strict=True))]


def _cascade_model(sections: dict[str, Section], config: Config) -> str:
    cascade = sections.get("cascade", config.cascade)
    assert isinstance(cascade, CascadeConfig)
    return cascade.model
