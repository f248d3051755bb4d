"""Back to the accelerator when it returns: the fail-back after a CPU fallback.

After a fallback (no Edge TPU at start, or its worker failing
`cpu_fallback_after` times in a row) edged runs the CPU model. A Coral that
comes back (replugged, re-enumerated after a USB reset, powered again) is
taken back without a restart:

1. Every CHECK_S the device is looked for in sysfs and /dev
   (`edged.system.hardware`: a directory listing and two small reads per USB
   device). An external delegate has no device to look for: it is tried at
   each interval instead.
2. When it is there and a switch is due, a second worker starts on it in the
   background, beside the CPU one, with fallback = "fail" so that it cannot
   land quietly on the CPU itself.
3. It runs one real frame (the next one the pipeline preprocesses; zeros when
   none comes within FRAME_WAIT_S) and every output must dequantize to finite
   numbers.
4. The pipeline hands over between two frames (`Supervisor.adopt`): the CPU
   worker stops; the status and stats topics name the delegate again.

Damping: at most one switch per `interval_s`, counting the fallback itself
and the start. A try that fails, or a relapse to the CPU within
RELAPSE_INTERVALS of a fail-back, doubles the wait, up to MAX_FACTOR times;
a fail-back that holds for RELAPSE_INTERVALS resets it. A flapping USB link
therefore costs a switch every few minutes at worst, never a worker a second.

Polling rather than udev events (pyudev): no dependency or netlink socket
(which a container may not have), and the scan costs microseconds every two
seconds; the interval, not the detection delay, bounds how soon edged returns.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from edged.inference.messages import ModelLoadError, WorkerError
from edged.inference.supervisor import Supervisor
from edged.inference.worker import WorkerParams
from edged.numerics.quantize import dequantize
from edged.system.hardware import edgetpu_present
from edged.system.threads import NamedThread

log = logging.getLogger("edged.supervisor")

CHECK_S = 2.0
FRAME_WAIT_S = 5.0
RELAPSE_INTERVALS = 10
MAX_FACTOR = 16


@dataclass(frozen=True, slots=True)
class FailbackPolicy:
    enabled: bool = True
    interval_s: float = 60.0


def device_probe(params: WorkerParams) -> Callable[[], bool]:
    """Whether the accelerator `params` asks for is plugged in (always, for an external one)."""
    if params.delegate == "edgetpu":
        return lambda: edgetpu_present(params.edgetpu_device)
    return lambda: True


def where(params: WorkerParams) -> str:
    if params.delegate == "edgetpu":
        return f"the Edge TPU ({params.edgetpu_device or 'first found'})"
    return f"the {params.delegate} delegate"


class FailBack:
    """Watches for the accelerator while `supervisor` runs on the CPU instead of it.

    `poll`, `wants_frame`, `offer` and `hand_over` are for the pipeline thread;
    the candidate worker starts and runs its first frame on a thread of its own."""

    def __init__(self, supervisor: Supervisor, policy: FailbackPolicy, *,
                 probe: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sup = supervisor
        self.policy = policy
        self.probe = probe or device_probe(supervisor.asked)
        self.clock = clock
        self.switches = 0  # fail-backs done
        self.tries = 0
        self.last_error = ""
        now = clock()
        self._strikes = 0
        self._not_before = now + policy.interval_s
        self._next_check = now
        self._fell_back_at = now if supervisor.on_fallback else None
        self._switched_at: float | None = None
        self._thread: threading.Thread | None = None
        self._candidate: Supervisor | None = None
        self._ready: Supervisor | None = None
        self._closed = False
        self._frame_wanted = threading.Event()
        self._frame_given = threading.Event()
        self._frame: NDArray[np.uint8] | None = None

    # -- the pipeline thread -------------------------------------------------------------

    def poll(self) -> None:
        """Cheap enough for every frame: the device is looked for every CHECK_S at most."""
        if not self.policy.enabled or self._closed:
            return
        now = self.clock()
        self._follow(now)
        busy = self._ready is not None or (self._thread is not None and self._thread.is_alive())
        if self._fell_back_at is None or busy or now < self._next_check or now < self._not_before:
            return
        self._next_check = now + CHECK_S
        if self.probe():
            self._start_try()

    @property
    def ready(self) -> bool:
        """A worker on the accelerator has given a good result: hand over between frames."""
        return self._ready is not None

    @property
    def wants_frame(self) -> bool:
        return self._frame_wanted.is_set()

    def offer(self, pixels: NDArray[np.uint8]) -> None:
        """A preprocessed frame for the candidate's first result (copied)."""
        if self._frame_wanted.is_set():
            self._frame = pixels.copy()
            self._frame_wanted.clear()
            self._frame_given.set()

    def hand_over(self) -> None:
        """Switch the supervisor to the ready candidate's worker, stopping the CPU one."""
        candidate, self._ready = self._ready, None
        if candidate is None:
            return
        self._join()
        now = self.clock()
        cpu_for = now - (self._fell_back_at or now)
        self.sup.adopt(candidate)
        self.switches += 1
        self._switched_at, self._fell_back_at = now, None
        self._not_before = now + self._wait_s()
        info = self.sup.info
        assert info is not None
        log.info("back on %s: worker %d runs %s on %s again, after %.0f s on the CPU",
                 where(self.sup.asked), info.pid, self.sup.model_name, info.delegate, cpu_for)

    def close(self) -> None:
        """Stop a candidate in the making (a stop or a reload): it never takes over."""
        self._closed = True
        candidate = self._candidate
        if candidate is not None:
            candidate.abandon()
        self._frame_given.set()
        self._join()
        if self._ready is not None:
            self._ready.stop()
            self._ready = None

    # -- the damping ---------------------------------------------------------------------

    def _wait_s(self) -> float:
        return self.policy.interval_s * float(min(2 ** self._strikes, MAX_FACTOR))

    def _follow(self, now: float) -> None:
        """Notice a fallback (a switch too) and a fail-back that has held."""
        fallen = self.sup.on_fallback
        relapse_window = RELAPSE_INTERVALS * self.policy.interval_s
        if fallen and self._fell_back_at is None:
            self._fell_back_at = now
            if self._switched_at is not None and now - self._switched_at < relapse_window:
                self._strikes += 1
            self._not_before = now + self._wait_s()
        elif (not fallen and self._switched_at is not None and self._strikes
              and now - self._switched_at >= relapse_window):
            self._strikes = 0

    # -- the candidate's thread ----------------------------------------------------------

    def _start_try(self) -> None:
        self.tries += 1
        params = replace(self.sup.asked, fallback="fail")
        log.info("%s is there: starting a worker on it beside the CPU one", where(params))
        self._candidate = Supervisor(params, slots=self.sup.slots,
                                     invoke_timeout_s=self.sup.invoke_timeout_s,
                                     env=self.sup.env)
        self._thread = NamedThread(target=self._try, args=(self._candidate,),
                                   name="edged-failback", daemon=True)
        self._thread.start()

    def _try(self, candidate: Supervisor) -> None:
        try:
            candidate.start()
            self._first_result(candidate)
        except (ModelLoadError, WorkerError, OSError) as exc:
            candidate.stop()
            if not self._closed:
                self._failed(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        else:
            if self._closed:
                candidate.stop()
            else:
                self._ready = candidate
        finally:
            self._candidate = None

    def _first_result(self, candidate: Supervisor) -> None:
        info = candidate.info
        assert info is not None
        self._frame_given.clear()
        self._frame_wanted.set()
        self._frame_given.wait(FRAME_WAIT_S)
        self._frame_wanted.clear()
        frame, self._frame = self._frame, None
        pixels = candidate.pixels(0)
        pixels[...] = frame if frame is not None and frame.shape == pixels.shape else 0
        candidate.submit(0)
        candidate.wait(0)
        for raw, tensor in zip(candidate.raw_outputs(0), info.outputs, strict=True):
            values = dequantize(raw, tensor)
            if values.dtype.kind == "f" and not bool(np.isfinite(values).all()):
                raise WorkerError(f"its first result is not finite (output {tensor.name!r})")

    def _failed(self, why: str) -> None:
        self._strikes += 1
        wait = self._wait_s()
        self._not_before = self.clock() + wait
        level = logging.WARNING if why != self.last_error else logging.INFO
        self.last_error = why
        log.log(level, "%s did not work yet (%s): staying on the CPU, next try in %.0f s",
                where(self.sup.asked), why, wait)

    def _join(self) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            with contextlib.suppress(RuntimeError):
                thread.join(timeout=30.0)
            self._thread = None
