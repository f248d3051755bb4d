"""A source that keeps going: reopen with backoff, frames numbered across reopens.

A camera unplugged at 3 a.m., an RTSP server rebooting, a video that ends:
the driver raises or ends, this wrapper closes it, waits (exponential backoff
with jitter, so a fleet of devices does not reconnect in lock-step), opens it
again, and carries on. Its caller never sees an exception; it sees frames,
or None once the wrapper is closed or has ended, and a status to report.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edged.sources.base import NO_PIXELS, Frame, FrameSource, Pixels, SourceError, Undecoded

log = logging.getLogger("edged.sources")

SourceState = Literal["opening", "running", "reopening", "ended"]


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """What the daemon publishes about its source.

    `state` is "opening" from construction until the first frame (unless an
    open fails first), "reopening" whenever the source failed or was lost and
    is being retried, "ended" after `close()` or when a finite source ends
    with `reopen_on_end=False`. `reopen_count` counts open attempts after the
    first one; `frames` counts frames delivered; `last_frame_mono` lets a
    watchdog see whether frames still progress, `last_attempt_mono` whether
    a lost source is still being retried.
    """

    name: str
    state: SourceState
    last_error: str | None
    reopen_count: int
    frames: int
    skipped: int
    delivered_size: tuple[int, int] | None
    last_frame_mono: float | None
    last_attempt_mono: float | None = None


def backoff_delay(attempt: int, initial: float, maximum: float, jitter: float,
                  rand: float) -> float:
    """Seconds to wait before open attempt `attempt` (0-based) after a failure.

    `initial * 2**attempt` capped at `maximum`, then shortened by up to
    `jitter` (a fraction) using `rand` in [0, 1): never above `maximum`.
    """
    base = min(maximum, initial * 2.0 ** min(attempt, 62))
    return base * (1.0 - jitter * rand)


def one_line(e: BaseException) -> str:
    """An exception as one line: `SourceError`s as they are, others with their type."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, SourceError):
        return text or "source error"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class ResilientSource:
    """Wraps a driver: `read()` returns the next `Frame`, reopening as needed.

    One thread reads; any thread may call `status()` and `close()`. `close`
    returns at once: it aborts the driver's blocked read where the driver can
    (socket shutdown, pacing waits) and the reading thread releases the
    driver when its read returns.
    """

    def __init__(self, source: FrameSource, *, initial_backoff: float = 0.5,
                 max_backoff: float = 30.0, jitter: float = 0.25, reopen_on_end: bool = True,
                 rng: random.Random | None = None, first_seq: int = 0) -> None:
        if not 0 < initial_backoff <= max_backoff:
            raise ValueError(f"backoff: need 0 < initial ({initial_backoff}) "
                             f"<= max ({max_backoff})")
        if not 0 <= jitter < 1:
            raise ValueError(f"backoff: jitter must be in [0, 1), got {jitter}")
        self.source = source
        self.initial_backoff, self.max_backoff, self.jitter = initial_backoff, max_backoff, jitter
        self.reopen_on_end = reopen_on_end
        self._rng = rng or random.Random()
        self._closing = threading.Event()
        self._read_lock = threading.Lock()
        self._is_open = False
        self._ever_opened = False
        self._attempts = 0
        self._failures = 0  # consecutive; reset by a frame
        self._next_open = 0.0
        self._seq = first_seq  # a reload's new source numbers on from the old one's
        self._state: SourceState = "opening"
        self._last_error: str | None = None
        self._last_frame_mono: float | None = None
        self._last_attempt_mono: float | None = None
        self._lost_at: float | None = None

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def reopen_count(self) -> int:
        return max(0, self._attempts - 1)

    @property
    def frames(self) -> int:
        return self._seq

    def status(self) -> SourceStatus:
        return SourceStatus(self.name, self._state, self._last_error, self.reopen_count,
                            self._seq, self.source.skipped, self.source.delivered_size,
                            self._last_frame_mono, self._last_attempt_mono)

    def read(self) -> Frame | None:
        """The next frame; None once closed or ended. Never raises."""
        with self._read_lock:
            while not self._closing.is_set() and self._state != "ended":
                if not self._is_open:
                    wait = self._next_open - time.monotonic()
                    if wait > 0:
                        self._closing.wait(wait)
                        continue
                    if not self._try_open():
                        continue
                try:
                    pixels = self.source.read()
                except Exception as e:
                    self._lose(self._describe(e))
                    continue
                if self._closing.is_set():
                    break
                if pixels is None:
                    if self.reopen_on_end:
                        self._lose(f"{self.name}: ended")
                    else:
                        log.info("%s: ended", self.name)
                        self._release()
                        self._state = "ended"
                    continue
                problem = None if isinstance(pixels, Undecoded) else _check(pixels)
                if problem:
                    self._lose(f"{self.name}: bad frame ({problem})")
                    continue
                return self._frame(pixels)
            self._release()
            return None

    def _describe(self, e: BaseException) -> str:
        # SourceErrors name their source already; anything else gets the name.
        return one_line(e) if isinstance(e, SourceError) else f"{self.name}: {one_line(e)}"

    def _frame(self, pixels: Pixels | Undecoded) -> Frame:
        now_wall, now_mono = time.time(), time.monotonic()
        if self._state != "running":
            if self._lost_at is not None:
                log.info("%s: frames again after %.1f s (%d reopen attempts so far)",
                         self.name, now_mono - self._lost_at, self.reopen_count)
            self._state = "running"
            self._lost_at = None
        self._failures = 0
        if isinstance(pixels, Undecoded):
            wall, mono = pixels.arrived or (now_wall, now_mono)
            frame = Frame(NO_PIXELS, self._seq, wall, mono, self.name,
                          self.source.origin, pending=pixels.decode)
        else:
            pixels.flags.writeable = False  # frames are shared between threads
            frame = Frame(pixels, self._seq, now_wall, now_mono, self.name,
                          self.source.origin, self.source.full_size)
        self._seq += 1
        self._last_frame_mono = now_mono
        return frame

    def _try_open(self) -> bool:
        self._attempts += 1
        self._last_attempt_mono = time.monotonic()
        try:
            self.source.open()
        except Exception as e:
            self._release()
            self._lose(self._describe(e))
            return False
        self._is_open = True
        if self._ever_opened:
            log.info("%s: reopened", self.name)
        self._ever_opened = True
        return True

    def _lose(self, error: str) -> None:
        """Close the driver and schedule the next open attempt."""
        self._release()
        if self._closing.is_set():
            return  # a read cut short by close() is not a failure worth reporting
        delay = backoff_delay(self._failures, self.initial_backoff, self.max_backoff,
                              self.jitter, self._rng.random())
        self._failures += 1
        self._next_open = time.monotonic() + delay
        # Log each new kind of failure; repeats of the same one go to debug
        # so an absent camera does not fill the journal.
        level = logging.WARNING if error != self._last_error or self._state == "running" \
            else logging.DEBUG
        log.log(level, "%s; reopening in %.1f s", error, delay)
        if self._state == "running" or self._lost_at is None:
            self._lost_at = time.monotonic()
        self._last_error = error
        self._state = "reopening"

    def _release(self) -> None:
        self._is_open = False
        try:
            self.source.close()
        except Exception as e:  # a driver's close must not take the daemon down
            log.debug("%s: close failed: %s", self.name, one_line(e))

    def close(self) -> None:
        """Stop: pending and future reads return None; the driver is released."""
        self._closing.set()
        self._state = "ended"
        try:
            self.source.abort()
        except Exception as e:
            log.debug("%s: abort failed: %s", self.name, one_line(e))
        # With no reader in progress, release here; otherwise the reader does.
        if self._read_lock.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._read_lock.release()


def _check(pixels: object) -> str | None:
    if not isinstance(pixels, np.ndarray):
        return f"not an array: {type(pixels).__name__}"
    if pixels.dtype != np.uint8:
        return f"dtype {pixels.dtype}, expected uint8"
    if pixels.ndim == 3 and pixels.shape[2] in (1, 3):
        return None
    if pixels.ndim == 2:
        return None
    return f"shape {pixels.shape}, expected HxWx3 or HxW"
