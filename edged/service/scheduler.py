"""Which camera a shared worker serves next (issue 17): fair, newest frame, paced.

Several cameras feed one inference worker (one per accelerator: libedgetpu
gives a device to one process). The worker takes one frame at a time; this
decides whose:

* **round robin** over the cameras that have a frame waiting and are due, so
  a camera with more frames never starves another: with N cameras offered
  the same rate, each is served within a frame of the others;
* **the newest frame wins**: each camera has a one-slot latest-frame buffer
  (`LatestFrameBuffer`), so a camera whose turn is late sends its latest
  frame, not a queue of old ones;
* **each camera's max_fps**, without added latency: a camera is due one
  interval after its last frame was taken; a frame it captured while not due
  is as old as a camera period by then, so for up to one interval the
  scheduler serves the other cameras and waits for this camera's next frame
  (the buffer replaces the stale one, counted as dropped there), and takes
  the stale one only if none comes;
* a camera whose source died (its buffer closed) is skipped; `closed` says
  when every one has ended (finite sources).

The scheduler never holds a buffer's lock while waiting: buffers bump a
shared counter after `put` (`watch`), and `get` waits on it only if nothing
changed since it looked, so no frame's arrival is missed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from edged.sources.base import Frame
from edged.sources.capture import LatestFrameBuffer

STALE_GRACE_MAX_S = 1.0  # a slow camera's stale frame waits at most this for a fresh one


@dataclass(eq=False)
class Lane:
    """One camera's frames on their way to a shared worker."""

    name: str
    buffer: LatestFrameBuffer
    max_fps: float = 0.0
    due: float = 0.0  # monotonic: its next frame may be taken from then

    @property
    def interval_s(self) -> float:
        return 1.0 / self.max_fps if self.max_fps > 0 else 0.0


class Wakeups:
    """A counter bumped whenever any watched buffer changes, with a condition to wait
    on it; held only for the bump and the wait, never with a buffer's lock."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.count = 0

    def bump(self) -> None:
        with self.cond:
            self.count += 1
            self.cond.notify_all()


class Scheduler:
    """A feed over several cameras' buffers: `get` returns the next (lane, frame)."""

    def __init__(self, lanes: list[Lane]) -> None:
        self.lanes = lanes
        self._turn = 0
        # After a look that found nothing: (wake-ups seen, until when nothing can
        # change without one, every camera ended). The pipeline looks again for a frame
        # while one is in flight, two or three times a result: with nothing bumped
        # since, that look is one comparison instead of a lock per camera.
        self._quiet: tuple[int, float, bool] | None = None
        self.wakeups = Wakeups()
        for lane in lanes:
            lane.buffer.watch(self.wakeups.bump)

    def pace(self, lane: Lane, max_fps: float) -> None:
        """Take at most `max_fps` frames a second from `lane` (0: no limit)."""
        lane.max_fps = max_fps
        if max_fps <= 0:
            lane.due = 0.0  # no limit any more: not even the rest of the old interval
        self.wakeups.bump()  # a frame held back by the old pace may be due now

    def set_buffer(self, lane: Lane, buffer: LatestFrameBuffer) -> None:
        """Feed `lane` from a new buffer (a reload's new source): the old one is no
        longer watched, and the wait in `get` looks again."""
        lane.buffer.unwatch(self.wakeups.bump)
        lane.buffer = buffer
        buffer.watch(self.wakeups.bump)
        self.wakeups.bump()

    @property
    def closed(self) -> bool:
        return all(lane.buffer.closed for lane in self.lanes)

    def get(self, timeout: float) -> tuple[Lane, Frame] | None:
        """The next camera's frame, waiting up to `timeout` s for one; None if none
        came (or every camera has ended)."""
        deadline = time.monotonic() + timeout
        while True:
            # Read before looking: a put after this read bumps it, and the wait below
            # then returns at once (an int read needs no lock).
            seen = self.wakeups.count
            now = time.monotonic()
            quiet = self._quiet
            if quiet is not None and quiet[0] == seen and now < quiet[1]:
                wake_at, closed = quiet[1], quiet[2]
            else:
                picked, wake_at = self._pick(now)
                if picked is not None:
                    self._quiet = None
                    return picked
                closed = self.closed
                self._quiet = (seen, wake_at, closed)
            if closed:
                return None
            wait = min(deadline, wake_at) - now
            if deadline - now <= 0:
                return None
            with self.wakeups.cond:
                if self.wakeups.count == seen:
                    self.wakeups.cond.wait(max(wait, 0.0))

    def _pick(self, now: float) -> tuple[tuple[Lane, Frame] | None, float]:
        """The first lane in turn that is due and has a frame fresh enough to take;
        else the time something may change without a put (a lane due, a grace over)."""
        wake_at = float("inf")
        n = len(self.lanes)
        for k in range(n):
            lane = self.lanes[(self._turn + k) % n]
            if now < lane.due:
                wake_at = min(wake_at, lane.due)
                continue
            captured = lane.buffer.newest_captured()
            if captured is None:
                continue
            if lane.interval_s and captured < lane.due:
                # Captured while not due: wait (serving the others) for the next frame.
                grace_over = lane.due + min(lane.interval_s, STALE_GRACE_MAX_S)
                if now < grace_over:
                    wake_at = min(wake_at, grace_over)
                    continue
            frame = lane.buffer.get(timeout=0)
            if frame is None:  # taken meanwhile? only this thread takes: closed
                continue
            self._turn = (self._turn + k + 1) % n
            if lane.interval_s:
                lane.due = max(lane.due + lane.interval_s, now) if lane.due else (
                    now + lane.interval_s)
            return (lane, frame), wake_at
        return None, wake_at
