"""Several models in one daemon (`[[models]]`), each on its accelerator, named once.

    [[models]]
    id = "people"
    path = "people_int8.tflite"
    edgetpu_path = "people_int8_edgetpu.tflite"
    labels = "people.txt"
    accelerator = "edgetpu:usb:0"

    [[cameras]]
    id = "porch"
    model = "people"      # "" (the default): the [model] section

A model is `[model]` with its files replaced and `[inference]` with its
accelerator: "cpu", "edgetpu" (the first found), "edgetpu:usb:N",
"edgetpu:pci:N" (libedgetpu's device strings), "external" (the
[inference] library), or "" for [inference]'s own delegate and device. Each
model in use runs in a worker of its own, except that the models on one Edge
TPU share one: libedgetpu gives a device to one process (`worker_keys`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field, ValidationError

from edged.config.frames import InferenceConfig, ModelConfig
from edged.config.sections import FilePath, Section, ids_given_twice
from edged.config.text import show
from edged.config.wording import messages

MODEL_ID = r"^[A-Za-z0-9_-]{1,64}$"
_ACCELERATOR = re.compile(r"^(|cpu|external|edgetpu(:(usb|pci)(:\d+)?|::\d+)?)$")
Problems = list[tuple[tuple[str | int, ...], str]]


class ModelEntry(Section):
    id: str = Field(pattern=MODEL_ID, examples=["people"], description=(
        "The model's id, as cameras name it (cameras.model); 1 to 64 letters, digits, '_' "
        "or '-'."))
    path: FilePath = Field(examples=["/etc/edged/people_int8.tflite"], description=(
        "Its .tflite model for the CPU (and the fallback when its accelerator fails)."))
    edgetpu_path: FilePath | None = Field(default=None, examples=[
        "/etc/edged/people_int8_edgetpu.tflite"], description=(
        "Optional build compiled for the Edge TPU; unset: path is used there too."))
    labels: FilePath | None = Field(default=None, examples=["/etc/edged/people.txt"],
                                    description="Optional labels file, as model.labels.")
    accelerator: str = Field(default="", examples=["edgetpu:usb:0"], description=(
        "Where it runs: \"cpu\", \"edgetpu\" (the first found), \"edgetpu:usb:N\", "
        "\"edgetpu:pci:N\", \"external\" (inference.external_library); empty: "
        "[inference]'s delegate and device. The other [inference] keys are shared. Models "
        "on one Edge TPU share its worker (co-compile them: docs/coral.md, section 7)."))


def unknown_model(model: str, ids: Sequence[str]) -> str:
    """What is said of a model id no [[models]] entry has (a camera's, a cascade's)."""
    known = ", ".join(ids) or "none: add a [[models]] entry"
    return f"{show(model)} is not a model id (the [[models]] ids: {known})"


def accelerator_of(delegate: str, device: str) -> str:
    """The accelerator string of a delegate and device ("edgetpu:usb:0", "cpu")."""
    if delegate != "edgetpu":
        return delegate
    return f"edgetpu:{device}" if device else "edgetpu"


def _accelerator(inference: Section) -> str:
    assert isinstance(inference, InferenceConfig)
    return accelerator_of(inference.delegate, inference.edgetpu_device)


def model_sections(top: dict[str, Section], entry: ModelEntry, index: int,
                   context: Any = None) -> tuple[dict[str, Section], Problems]:
    """The [model] and [inference] sections a model entry amounts to, and its problems,
    each at `models[index].key`."""
    inference: Section = top["inference"]
    if not _ACCELERATOR.match(entry.accelerator):
        return {}, [(("models", index, "accelerator"), "must be \"cpu\", \"edgetpu\", "
                     "\"edgetpu:usb:N\", \"edgetpu:pci:N\", \"external\" or empty (got "
                     f"{show(entry.accelerator)})")]
    if entry.accelerator:
        delegate, _, device = entry.accelerator.partition(":")
        try:
            inference = InferenceConfig.model_validate(
                {**inference.model_dump(), "delegate": delegate, "edgetpu_device": device},
                context=context)
        except ValidationError as exc:  # external without [inference] external_library
            return {}, [(("models", index, "accelerator"), f"needs inference.{loc[-1]} ({message})")
                        for loc, message in messages(exc, ("inference",))]
    model = ModelConfig.model_validate(
        {"path": entry.path, "edgetpu_path": entry.edgetpu_path, "labels": entry.labels},
        context=context)
    return {"model": model, "inference": inference}, []


def worker_keys(accelerators: dict[str, str]) -> dict[str, str]:
    """Which worker each model runs in (model id -> its worker's key, the id of the
    first model in it), given each model's accelerator in the file's order, [model]
    ("") first: the models on one Edge TPU share a worker (libedgetpu gives a
    device to one process; one worker holds them all), every other has its own."""
    first: dict[str, str] = {}  # Edge TPU -> the first model on it
    return {model: first.setdefault(accelerator, model) if accelerator.startswith("edgetpu")
            else model for model, accelerator in accelerators.items()}


def accelerators(top: dict[str, Section], by_model: dict[str, dict[str, Section]]
                 ) -> dict[str, str]:
    """Each model's accelerator, [model] ("") first then [[models]] in file order
    (`by_model`: each entry's sections, empty when they have problems)."""
    return {"": _accelerator(top["inference"]),
            **{model: _accelerator(sections["inference"])
               for model, sections in by_model.items() if sections}}


def models_problems(top: dict[str, Section], models: Sequence[tuple[int, ModelEntry]],
                    used: Sequence[tuple[int, str]], context: Any = None) -> Problems:
    """Every model's problems, the ids given twice, cameras naming no model (`used`:
    each enabled camera's index and model id), and a model on "edgetpu" (the first
    found) beside another on a named Edge TPU."""
    problems, ids = ids_given_twice("models", [(i, e.id) for i, e in models])
    by_model: dict[str, dict[str, Section]] = {}
    for index, entry in models:
        sections, found = model_sections(top, entry, index, context)
        problems += found
        by_model.setdefault(entry.id, sections)
    where = accelerators(top, by_model)
    problems += [(("cameras", camera, "model"), unknown_model(model, list(ids)))
                 for camera, model in used if model and model not in ids]
    problems += _shared_edgetpus(models, {model for _, model in used}, where)
    return problems


def _shared_edgetpus(models: Sequence[tuple[int, ModelEntry]], used: set[str],
                     where: dict[str, str]) -> Problems:
    """A model in use on "edgetpu" (the first found) beside another on a named Edge
    TPU: which device it lands on is unknown, so whether they share a worker too."""
    index: dict[str, int] = {}
    for i, entry in models:
        index.setdefault(entry.id, i)
    on_tpu = [(model, where[model]) for model in sorted(used, key=lambda m: index.get(m, -1))
              if model in where and where[model].startswith("edgetpu")]
    if len({accelerator for _, accelerator in on_tpu}) < 2:
        return []  # all on one Edge TPU (or all on the first found): one worker holds them
    return [(("models", index[model], "accelerator") if model else (
        "inference", "edgetpu_device"), "names no Edge TPU, and another model in use runs "
        "on a named one: name each model's device (\"edgetpu:usb:0\", \"edgetpu:usb:1\"; "
        "`edged doctor` lists them; models on the same one share its worker)")
        for model, accelerator in on_tpu if accelerator == "edgetpu"]
