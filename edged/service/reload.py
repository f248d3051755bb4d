"""SIGHUP: what a new config changes, and what to check before touching anything.

A reload restarts only the parts whose settings changed (`plan_reload`):

| changed                                 | restarted                                  |
|-----------------------------------------|--------------------------------------------|
| `logging`                               | the log level (nothing else)               |
| `output`, `events`, `model.labels`      | decode/encode, events: swapped between frames |
| `preprocess` resize, color_order, pad   | preprocess, swapped between two frames     |
| `mqtt`, `device`, `homeassistant`       | the MQTT connection (queue carried over)   |
| `inference`, model files, mean/std/layout | the inference worker (model loaded again)  |
| `source`                                | the source (the camera is reopened)        |

Of those, `events`, `output.min_score`, the camera's name and the connection
start a fresh events stage (its tracks and counts begin again); any other
change keeps the running one (`ReloadPlan.events`).

`preflight` looks for what would make applying the new config fail half-way
(model files read but not loaded, labels, the password source, a folder or
video that is not there) so that a broken file is refused while everything
still runs on the old one. What needs the running parts to check (the TLS
files, the decoder against the model's outputs) the daemon checks by building
the new stage before it stops the old one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from edged.config import Config, ConfigError, ConfigFile
from edged.config.camerafile import camera_files
from edged.config.cameras import Camera
from edged.config.cascade import classifier_of
from edged.config.commands import command_cameras
from edged.config.text import show


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """Which config sections changed and which running parts that restarts."""

    changed: tuple[str, ...]
    worker: bool
    source: bool
    publisher: bool
    preprocess: bool
    deliver: bool
    events: bool  # a fresh events stage: what its tracks and counts are made of changed
    logging: bool

    def restarts(self) -> str:
        """For the log line: what this reload restarts, or 'nothing'."""
        parts = [name for name, on in (
            ("inference worker (model reloaded)", self.worker), ("source", self.source),
            ("MQTT connection", self.publisher),
            ("preprocess", self.preprocess and not self.worker),
            ("decoder/encoder", self.deliver and not self.worker),
            ("logging", self.logging)) if on]
        return ", ".join(parts) or "nothing"


def _model_files(cfg: Config) -> tuple[object, ...]:
    return cfg.model.path, cfg.model.edgetpu_path


def _normalization(cfg: Config) -> tuple[object, ...]:
    # layout too: the worker lays the pixels out in the input tensor.
    return tuple(cfg.preprocess.mean), tuple(cfg.preprocess.std), cfg.preprocess.layout


def _classifier(cfg: Config) -> tuple[object, ...]:
    """What a cascade puts in the worker: its classifier and its crop buffers."""
    entry = classifier_of(cfg.cascade, cfg.models)
    return (entry, cfg.cascade.max_crops) if entry is not None else ()


def with_model_file_changed(plan: ReloadPlan) -> ReloadPlan:
    """`plan`, for a model file replaced on disk at the same path: the worker loads it again."""
    if plan.worker:
        return plan
    return replace(plan, changed=(*plan.changed, "model file (replaced on disk)"), worker=True,
                   preprocess=True, deliver=True)  # the events stage stays: same camera


def plan_camera(old: Camera, new: Camera, new_worker: bool) -> ReloadPlan:
    """One running camera's reload: what its own config changed, and what moving it
    changes: on another model's worker, or one restarted (`new_worker`), its stages
    are built for that worker's model; from [source] to a [[cameras]] entry of the
    same name, its results topic."""
    plan = plan_reload(old.config, new.config)
    if new_worker or old.model != new.model:
        plan = with_model_file_changed(plan)
    if old.topic_id != new.topic_id:
        plan = replace(plan, deliver=True)
    return plan


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    changed = tuple(name for name in type(new).model_fields
                    if getattr(old, name) != getattr(new, name))
    # The worker quantizes with mean/std, so they live in it; the rest of
    # preprocess runs on the pipeline thread.
    # With [[models]], which model's worker restarts is edged.service.regroup's.
    worker = (old.inference != new.inference or _model_files(old) != _model_files(new)
              or _normalization(old) != _normalization(new) or old.models != new.models
              or _classifier(old) != _classifier(new))
    # Home Assistant discovery lives on the connection (subscriptions, hooks).
    publisher = (old.mqtt != new.mqtt or old.device != new.device
                 or old.homeassistant != new.homeassistant or old.commands != new.commands
                 # Every camera's command topic (switched off too) is subscribed on connect.
                 or (new.commands.enabled and command_cameras(old) != command_cameras(new)))
    return ReloadPlan(
        # A camera's own source is in [[cameras]]: each camera's plan says which restart.
        changed=changed, worker=worker, publisher=publisher,
        source=old.source != new.source or old.cameras != new.cameras,
        preprocess=worker or old.preprocess != new.preprocess,
        # device.id is in every payload; a new worker may bring other outputs.
        deliver=(worker or publisher or old.output != new.output or old.model != new.model
                 or old.cascade != new.cascade
                 or old.events != new.events or old.source.name != new.source.name),
        # The tracker's low score is output.min_score; the topics name device and camera.
        events=(publisher or old.events != new.events or old.source.name != new.source.name
                or old.output.min_score != new.output.min_score),
        logging=old.logging != new.logging,
    )


def preflight(cf: ConfigFile, plan: ReloadPlan) -> list[str]:
    """Problems (one line each, `file:line: key: message`) that would fail the apply."""
    cfg, problems = cf.config, []
    if plan.worker:
        models = {camera.model: camera for camera in camera_files(cf) if camera.enabled}
        problems += [p for camera in models.values() for p in _model_problems(camera)]
    if cfg.model.labels is not None and plan.deliver:
        from edged.decode.labels import LabelsError, load_labels

        try:
            load_labels(cfg.model.labels)
        except LabelsError as exc:
            problems.append(cf.problem("model.labels", str(exc)))
    if plan.changed and not cf.lines:
        problems.append(f"{cf.path}: holds no settings (emptied by accident?); write the "
                        "settings wanted, even the defaults, to have them applied")
    if plan.publisher:
        try:
            cfg.mqtt.resolve_password()
        except ConfigError as exc:
            for line in exc.problems:
                key, _, message = line.partition(": ")
                problems.append(cf.problem(key, message))
        problems += _tls_file_problems(cf)
    if plan.source:
        problems += [problem for camera in camera_files(cf) if camera.enabled
                     for problem in _source_problems(camera)]
    return list(dict.fromkeys(problems))  # what cameras share, once


def _source_problems(cf: ConfigFile) -> list[str]:
    source = cf.config.source
    if source.kind not in ("folder", "video"):
        return []
    path, want_dir = Path(source.uri), source.kind == "folder"
    if not path.exists():
        return [cf.problem("source.uri", f"{path}: not found")]
    if path.is_dir() != want_dir:
        return [cf.problem("source.uri", f"{path}: is not "
                           f"{'a directory' if want_dir else 'a file'}")]
    return []


def _tls_file_problems(cf: ConfigFile) -> list[str]:
    """A TLS file that is not there fails the new connection half-way: refuse it first."""
    mqtt = cf.config.mqtt
    if not mqtt.tls:
        return []
    return [cf.problem(f"mqtt.{key}", f"{path}: not found")
            for key in ("ca_file", "cert_file", "key_file")
            if (path := getattr(mqtt, key)) is not None and not Path(path).is_file()]


# Keys whose default would take the device off its broker or rename it in every topic.
_ANCHORS = (("mqtt", "host"), ("mqtt", "port"), ("mqtt", "topic_prefix"), ("device", "id"))


def vanished_warnings(old: Config, cf: ConfigFile) -> list[str]:
    """Warnings for a reload that would move the device to a default broker or id
    because the key is no longer written in the file (not because it was changed)."""
    out = []
    for section, key in _ANCHORS:
        before = getattr(getattr(old, section), key)
        after = getattr(getattr(cf.config, section), key)
        if before != after and (section, key) not in cf.lines:
            out.append(cf.problem(f"{section}.{key}", "is no longer set: the reload would "
                                  f"switch from {show(before)} to the default {show(after)}",
                                  warning=True))
    return out


def _model_problems(cf: ConfigFile) -> list[str]:
    """The model files as check-config reads them: structure and ops, no interpreter."""
    from edged.inference.modelfile import ModelFileError, check_model_file

    model, inference = cf.config.model, cf.config.inference
    on_tpu = inference.delegate == "edgetpu"
    checks = [("model.path", Path(model.path),
               "edgetpu" if on_tpu and model.edgetpu_path is None else inference.delegate)]
    if on_tpu and model.edgetpu_path is not None:
        checks.append(("model.edgetpu_path", Path(model.edgetpu_path), "edgetpu"))
    problems = []
    for key, path, delegate in checks:
        try:
            check_model_file(path, delegate)
        except ModelFileError as exc:
            problems.append(cf.problem(key, str(exc)))
    return problems
