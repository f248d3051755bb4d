"""`edged check-config FILE`: every problem with a config, one line each.

Beyond what the file says (syntax, types, ranges, cross-field rules), it
looks at what the file points to, because that is where deployments fail:
the model and labels files, the Edge TPU model, the password source, the TLS
files (parsed, and the client key matched to its certificate), the delegate
library, and the model's outputs against the JSON size limit and the
decoder. Exit 0 when the daemon would start with this file, 1 otherwise;
warnings (secrets readable by others, ...) are printed but do not fail.

It never opens the Edge TPU itself: a running daemon holds the device, and
a check before `systemctl reload` must not disturb it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from edged.config import (
    ConfigError,
    ConfigFile,
    config_warnings,
    read_config,
)
from edged.config.camerafile import CameraFile, camera_files
from edged.config.cascade import classifier_of
from edged.config.check_mqtt import check_password, check_tls
from edged.config.findings import CheckResult, Report
from edged.config.fit import cascade_problem, publish_problem, too_large_for_json
from edged.config.models import model_sections
from edged.config.partial import read_valid_sections
from edged.numerics.tensors import TensorInfo

if TYPE_CHECKING:
    from edged.inference.model import Model


def check_config(path: str | Path) -> CheckResult:
    """Load `path` and check everything it refers to. Never raises for bad input.

    A value the schema refuses does not hide the rest: the files named by the
    sections that did validate are checked too (those of a broken one are not,
    as its defaults would stand in for what the file says).
    """
    report = Report()
    try:
        cf = read_config(path)
    except ConfigError as exc:
        report.errors.extend(exc.problems)
        try:
            partial, broken = read_valid_sections(path)
        except ConfigError:
            return report.result()  # unreadable, or not TOML: nothing more to look at
        _look(partial, report, broken)
        return report.result()
    _look(cf, report)
    return report.result()


def _look(cf: ConfigFile, report: Report, broken: frozenset[str] = frozenset()) -> None:
    def valid(*sections: str) -> bool:
        return broken.isdisjoint(sections)

    if valid("mqtt"):
        report.warnings.extend(config_warnings(cf.path, cf.config))
    # What remote commands changed, and where it is kept (edged.config.overrides).
    report.notes.extend(f"override: {line}" for line in cf.overrides)
    cameras = camera_files(cf)  # the file itself, or each of its [[cameras]]
    if valid("source"):
        for camera in cameras:
            _check_source(camera, report)
    models: dict[int | None, list[CameraFile]] = {}  # the cameras of each model in use
    for camera in cameras:
        models.setdefault(camera.model, []).append(camera)
    for users in models.values():
        _look_at_model(users, report, valid)
    if valid("model", "inference", "cascade"):
        _look_at_classifiers(cf, cameras, report)
    if valid("mqtt"):
        check_password(cf, report)
        check_tls(cf, report)


def _look_at_model(cameras: list[CameraFile], report: Report,
                   valid: Callable[..., bool]) -> None:
    """One model's files and delegate, and each of its cameras' outputs against it."""
    cf = cameras[0]  # its files and accelerator are every one of its cameras'
    model = _check_models(cf, report) if valid("model", "inference") else None
    if valid("model"):
        _check_labels(cf, report)
    if valid("inference"):
        _check_delegate_library(cf, report)
    if model is not None and valid("output"):
        for camera in cameras:
            _check_outputs(camera, model.outputs, model.file.ssd_outputs, report)
    if model is not None and valid("preprocess"):
        _check_normalization(cf, model.inputs[0], report)


def _look_at_classifiers(cf: ConfigFile, cameras: list[CameraFile], report: Report) -> None:
    """Each cascade's classifier: its files, on its detector's accelerator, and that it
    answers with classes."""
    from edged.decode.dispatch import decode_kind
    from edged.decode.results import DecodeError

    index = {entry.id: i for i, entry in enumerate(cf.config.models)}
    seen: set[str] = set()
    for camera in (c for c in cameras if c.enabled):
        cascade = camera.config.cascade
        entry = classifier_of(cascade, camera.config.models)
        if entry is None or entry.id in seen:
            continue
        seen.add(entry.id)
        files = model_sections(cf.config.sections(), entry, index[entry.id])[0]["model"]
        as_file = replace(camera, config=camera.config.model_copy(update={"model": files}),
                          model=index[entry.id])
        model = _check_models(as_file, report)
        _check_labels(as_file, report)
        try:
            if model is not None:
                decode_kind("classification", model.outputs)
        except DecodeError as exc:
            report.errors.append(as_file.problem("model.path", f"a cascade's classifier: {exc}"))
        report.notes.append(f"cascade: {entry.id} on crops of "
                            f"{', '.join(cascade.labels) or 'every detection'}")


def _check_source(cf: ConfigFile, report: Report) -> None:
    source = cf.config.source
    if source.kind in ("video", "folder"):
        path = Path(source.uri)
        want_dir = source.kind == "folder"
        if not path.exists():
            report.errors.append(cf.problem("source.uri", f"{path}: not found"))
        elif want_dir != path.is_dir():
            kind = "a directory" if want_dir else "a file"
            report.errors.append(cf.problem("source.uri", f"{path}: is not {kind}"))
    elif source.kind == "v4l2" and source.uri.startswith("/dev/") and not Path(
            source.uri).exists():
        # A USB camera may be plugged in later; the daemon waits for it.
        report.warnings.append(cf.problem("source.uri", f"{source.uri} does not exist now "
                                          "(edged will keep retrying)", warning=True))


def _check_models(cf: ConfigFile, report: Report) -> Model | None:
    """Check the model files; return the CPU model when it loads."""
    from edged.inference.modelfile import ModelFileError, check_runnable, read_model_file

    config = cf.config
    inference = config.inference
    on_tpu = inference.delegate == "edgetpu"
    cpu_model = Path(config.model.path)
    if on_tpu and config.model.edgetpu_path is not None:
        try:
            check_runnable(read_model_file(config.model.edgetpu_path), "edgetpu")
        except ModelFileError as exc:
            report.errors.append(cf.problem("model.edgetpu_path", str(exc)))
    try:
        info = read_model_file(cpu_model)
    except ModelFileError as exc:
        report.errors.append(cf.problem("model.path", str(exc)))
        return None
    uses_path_on_tpu = on_tpu and config.model.edgetpu_path is None
    try:
        check_runnable(info, "edgetpu" if uses_path_on_tpu else inference.delegate)
    except ModelFileError as exc:
        report.errors.append(cf.problem("model.path", str(exc)))
        return None
    if info.needs_edgetpu:
        if inference.fallback == "cpu":
            report.warnings.append(cf.problem(
                "model.path", f"{cpu_model} runs only on the Edge TPU, so fallback = \"cpu\" "
                "has nothing to fall back to: set model.edgetpu_path to it and model.path to "
                "the CPU model", warning=True))
        report.notes.append("model outputs not checked (the model runs only on the Edge TPU)")
        return None
    return _load_tensors(cf, cpu_model, report)


def _load_tensors(cf: ConfigFile, path: Path, report: Report) -> Model | None:
    from edged.inference.model import Model, ModelError
    from edged.inference.modelfile import ModelFileError
    from edged.inference.runtime import RuntimeUnavailableError, select_runtime

    try:
        runtime = select_runtime(cf.config.inference.runtime)
    except RuntimeUnavailableError as exc:
        report.errors.append(cf.problem("inference.runtime", str(exc)))
        return None
    try:
        # The CPU is enough to learn the tensors, and leaves the Edge TPU alone.
        model = Model.load(path, runtime)
    except (ModelError, ModelFileError) as exc:
        report.errors.append(cf.problem("model.path", str(exc)))
        return None
    return model


def _check_labels(cf: ConfigFile, report: Report) -> None:
    if cf.config.model.labels is None:
        return
    from edged.decode.labels import LabelsError, load_labels

    try:
        load_labels(cf.config.model.labels)
    except LabelsError as exc:
        report.errors.append(cf.problem("model.labels", str(exc)))


def _check_delegate_library(cf: ConfigFile, report: Report) -> None:
    inference = cf.config.inference
    if inference.delegate == "cpu":
        return
    key = "inference.edgetpu_library" if inference.delegate == "edgetpu" \
        else "inference.external_library"
    library = inference.edgetpu_library if inference.delegate == "edgetpu" \
        else inference.external_library
    try:
        # dlopen only: the plugin is not created, so no device is opened.
        handle = ctypes.CDLL(library)
        problem = None if hasattr(handle, "tflite_plugin_create_delegate") else (
            f"{library} is not a TFLite delegate plugin (no tflite_plugin_create_delegate)")
    except OSError as exc:
        hint = " (apt install libedgetpu1-std)" if inference.delegate == "edgetpu" else ""
        detail = " ".join(str(exc).split()).removeprefix(f"{library}: ")
        problem = f"cannot load {library}: {detail}{hint}"
    if problem is None:
        return
    report.delegate_loads = False
    if inference.fallback == "cpu" and _runs_only_on_edgetpu(cf.config.model.path):
        # What edged run does then: exit 78 (edged.service.lifecycle); not an OK here.
        report.errors.append(cf.problem(key, f"{problem}, and {Path(cf.config.model.path).name} "
                                        "(model.path) runs only on the Edge TPU: edged would "
                                        "exit (status 78); give model.path the model's CPU "
                                        "build"))
    elif inference.fallback == "cpu":
        report.warnings.append(cf.problem(key, problem + "; edged would run on the CPU "
                                          "(fallback = \"cpu\")", warning=True))
    else:
        report.errors.append(cf.problem(key, problem))


def _runs_only_on_edgetpu(path: Path) -> bool:
    from edged.inference.modelfile import ModelFileError, read_model_file

    try:
        return read_model_file(path).needs_edgetpu
    except ModelFileError:  # said under model.path already
        return False


def _check_outputs(cf: ConfigFile, outputs: tuple[TensorInfo, ...],
                   from_file: tuple[int, ...], report: Report) -> None:
    """One camera's decoder and publishing against its model's outputs (`from_file`:
    the SSD post-process outputs the model file names)."""
    out = cf.config.output
    if out.decoder != "none":
        from edged.decode.dispatch import decode_kind, ssd_names_for
        from edged.decode.results import DecodeError

        names, source = ssd_names_for(out.ssd_outputs, from_file)
        try:
            kind, reason = decode_kind(out.decoder, outputs, names)
            if out.decoder == "auto":
                report.notes.append(f"decoder auto: {kind} ({reason})")
            if kind == "detection" and names:
                report.notes.append(f"detection: SSD {source}")
            cascade = cascade_problem(cf.config.cascade, kind)
            if cascade is not None:
                report.errors.append(cf.problem("cascade.model", cascade))
            publish = publish_problem(out, kind, reason)
            if publish is not None:
                report.errors.append(cf.problem("output.publish", publish))
        except DecodeError as exc:
            key = ("output.ssd_outputs" if out.ssd_outputs and "SSD output names" in str(exc)
                   else "output.decoder")
            report.errors.append(cf.problem(key, str(exc)))
    problem = too_large_for_json(outputs, out)
    if problem is not None:
        report.errors.append(cf.problem("output.max_values", problem))


def _check_normalization(cf: ConfigFile, tensor: TensorInfo, report: Report) -> None:
    from edged.inference.modelmeta import stated_normalization
    from edged.numerics.imageinput import NotAnImageError, image_input
    from edged.numerics.quantize import input_channels, unusual_derived_range

    pre = cf.config.preprocess
    try:
        image_input(tensor, pre.layout)
    except NotAnImageError as exc:
        report.errors.append(cf.problem("model.path", f"{cf.config.model.path}: {exc}"))
        return
    channels = input_channels(tensor, pre.layout)
    # The file's own metadata, when it has any, is what edged feeds (edged.inference.modelmeta).
    stated = pre.mean or stated_normalization(cf.config.model.path) is not None
    unusual = None if stated else unusual_derived_range(tensor)
    if unusual is not None:
        report.warnings.append(cf.problem("preprocess.mean", (
            f"not set, so edged derives the normalization from input {tensor.name!r}'s "
            f"quantization range [{unusual[0]:.4g}, {unusual[1]:.4g}], which is no usual "
            "training range (a model calibrated on normalized data?): if it was trained "
            "on p / 255 set mean = [0] and std = [255]; on ImageNet-normalized pixels "
            "mean = [123.675, 116.28, 103.53] and std = [58.395, 57.12, 57.375]"),
            warning=True))
    elif not stated and tensor.kind == "float":
        report.warnings.append(cf.problem("preprocess.mean", (
            f"not set, and input {tensor.name!r} is float: edged assumes [-1, 1] "
            "((p - 127.5) / 127.5); set preprocess.mean/std to the model's training "
            "normalization (p / 255: mean = [0], std = [255])"), warning=True))
    for key in ("mean", "std"):
        values = getattr(cf.config.preprocess, key)
        if len(values) not in (0, 1, channels):
            report.errors.append(cf.problem(
                f"preprocess.{key}", f"{len(values)} values, but the model input "
                f"{tensor.name!r} {list(tensor.shape)} has {channels} channel"
                f"{'s' if channels != 1 else ''}: give "
                f"{'1' if channels == 1 else f'1 or {channels}'}"))
