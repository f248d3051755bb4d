"""`edged inspect MODEL [--json] [--runtime NAME]`: what edged will do with a model.

`--json` prints one object:

* `model`: the path as given; `size_bytes`: file size;
* `runtime`: `{"name", "version"}` of the TFLite runtime used to read details;
* `needs_edgetpu`: true when the file holds `edgetpu-custom-op` (compiled for
  the Edge TPU); `custom_ops`: every custom op name in the file;
* `tensors_listed`: false when the runtime could not report tensor details
  (then `note` says why and `inputs`/`outputs` are empty); `note`: null or a line;
* `inputs`, `outputs`: lists in edged's order (outputs: the subgraph's declared
  order, see `edged.inference.model`), each tensor an object with
  - `position` (place in that list), `index` (interpreter tensor index),
    `name` (signature key when the model has a signature, else tensor name),
    `tensor_name`, `shape` (list), `dtype` (numpy name);
  - `quantization`: `{"kind": "none"}`, or `{"kind": "per_tensor", "scale",
    "zero_point"}`, or `{"kind": "per_channel", "axis", "count", "min_scale",
    "max_scale"}`;
  - `float_range`: `[low, high]` the dtype represents after dequantization,
    or null for float tensors;
  - `formula`: how edged turns the values into floats;
  - inputs only: `image` `{"layout": "nhwc"|"nchw", "height", "width",
    "channels"}` or null when the input is not an image edged can feed;
    `normalization` `{"mean": [...], "std": [...]}` (edged's
    default pixel mapping) and `pixel_path` (`identity`, `xor`, `table`, or
    null when the tensor cannot be fed from pixels, with `pixel_note`).

Exit codes: 0 listed; 1 the file or runtime cannot be used (one line on stderr).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import multiprocessing
import multiprocessing.context
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from edged.inference.model import ModelError, make_interpreter, ordered_tensors, prepare
from edged.inference.modelfile import ModelFileError, ModelFileInfo, check_runnable, read_model_file
from edged.inference.modelmeta import StatedNormalization, stated_normalization
from edged.inference.runtime import RUNTIME_ORDER, Runtime, RuntimeUnavailableError, select_runtime
from edged.numerics.imageinput import image_input
from edged.numerics.quantize import Normalization, PixelQuantizer, choose_normalization
from edged.numerics.tensors import TensorError, TensorInfo


@dataclass(frozen=True, slots=True)
class Report:
    file: ModelFileInfo
    runtime: Runtime
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    note: str | None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def build_report(path: str, runtime: Runtime) -> Report:
    """Raises ModelFileError / ModelError (one line) when the model cannot be used at all."""
    info = read_model_file(path)
    if not info.needs_edgetpu:
        # Unresolved non-Edge-TPU custom ops make the model unusable anywhere.
        check_runnable(info, "cpu")
    try:
        interpreter = make_interpreter(runtime, info.path, None, None)
    except (ValueError, RuntimeError) as exc:
        if info.needs_edgetpu:
            return Report(info, runtime, (), (), f"the runtime cannot list tensors without the "
                          f"Edge TPU: {_one_line(exc)}")
        raise ModelError(f"{info.path}: the runtime cannot load it: {_one_line(exc)}") from None
    note = None
    if info.needs_edgetpu:
        # The details come from the file; allocation would fail on the custom op.
        note = "compiled for the Edge TPU: run it with delegate = edgetpu"
    else:
        prepare(interpreter, info.path)
    try:
        inputs = ordered_tensors(interpreter.get_input_details(), info.inputs,
                                 info.input_keys(), info.path)
        outputs = ordered_tensors(interpreter.get_output_details(), info.outputs,
                                  info.output_keys(), info.path)
    except TensorError as exc:
        raise ModelError(f"{info.path}: {exc}") from None
    return Report(info, runtime, inputs, outputs, note)


def _quantization(t: TensorInfo) -> dict[str, Any]:
    if not t.is_quantized:
        return {"kind": "none"}
    if not t.is_per_channel:
        return {"kind": "per_tensor", "scale": t.scales[0], "zero_point": t.zero_points[0]}
    return {"kind": "per_channel", "axis": t.quantized_dimension, "count": len(t.scales),
            "min_scale": min(t.scales), "max_scale": max(t.scales)}


def _tensor(position: int, t: TensorInfo, tensor_name: str, is_input: bool,
            stated: StatedNormalization | None = None) -> dict[str, Any]:
    rng = t.float_range()
    out: dict[str, Any] = {
        "position": position, "index": t.index, "name": t.name, "tensor_name": tensor_name,
        "shape": list(t.shape), "dtype": t.dtype.name, "quantization": _quantization(t),
        "float_range": list(rng) if rng else None, "formula": t.formula(),
    }
    if is_input:
        try:
            image = image_input(t)
            out["image"] = {"layout": image.layout, "height": image.height,
                            "width": image.width, "channels": image.channels}
            norm, source = choose_normalization(
                t, None, Normalization(stated.mean, stated.std) if stated else None,
                stated.source if stated else "")
            q = PixelQuantizer(t, norm)
            out["normalization"] = {"mean": list(q.normalization.mean),
                                    "std": list(q.normalization.std), "source": source}
            out["pixel_path"] = q.path
        except (ValueError, TypeError) as exc:
            out.setdefault("image", None)
            out["normalization"], out["pixel_path"] = None, None
            out["pixel_note"] = _one_line(exc)
    return out


def report_dict(r: Report, shown_path: str) -> dict[str, Any]:
    names = r.file.tensor_names

    def tensor_name(t: TensorInfo) -> str:
        return names[t.index] if 0 <= t.index < len(names) else t.name

    return {
        "model": shown_path, "size_bytes": r.file.size,
        "runtime": {"name": r.runtime.name, "version": r.runtime.version},
        "needs_edgetpu": r.file.needs_edgetpu, "custom_ops": list(r.file.custom_ops),
        "tensors_listed": bool(r.inputs or r.outputs), "note": r.note,
        "inputs": [_tensor(i, t, tensor_name(t), True, stated_normalization(r.file.path))
                   for i, t in enumerate(r.inputs)],
        "outputs": [_tensor(i, t, tensor_name(t), False) for i, t in enumerate(r.outputs)],
    }


def _fmt_quant(q: dict[str, Any]) -> str:
    if q["kind"] == "none":
        return "none"
    if q["kind"] == "per_tensor":
        return f"scale {q['scale']!r}, zero point {q['zero_point']}"
    return (f"per-channel: {q['count']} scales along axis {q['axis']}, "
            f"{q['min_scale']:.6g} .. {q['max_scale']:.6g}")


def _fmt_nums(values: list[float]) -> str:
    return ", ".join(f"{v + 0.0:.6g}" for v in values)  # + 0.0: no "-0"


def _fmt_range(t: dict[str, Any]) -> str:
    rng = t["float_range"]
    if rng is None:
        return "any (float tensor)"
    if t["quantization"]["kind"] == "none":
        return f"integers {int(rng[0])} .. {int(rng[1])}, never scaled"
    return f"[{rng[0]:.6g}, {rng[1]:.6g}]"


def format_text(d: dict[str, Any]) -> str:
    edgetpu = ("REQUIRED (compiled for the Edge TPU: edgetpu-custom-op)"
               if d["needs_edgetpu"] else "not needed (runs on the CPU)")
    lines = [
        f"model      {d['model']} ({d['size_bytes']} bytes)",
        f"runtime    {d['runtime']['name']} {d['runtime']['version']}",
        f"edge tpu   {edgetpu}",
        f"custom ops {', '.join(d['custom_ops']) or 'none'}",
    ]
    if d["note"]:
        lines.append(f"note       {d['note']}")
    for kind in ("inputs", "outputs"):
        lines.append("")
        lines.append(f"{kind}:" if d[kind] else f"{kind}: (not available)")
        for t in d[kind]:
            shown = t["name"] + (f" (tensor {t['tensor_name']})"
                                 if t["tensor_name"] != t["name"] else "")
            lines += [
                f"  [{t['position']}] {shown}",
                f"      index {t['index']}  shape {t['shape']}  dtype {t['dtype']}",
                f"      quantization  {_fmt_quant(t['quantization'])}",
                f"      float range   {_fmt_range(t)}",
                f"      edged applies {t['formula']}",
            ]
            if kind == "inputs":
                image = t["image"]
                if image:
                    colour = "RGB" if image["channels"] == 3 else "grey"
                    lines.append(f"      image         {image['layout'].upper()} "
                                 f"{image['width']}x{image['height']} {colour}")
                norm = t["normalization"]
                lines.append(
                    f"      pixels        (p - [{_fmt_nums(norm['mean'])}]) / "
                    f"[{_fmt_nums(norm['std'])}], path {t['pixel_path']}\n"
                    f"                    ({norm['source']})" if norm
                    else f"      pixels        cannot be fed from pixels: {t['pixel_note']}")
    return "\n".join(lines)


LOAD_TIMEOUT_S = 120.0


def _child_report(model: str, runtime_name: str, conn: Connection) -> None:
    faulthandler.disable()  # a crash is reported by the parent, in one line
    try:
        runtime = select_runtime(runtime_name)  # type: ignore[arg-type]
        out: dict[str, Any] = {"report": report_dict(build_report(model, runtime), model)}
    except (ModelFileError, ModelError, RuntimeUnavailableError) as exc:
        out = {"error": str(exc)}
    conn.send_bytes(json.dumps(out).encode())
    conn.close()


def _context() -> multiprocessing.context.BaseContext:
    """Children come from a forkserver: a clean single-threaded process started once
    (with this module loaded), so a parent with threads (the runtime's, a daemon's)
    never forks itself, which can deadlock the child and which Python 3.12+ warns
    about and 3.14 no longer does by default."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["edged.inference.inspect"])
    return ctx


def guarded_report(model: str, runtime: Runtime, timeout_s: float = LOAD_TIMEOUT_S
                   ) -> dict[str, Any]:
    """`report_dict(build_report(...))` computed in a child process.

    A damaged file can pass `edged.inference.modelfile`'s checks and still crash the
    runtime (a corrupt custom-op option blob, found by
    tests/test_faults_models.py); then only the child dies, and this says so
    in one line.
    """
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_report, args=(model, runtime.name, sender),  # type: ignore[attr-defined]
                        name="edged-inspect", daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            child.kill()
            child.join()
            if child.exitcode is not None and child.exitcode >= 0:
                raise EOFError  # it ended without an answer: reported below
            raise ModelError(f"{model}: the runtime did not finish loading it within "
                             f"{timeout_s:g} s")
        data = receiver.recv_bytes()
    except EOFError:
        data = b""
    finally:
        receiver.close()
    child.join()
    code = child.exitcode or 0
    if code < 0:
        name = signal.Signals(-code).name
        raise ModelError(f"{model}: the runtime crashed ({name}) loading it: the file is "
                         "corrupt or uses something the runtime cannot handle")
    if code != 0 or not data:
        raise ModelError(f"{model}: internal error while inspecting it "
                         f"(exit {code}, see above)")
    result: dict[str, Any] = json.loads(data)
    if "error" in result:
        raise ModelError(result["error"])
    report: dict[str, Any] = result["report"]
    return report


def run(args: argparse.Namespace) -> int:
    try:
        runtime = select_runtime(args.runtime)
        read_model_file(args.model)  # pure Python: most damage is refused without a fork
        d = guarded_report(args.model, runtime)
    except (RuntimeUnavailableError, ModelFileError, ModelError) as exc:
        print(f"edged inspect: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(d, indent=2) if args.json else format_text(d))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "inspect", help="show a model's tensors and what edged does with them",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    p.add_argument("model", help="path to a .tflite file")
    p.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    p.add_argument("--runtime", default="auto", choices=("auto", *RUNTIME_ORDER),
                   help="TFLite runtime to use (default: the first installed)")
    p.set_defaults(handler=run)
