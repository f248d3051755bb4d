"""The inference worker: a child process that owns the interpreter.

libedgetpu can abort() the whole process on a USB error, and no Python `try`
survives that, so the interpreter lives here, alone, and the daemon
(`edged.inference.supervisor`) restarts it when it dies.

Protocol, over a SOCK_SEQPACKET socket pair (one JSON object per packet):

    daemon -> worker   {"op": "load", ...WorkerParams}
    worker -> daemon   {"op": "ready", "inputs": [...], "outputs": [...], ...}
                       or {"op": "error", "message": "one line"}
    daemon -> worker   {"op": "attach", "layout": {...}}  + the memfd (SCM_RIGHTS)
    daemon -> worker   {"op": "infer", "slot": s}
    worker -> daemon   {"op": "done", "slot": s, "quantize_us": .., "invoke_us": ..}

Frames and outputs never cross the socket: both sides map one memfd holding,
for each slot, the preprocessed pixels and the raw output tensors. The worker
quantizes straight from the slot into the interpreter's input buffer and
copies each raw output into the slot; the daemon dequantizes (a decoder may
want the raw quantized values first).
"""

from __future__ import annotations

import array
import mmap
import os
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from edged.numerics.imageinput import LayoutSetting, NotAnImageError, image_input
from edged.numerics.tensors import TensorInfo
from edged.system.threads import set_os_thread_name

MAX_PACKET = 1 << 20
_FD_TYPE = "i"  # SCM_RIGHTS carries C ints
_ALIGN = 64


@dataclass(frozen=True)
class WorkerParams:
    """Everything the worker needs to load the model; sent as the first packet."""

    model_path: str
    runtime: str = "auto"
    delegate: str = "cpu"
    num_threads: int = 2
    edgetpu_device: str = ""
    edgetpu_library: str = "libedgetpu.so.1"
    external_library: str = ""
    external_options: dict[str, str] = field(default_factory=dict)
    fallback: str = "cpu"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    layout: str = "auto"  # preprocess.layout
    # The CPU build of an Edge TPU model_path: what a fallback at load runs.
    cpu_model_path: str = ""


@dataclass(frozen=True)
class Layout:
    """Where each slot's pixels and outputs live in the shared memfd."""

    slots: int
    pixel_shape: tuple[int, ...]
    outputs: tuple[TensorInfo, ...]
    pixel_offsets: tuple[int, ...]
    output_offsets: tuple[tuple[int, ...], ...]
    size: int

    @classmethod
    def plan(cls, slots: int, pixel_shape: tuple[int, ...], outputs: tuple[TensorInfo, ...]
             ) -> Layout:
        def aligned(n: int) -> int:
            return (n + _ALIGN - 1) // _ALIGN * _ALIGN

        offset = 0
        pixel_offsets, output_offsets = [], []
        for _ in range(slots):
            pixel_offsets.append(offset)
            offset = aligned(offset + int(np.prod(pixel_shape)))
            offs = []
            for t in outputs:
                offs.append(offset)
                offset = aligned(offset + t.size * t.dtype.itemsize)
            output_offsets.append(tuple(offs))
        return cls(slots, pixel_shape, outputs, tuple(pixel_offsets), tuple(output_offsets),
                   max(offset, _ALIGN))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outputs"] = [t.to_dict() for t in self.outputs]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layout:
        return cls(int(d["slots"]), tuple(d["pixel_shape"]),
                   tuple(TensorInfo.from_dict(t) for t in d["outputs"]),
                   tuple(d["pixel_offsets"]), tuple(tuple(o) for o in d["output_offsets"]),
                   int(d["size"]))

    def pixels(self, buf: mmap.mmap, slot: int) -> NDArray[np.uint8]:
        return np.ndarray(self.pixel_shape, np.uint8, buf, self.pixel_offsets[slot])

    def raw_outputs(self, buf: mmap.mmap, slot: int) -> list[NDArray[Any]]:
        return [np.ndarray(t.shape, t.dtype, buf, off)
                for t, off in zip(self.outputs, self.output_offsets[slot], strict=True)]


def pixel_shape(t: TensorInfo) -> tuple[int, ...]:
    """The uint8 frame an input tensor takes: (H, W, C) for an image, else its shape
    minus batch (a non-image input is refused at load; this only sizes a slot)."""
    try:
        return image_input(t).pixel_shape
    except NotAnImageError:
        pass
    if len(t.shape) == 4:
        return t.shape[1:]
    return t.shape[1:] if len(t.shape) > 1 else t.shape


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = orjson.dumps(message)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive(sock: socket.socket, buf: bytearray, max_fds: int = 0
            ) -> tuple[dict[str, Any], list[int]]:
    """One packet, read into `buf`: a buffer of MAX_PACKET kept for the socket's life.

    `recv(MAX_PACKET)` allocates, faults in and frees 1 MiB per packet (~15 us,
    more with cold caches right after an invoke), and there are two packets a frame.
    """
    fds = array.array(_FD_TYPE)
    ancillary = socket.CMSG_SPACE(max_fds * fds.itemsize) if max_fds else 0
    nbytes, ancdata, _flags, _addr = sock.recvmsg_into([buf], ancillary)
    if not nbytes:
        raise EOFError("the other end closed the worker socket")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    message: dict[str, Any] = orjson.loads(memoryview(buf)[:nbytes])
    return message, list(fds)


def _load(params: WorkerParams) -> tuple[Any, Any, dict[str, Any]]:
    # Imported here: the daemon imports this module for `Layout` without the runtime.
    from edged.inference.delegates import DelegateSpec
    from edged.inference.model import Model, ModelError
    from edged.inference.modelmeta import stated_normalization
    from edged.inference.runtime import select_runtime
    from edged.numerics.quantize import Normalization, PixelQuantizer, choose_normalization
    from edged.system.threads import leave_cores_to_the_model

    leave_cores_to_the_model()
    runtime = select_runtime(params.runtime)  # type: ignore[arg-type]
    edgetpu = params.delegate == "edgetpu"
    spec = DelegateSpec(
        kind=params.delegate,  # type: ignore[arg-type]
        num_threads=params.num_threads or None,
        device=params.edgetpu_device if edgetpu else "",
        library=(params.edgetpu_library if edgetpu else params.external_library) or None,
        options=dict(params.external_options) if params.delegate == "external" else {},
        fallback=params.fallback,  # type: ignore[arg-type]
    )
    model = Model.load(params.model_path, runtime, spec,
                       cpu_path=params.cpu_model_path or None)
    configured = Normalization(params.mean, params.std) if params.mean else None
    meta = stated_normalization(model.path)  # the file loaded: the CPU build after a fallback
    norm, norm_source = choose_normalization(
        model.inputs[0], configured, Normalization(meta.mean, meta.std) if meta else None,
        meta.source if meta else "")
    layout: LayoutSetting = params.layout  # type: ignore[assignment]
    try:
        image_input(model.inputs[0], layout)
    except NotAnImageError as exc:  # fed camera pixels it would publish noise: refused
        raise ModelError(f"{model.path}: {exc}") from None
    quantizer = PixelQuantizer(model.inputs[0], norm, layout)
    # Model.load ran one inference before "ready": a damaged model that fails only
    # when run (a corrupt op option blob) is one load error, not a worker death on
    # every frame; an Edge TPU model's weights are uploaded then, not on frame 1.
    info = {
        "op": "ready",
        "pid": os.getpid(),
        "runtime": f"{runtime.name} {runtime.version}",
        "delegate": model.delegate_in_use,
        "delegate_note": model.fallback_reason or "",
        "model_path": str(model.path),  # the CPU build after a fallback at load
        "inputs": [t.to_dict() for t in model.inputs],
        "outputs": [t.to_dict() for t in model.outputs],
        "ssd_outputs": list(model.file.ssd_outputs),
        "pixel_path": quantizer.path,
        "mean": list(quantizer.normalization.mean),
        "std": list(quantizer.normalization.std),
        "normalization_source": norm_source,
    }
    return model, quantizer, info


def serve(sock: socket.socket) -> int:
    inbox = bytearray(MAX_PACKET)
    message, _ = receive(sock, inbox)
    params = WorkerParams(**{k: v for k, v in message.items() if k != "op"})
    try:
        model, quantizer, info = _load(params)
    except Exception as exc:
        # heals: no device yet (a Coral plugged in later); the daemon waits for it.
        send(sock, {"op": "error", "message": str(exc).splitlines()[0] if str(exc)
                    else type(exc).__name__, "heals": bool(getattr(exc, "heals", False))})
        return 3
    send(sock, info)
    message, fds = receive(sock, inbox, max_fds=1)
    layout = Layout.from_dict(message["layout"])
    buf = mmap.mmap(fds[0], layout.size)
    os.close(fds[0])
    pixels = [layout.pixels(buf, s) for s in range(layout.slots)]
    outputs = [layout.raw_outputs(buf, s) for s in range(layout.slots)]
    while True:
        try:
            message, _ = receive(sock, inbox)
        except EOFError:
            return 0
        if message["op"] == "stop":
            return 0
        slot = int(message["slot"])
        t0 = time.perf_counter_ns()
        model.set_input_pixels(pixels[slot], quantizer)
        t1 = time.perf_counter_ns()
        model.invoke()
        t2 = time.perf_counter_ns()
        model.copy_raw_outputs(outputs[slot])
        t3 = time.perf_counter_ns()
        send(sock, {"op": "done", "slot": slot, "seq": message.get("seq"),
                    "quantize_us": (t1 - t0) // 1000, "invoke_us": (t2 - t1) // 1000,
                    "copy_us": (t3 - t2) // 1000})


def main() -> int:
    # The daemon handles SIGINT/SIGTERM for the whole group; the worker just
    # follows its socket (EOF = the daemon is gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Before the interpreter starts its threads, which inherit the name: `top`
    # then shows the process that holds the cores as edged-worker, not python3.
    set_os_thread_name("edged-worker")
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        return serve(sock)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 0


if __name__ == "__main__":
    sys.exit(main())
