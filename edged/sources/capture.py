"""Capture runs ahead of inference into a one-slot "latest frame" buffer.

The camera produces at its rate, the model consumes at its own; between them
sits one slot. A frame replaced before the consumer took it is dropped and
counted: latency stays one frame, memory stays one frame, never a queue that
grows while the model is slow. An HTTP camera's frames arrive undecoded
(`edged.sources.base.Undecoded`): one replaced here never costs a decode.

Stopping: `CaptureThread.stop()` closes the `ResilientSource`, which wakes
backoff waits at once, pacing waits within 50 ms (`system.threads.sleep_unless`),
and aborts blocked reads where the driver can (the HTTP MJPEG reader shuts its
socket down). OpenCV and picamera2 reads cannot be interrupted safely from another
thread; they are bounded by the driver's read timeout instead. `stop()` waits
at most `timeout` seconds and then returns anyway: the thread is a daemon
thread, finishes its bounded read on its own, releases the device, and cannot
keep the process alive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edged.sources.base import Frame
from edged.sources.resilient import ResilientSource
from edged.system.threads import NamedThread, sleep_unless

log = logging.getLogger("edged.sources")


class LatestFrameBuffer:
    """One slot. `put` replaces (counting a replaced, untaken frame in `dropped`);
    `get` takes the frame, waiting up to `timeout`; after `close` everything
    returns at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.dropped = 0
        self.put_count = 0
        self.taken = 0
        self._watchers: list[Callable[[], None]] = []

    def watch(self, changed: Callable[[], None]) -> None:
        """Call `changed` after every put and close, outside this buffer's lock (a
        scheduler waiting on several buffers at once)."""
        self._watchers.append(changed)

    def unwatch(self, changed: Callable[[], None]) -> None:
        """Stop calling `changed` (the buffer was replaced at a reload)."""
        if changed in self._watchers:
            self._watchers.remove(changed)

    def _changed(self) -> None:
        for changed in self._watchers:
            changed()

    def newest_captured(self) -> float | None:
        """The waiting frame's captured_mono, without taking it; None if none waits."""
        with self._cond:
            return self._frame.captured_mono if self._frame is not None else None

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self.put_count += 1
            self._cond.notify_all()
        self._changed()

    def put_wait(self, frame: Frame, timeout: float | None = None) -> bool:
        """Lossless mode: wait until the slot is free, then put. False if it stayed
        full for `timeout` seconds or the buffer was closed (the frame is not put)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._frame is None or self._closed, timeout):
                return False
            if self._closed:
                return False
            self._frame = frame
            self.put_count += 1
            self._cond.notify_all()
        self._changed()
        return True

    def get(self, timeout: float | None = None) -> Frame | None:
        """Take the latest frame; None if none arrived within `timeout` or closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout):
                return None
            frame, self._frame = self._frame, None
            if frame is not None:
                self.taken += 1
                self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._changed()

    @property
    def closed(self) -> bool:
        return self._closed


class CaptureThread:
    """Reads a `ResilientSource` into a `LatestFrameBuffer` on a daemon thread.

    `lossless=True` waits for the consumer instead of dropping (for file and
    folder sources in tests and demos, where every frame should be seen).
    """

    def __init__(self, source: ResilientSource, buffer: LatestFrameBuffer | None = None,
                 *, lossless: bool = False, name: str = "edged-capture") -> None:
        self.source = source
        self.buffer = buffer or LatestFrameBuffer()
        self.lossless = lossless
        self._stop = threading.Event()
        self._rate: RateLimiter | None = None
        self._thread = NamedThread(target=self._run, name=name, daemon=True)

    def pace(self, max_fps: float) -> None:
        """Lossless sources: read at most `max_fps` frames a second (0: unpaced).

        Every frame of a file is inferred, so a frame read ahead would wait in
        the buffer for the consumer's max_fps and arrive that much older; read
        when one may be taken instead, and it goes through at once."""
        self._rate = RateLimiter(max_fps, self._stop) if max_fps > 0 else None

    def start(self) -> CaptureThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                rate = self._rate
                if rate is not None and not rate.wait():
                    break
                frame = self.source.read()
                if frame is None:
                    break  # closed, or ended without reopening
                if not self.lossless:
                    self.buffer.put(frame)
                    continue
                while not self._stop.is_set() and not self.buffer.put_wait(frame, 0.2):
                    if self.buffer.closed:
                        return
        except Exception:  # pragma: no cover - ResilientSource never raises; belt and braces
            log.exception("capture thread failed")
        finally:
            # Let a waiting consumer see the end of a finite source.
            if self._stop.is_set() or self.source.state == "ended":
                self.buffer.close()

    def stop(self, timeout: float = 1.5) -> bool:
        """Stop capturing; True when the thread ended within `timeout` seconds."""
        self._stop.set()
        self.source.close()
        self.buffer.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
        alive = self._thread.is_alive()
        if alive:
            log.warning("%s: capture thread still in a blocking read after %.1f s; "
                        "leaving it to time out", self.source.name, timeout)
        return not alive

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class RateLimiter:
    """For the consumer's `max_fps`: `wait()` sleeps until the next frame may be taken.

    Due times advance by one interval from the previous due time (no drift)
    but never fall behind now (no burst after a slow frame). `max_fps <= 0`
    never waits.
    """

    def __init__(self, max_fps: float, stop: threading.Event | None = None) -> None:
        self.interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self._due: float | None = None
        self._stop = stop or threading.Event()

    def wait(self) -> bool:
        """False when the stop event was set (while or before waiting)."""
        if self.interval == 0.0:
            return not self._stop.is_set()
        now = time.monotonic()
        due = now if self._due is None else max(self._due, now)
        self._due = due + self.interval
        return sleep_unless(self._stop, due - now)
