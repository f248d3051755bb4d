"""Handing the pipeline's results to each camera's deliver (decode, encode,
publish): its errors counted and logged, never raised into the frame loop; a
cascade's frame held until the next frame's crops are queued.

A camera with a cascade (`edged.service.cascade`) cannot publish a frame until
the classifier has answered for its crops. Waiting for that answer at once
leaves the worker idle while this thread encodes the frame and then takes,
decodes and crops the next one. So its deliver returns a `Later`: the frame is
published after the next frame's crops are queued, and the worker always has the
next request. When no frame is waiting, the pipeline waits for one until the
answer is due (`due_in`), then publishes the frame without it: a camera slower
than the models gets each result as soon as its crops are answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from edged.inference.messages import WorkerError

if TYPE_CHECKING:
    from edged.service.pipeline import Result

log = logging.getLogger("edged.pipeline")


@dataclass(frozen=True, slots=True)
class Later:
    """The rest of a frame's delivery. `waits`: something is in flight for it (a
    cascade's crops), so it runs after the next frame's deliver has queued its own;
    `due`: when that answer is expected (time.monotonic())."""

    finish: Callable[[], None]
    waits: bool = True
    due: float = 0.0


Deliver = Callable[["Result"], Later | None]
"""Decode, encode and hand the result to the publisher, or return what is left of
that (`Later`); runs on the pipeline thread."""


def owned(array: NDArray[Any]) -> NDArray[Any]:
    """An output a held frame can keep: a dequantized one owns its memory; a float
    model's (passed through) is a view of the worker's slot, which the next frame's
    invoke overwrites."""
    return array if array.flags.owndata else np.array(array)


_Held = tuple[Later, Callable[[], None], int]  # the rest, the stats' record, frame seq


class Deliveries:
    """One pipeline's deliveries, in frame order per camera; `lost`: frames whose
    answer a dying worker took with it (a cascade's crops in flight)."""

    def __init__(self) -> None:
        self.errors = 0
        self.last_error = ""
        self.lost = 0
        self._held: _Held | None = None

    def deliver(self, deliver: Deliver, result: Result, record: Callable[[], None]) -> None:
        """`deliver(result)`, then what was held from the frame before; `record()` once
        this frame is published (or its delivery failed)."""
        seq = result.frame_seq
        try:
            later = self._guard(seq, deliver, result)
        except WorkerError:  # a cascade's classifier died with the worker: this frame too
            self.lost += 1
            raise
        previous = self._held
        self._held = (later, record, seq) if isinstance(later, Later) else None
        if previous is not None:
            self._run(previous)
        if not isinstance(later, Later):
            record()
        elif not later.waits:
            self.flush()

    def due_in(self) -> float:
        """Seconds until the answer the frame held waits for is expected (0: none held,
        or overdue): how long the pipeline may wait for a next frame to take first."""
        if self._held is None:
            return 0.0
        return max(0.0, self._held[0].due - time.monotonic())

    def flush(self) -> None:
        """Publish the frame held, if any: no frame follows it soon."""
        previous, self._held = self._held, None
        if previous is not None:
            self._run(previous)

    def drop(self) -> None:
        """The worker died: the frame held will get no answer."""
        if self._held is not None:
            self._held = None
            self.lost += 1

    def _run(self, held: _Held) -> None:
        later, record, seq = held
        try:
            self._guard(seq, later.finish)
        except WorkerError:
            self.lost += 1
            raise
        record()

    def _guard(self, seq: int, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except WorkerError:
            raise
        except Exception as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.errors <= 3 or self.errors % 1000 == 0:
                log.error("result %d not delivered (%d so far): %s", seq, self.errors,
                          self.last_error)
            return None
