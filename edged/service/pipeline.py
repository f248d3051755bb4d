"""The per-frame loop: latest frame -> preprocess -> worker -> dequantize -> decode -> publish.

Two slots overlap the stages: while the worker invokes the model on one
slot, this thread preprocesses the next frame into the other, queues it
behind the invoke in flight (the worker goes from one to the next without
waiting for this thread) and then dequantizes, decodes, encodes and hands
off the previous result, so the model's invoke time is the bottleneck.
Capture runs ahead on its own thread into a one-slot buffer; publishing is a
non-blocking hand-off to the MQTT thread. A cascade's frame is published once
the next frame's crops are queued too (`edged.service.delivery`).

Several cameras may share the worker (issue 17): each is a lane of
`edged.service.scheduler`, which picks whose frame goes next (round robin,
the newest frame, each camera's max_fps without added latency), with its own
preprocess, decode/encode and stats here. One camera is one lane. The
cameras of one worker may use different models it holds (several models on
one Edge TPU): each lane names its model, whose slots and outputs it uses.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edged.inference.failback import FailBack
from edged.inference.messages import ModelInfo, ModelLoadError, WorkerError
from edged.inference.supervisor import Supervisor
from edged.numerics.quantize import dequantize
from edged.numerics.tensors import TensorInfo
from edged.preprocess import Geometry
from edged.service.delivery import Deliver, Deliveries
from edged.service.scheduler import Lane, Scheduler
from edged.service.stats import StageTimes, Stats
from edged.sources.capture import LatestFrameBuffer
from edged.sources.decodeplace import LOAD as DECODES
from edged.system.threads import wait_backoff

log = logging.getLogger("edged.pipeline")


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


@dataclass
class _InFlight:
    slot: int
    frame: FrameLike
    geometry: Any
    preprocess_us: int
    lane: Lane


@dataclass(eq=False)
class CameraStages:
    """One camera's work on the pipeline thread."""

    preprocess: Preprocess
    deliver: Deliver
    stats: Stats
    # A restarted worker may load another model (the file replaced at the same path,
    # a CPU fallback to another file): preprocess is built again for its input.
    rebuild: Callable[[ModelInfo], Preprocess] | None = None
    model: int = 0  # which of the worker's models the camera runs (ModelInfo.model)


class Pipeline:
    def __init__(self, lanes: Sequence[tuple[Lane, CameraStages]], supervisor: Supervisor,
                 *, failback: FailBack | None = None) -> None:
        self.lanes = [lane for lane, _ in lanes]
        self.stages = {lane: stages for lane, stages in lanes}
        self.scheduler = Scheduler(self.lanes)
        self.failback = failback  # back to the accelerator after a CPU fallback
        self.supervisor = supervisor
        self.heartbeat = time.monotonic()
        self.deliveries = Deliveries()
        # Frames taken from the feed and not yet delivered: the ones a dying
        # worker takes with it, counted in frames_lost so no loss goes unreported.
        self._held = 0
        self._lost = 0
        # True once every finite source's feed is closed and empty, nothing in flight.
        self.drained = False
        self._stop = threading.Event()
        self._probe: tuple[NDArray[np.uint8], Probed] | None = None

    @property
    def frames_lost(self) -> int:
        return self._lost + self.deliveries.lost

    @property
    def last_error(self) -> str:
        return self.deliveries.last_error

    def stop(self) -> None:
        self._stop.set()

    def pace(self, max_fps: float, lane: int = 0) -> None:
        """Take at most `max_fps` frames a second from a camera (0: as fast as the model
        goes). The limit is on taking frames, never on delivering results, and the
        frame taken when one is due is a fresh one (`edged.service.scheduler`), so
        max_fps adds no latency."""
        self.scheduler.pace(self.lanes[lane], max_fps)

    def set_preprocess(self, preprocess: Preprocess, lane: int = 0) -> None:
        """A reload of preprocessing, between frames."""
        self.stages[self.lanes[lane]].preprocess = preprocess

    def set_deliver(self, deliver: Deliver, lane: int = 0) -> None:
        """Swap the decode/encode stage (a reload of output settings), between frames."""
        self.stages[self.lanes[lane]].deliver = deliver

    def set_feed(self, buffer: LatestFrameBuffer, lane: int = 0) -> None:
        """A new source's buffer (a reload); its frames are waited for meanwhile."""
        self.scheduler.set_buffer(self.lanes[lane], buffer)

    def run(self) -> None:
        """Run until stop(); worker failures are recovered here, never raised."""
        while not self._stop.is_set():
            try:
                self._run_frames()
            except WorkerError:
                self._lost += self._held
                self._held = 0
                self.deliveries.drop()
                self._recover()

    def _recover(self) -> None:
        while not self._stop.is_set():
            delay = self.supervisor.next_backoff_s()
            log.warning("restarting the inference worker in %.1f s", delay)
            wait_backoff(delay, self._beat_and_check_stop)
            if self._stop.is_set():
                return
            before = self.supervisor.info
            try:
                info = self.supervisor.restart()
            except (WorkerError, ModelLoadError):
                continue
            log.info("inference worker %d running on %s", info.pid, info.delegate)
            if before is not None and _input_shapes(info) != _input_shapes(before):
                self._model_changed(before, info)
            return

    def _model_changed(self, before: ModelInfo, info: ModelInfo) -> None:
        """The new worker's model takes another input: a reload of preprocessing
        (decode and encode follow the new outputs by themselves), never a crash."""
        for path, old, new in zip(self.supervisor.params.model_paths, _input_shapes(before),
                                  _input_shapes(info), strict=True):
            if old != new:
                log.warning("the restarted worker loaded %s with input %s (the model it "
                            "replaced had %s): the file changed on disk; preprocessing now "
                            "builds that input", path, new, old)
        self._rebuild(info)

    def _rebuild(self, info: ModelInfo) -> None:
        for stages in self.stages.values():
            if stages.rebuild is not None:
                stages.preprocess = stages.rebuild(info.model(stages.model))

    def _beat_and_check_stop(self) -> bool:
        self.heartbeat = time.monotonic()
        return self._stop.is_set()

    def _next_frame(self, turn: int, timeout: float = 0.25) -> _InFlight | None:
        """The next frame, preprocessed into its model's slot for `turn` (0 or 1)."""
        # With a frame in flight (timeout 0) this never waits: no clock read for it.
        taking = time.monotonic() if timeout else 0.0
        got = self.scheduler.get(timeout)
        self.heartbeat = now = time.monotonic()
        if timeout:
            DECODES.waited(now - taking)
        if got is None:
            if timeout and self.scheduler.closed:
                # Every finite source has ended: the closed buffers answer at once,
                # so wait here instead of spinning a core until stop().
                self.drained = True
                self._stop.wait(timeout)
            return None
        lane, taken = got
        self.drained = False
        t0 = time.perf_counter_ns()
        # An HTTP camera's JPEG is decoded here, once taken: not each one it sends.
        frame = taken.ready() if taken.pending is not None else taken
        if frame is None:
            return None  # it did not decode: its source counted and logged it
        self._held += 1
        stages = self.stages[lane]
        slot = stages.model * self.supervisor.slots + turn
        geometry = stages.preprocess(frame.pixels, self.supervisor.pixels(slot))
        if frame.full_size is not None and geometry is not None:  # a JPEG decoded reduced
            geometry = _scaled(geometry, frame.full_size)
        if self.failback is not None and self.failback.wants_frame and not stages.model:
            self.failback.offer(self.supervisor.pixels(slot))
        return _InFlight(slot, frame, geometry, (time.perf_counter_ns() - t0) // 1000, lane)

    def _run_frames(self) -> None:
        pending: _InFlight | None = None
        while not self._stop.is_set():
            handing_over = self._handing_over(pending is None)
            # Two slots a model: the frame in flight holds one, the next takes the other.
            turn = 0 if pending is None else (pending.slot % self.supervisor.slots) ^ 1
            # No new frame while a fail-back waits for the one in flight to finish;
            # with a frame in flight, only one that is already waiting (and due).
            ahead = None if handing_over else self._next_frame(
                turn, 0.25 if pending is None else 0.0)
            if ahead is not None:
                # Queued behind the invoke in flight, so the worker starts it the
                # moment that one ends instead of after a round trip through this
                # thread (`edged bench` measured that gap at ~2 ms/frame under load).
                self.supervisor.submit(ahead.slot)
            if pending is None:
                pending = ahead
                continue
            waiting = time.monotonic()
            done = self.supervisor.wait(pending.slot)
            # Where JPEG cameras decode (edged.sources.decodeplace) asks how much we wait.
            DECODES.waited(time.monotonic() - waiting)
            if ahead is None and not handing_over:
                # Deliver now rather than hold the result until the next frame
                # arrives (33 ms at 30 fps); one that came during the invoke still overlaps.
                ahead = self._next_frame(turn, 0.0)
                if ahead is not None:
                    self.supervisor.submit(ahead.slot)
            self._finish(pending, done.quantize_us, done.invoke_us)
            if ahead is None and not handing_over and (due := self.deliveries.due_in()):
                # A cascade's frame held: a next frame taken before its crops' answer is
                # due queues its requests behind them (edged.service.delivery).
                ahead = self._next_frame(turn, min(due, 0.25))
                if ahead is not None:
                    self.supervisor.submit(ahead.slot)
            if ahead is None:
                self.deliveries.flush()  # no next frame's crops to queue first
            pending = ahead
        if pending is not None:
            # Stopped with one frame in the worker: deliver it, so its answer is not
            # left on the socket for the next pipeline (a reload keeps the worker).
            done = self.supervisor.wait(pending.slot)
            self._finish(pending, done.quantize_us, done.invoke_us)
        self.deliveries.flush()

    def probe(self, pixels: NDArray[np.uint8], done: Probed) -> None:
        """Run the worker's first model on `pixels` (a model update's golden frame)
        between frames, with the preprocessing of a camera of that model; `done(raw
        outputs, model info, geometry)` on this thread, once. Any thread."""
        self._probe = (pixels, done)

    def _run_probe(self) -> None:
        (pixels, done), self._probe = self._probe, None  # type: ignore[misc]
        # The worker's first model: the one a model update replaces.
        stages = next(s for s in self.stages.values() if not s.model)
        geometry = stages.preprocess(pixels, self.supervisor.pixels(0))
        self.supervisor.submit(0)
        self.supervisor.wait(0)
        info = self.supervisor.info
        assert info is not None
        done(tuple(r.copy() for r in self.supervisor.raw_outputs(0)), info, geometry)

    def _handing_over(self, idle: bool) -> bool:
        """Poll the fail-back; switch workers when it is ready and nothing is in flight.
        True while it waits for the frame in flight (or a probe does)."""
        if self._probe is not None:
            if idle:
                self._run_probe()
            return not idle
        if self.failback is None:
            return False
        self.failback.poll()
        if not self.failback.ready:
            return False
        if not idle:
            return True
        self.failback.hand_over()
        info = self.supervisor.info
        if info is not None:
            self._rebuild(info)  # the accelerator's model may take another input
        return False

    def _finish(self, job: _InFlight, quantize_us: int, invoke_us: int) -> None:
        self._held -= 1
        stages = self.stages[job.lane]
        assert self.supervisor.info is not None
        info = self.supervisor.info.model(stages.model)
        t0 = time.perf_counter_ns()
        raw = tuple(self.supervisor.raw_outputs(job.slot))
        floats = tuple(dequantize(r, t) for r, t in zip(raw, info.outputs, strict=True))
        dequantize_us = (time.perf_counter_ns() - t0) // 1000
        frame = job.frame
        times = StageTimes(
            capture_age=int((time.monotonic() - frame.captured_mono) * 1e6),
            preprocess=job.preprocess_us, quantize=quantize_us, invoke=invoke_us,
            dequantize=dequantize_us,
        )
        result = Result(frame.seq, frame.captured_at, frame.captured_mono, floats, raw,
                        info.outputs, job.geometry, times, frame.pixels, frame.full_size)

        def record() -> None:
            stages.stats.record(times, int((time.monotonic() - frame.captured_mono) * 1e6))

        self.deliveries.deliver(stages.deliver, result, record)


@functools.lru_cache(maxsize=16)
def _scaled(geometry: Geometry, full_size: tuple[int, int]) -> Geometry:
    """One Geometry per (frame plan, picture size), not one a frame."""
    return geometry.scaled_to(full_size)


def _input_shapes(info: ModelInfo) -> list[list[int]]:
    return [list(m.inputs[0].shape) for m in (info, *info.others)]
