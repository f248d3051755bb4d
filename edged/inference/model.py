"""`Model`: a loaded interpreter with its inputs and outputs in a fixed order.

Output order is the subgraph's declared output order (`SubGraph.outputs` in
the flatbuffer). Measured on ai_edge_litert 2.3: `get_output_details()`
returns exactly that order (it iterates `OutputIndices()`), but that is NOT
the order the model was built with: a Keras model with outputs
`[zeta, alpha, mid]` converts to subgraph outputs `[alpha, zeta, mid]`,
while its signature keys `output_0, output_1, output_2` keep the Keras order.
So edged never relies on position alone: each output's `TensorInfo.name` is
its signature output key when the model has a signature for subgraph 0, else
the tensor name, and decoders should pick outputs by name (or shape).
The order is checked against the file at load time and enforced, so it does
not depend on which runtime reports the details.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edged.inference.delegates import (
    DelegateError,
    DelegateKind,
    DelegateSpec,
    fall_back,
    load_delegate,
)
from edged.inference.modelfile import (
    EDGETPU_CUSTOM_OP,
    ModelFileError,
    ModelFileInfo,
    check_runnable,
    read_model_file,
)
from edged.inference.runtime import Runtime
from edged.numerics.quantize import PixelQuantizer, dequantize
from edged.numerics.tensors import TensorInfo


class ModelError(ValueError):
    """A model that cannot be loaded or run; one line naming the file."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def ordered_tensors(details: Sequence[Mapping[str, Any]], order: Sequence[int],
                    keys: Mapping[int, str], path: Path) -> tuple[TensorInfo, ...]:
    """TensorInfos in the file's declared `order`, named by signature key where there is one."""
    by_index = {int(d["index"]): d for d in details}
    if sorted(by_index) != sorted(order):
        raise ModelError(f"{path}: the runtime reports tensors {sorted(by_index)} but the file "
                         f"declares {sorted(order)}")
    infos = []
    for index in order:
        info = TensorInfo.from_detail(by_index[index])
        if index in keys:
            info = dataclasses.replace(info, name=keys[index])
        infos.append(info)
    return tuple(infos)


def prepare(interpreter: Any, path: Path, *, probe: bool = True) -> None:
    """Allocate, then run one inference on a zero input: the model can run.

    A batch dimension left open (`shape_signature` -1, as Keras exports
    have) is fixed at 1 first. The inference is the check because the
    runtime allocates some outputs only when it first invokes (a Flatten's
    `[-1, 10]`), so "no memory after allocation" is no sign of a damaged
    file; a file that cannot run fails here, with the runtime's own message.
    """
    try:
        for d in interpreter.get_input_details():
            signature = [int(n) for n in d.get("shape_signature", d["shape"])]
            if any(n < 0 for n in signature):
                interpreter.resize_tensor_input(d["index"], [max(n, 1) for n in signature],
                                                strict=True)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: the runtime cannot prepare it: {_one_line(exc)}") from None
    if not probe:
        return
    try:
        for d in interpreter.get_input_details():
            interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interpreter.invoke()
        for d in interpreter.get_output_details():
            interpreter.get_tensor(d["index"])
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: the runtime cannot run it (one inference on a zero "
                         f"input failed): {_one_line(exc)}") from None


def make_interpreter(runtime: Runtime, path: Path, delegate: Any | None,
                     num_threads: int | None) -> Any:
    """The runtime's Interpreter; raises the runtime's own ValueError/RuntimeError."""
    kwargs: dict[str, Any] = {"model_path": str(path)}
    if delegate is not None:
        kwargs["experimental_delegates"] = [delegate]
    if num_threads is not None:
        kwargs["num_threads"] = num_threads
    return runtime.interpreter_class(**kwargs)


class Model:
    """One model on one interpreter. Not thread-safe: one thread (the worker) uses it."""

    def __init__(self, interpreter: Any, runtime: Runtime, file: ModelFileInfo, *,
                 delegate_in_use: DelegateKind, fallback_reason: str | None,
                 delegate: Any | None = None) -> None:
        self._interpreter = interpreter
        # Held so the delegate outlives the interpreter that uses it.
        self._delegate = delegate
        self.runtime = runtime
        self.file = file
        self.path = file.path
        self.delegate_in_use: DelegateKind = delegate_in_use
        self.fallback_reason = fallback_reason
        self.inputs = ordered_tensors(interpreter.get_input_details(), file.inputs,
                                      file.input_keys(), file.path)
        self.outputs = ordered_tensors(interpreter.get_output_details(), file.outputs,
                                       file.output_keys(), file.path)

    @classmethod
    def load(cls, path: str | Path, runtime: Runtime,
             delegate_spec: DelegateSpec | None = None, *, single_input: bool = True,
             cpu_path: str | Path | None = None) -> Model:
        """Check the file, load the delegate (with the fallback policy), allocate.

        `cpu_path` is the CPU build of an Edge TPU model (`model.path` beside
        `model.edgetpu_path`): what a CPU fallback runs when `path` needs the
        Edge TPU. The reason for a fallback is `fallback_reason`, not logged.
        Raises `ModelFileError`, `DelegateError` (fallback = fail) or `ModelError`,
        each with a one-line message.
        """
        spec = delegate_spec or DelegateSpec()
        info = read_model_file(path)
        check_runnable(info, spec.kind)
        delegate, interpreter, reason, heals = None, None, None, False
        if spec.kind != "cpu":
            try:
                delegate = load_delegate(spec, runtime)
                interpreter = make_interpreter(runtime, info.path, delegate, spec.num_threads)
            except DelegateError as exc:
                reason, heals = str(exc), exc.heals
            except (ValueError, RuntimeError) as exc:
                reason = (f"{spec.describe()} delegate could not be applied to {info.path.name}: "
                          f"{_one_line(exc)}")
            if reason is not None:
                delegate = None
                info, reason = _fall_back_to_cpu(spec, info, reason, cpu_path, heals)
        if interpreter is None:
            try:
                interpreter = make_interpreter(runtime, info.path, None, spec.num_threads)
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"{info.path}: the runtime cannot load it: "
                                 f"{_one_line(exc)}") from None
        prepare(interpreter, info.path)
        if info.stateful:
            # The probe moved its state on: the first frame must meet the state the
            # model was exported with, as in a plain interpreter loop (issue 14.10).
            del interpreter
            interpreter = make_interpreter(runtime, info.path, delegate, spec.num_threads)
            prepare(interpreter, info.path, probe=False)
        kind: DelegateKind = spec.kind if delegate is not None else "cpu"
        model = cls(interpreter, runtime, info, delegate_in_use=kind, fallback_reason=reason,
                    delegate=delegate)
        if single_input and len(model.inputs) != 1:
            names = ", ".join(repr(t.name) for t in model.inputs)
            raise ModelError(f"{info.path}: has {len(model.inputs)} inputs ({names}); edged "
                             "feeds one image tensor: use a model with a single input")
        return model

    def set_input_pixels(self, pixels: NDArray[np.uint8], quantizer: PixelQuantizer) -> None:
        """Quantize `pixels` straight into the interpreter's input buffer.

        The `tensor()` view is dropped before returning: the runtime refuses
        to `invoke()` while a view into its memory is alive.
        """
        t = self.inputs[0]
        if quantizer.tensor != t:
            raise ModelError(f"{self.path}: pixel quantizer was built for tensor "
                             f"{quantizer.tensor.name!r}, not input {t.name!r}")
        if pixels.size != t.size:
            raise ModelError(f"{self.path}: pixels of shape {list(pixels.shape)} do not fit "
                             f"input {t.name!r} of shape {list(t.shape)}")
        view = self._interpreter.tensor(t.index)()
        try:
            quantizer(pixels, out=view)
        finally:
            del view

    def invoke(self) -> None:
        try:
            self._interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: inference failed: {_one_line(exc)}") from None

    def raw_outputs(self) -> list[NDArray[Any]]:
        """Each output as the model produced it (copies), in `outputs` order."""
        # get_tensor already returns a copy that owns its data (ai_edge_litert,
        # tflite_runtime and tensorflow.lite alike; test_model checks it).
        return [self._interpreter.get_tensor(t.index) for t in self.outputs]

    def copy_raw_outputs(self, into: list[NDArray[Any]]) -> None:
        """Copy each raw output into a caller's buffer (the worker's shared slot), one copy."""
        for dst, t in zip(into, self.outputs, strict=True):
            view = self._interpreter.tensor(t.index)()
            try:
                np.copyto(dst, view)
            finally:
                del view

    def dequantized_outputs(self) -> list[NDArray[Any]]:
        """Each output in real values, with that output's own parameters."""
        return [dequantize(q, t) for q, t in zip(self.raw_outputs(), self.outputs, strict=True)]

    def run(self, pixels: NDArray[np.uint8], quantizer: PixelQuantizer) -> list[NDArray[Any]]:
        self.set_input_pixels(pixels, quantizer)
        self.invoke()
        return self.dequantized_outputs()

    def describe(self) -> str:
        return f"{self.path.name} on {self.runtime.describe()}, delegate {self.delegate_in_use}"


def _fall_back_to_cpu(spec: DelegateSpec, info: ModelFileInfo, reason: str,
                      cpu_path: str | Path | None, heals: bool) -> tuple[ModelFileInfo, str]:
    """Apply the fallback policy: the file to run on the CPU, and the line saying so.

    An Edge TPU model falls back to its CPU build (`cpu_path`) when there is one;
    what the CPU cannot run is refused before anything is said."""
    if spec.fallback != "cpu":
        return info, fall_back(spec, reason, heals=heals)
    swapped = ""
    if info.needs_edgetpu and cpu_path is not None and Path(cpu_path) != info.path:
        info = read_model_file(cpu_path)
        swapped = info.path.name
    if info.needs_edgetpu:
        raise ModelFileError(f"{info.path}: compiled for the Edge TPU ({EDGETPU_CUSTOM_OP}) "
                             f"and cannot run on the CPU: {reason}; to fall back to the CPU, "
                             "set model.path to the model's CPU build and model.edgetpu_path "
                             "to this file")
    check_runnable(info, "cpu")
    return info, fall_back(spec, reason, swapped)
