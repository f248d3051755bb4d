"""What the pipeline hands each camera's stages: the frame it took (`FrameLike`), the
inferred `Result`, and the shapes of the stages themselves (`Preprocess`, `Deliver`
and its `Completion`, a probe's answer `Probed`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edged.inference.messages import ModelInfo
from edged.numerics.tensors import TensorInfo
from edged.service.stats import StageTimes


class FrameLike(Protocol):
    @property
    def pixels(self) -> NDArray[np.uint8]: ...
    @property
    def seq(self) -> int: ...
    @property
    def captured_at(self) -> float: ...
    @property
    def captured_mono(self) -> float: ...
    @property
    def full_size(self) -> tuple[int, int] | None: ...
    @property
    def pending(self) -> Callable[[], Any] | None: ...
    def ready(self) -> FrameLike | None: ...


@dataclass(frozen=True, slots=True)
class Result:
    """One inferred frame, ready to encode."""

    frame_seq: int
    captured_at: float
    captured_mono: float
    outputs: tuple[NDArray[Any], ...]
    raw_outputs: tuple[NDArray[Any], ...]
    tensors: tuple[TensorInfo, ...]
    geometry: Any
    times: StageTimes
    pixels: NDArray[np.uint8]  # the frame itself, for event snapshots
    full_size: tuple[int, int] | None = None  # the picture's, when pixels are reduced

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the frame in the camera's pixels, boxes' units."""
        return self.full_size or (int(self.pixels.shape[0]), int(self.pixels.shape[1]))


Preprocess = Callable[[NDArray[np.uint8], NDArray[np.uint8]], Any]
"""(frame pixels, destination buffer) -> geometry mapping model coordinates to the frame."""

Probed = Callable[[tuple[NDArray[Any], ...], ModelInfo, Any], None]
"""(raw outputs, the model that made them, geometry): a probe's answer (Pipeline.probe)."""

Completion = Callable[[], None]
"""The rest of a delivery, once the worker answered what it asked (a cascade's crops)."""

Deliver = Callable[[Result], Completion | None]
"""Decode, encode and hand the result to the publisher, or return what does once the
worker ran what it queued there; runs on the pipeline thread."""
