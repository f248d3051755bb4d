"""The frame sources' shared vocabulary: `Frame`, `FrameSource`, `SourceError`, pacing."""


from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from edged.system.secrecy import redact_credentials
from edged.system.threads import sleep_unless

Pixels = NDArray[np.uint8]
Decode = Callable[[], "tuple[Pixels, tuple[int, int] | None] | None"]
"""A frame's deferred decode: (pixels, full_size), or None when it does not decode."""
NO_PIXELS: Pixels = np.zeros((0, 0, 3), np.uint8)


@dataclass(frozen=True, slots=True)
class Undecoded:
    """What a driver's `read` returns for a frame it has read but not decoded (an
    HTTP camera's JPEG): decoded only if a consumer takes it (`Frame.ready`). A JPEG
    decoded as it arrived (`edged.sources.decodeplace`) comes the same way, so its
    source still learns which frames are taken: `decode` then returns the pixels it
    has, and `arrived` (wall, monotonic) is when the JPEG came, before its decode:
    the frame's capture time, so latencies still count the decode."""

    decode: Decode
    arrived: tuple[float, float] | None = None


class SourceError(Exception):
    """A source could not open or read; the message is one line naming the source."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame.

    `seq` increases by one per frame delivered by a `ResilientSource`, across
    reopens, so a gap in a consumer's seqs means frames dropped downstream.
    `captured_at` is wall-clock (`time.time()`, for payloads) and
    `captured_mono` the monotonic clock (`time.monotonic()`, for latencies),
    both taken when the driver handed the frame over. `origin` says where the
    frame came from when that is finer than `source` (the image file of a
    folder source, the frame number of a video file). `full_size` (height, width)
    is the picture's size as the camera sent it when `pixels` hold it decoded
    smaller (a JPEG read at 1/2..1/8, `edged.sources.jpeg`): results are mapped
    back to those full-size pixels, so boxes and zones keep one meaning.

    `pending`: the frame's JPEG is not decoded yet (`pixels` is empty): a camera
    sending faster than the model runs would have most of its JPEGs decoded only
    to be replaced in the buffer. The consumer calls `ready()`.
    """

    pixels: Pixels
    seq: int
    captured_at: float
    captured_mono: float
    source: str
    origin: str | None = None
    full_size: tuple[int, int] | None = None
    pending: Decode | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of `pixels`."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    def ready(self) -> Frame | None:
        """This frame with its pixels: a `pending` one is decoded now, on the caller's
        thread; None when it does not decode (its source counts and logs it)."""
        if self.pending is None:
            return self
        got = self.pending()
        if got is None:
            return None
        pixels, full_size = got
        pixels.flags.writeable = False  # frames are shared between threads
        return dataclasses.replace(self, pixels=pixels, full_size=full_size, pending=None)


@runtime_checkable
class FrameSource(Protocol):
    """A driver for one kind of source. Not thread-safe except for `abort`.

    `read` returns the next frame's pixels (RGB uint8, or HxW grey), None when
    a finite source has ended, and raises `SourceError` on failure. It must
    return within the driver's read timeout, so a stalled device never blocks
    the capture thread forever.
    """

    name: str
    """Human-readable and safe to log: credentials in URLs are redacted."""

    @property
    def delivered_size(self) -> tuple[int, int] | None:
        """(height, width) of the frames once known (after `open`), else None."""
        ...

    @property
    def skipped(self) -> int:
        """Frames skipped because they could not be decoded (corrupt JPEG, bad file)."""
        ...

    @property
    def origin(self) -> str | None:
        """Where the last frame came from, finer than `name` (file, frame number)."""
        ...

    @property
    def full_size(self) -> tuple[int, int] | None:
        """The last frame's size as sent, when it was decoded smaller (see `Frame`)."""
        ...

    def open(self) -> None: ...

    def read(self) -> Pixels | Undecoded | None: ...

    def close(self) -> None:
        """Release everything; idempotent; never raises."""
        ...

    def abort(self) -> None:
        """From another thread: make a blocked `read` return soon. Best effort."""
        ...


class DriverBase:
    """The bookkeeping every driver shares; a driver that knows a finer
    `origin` (a frame number) overrides it."""

    def __init__(self) -> None:
        self._size: tuple[int, int] | None = None
        self._skipped = 0
        self._origin: str | None = None
        self._full: tuple[int, int] | None = None

    @property
    def delivered_size(self) -> tuple[int, int] | None:
        return self._size

    @property
    def skipped(self) -> int:
        return self._skipped

    @property
    def origin(self) -> str | None:
        return self._origin

    @property
    def full_size(self) -> tuple[int, int] | None:
        return self._full


class Pacer:
    """Holds a finite source to a frame rate; waits can be cut short by `abort`.

    `fps <= 0` means unpaced. The schedule is absolute (due times advance by
    one interval) so jitter in the read does not accumulate; after a stall
    it restarts from now rather than bursting to catch up.
    """

    def __init__(self, fps: float) -> None:
        self.interval = 1.0 / fps if fps > 0 else 0.0
        self._due = 0.0
        self._aborted = threading.Event()

    def reset(self) -> None:
        self._due = 0.0
        self._aborted.clear()

    def abort(self) -> None:
        self._aborted.set()

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    def wait(self) -> bool:
        """Sleep until the next frame is due; False when aborted."""
        if self.interval == 0.0:
            return not self._aborted.is_set()
        now = time.monotonic()
        if self._due == 0.0 or now - self._due > self.interval:
            self._due = now
        delay = self._due - now
        self._due += self.interval
        return sleep_unless(self._aborted, delay)


class Thinner:
    """Lets at most `fps` frames a second through, on average, of a source that sends
    faster (an HTTP MJPEG camera sets its own rate): the rest are dropped before they
    are decoded. A frame arriving up to half an interval early still goes through, so
    a camera sending at exactly `fps` loses nothing to jitter. `fps <= 0`: all."""

    BURST = 1.5  # frames of credit a pause can build up

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self._credit = self.BURST
        self._at: float | None = None
        self.thinned = 0

    def admit(self, now: float) -> bool:
        if self.fps <= 0:
            return True
        if self._at is not None:
            self._credit = min(self.BURST, self._credit + (now - self._at) * self.fps)
        self._at = now
        if self._credit >= 0.5:
            self._credit -= 1.0
            return True
        self.thinned += 1
        return False


def redact_url(url: str) -> str:
    """`scheme://user:secret@host/...` -> `scheme://user:***@host/...` for logs and status."""
    return redact_credentials(url)


def as_pixels(array: Any) -> Pixels:
    """OpenCV's stubs type results as MatLike; the arrays edged handles are uint8."""
    return cast(Pixels, array)

