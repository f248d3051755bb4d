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
model in use runs in a worker of its own; libedgetpu gives an Edge TPU to one
process, so two models in use may not name the same one (until a worker
holds several, docs/cameras.md).
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
        "[inference]'s delegate and device. The other [inference] keys are shared."))


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


def models_problems(top: dict[str, Section], models: Sequence[tuple[int, ModelEntry]],
                    used: Sequence[tuple[int, str]], context: Any = None) -> Problems:
    """Every model's problems, the ids given twice, cameras naming no model (`used`:
    each enabled camera's index and model id), and two models in use on one Edge TPU."""
    problems, ids = ids_given_twice("models", [(i, e.id) for i, e in models])
    where: dict[str, str] = {}  # model id ("" for [model]) -> its accelerator
    for index, entry in models:
        sections, found = model_sections(top, entry, index, context)
        problems += found
        if sections:
            where[entry.id] = _accelerator(sections["inference"])
    where[""] = _accelerator(top["inference"])
    problems += [(("cameras", camera, "model"), unknown_model(model, list(ids)))
                 for camera, model in used if model and model not in ids]
    problems += _shared_edgetpus(models, {model for _, model in used}, where)
    return problems


def _shared_edgetpus(models: Sequence[tuple[int, ModelEntry]], used: set[str],
                     where: dict[str, str]) -> Problems:
    """Models in use on one Edge TPU, or on "edgetpu" (the first found) beside another."""
    index: dict[str, int] = {}
    for i, entry in models:
        index.setdefault(entry.id, i)
    # In file order, [model] first: the later of two on one device is the one said.
    on_tpu = [(model, where[model]) for model in sorted(used, key=lambda m: index.get(m, -1))
              if model in where and where[model].startswith("edgetpu")]
    if len(on_tpu) < 2:
        return []
    problems: Problems = []
    for k, (model, accelerator) in enumerate(on_tpu):
        key: tuple[str | int, ...] = ("models", index[model], "accelerator") if model else (
            "inference", "edgetpu_device")
        others = [m or "[model]" for m, a in on_tpu[:k] if a == accelerator]
        if accelerator == "edgetpu":
            problems.append((key, "names no Edge TPU, and another model in use runs on one: "
                             "give each model its device (\"edgetpu:usb:0\", "
                             "\"edgetpu:usb:1\"; `edged doctor` lists them)"))
        elif others:
            problems.append((key, f"{show(accelerator)} is {others[0]}'s too: an Edge TPU "
                             "serves one worker (libedgetpu opens it for one process); give "
                             "each model its own (docs/coral.md, section 7)"))
    return problems
