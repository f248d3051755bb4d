"""The daemon's side of the inference worker: start it, feed it, restart it.

A worker that dies (SIGKILL, SIGABRT from libedgetpu, SIGSEGV) or hangs past
the invoke deadline is killed and started again with exponential backoff;
after `cpu_fallback_after` failures in a row on an accelerator, and when the
fallback policy allows it, the next worker runs on the CPU. Only the pipeline
thread calls into a `Supervisor`; MQTT and the watchdog run on other threads
and carry on meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edged.inference.messages import Done, ModelInfo, ModelLoadError, WorkerError
from edged.inference.modelfile import file_stamp
from edged.inference.slots import Layout, SharedSlots, pixel_shape
from edged.inference.worker import MAX_PACKET, WorkerParams, receive, send
from edged.system.childproc import describe_exit
from edged.system.threads import wait_backoff

log = logging.getLogger("edged.supervisor")

LOAD_TIMEOUT_S = 60.0  # an Edge TPU model's first load uploads its weights over USB
LOAD_DEATHS_MAX = 3  # worker deaths while loading on the CPU before giving up


class Supervisor:
    """Owns one worker process at a time and the shared memory it works in."""

    def __init__(self, params: WorkerParams, *, slots: int = 2, invoke_timeout_s: float = 5.0,
                 restart_backoff_s: float = 0.2, restart_backoff_max_s: float = 30.0,
                 cpu_fallback_after: int = 3, cpu_model_path: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.params = params
        self.asked = params  # what the config asked for: a fail-back returns to it
        self.env = env  # None: the daemon's own; see edged.system.secrecy.scrubbed_environ
        self.slots = slots
        self.invoke_timeout_s = invoke_timeout_s
        self.restart_backoff_s = restart_backoff_s
        self.restart_backoff_max_s = restart_backoff_max_s
        self.cpu_fallback_after = cpu_fallback_after
        self.cpu_model_path = cpu_model_path or params.model_path
        self.info: ModelInfo | None = None
        self.restarts = 0
        self.consecutive_failures = 0
        self.last_failure = ""
        # Why the model does not run where the config asked (a CPU fallback), or "".
        self.fallback_reason = ""
        self.state = "stopped"
        self.stopping = False  # set by abandon(): what fails from now on is the stop's doing
        self.model_stamp: tuple[tuple[int, ...], ...] = ()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._inbox = bytearray(MAX_PACKET)
        self.mem = SharedSlots()
        # A frame's "done" read while waiting for another answer: a cascade's crops, or
        # (on an accelerator, edged.inference.overlap) the frame before it.
        self._early: dict[int, Done] = {}
        # What is in flight: a frame's slot (0 crops), a classify's key (-1 - its first
        # crop buffer) and its crops.
        self._in_flight: dict[int, int] = {}

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> ModelInfo:
        """Start a worker and wait until it has loaded the model and mapped the slots.

        Raises ModelLoadError when the worker reports that the model cannot be
        loaded, WorkerError when it dies or stalls while loading.
        """
        self.state = "starting"
        self.model_stamp = self._stamps()  # the files this worker loads
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "edged.inference.worker", str(child.fileno())],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, env=self.env,
            )
        finally:
            child.close()
        self._sock = parent
        send(parent, {"op": "load", **asdict(self.params)})
        message = self._receive(LOAD_TIMEOUT_S, "loading the model")
        if message.get("op") == "error":
            self._reap()
            self.state = "failed"
            raise ModelLoadError(str(message.get("message", "worker failed to load the model")),
                                 heals=bool(message.get("heals")))
        info = ModelInfo.from_ready(message)
        self._map(info)
        self.info = info
        if info.delegate_note:
            self.fallback_reason = info.delegate_note
        self.state = "running"
        return info

    def _stamps(self) -> tuple[tuple[int, ...], ...]:
        return tuple(file_stamp(path) for path in self.params.model_paths)

    def replaced_on_disk(self) -> bool:
        """A file the worker runs was replaced at the same path since it loaded it."""
        return self._stamps() != self.model_stamp

    def _map(self, info: ModelInfo) -> None:
        second = info.cascade
        models = [info, *info.others]
        # A different model (CPU fallback) may have other shapes: new memory.
        self.mem.map(Layout.plan(
            self.slots, [(pixel_shape(m.inputs[0]), m.outputs) for m in models],
            crops=2 * self.params.max_crops if second else 0,  # two frames' (slots.py)
            crop_shape=pixel_shape(second.inputs[0]) if second else (),
            crop_outputs=second.outputs if second else ()))
        assert self._sock is not None and self.mem.layout is not None
        self._early.clear()
        self._in_flight.clear()
        send(self._sock, {"op": "attach", "layout": self.mem.layout.to_dict()}, [self.mem.fd])

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                send(self._sock, {"op": "stop"})
        self._reap(grace_s=1.0)
        self.mem.close()
        self.state = "stopped"

    def abandon(self) -> None:
        """From another thread, when stopping: kill the worker now, whatever it is
        doing, so a frozen one cannot hold the stop for the invoke deadline. The
        thread waiting for it then sees it gone, as a stop (INFO), not a failure."""
        self.stopping = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    def _reap(self, grace_s: float = 0.0) -> int | None:
        code = None
        if self._proc is not None:
            try:
                code = self._proc.wait(grace_s) if grace_s else self._proc.poll()
            except subprocess.TimeoutExpired:
                code = None
            if code is None:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return code

    @property
    def model_name(self) -> str:
        """The model files the worker runs (their CPU builds after a fallback)."""
        return ", ".join(self.model_file(i) for i in range(1 + len(self.params.others)))

    def model_file(self, index: int = 0) -> str:
        """The file name of the worker's model `index` (its CPU build after a fallback)."""
        loaded = self.info.model(index).model_path if self.info is not None else ""
        return Path(loaded or self.params.model_paths[index]).name

    @property
    def on_fallback(self) -> bool:
        """Running on the CPU although the config asked for an accelerator."""
        return (self.asked.delegate != "cpu" and self.info is not None
                and self.info.delegate == "cpu")

    def adopt(self, other: Supervisor) -> None:
        """Take over `other`'s running worker and stop this one's (a fail-back); only
        between frames, on the pipeline thread: the slots change with it."""
        self.stop()
        for name in ("_proc", "_sock", "mem", "info", "model_stamp"):
            setattr(self, name, getattr(other, name))
        other._proc, other._sock, other.mem = None, None, SharedSlots()
        other.state = "stopped"
        self.params = self.asked
        self.fallback_reason, self.last_failure, self.consecutive_failures = "", "", 0
        self.state = "running"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- per frame ---------------------------------------------------------------------

    def pixels(self, slot: int) -> NDArray[np.uint8]:
        """The slot's pixel buffer: preprocess writes the next frame straight into it.
        Model m's slots are m * slots + (0 .. slots - 1) (`edged.inference.slots`)."""
        return self.mem.pixels[slot]

    def raw_outputs(self, slot: int) -> list[NDArray[Any]]:
        """The slot's raw output tensors, valid until the slot is submitted again."""
        return self.mem.outputs[slot]

    def submit(self, slot: int) -> None:
        self._send({"op": "infer", "slot": slot}, "a frame was")
        self._in_flight[slot] = 0

    def wait(self, slot: int) -> Done:
        """The answer for `slot`, or for a classify's key (`classify`); the answers of
        others in flight read meanwhile are kept for their own wait."""
        done = self._early.pop(slot, None)
        while done is None:
            # Whatever is queued ahead (a classify's crops) counts in the hang timeout.
            message = self._receive(self.invoke_timeout_s * (1 + sum(self._in_flight.values())),
                                    "inference" if slot >= 0 else "classifying crops")
            other = message.get("slot")
            if other != slot and other in self._in_flight:
                self._early[other] = self._done(message, other)
            else:
                done = self._done(message, slot)
        self._in_flight.pop(slot, None)
        self.consecutive_failures = 0
        return done

    def classify(self, crops: int, first: int = 0) -> int:
        """Queue the cascade's classifier on `crops` crop buffers from `first` (`mem.crops`;
        each one's raw outputs in `mem.crop_outputs`) behind what is in flight; the key
        to `wait` for its answer. Those buffers are the worker's until then."""
        if -1 - first in self._in_flight:  # one never waited for (its frame failed):
            self.wait(-1 - first)  # its answer must not pass for this one's
        self._send({"op": "classify", "crops": crops, "first": first}, "crops were")
        self._in_flight[-1 - first] = crops
        return -1 - first

    def _send(self, message: dict[str, Any], what: str) -> None:
        assert self._sock is not None
        try:
            send(self._sock, message)
        except OSError:
            raise self._failed(f"worker {self._exit_description()} before {what} sent"
                               ) from None

    def _done(self, message: dict[str, Any], slot: int) -> Done:
        op = "done" if slot >= 0 else "classified"  # a frame's, a classify's
        if message.get("op") != op or message.get("slot") != slot:
            raise self._failed(f"worker protocol error: unexpected {message.get('op')!r}")
        return Done(slot, int(message["quantize_us"]), int(message["invoke_us"]))

    def _receive(self, timeout_s: float, doing: str) -> dict[str, Any]:
        assert self._sock is not None and self._proc is not None
        ready, _, _ = select.select([self._sock], [], [], timeout_s)
        if not ready:
            raise self._failed(f"worker hung: no answer within {timeout_s:g} s while {doing}")
        try:
            message, _ = receive(self._sock, self._inbox)
        except (OSError, EOFError):
            raise self._failed(f"worker {self._exit_description()} while {doing}") from None
        return message

    def _exit_description(self) -> str:
        """How the worker ended, once its socket has closed."""
        assert self._proc is not None
        try:
            return describe_exit(self._proc.wait(1.0))
        except subprocess.TimeoutExpired:
            return "closed its socket"

    def _failed(self, why: str) -> WorkerError:
        self._reap()
        if self.stopping:
            log.info("inference worker stopped (%s)", why)
            self.state = "stopped"
            return WorkerError(why)
        self.consecutive_failures += 1
        self.last_failure = why
        self.state = "restarting"
        log.error("%s", why)
        return WorkerError(why)

    # -- recovery ----------------------------------------------------------------------

    def next_backoff_s(self) -> float:
        n = max(self.consecutive_failures - 1, 0)
        return float(min(self.restart_backoff_max_s, self.restart_backoff_s * (2 ** min(n, 16))))

    def should_fall_back(self) -> bool:
        return (self.params.delegate != "cpu" and self.params.fallback == "cpu"
                and self.consecutive_failures >= self.cpu_fallback_after)

    def start_until_loaded(self, should_stop: Callable[[], bool]) -> ModelInfo:
        """`start()`, retrying a worker that dies while loading (libedgetpu can abort).

        Retries back off, towards the CPU when the fallback policy allows it. On the
        CPU the same file kills it the same way every time (a damaged model the
        runtime crashes on): after LOAD_DEATHS_MAX deaths this says so in one
        ModelLoadError, which a restart cannot mend either. A load error that
        heals (no Coral yet, with fallback = "fail") is waited for here, in state
        "waiting", said once; `should_stop` is polled meanwhile (and may do the
        caller's housekeeping). A stop request ends the wait with a ModelLoadError.
        """
        attempt = self.start
        cpu_deaths = 0
        while True:
            try:
                return attempt()
            except ModelLoadError as exc:
                if not exc.heals:
                    raise
                self._wait_for(str(exc))
            except WorkerError as exc:
                cpu_deaths += self.params.delegate == "cpu"
                if cpu_deaths >= LOAD_DEATHS_MAX:
                    raise ModelLoadError(
                        f"{self.params.model_path}: {exc} ({cpu_deaths} times in a row): the "
                        "file is corrupt or the runtime cannot handle it") from None
                attempt = self.restart
            if should_stop():
                raise ModelLoadError("stopped while the worker was starting")
            wait_backoff(self.next_backoff_s(), should_stop)
            if should_stop():
                raise ModelLoadError("stopped while the worker was starting")

    def _wait_for(self, why: str) -> None:
        """A load error that may heal: count it, say it once, wait (state "waiting")."""
        if why != self.last_failure:
            log.warning("%s; waiting for it (retrying, at most %g s apart)", why,
                        self.restart_backoff_max_s)
        self.consecutive_failures += 1
        self.last_failure = why
        self.state = "waiting"

    def restart(self) -> ModelInfo:
        """Start a replacement worker (the caller has waited `next_backoff_s()`)."""
        if self.should_fall_back():
            self.fallback_reason = (f"worker failed {self.consecutive_failures} times on "
                                    f"{self.params.delegate}: falling back to the CPU with "
                                    f"{self.cpu_model_path}")
            log.warning("%s", self.fallback_reason)
            # The external delegate's library and options mean nothing on the CPU
            # (and the CPU spec refuses them): drop them with the delegate.
            self.params = replace(self.params, delegate="cpu", model_path=self.cpu_model_path,
                                  external_library="", external_options={},
                                  others=tuple(replace(o, model_path=o.cpu_model_path)
                                               for o in self.params.others))
        self.restarts += 1
        try:
            return self.start()
        except WorkerError:
            raise
        except ModelLoadError as exc:
            # After a restart a load error counts as one more failure, not the end:
            # a USB device may come back.
            raise self._failed(str(exc)) from None
