"""The inference worker: a child process that owns the interpreter.

libedgetpu can abort() the whole process on a USB error, and no Python `try`
survives that, so the interpreter lives here, alone, and the daemon
(`edged.inference.supervisor`) restarts it when it dies.

Protocol, over a SOCK_SEQPACKET socket pair (one JSON object per packet):

    daemon -> worker   {"op": "load", ...WorkerParams}
    worker -> daemon   {"op": "ready", "inputs": [...], "outputs": [...], ...}
                       or {"op": "error", "message": "one line"}
    daemon -> worker   {"op": "attach", "layout": {...}}  + the memfd (SCM_RIGHTS)
    daemon -> worker   {"op": "infer", "slot": s}   (s names the model too: slots.Layout)
    worker -> daemon   {"op": "done", "slot": s, "quantize_us": .., "invoke_us": ..}
    daemon -> worker   {"op": "classify", "crops": n, "first": f}   (a cascade's
                       classifier on crop buffers f..f+n-1; the pipeline cuts the next
                       frame's crops into the other half meanwhile)
    worker -> daemon   {"op": "classified", "slot": -1 - f, "crops": n, ...}

On an accelerator the worker quantizes the next frame while the device runs
this one, on a second interpreter of the same model (`edged.inference.overlap`);
an answer may then come a frame early (the supervisor keeps it for its slot).

Frames and outputs never cross the socket: both sides map one memfd
(`edged.inference.slots`) holding, for each slot, the preprocessed pixels and
the raw output tensors, and with a cascade each crop and its outputs. The worker
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
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from edged.inference.overlap import Device, Runner, Twins
from edged.inference.slots import Layout
from edged.numerics.imageinput import LayoutSetting, NotAnImageError, image_input
from edged.system.threads import set_os_thread_name

MAX_PACKET = 1 << 20
_FD_TYPE = "i"  # SCM_RIGHTS carries C ints


@dataclass(frozen=True)
class OtherModel:
    """A further model the worker holds beside its first (issue 17: several models
    on one Edge TPU, which libedgetpu gives to one process), on the same delegate."""

    model_path: str
    cpu_model_path: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    layout: str = "auto"


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
    # A cascade's classifier (issue 17), run on crops of the detections, on the
    # detector's delegate; its CPU build where the detector runs on the CPU.
    cascade_path: str = ""
    cascade_cpu_path: str = ""
    max_crops: int = 0
    others: tuple[OtherModel, ...] = ()
    overlap: bool = True  # on an accelerator: a twin interpreter (edged.inference.overlap)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> WorkerParams:
        fields = {k: v for k, v in message.items() if k != "op"}
        fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
        fields["others"] = tuple(
            OtherModel(**{**o, "mean": tuple(o["mean"]), "std": tuple(o["std"])})
            for o in fields.get("others") or ())
        return cls(**fields)

    @property
    def model_paths(self) -> tuple[str, ...]:
        """Every model file the worker loads on its accelerator, first model first."""
        return (self.model_path, *(o.model_path for o in self.others))


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


def _load(params: WorkerParams, *, twin: bool = True) -> tuple[list[Any], Any, dict[str, Any]]:
    """The model (and on an accelerator its twin, `edged.inference.overlap`), its pixel
    quantizer and what "ready" says of it."""
    # Imported here: the daemon imports this module for its protocol without the runtime.
    from edged.inference.delegates import DelegateSpec
    from edged.inference.model import Model
    from edged.inference.runtime import select_runtime
    from edged.numerics.quantize import Normalization
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
    models = [model]
    if twin and params.overlap and model.delegate_in_use != "cpu":
        try:
            models.append(Model.load(model.path, runtime, replace(spec, fallback="fail")))
        except Exception as exc:  # frames then run one after the other, as on the CPU
            print(f"edged worker: {model.path}: no second interpreter on the "
                  f"{model.delegate_in_use} delegate ({exc}); frames run one at a time",
                  file=sys.stderr)
    configured = Normalization(params.mean, params.std) if params.mean else None
    quantizer, norm_source = _quantizer(model, configured, params.layout)
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
    return models, quantizer, info


def _quantizer(model: Any, configured: Any, layout: str) -> tuple[Any, str]:
    """The pixel quantizer of a model's image input, and where its normalization came
    from (the config, the file's metadata, or derived from the input tensor)."""
    from edged.inference.model import ModelError
    from edged.inference.modelmeta import stated_normalization
    from edged.numerics.quantize import Normalization, PixelQuantizer, choose_normalization

    meta = stated_normalization(model.path)  # the file loaded: the CPU build after a fallback
    norm, source = choose_normalization(
        model.inputs[0], configured, Normalization(meta.mean, meta.std) if meta else None,
        meta.source if meta else "")
    setting: LayoutSetting = layout  # type: ignore[assignment]
    try:
        image_input(model.inputs[0], setting)
    except NotAnImageError as exc:  # fed camera pixels it would publish noise: refused
        raise ModelError(f"{model.path}: {exc}") from None
    return PixelQuantizer(model.inputs[0], norm, setting), source


def _load_beside(params: WorkerParams, first: Any, other: OtherModel, *, twin: bool = True
                 ) -> tuple[list[Any], Any, dict[str, Any]]:
    """A further model, where the first ended up: on its accelerator, or on the CPU
    (its CPU build) after a fallback at load; with its own normalization."""
    on_cpu = first.delegate_in_use == "cpu"
    beside = replace(
        params, model_path=other.cpu_model_path if on_cpu else other.model_path,
        cpu_model_path=other.cpu_model_path, mean=other.mean, std=other.std,
        layout=other.layout, cascade_path="", cascade_cpu_path="", max_crops=0, others=())
    if on_cpu:
        beside = replace(beside, delegate="cpu", external_library="", external_options={})
    return _load(beside, twin=twin)


def serve(sock: socket.socket) -> int:
    inbox = bytearray(MAX_PACKET)
    message, _ = receive(sock, inbox)
    params = WorkerParams.from_message(message)
    classifier: tuple[Any, Any] | None = None
    try:
        models, quantizer, info = _load(params)
        held = [Twins(models, quantizer)]
        info["others"] = []
        for other in params.others:
            beside, beside_quantizer, beside_info = _load_beside(params, models[0], other)
            held.append(Twins(beside, beside_quantizer))
            info["others"].append(beside_info)
        if params.cascade_path:
            found, found_quantizer, info["cascade"] = _load_beside(
                params, models[0], OtherModel(params.cascade_path, params.cascade_cpu_path),
                twin=False)
            classifier = (found[0], found_quantizer)
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
    pixels = [layout.pixels(buf, s) for s in range(layout.all_slots)]
    outputs = [layout.raw_outputs(buf, s) for s in range(layout.all_slots)]
    slot_models = [held[layout.model_of(s)] for s in range(layout.all_slots)]
    crops = [(layout.crop(buf, i), layout.crop_raw_outputs(buf, i))
             for i in range(layout.crops)]
    # On an accelerator, the next frame is made ready while this one runs.
    overlapped = len(models) > 1
    classifier_runner = None
    if overlapped:
        device = Device()
        for twins in held:
            twins.start(sock, send, device)
        if classifier is not None:
            classifier_runner = Runner(classifier[0], sock, send, device)
    while True:
        try:
            message, _ = receive(sock, inbox)
        except EOFError:
            return 0
        if message["op"] == "stop":
            return 0
        if message["op"] == "classify" and classifier is not None:
            first = int(message.get("first", 0))
            job = partial(_classify, *classifier, crops[first:first + int(message["crops"])],
                          first)
            if classifier_runner is not None:
                classifier_runner.call(job)
            else:
                send(sock, job())
            continue
        slot = int(message["slot"])
        if overlapped:
            slot_models[slot].infer(pixels[slot], outputs[slot], slot)
            continue
        model, quantizer = slot_models[slot].models[0], slot_models[slot].quantizer
        t0 = time.perf_counter_ns()
        model.set_input_pixels(pixels[slot], quantizer)
        t1 = time.perf_counter_ns()
        model.invoke()
        t2 = time.perf_counter_ns()
        model.copy_raw_outputs(outputs[slot])
        t3 = time.perf_counter_ns()
        send(sock, {"op": "done", "slot": slot, "quantize_us": (t1 - t0) // 1000,
                    "invoke_us": (t2 - t1) // 1000, "copy_us": (t3 - t2) // 1000})


def _classify(model: Any, quantizer: Any,
              crops: list[tuple[NDArray[np.uint8], list[NDArray[Any]]]], first: int
              ) -> dict[str, Any]:
    """The cascade's classifier on each crop, its raw outputs beside the crop."""
    quantize_ns = invoke_ns = 0
    for pixels, outputs in crops:
        t0 = time.perf_counter_ns()
        model.set_input_pixels(pixels, quantizer)
        t1 = time.perf_counter_ns()
        model.invoke()
        invoke_ns += time.perf_counter_ns() - t1
        quantize_ns += t1 - t0
        model.copy_raw_outputs(outputs)
    return {"op": "classified", "slot": -1 - first, "crops": len(crops),
            "quantize_us": quantize_ns // 1000, "invoke_us": invoke_ns // 1000}


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
