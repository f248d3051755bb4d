"""The worker's side of an accelerator: the next frame ready while this one runs.

On an accelerator (a Coral) the invoke leaves the CPU idle, and the worker's
own work per frame (quantize the frame into the interpreter's input, copy the
outputs out, a socket message) would otherwise sit between two invokes, where
the device waits for it: 130-180 us a frame beside a 2.6 ms invoke, the
accelerator row's ceiling of 0.94 (BENCHMARKS.md).

So each model on the accelerator is loaded twice (its twin: a second
interpreter of the same file on the same device; libedgetpu's interpreters
share the device's context, which runs one invoke at a time, and a model's
parameters are cached on it once), each interpreter with an invoke thread of
its own:

    main thread:      receive n+1, quantize it into interpreter B, hand it on
    A's thread:       invoke n, copy its outputs, say "done"
    B's thread:       invoke n+1: it starts in the runtime the moment n ends,
                      with no Python in between

The device (the runtime) keeps the invokes one at a time; the invoke
releases the GIL. Quantizing into an interpreter waits until its previous
frame's outputs are copied out, so a frame never overwrites one still
running. Answers may come out of order by a frame (the supervisor keeps an
early one for its slot). A classify request (a cascade's crops) runs on the
classifier's own thread. An exception on an invoke thread ends the process,
as it would the single-threaded worker: the daemon sees the worker die and
restarts it. On the CPU none of this is used: the interpreter holds the cores
itself and there is nothing to overlap.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from numpy.typing import NDArray

Send = Callable[[socket.socket, dict[str, Any]], None]


@dataclass
class Device:
    """When the device last finished an invoke (perf_counter ns), shared by the
    worker's invoke threads: an invoke handed to the runtime while another runs
    waits for the device, and that wait is not the invoke's time (the payload's
    `invoke` timing is the device's, as without the overlap)."""

    free_since: int = 0


class Runner:
    """One interpreter and the thread that invokes it, a job at a time."""

    def __init__(self, model: Any, sock: socket.socket, send: Send, device: Device) -> None:
        self.model, self.device = model, device
        self.free = threading.Event()  # its last frame's outputs are out
        self.free.set()
        self._sock, self._send = sock, send
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="edged-invoke", daemon=True).start()

    def frame(self, outputs: list[NDArray[Any]], slot: int, quantize_us: int) -> None:
        """Invoke on the frame quantized into it; its outputs into `outputs`."""
        self._jobs.put((outputs, slot, quantize_us))

    def call(self, job: Callable[[], dict[str, Any]]) -> None:
        """Run `job` (a classify) on this thread and send what it returns."""
        self._jobs.put(job)

    def _run(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if callable(job):
                    answer = job()
                    self.device.free_since = time.perf_counter_ns()
                    self._send(self._sock, answer)
                    continue
                outputs, slot, quantize_us = job
                t1 = time.perf_counter_ns()
                self.model.invoke()
                t2 = time.perf_counter_ns()
                t1, self.device.free_since = max(t1, self.device.free_since), t2
                self.model.copy_raw_outputs(outputs)
                self.free.set()
                self._send(self._sock, {
                    "op": "done", "slot": slot, "quantize_us": quantize_us,
                    "invoke_us": (t2 - t1) // 1000,
                    "copy_us": (time.perf_counter_ns() - t2) // 1000})
        except BaseException:  # as the single-threaded worker would: die, be restarted
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            os._exit(70)


@dataclass(eq=False)
class Twins:
    """A model's interpreters (one, or two on an accelerator) and its quantizer."""

    models: Sequence[Any]
    quantizer: Any
    runners: list[Runner] = field(default_factory=list)
    turn: int = 0

    def start(self, sock: socket.socket, send: Send, device: Device) -> None:
        """An invoke thread for each interpreter: from now on frames overlap."""
        self.runners = [Runner(model, sock, send, device) for model in self.models]

    def infer(self, pixels: NDArray[Any], outputs: list[NDArray[Any]], slot: int) -> None:
        """Quantize `pixels` into the next interpreter in turn, once its previous frame
        is out, and hand the frame to its thread."""
        runner = self.runners[self.turn]
        self.turn = (self.turn + 1) % len(self.runners)
        runner.free.wait()
        runner.free.clear()
        t0 = time.perf_counter_ns()
        runner.model.set_input_pixels(pixels, self.quantizer)
        runner.frame(outputs, slot, (time.perf_counter_ns() - t0) // 1000)
