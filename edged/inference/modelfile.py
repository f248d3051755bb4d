"""Reading a `.tflite` file ourselves, before the runtime does.

The runtimes report a damaged or unsuitable model late and badly: a truncated
file can crash the process, an Edge TPU model on the CPU fails only at
`allocate_tensors()` with a message about "unresolved custom op". So edged
reads the flatbuffer first, through the bounds-checked reader in
`edged.inference.flatbuffer`, and turns each problem into one line naming the file.
We do not use the generated schema module: `tflite_runtime` does not ship
it, and it trusts its input.

Only the parts edged needs are read (operator codes, subgraph inputs, outputs,
tensors, operators, buffers, signature defs), but those are read completely,
so a structural error anywhere in them is found. Weights are not checked:
a flipped bit in a weight gives a wrong answer, not a crash.

Schema field numbers are from tensorflow/lite/schema/schema.fbs.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edged.inference.flatbuffer import MalformedError, Reader, Table

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
FILE_IDENTIFIER = b"TFL3"
BUILTIN_CUSTOM = 32  # BuiltinOperator.CUSTOM
# BuiltinOperator VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE: a model that keeps state
# between invokes in resource variables (which reset_all_variables() does not reset).
RESOURCE_VARIABLE_OPS = frozenset({142, 143, 144})
# Custom ops every runtime's BuiltinOpResolver registers itself
# (tensorflow/lite/core/kernels/register.cc): not "unresolved".
SSD_POSTPROCESS_OP = "TFLite_Detection_PostProcess"
SSD_OUTPUT_COUNT = 4  # the op's fixed output list; what each means is decode.detection's
RUNTIME_CUSTOM_OPS = frozenset({SSD_POSTPROCESS_OP, "Mfcc", "AudioSpectrogram", "NumericVerify"})
# Anything bigger cannot be a flatbuffer (32-bit offsets), and refusing it
# keeps a mistaken path (a video file, /dev/zero) from being read into memory.
MAX_FILE_BYTES = 2**31 - 1
# TensorType (UINT8, INT16, INT8) -> the zero points its quantized values allow.
_ZERO_POINT_RANGE = {3: (0, 255), 7: (-32768, 32767), 9: (-128, 127)}
_MAX_TENSOR_TYPE = 127  # TensorType is an int8 enum; newer schemas add values

DelegateKind = Literal["cpu", "edgetpu", "external"]


class ModelFileError(ValueError):
    """A model file that cannot be used, with a one-line reason naming the file."""


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    """One SignatureDef: its key and the tensor index behind each input/output name."""

    key: str
    subgraph_index: int
    inputs: tuple[tuple[str, int], ...]
    outputs: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class ModelFileInfo:
    """What the file itself says, independent of any runtime."""

    path: Path
    size: int
    schema_version: int
    custom_ops: tuple[str, ...]
    subgraph_count: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    tensor_names: tuple[str, ...]
    signatures: tuple[SignatureInfo, ...]
    # The SSD post-process op's output tensors in the order the op writes them,
    # when the model has that op and all four are model outputs; empty otherwise.
    # decode.detection.SSD_ROLES says which is which.
    ssd_outputs: tuple[int, ...] = ()
    # Each output depends on the invokes before it (resource variables).
    stateful: bool = False

    @property
    def needs_edgetpu(self) -> bool:
        return EDGETPU_CUSTOM_OP in self.custom_ops

    def output_keys(self) -> dict[int, str]:
        """Tensor index -> signature output key, from the signature of subgraph 0."""
        for sig in self.signatures:
            if sig.subgraph_index == 0:
                return {index: name for name, index in sig.outputs}
        return {}

    def input_keys(self) -> dict[int, str]:
        for sig in self.signatures:
            if sig.subgraph_index == 0:
                return {index: name for name, index in sig.inputs}
        return {}


def _operator_code(t: Table) -> tuple[int, str]:
    # Schema rule: the real code is the larger of the deprecated int8 field and
    # the int32 field (old files fill only the first, new ones both).
    deprecated = t.scalar(0, "b", 0)
    builtin = t.scalar(3, "i", 0)
    code = max(deprecated, builtin)
    return code, t.string(1, f"{t.what}.custom_code") if code == BUILTIN_CUSTOM else ""


def _check_quantization(q: Table, tensor_type: int, name: str) -> None:
    # The runtime trusts these values, and its kernels abort (a zero scale
    # fails a CHECK) or crash (a zero point outside the type indexes past a
    # table): both found by mutating the test models (tests/test_faults_models.py).
    start, n = q.vector(2, 4, f"{q.what}.scale")
    scales = struct.unpack_from(f"<{n}f", q.r.data, start) if n else ()
    start, nz = q.vector(3, 8, f"{q.what}.zero_point")
    zero_points = struct.unpack_from(f"<{nz}q", q.r.data, start) if nz else ()
    low, high = _ZERO_POINT_RANGE.get(tensor_type, (None, None))
    if any(not 0.0 <= s < math.inf for s in scales) or (low is not None and 0.0 in scales):
        raise MalformedError(f"{q.what} of tensor {name!r}: scale "
                             f"{next(s for s in scales if not 0.0 < s < math.inf)} is not "
                             "finite and > 0: corrupt")
    if low is not None and zero_points and not scales:
        # Scales zeroed away: a quantized kernel fed this tensor aborts the runtime.
        raise MalformedError(f"{q.what} of tensor {name!r}: zero points without scales: "
                             "corrupt")
    if low is not None and scales and any(not low <= z <= high for z in zero_points):
        raise MalformedError(f"{q.what} of tensor {name!r}: zero point "
                             f"{next(z for z in zero_points if not low <= z <= high)} is "
                             f"outside [{low}, {high}]: corrupt")


def _check_subgraph(sg: Table, n_opcodes: int, n_buffers: int,
                    constant_buffers: set[int]) -> tuple[
        tuple[int, ...], tuple[int, ...], tuple[str, ...], tuple[tuple[int, tuple[int, ...]], ...]]:
    tensors = sg.tables(0, f"{sg.what}.tensors")
    names, constants = [], set()
    for i, t in enumerate(tensors):
        shape = t.ints(0, f"{t.what}.shape")
        # A flipped high bit in a dimension makes the runtime try to allocate
        # gigabytes (it stalls or is OOM-killed).
        if any(d < 0 for d in shape) or math.prod(shape) > MAX_FILE_BYTES:
            raise MalformedError(f"{t.what}: impossible shape {list(shape)}: corrupt")
        tensor_type, buffer = t.scalar(1, "b", 0), t.scalar(2, "I", 0)
        if buffer in constant_buffers:
            constants.add(i)
        if not 0 <= tensor_type <= _MAX_TENSOR_TYPE:
            raise MalformedError(f"{t.what}: unknown tensor type")
        if buffer >= max(n_buffers, 1):
            raise MalformedError(f"{t.what}: buffer index out of range")
        names.append(t.string(3, f"{t.what}.name"))
        q = t.table(4, f"{t.what}.quantization")
        if q is not None:
            _check_quantization(q, tensor_type, names[-1])
    n = len(tensors)

    def indices(slot: int, what: str, allow_optional: bool) -> tuple[int, ...]:
        values = sg.ints(slot, what)
        low = -1 if allow_optional else 0  # -1 marks an omitted optional operator input
        if any(not low <= v < n for v in values):
            raise MalformedError(f"{what}: tensor index out of range (model has {n} tensors)")
        return values

    inputs = indices(1, f"{sg.what}.inputs", False)
    outputs = indices(2, f"{sg.what}.outputs", False)
    # A tensor with data lives in the read-only mapped file: the runtime
    # crashes (SIGSEGV) when an operator or the caller writes to it.
    written = [v for v in inputs if v in constants]
    ops = []
    for op in sg.tables(3, f"{sg.what}.operators"):
        if op.scalar(0, "I", 0) >= n_opcodes:
            raise MalformedError(f"{op.what}: operator code index out of range")
        op_inputs, op_outputs = op.ints(1, f"{op.what}.inputs"), op.ints(2, f"{op.what}.outputs")
        if any(not -1 <= v < n for v in op_inputs + op_outputs):
            raise MalformedError(f"{op.what}: tensor index out of range (model has {n} tensors)")
        written += [v for v in op_outputs if v in constants]
        ops.append((op.scalar(0, "I", 0), op_outputs))
    if written:
        raise MalformedError(f"{sg.what}.tensors[{written[0]}] ({names[written[0]]!r}) holds "
                             "constant data but is written to: corrupt")
    return inputs, outputs, tuple(names), tuple(ops)


def _ssd_op_outputs(opcodes: list[tuple[int, str]], ops: tuple[tuple[int, tuple[int, ...]], ...],
                    outputs: tuple[int, ...]) -> tuple[int, ...]:
    """The SSD post-process op's outputs in op order, when they are the model's outputs.

    TF2 exports name these outputs `StatefulPartitionedCall:N` in an order of the
    converter's choosing, and classes and scores share a shape: the op's own
    output list is the only reliable way to tell them apart.
    """
    for code_index, op_outputs in ops:
        code, name = opcodes[code_index]
        if (code == BUILTIN_CUSTOM and name == SSD_POSTPROCESS_OP
                and len(op_outputs) == SSD_OUTPUT_COUNT and set(op_outputs) <= set(outputs)):
            return tuple(op_outputs)
    return ()


def _signature(t: Table, subgraph_count: int) -> SignatureInfo:
    def pairs(slot: int, what: str) -> tuple[tuple[str, int], ...]:
        return tuple((m.string(0, f"{m.what}.name"), m.scalar(1, "I", 0))
                     for m in t.tables(slot, what))

    sig = SignatureInfo(key=t.string(2, f"{t.what}.signature_key"),
                        subgraph_index=t.scalar(4, "I", 0),
                        inputs=pairs(0, f"{t.what}.inputs"),
                        outputs=pairs(1, f"{t.what}.outputs"))
    if sig.subgraph_index >= subgraph_count:
        raise MalformedError(f"{t.what}: subgraph index out of range")
    return sig


def parse_model(data: bytes, path: Path) -> ModelFileInfo:
    """Parse flatbuffer bytes; raises only `ModelFileError`."""
    try:
        return _parse(data, path)
    except MalformedError as exc:
        raise ModelFileError(f"{path}: not a valid TFLite model: {exc}") from None
    except (struct.error, RecursionError, OverflowError, MemoryError) as exc:
        # Belt and braces: every read is bounds-checked above, so these
        # would mean a bug here, but the caller's contract is one error type.
        raise ModelFileError(f"{path}: not a valid TFLite model: {exc}") from None


def _parse(data: bytes, path: Path) -> ModelFileInfo:
    if len(data) < 8:
        raise MalformedError(f"only {len(data)} bytes, too short for a flatbuffer")
    if data[4:8] != FILE_IDENTIFIER:
        raise ModelFileError(
            f"{path}: not a TFLite model (file identifier {data[4:8]!r}, expected "
            f"{FILE_IDENTIFIER!r} at bytes 4..8)")
    r = Reader(data)
    model = r.table(r.deref(0, "root table"), "model")
    version = model.scalar(0, "I", 0)
    n_buffers = model.vector(4, 4, "model.buffers")[1]
    # Buffers with data (inline, or `offset`/`size` past the flatbuffer in big files).
    constant_buffers = {i for i, b in enumerate(model.tables(4, "model.buffers"))
                        if b.vector(0, 1, f"{b.what}.data")[1] or b.scalar(2, "Q", 0)}
    opcodes = [_operator_code(t) for t in model.tables(1, "model.operator_codes")]
    subgraphs = model.tables(2, "model.subgraphs")
    if not subgraphs:
        raise MalformedError("the model has no subgraphs")
    main = None
    for sg in subgraphs:
        checked = _check_subgraph(sg, len(opcodes), n_buffers, constant_buffers)
        main = main or checked
    assert main is not None
    inputs, outputs, names, ops = main
    signatures = tuple(_signature(t, len(subgraphs))
                       for t in model.tables(7, "model.signature_defs"))
    custom = tuple(dict.fromkeys(name or "<unnamed>" for code, name in opcodes
                                 if code == BUILTIN_CUSTOM))
    return ModelFileInfo(path=path, size=len(data), schema_version=version, custom_ops=custom,
                         subgraph_count=len(subgraphs), inputs=inputs, outputs=outputs,
                         tensor_names=names, signatures=signatures,
                         ssd_outputs=_ssd_op_outputs(opcodes, ops, outputs),
                         stateful=any(code in RESOURCE_VARIABLE_OPS for code, _ in opcodes))


def read_model_file(path: str | Path) -> ModelFileInfo:
    """Read and structurally check a model file; raises only `ModelFileError`."""
    p = Path(path)
    try:
        if not p.exists():
            raise ModelFileError(f"{p}: model file not found")
        if not p.is_file():
            raise ModelFileError(f"{p}: not a regular file")
        size = p.stat().st_size
        if size == 0:
            raise ModelFileError(f"{p}: model file is empty")
        if size > MAX_FILE_BYTES:
            raise ModelFileError(f"{p}: {size} bytes is too large for a TFLite flatbuffer")
        data = p.read_bytes()
    except PermissionError:
        raise ModelFileError(f"{p}: cannot read model file: permission denied") from None
    except OSError as exc:
        raise ModelFileError(f"{p}: cannot read model file: {exc.strerror or exc}") from None
    if not data:  # emptied between stat and read
        raise ModelFileError(f"{p}: model file is empty")
    return parse_model(data, p)


def check_runnable(info: ModelFileInfo, delegate: DelegateKind) -> None:
    """Refuse custom ops nothing will resolve with this delegate.

    An external delegate may implement any custom op, so nothing is refused
    for it; the runtime says so at allocation if it does not.
    """
    if delegate == "external":
        return
    if info.needs_edgetpu and delegate != "edgetpu":
        raise ModelFileError(
            f"{info.path}: compiled for the Edge TPU ({EDGETPU_CUSTOM_OP}): "
            "set delegate = edgetpu, or use the CPU model")
    unresolved = [op for op in info.custom_ops
                  if op != EDGETPU_CUSTOM_OP and op not in RUNTIME_CUSTOM_OPS]
    if unresolved:
        names = ", ".join(repr(op) for op in unresolved)
        plural = "s" if len(unresolved) > 1 else ""
        if any(op.startswith("Flex") for op in unresolved):
            raise ModelFileError(
                f"{info.path}: uses TensorFlow (Flex) op{plural} {names}, which the TFLite "
                "runtimes edged supports cannot run: re-convert with builtin ops only")
        raise ModelFileError(
            f"{info.path}: uses custom op{plural} {names} that the TFLite runtime cannot "
            "resolve: re-convert the model with builtin ops only, or use a delegate "
            "that provides them")


def check_model_file(path: str | Path, delegate: DelegateKind = "cpu") -> ModelFileInfo:
    """`read_model_file` followed by `check_runnable`."""
    info = read_model_file(path)
    check_runnable(info, delegate)
    return info


def file_stamp(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """Which file is at `path` now (device, inode, size, mtime); () when there is none.
    A model replaced at the same path changes it, so a reload can tell."""
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
