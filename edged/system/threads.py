"""Threads the kernel knows by name.

Python 3.11 keeps a thread's name to itself, so `top -H`, `ps -L` and
/proc show every thread of the daemon as `python3`. On a device, over SSH,
that kernel view is the one at hand when a thread spins or hangs; these
threads tell it their names (`edged-pipeline`, `edged-mqtt`, ...) as they start.
Also the threads' other small needs: a wait that a stop request cuts short.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

COMM_MAX = 15  # the kernel keeps 16 bytes, the last one NUL


def set_os_thread_name(name: str) -> bool:
    """Name the calling thread for the kernel; False where it cannot be (no /proc)."""
    short = name.encode("ascii", "replace")[:COMM_MAX]
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "wb") as f:
            f.write(short)
    except OSError:
        return False
    return True


class NamedThread(threading.Thread):
    """A `threading.Thread` that gives the kernel its name as it starts."""

    def run(self) -> None:
        set_os_thread_name(self.name)
        super().run()


def leave_cores_to_the_model() -> None:
    """Run OpenCV's resize and LUT on the calling thread only.

    Its default pool (one thread per core) fights the interpreter's threads
    for the same cores: measured by `edged bench`, a 224x224x3 table lookup
    took 3x longer with the pool than without it, and every invoke it
    overlapped was slowed. Per process; call it where edged runs beside a model.
    """
    import cv2  # only where pixels are touched: the daemon and the worker

    cv2.setNumThreads(1)


SLEEP_SLICE_S = 0.05  # a per-frame wait this short sleeps instead of waiting on its event


def sleep_unless(stop: threading.Event, seconds: float) -> bool:
    """Wait `seconds` unless `stop` is set first; True when it was not set.

    For waits made once a frame (a source's pace, a consumer's max_fps): a plain
    sleep costs ~20 us less CPU than a timed `Event.wait` (Python's Condition
    machinery, run cold once a frame: BENCHMARKS.md, "A Pi's CPU budget"), so a
    wait of up to SLEEP_SLICE_S sleeps and `stop` is seen at its end; a longer
    one waits on the event and ends at once when it is set."""
    if seconds <= 0:
        return not stop.is_set()
    if seconds <= SLEEP_SLICE_S:
        time.sleep(seconds)
        return not stop.is_set()
    return not stop.wait(seconds)


def wait_backoff(seconds: float, deadline_check: Callable[[], bool] | None = None) -> None:
    """Sleep in small steps so a stop request is seen promptly."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if deadline_check is not None and deadline_check():
            return
        time.sleep(min(left, 0.05))
