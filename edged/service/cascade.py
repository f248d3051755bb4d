"""A camera's cascade on the pipeline thread (issue 17): crops of its detections
into the worker's crop buffers, the classifier run there, its answers attached.

The crops are cut from the camera's frame, not the detector's input, so a
small object keeps every pixel the camera gave it; each is resized to the
classifier's own input (its size and channels; the worker quantizes it with
the classifier's own scale, zero point and normalization). A frame's crops are
queued behind the detector's next frame, and the pipeline takes their answer
only after it has queued the next frame's crops too (`start`, then `finish`):
the worker always has the next request, instead of waiting while this thread
encodes a frame and cuts the next one's crops.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edged.config import Config
from edged.config.cascade import classifier_of
from edged.config.fit import cascade_problem
from edged.decode.cascade import CropRule, attach, crops_to_classify
from edged.decode.classification import decode_classification
from edged.decode.dispatch import decode_kind, prepare_labels
from edged.decode.labels import Labels, load_labels
from edged.decode.results import DecodeError, Detection
from edged.inference.messages import ModelInfo
from edged.inference.supervisor import Supervisor
from edged.numerics.imageinput import ImageInput, image_input
from edged.preprocess import box_in_pixels


class Cascade:
    """Classify a frame's detections with the classifier its worker runs."""

    def __init__(self, cfg: Config, supervisor: Supervisor) -> None:
        c = cfg.cascade
        entry = classifier_of(c, cfg.models)
        assert entry is not None
        self.rule = CropRule(c.min_score, frozenset(c.labels), c.max_crops, c.padding)
        self.top_k, self.min_class_score = c.top_k, c.min_class_score
        self.labels: Labels | None = load_labels(entry.labels) if entry.labels else None
        self.supervisor = supervisor
        # What the loaded classifier takes and answers with (its input, its labels
        # aligned to its classes): per loaded model, not per frame; a restarted worker
        # on another build brings another info.
        self._loaded: tuple[ModelInfo, ImageInput, Labels | None] | None = None
        self._answer_s = 0.0  # the worker's time for the last frame's crops

    def _for(self, info: ModelInfo) -> tuple[ImageInput, Labels | None]:
        if self._loaded is None or self._loaded[0] is not info:
            self._loaded = (info, image_input(info.inputs[0]), self.labels and prepare_labels(
                "classification", self.labels, info.outputs))
        return self._loaded[1], self._loaded[2]

    def start(self, found: tuple[Detection, ...], pixels: NDArray[np.uint8],
              frame_size: tuple[int, int] | None = None) -> Classifying | None:
        """Cut the crops of `found` to classify into the free half of the worker's crop
        buffers and queue the classifier on them (None: nothing to classify); `finish`
        takes the answer. `frame_size`: the picture's (height, width), the boxes'
        units, when `pixels` are a reduced decode of it."""
        info = self.supervisor.info.cascade if self.supervisor.info else None
        if info is None or not found:
            return None
        t0 = time.perf_counter_ns()
        size = (int(pixels.shape[0]), int(pixels.shape[1]))
        height, width = frame_size or size
        image, labels = self._for(info)
        chosen = crops_to_classify(found, (width, height), self.rule, image.width / image.height)
        if not chosen:
            return None
        # Half the worker's crop buffers (each half its first camera's max_crops): the
        # other half may hold the crops of the frame before, any camera's, in flight.
        first, buffers = self.supervisor.mem.next_crops()
        chosen = chosen[:len(buffers)]
        for (_, crop), buffer in zip(chosen, buffers, strict=False):
            x1, y1, x2, y2 = (int(v) for v in box_in_pixels(crop, (height, width), size))
            _resize_into(pixels[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)], buffer,
                         image.channels)
        key = self.supervisor.classify(len(chosen), first)
        return Classifying(found, tuple(i for i, _ in chosen), first, key, info, labels,
                           (time.perf_counter_ns() - t0) // 1000,
                           time.monotonic() + self._answer_s * len(chosen))

    def finish(self, job: Classifying) -> tuple[tuple[Detection, ...], dict[str, int]]:
        """The detections with the classes of those classified attached, and the time it
        took ({"crop": us, "classify": us, the worker's quantize and invokes})."""
        done = self.supervisor.wait(job.key)
        self._answer_s = (done.quantize_us + done.invoke_us) / 1e6 / len(job.indices)
        outputs = self.supervisor.mem.crop_outputs
        classified = {i: decode_classification(
            outputs[job.first + k][0], job.info.outputs[0], top_k=self.top_k,
            min_score=self.min_class_score, labels=job.labels)
            for k, i in enumerate(job.indices)}
        return attach(job.found, classified), {
            "crop": job.crop_us, "classify": done.quantize_us + done.invoke_us}


@dataclass(frozen=True, slots=True)
class Classifying:
    """A frame's crops queued for the classifier (`Cascade.start`)."""

    found: tuple[Detection, ...]
    indices: tuple[int, ...]  # which of `found` each crop is
    first: int  # its first crop buffer
    key: int  # what Supervisor.wait answers for it
    info: ModelInfo
    labels: Labels | None
    crop_us: int
    due: float  # when the answer is expected (time.monotonic()), by the last one's time


def _resize_into(crop: NDArray[np.uint8], out: NDArray[np.uint8], channels: int) -> None:
    """A crop of an RGB frame resized to the classifier's input (the crop has its aspect,
    but where the frame's edge cut it, so only then is the object stretched)."""
    h, w = out.shape[:2]
    shrink = crop.shape[0] > h or crop.shape[1] > w
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    if channels == 1:
        grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
        out[..., 0] = cv2.resize(grey, (w, h), interpolation=interpolation)
    else:
        out[...] = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=interpolation)


def cascade_params(cfg: Config) -> dict[str, Any]:
    """The worker's cascade parameters (edged.inference.worker.WorkerParams)."""
    entry = classifier_of(cfg.cascade, cfg.models)
    if entry is None:
        return {}
    on_tpu = cfg.inference.delegate == "edgetpu" and entry.edgetpu_path
    return {"cascade_path": str(entry.edgetpu_path if on_tpu else entry.path),
            "cascade_cpu_path": str(entry.path), "max_crops": cfg.cascade.max_crops}


def cascade_fit_problems(cfg: Config, info: ModelInfo, kind: str) -> list[tuple[str, str]]:
    """(key, message) for a cascade that cannot run on the loaded models: a detector
    that does not decode as detections, a classifier whose outputs are not classes."""
    problem = cascade_problem(cfg.cascade, kind)
    if problem is not None:
        return [("cascade.model", problem)]
    if info.cascade is not None:
        try:
            decode_kind("classification", info.cascade.outputs, None)
        except DecodeError as exc:
            return [("cascade.model", f"{Path(info.cascade.model_path).name}: {exc}")]
    return []
