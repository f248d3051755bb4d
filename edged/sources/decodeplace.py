"""Where a JPEG camera's frames are decoded: on the camera's thread as each one
arrives, or by the pipeline once it takes the frame.

Decoding once taken (`edged.sources.base.Undecoded`) costs nothing for a frame
the model never takes: right when the camera sends more frames than the model
runs. But the pipeline is one thread serving every camera of an accelerator, in
series: with four 1080p cameras before a Coral it would decode four JPEGs (2.8 ms
each here, several times that on a Pi's core) between the accelerator's invokes,
while each camera's own thread waits for its next frame on another core. Decoded
on the camera's thread, the decodes run in parallel with the pipeline and each
other (libjpeg-turbo runs without the GIL), and the pipeline gets ready pixels.

`auto` decides from what it sees, camera by camera, every `WINDOW` frames: the
camera's thread while

* the pipeline is what limits the results: it hardly ever waits (for the worker's
  answer or for a frame; `DecodeLoad.waited`, told by the pipeline). A pipeline
  that waits for the accelerator gains nothing from decodes moved away, and the
  frames would queue for it decoded instead of undecoded: latency, no results;
* its decodes are a large part of its time (all cameras together, `DecodeLoad`):
  else moving them frees little;
* the machine has idle cores for the work that moves: a frame replaced before the
  pipeline takes it is decoded for nothing on the camera's thread, so the idle CPU
  (`/proc/stat`, every core) must cover twice those wasted decodes and a quarter
  of a core more. With the CPU interpreter on every core there is no such idle
  time: the decodes stay where none is wasted;
* and a decode fits within the time between the camera's frames with room to spare
  (else its reader would fall behind and its frames age in the socket or the
  driver's queue).

On the camera's thread, the pipeline's waiting is judged as if it had the decodes
back. Hysteresis keeps it from flapping at the edges; each change is logged with
the figures that made it. Measured with `edged bench --rows jpeg` (BENCHMARKS.md).

`DecodePlace` is the decision alone, fed by the source (`arrived`, `decoded`), by
the thread taking the frame (`taken`) and by the pipeline (`waited`); it does no
decoding itself.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Literal

log = logging.getLogger("edged.sources")

DecodeThread = Literal["auto", "camera", "pipeline"]

WINDOW = 30  # frames a camera sends between two decisions
SPARE_TO_CAMERA = 0.1  # the pipeline's share of time waiting, under which it may move
SPARE_TO_PIPELINE = 0.25  # ... and over which (with the decodes back) it moves back
BUSY_TO_CAMERA = 0.4  # the decodes' share of the pipeline's time, at least, to move
BUSY_TO_PIPELINE = 0.25  # ... and under which it moves back
IDLE_MARGIN = 0.25  # cores left idle, beyond twice the wasted decodes, to move
IDLE_TO_PIPELINE = 0.1  # idle cores under which it moves back (the machine is full)
DECODE_TO_CAMERA = 0.7  # a decode's share of the time between frames, at most, to move
DECODE_TO_PIPELINE = 0.85  # ... and over which it moves back

_Marks = tuple[float, int, int, float, int, float, float, float | None]
_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def idle_cpu_seconds() -> float | None:
    """Idle time of every core since boot (idle + iowait in /proc/stat), None where
    there is no /proc/stat."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
    except OSError:
        return None
    return (int(fields[4]) + int(fields[5])) / _CLOCK_TICK


class DecodeLoad:
    """What the pipeline does with its time, for every camera of this process: the
    decode time of every frame taken (`seconds`, what the pipeline spends decoding, or
    would if the decodes were its) and the time it waited for the worker or a frame
    (`wait_s`). Several pipelines, one per accelerator, are summed: an over-estimate
    of the decodes and of the waiting for each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds = 0.0
        self.wait_s = 0.0

    def add(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds

    def waited(self, seconds: float) -> None:
        """A pipeline's thread waited so long."""
        with self._lock:
            self.wait_s += seconds


LOAD = DecodeLoad()


class DecodePlace:
    """The decision for one camera. `arrived(now)` once per JPEG received (the camera's
    thread), returning True to decode it there; `decoded(seconds)` for every decode,
    either thread; `taken(seconds)` when the pipeline takes a frame whose decode took
    that long. The counters only grow and each is written by one thread (the shared
    load under its lock), so the camera's thread reads them at a window's end unlocked."""

    def __init__(self, mode: DecodeThread, source: str, *, load: DecodeLoad = LOAD,
                 idle: Callable[[], float | None] = idle_cpu_seconds) -> None:
        self.mode = mode
        self.source = source
        self.load = load
        self.idle = idle
        self.on_camera = mode == "camera"
        self.taken_count = 0
        self.decode_s = 0.0
        self.decodes = 0
        self._arrived = 0
        # At the window's start: time, arrived, taken, decode seconds, decodes, load,
        # pipeline's wait, idle.
        self._start: _Marks | None = None
        self._last_decode_s: float | None = None

    def taken(self, decode_s: float) -> None:
        self.taken_count += 1
        self.load.add(decode_s)

    def decoded(self, seconds: float) -> None:
        self.decode_s += seconds
        self.decodes += 1

    def arrived(self, now: float) -> bool:
        """Whether to decode the JPEG that arrived at `now` on the camera's thread."""
        if self.mode != "auto":
            return self.on_camera
        self._arrived += 1
        if self._start is None:
            self._start = self._marks(now)
        elif self._arrived - self._start[1] >= WINDOW:
            self._decide(now)
        return self.on_camera

    def _marks(self, now: float) -> _Marks:
        return (now, self._arrived, self.taken_count, self.decode_s, self.decodes,
                self.load.seconds, self.load.wait_s, self.idle())

    def _decide(self, now: float) -> None:
        assert self._start is not None
        t0, arrived0, taken0, decode_s0, decodes0, load0, wait0, idle0 = self._start
        self._start = self._marks(now)
        idle1 = self._start[-1]
        span = now - t0
        if self.decodes > decodes0:
            self._last_decode_s = (self.decode_s - decode_s0) / (self.decodes - decodes0)
        decode = self._last_decode_s
        if decode is None or span <= 0 or idle0 is None or idle1 is None:
            return  # nothing taken yet: nothing known about the decode
        sent = self._arrived - arrived0
        interval = span / sent
        busy = (self.load.seconds - load0) / span  # the decodes' share of the pipeline
        spare = (self.load.wait_s - wait0) / span - (busy if self.on_camera else 0.0)
        idle = (idle1 - idle0) / span  # cores
        wasted = max(0, sent - (self.taken_count - taken0)) * decode / span  # cores
        share = decode / interval
        figures = (f"the pipeline waits {max(spare, 0.0) * 100:.0f} % of its time"
                   f"{' (decoding the frames taken itself)' if self.on_camera else ''}, "
                   f"decoding them needs {min(busy, 1.0) * 100:.0f} %, {idle:.2f} cores are "
                   f"idle, a decode takes {decode * 1e3:.1f} of the {interval * 1e3:.1f} ms "
                   f"between frames")
        if self.on_camera:
            if (spare <= SPARE_TO_PIPELINE and busy >= BUSY_TO_PIPELINE
                    and idle >= IDLE_TO_PIPELINE and share <= DECODE_TO_PIPELINE):
                return
            self.on_camera = False
            log.info("%s: decoding JPEGs once the pipeline takes them: %s", self.source, figures)
        elif (spare < SPARE_TO_CAMERA and busy >= BUSY_TO_CAMERA
              and idle >= 2 * wasted + IDLE_MARGIN and share <= DECODE_TO_CAMERA):
            self.on_camera = True
            log.info("%s: decoding each JPEG as it arrives, on the camera's thread: %s; %.0f "
                     "%% of frames taken", self.source, figures,
                     (self.taken_count - taken0) / sent * 100)

