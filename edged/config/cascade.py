"""Config of a cascade: a classifier run on crops of the detections (issue 17).

    [[models]]
    id = "birds"
    path = "/etc/edged/birds_int8.tflite"
    labels = "/etc/edged/birds.txt"

    [cascade]
    model = "birds"
    labels = ["bird"]

The classifier runs in the detector's worker, on its accelerator, between the
detector's frames; its answer is attached to each detection it looked at, in
the same result message (docs/cascade.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from edged.config.models import ModelEntry, unknown_model
from edged.config.sections import Section
from edged.config.text import show

Problems = list[tuple[tuple[str | int, ...], str]]


class CascadeConfig(Section):
    model: str = Field(default="", pattern=r"^([A-Za-z0-9_-]{1,64})?$", examples=["birds"],
                       description=(
        "The classifier: a [[models]] id; empty: no cascade. It runs in the detector's "
        "worker, on its accelerator (the entry's own accelerator is not used)."))
    min_score: float = Field(default=0.5, ge=0, le=1, description=(
        "Detections scoring at least this are classified (the rest are published as "
        "they are)."))
    labels: list[str] = Field(default_factory=list, examples=[["bird"]], description=(
        "Classify only detections with these labels (empty = every label)."))
    max_crops: int = Field(default=3, ge=1, le=16, description=(
        "Most detections classified per frame, the highest scoring first: each is one "
        "classifier invoke, so this bounds the time a frame takes."))
    padding: float = Field(default=0.1, ge=0, le=1, description=(
        "Each crop is its box grown by this fraction of the box's width and height on "
        "every side (classifiers are trained with some context around the object), then "
        "clipped to the frame."))
    top_k: int = Field(default=1, ge=1, le=100, description=(
        "The classifier's most likely classes attached to each detection."))
    min_class_score: float = Field(default=0.0, ge=0, le=1, description=(
        "Classes scoring below this are not attached."))


def cascade_problems(top: CascadeConfig, cameras: Sequence[tuple[int, str, dict[str, Any]]],
                     model_ids: Sequence[str], workers: Mapping[str, str]) -> Problems:
    """A classifier that is not a [[models]] id, and cameras of one worker naming
    different classifiers (it runs one). `cameras`: each enabled [[cameras]] entry's
    index, model id and [cameras.cascade] keys; `workers`: each model's worker
    (`models.worker_keys`: the models on one Edge TPU share one)."""
    problems: Problems = []

    def unknown(model: str, key: tuple[str | int, ...]) -> None:
        if model and model not in model_ids:
            problems.append((key, unknown_model(model, model_ids)))

    unknown(top.model, ("cascade", "model"))
    by_model: dict[str, tuple[int, Any]] = {}  # model id -> its first camera, classifier
    by_worker: dict[str, tuple[int, Any]] = {}  # worker -> its first camera with a classifier
    for index, model, changes in cameras:
        key: tuple[str | int, ...] = ("cameras", index, "cascade", "model")
        classifier = changes.get("model", top.model)
        if "model" in changes and isinstance(classifier, str):
            unknown(classifier, key)
        other, theirs = by_model.setdefault(model, (index, classifier))
        if theirs != classifier:
            problems.append((key, f"{_named(classifier)}, but cameras[{other}] on the same "
                             f"model has {_named(theirs, 'none')}: the cameras of one model "
                             "share its worker, which runs one classifier"))
            continue
        if not classifier:  # a camera without one, on a worker with one: harmless
            continue
        other, theirs = by_worker.setdefault(workers.get(model, model), (index, classifier))
        if theirs != classifier:
            problems.append((key, f"{show(classifier)}, but cameras[{other}] has "
                             f"{show(theirs)}, and their models share an Edge TPU: its "
                             "worker runs one classifier"))
    return problems


def _named(classifier: Any, none: str = "no classifier") -> str:
    return show(classifier) if classifier else none


def classifier_of(cascade: CascadeConfig, models: Sequence[ModelEntry]) -> ModelEntry | None:
    """The [[models]] entry a cascade runs; None without a cascade."""
    return next((m for m in models if cascade.model and m.id == cascade.model), None)
