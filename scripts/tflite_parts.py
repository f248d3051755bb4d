"""TFLite helpers and the detection test models for scripts/make_test_models.py.

Conversion, a reference interpreter run that quantizes and dequantizes the
way edged does, flatbuffer surgery the converter cannot do by itself, and the
YOLO-layout and SSD (TFLite_Detection_PostProcess) models, which need no
training: their outputs are fixed functions of the input.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as fb
from tensorflow.lite.tools import flatbuffer_utils

GRID, CELL = 8, 8  # detection models: an 8x8 grid of 8-pixel cells on a 64x64 image
NUM_CLASSES_DET = 3

Array = np.ndarray[Any, Any]


# ---------------------------------------------------------------- frames --

def shapes_frame() -> tuple[Array, list[dict[str, Any]]]:
    """64x64 frame with pure red, green and blue squares, each filling one grid cell."""
    img = np.zeros((64, 64, 3), np.uint8)
    expected = []
    for cls, (row, col) in enumerate([(1, 2), (4, 5), (6, 0)]):
        img[row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL, cls] = 255
        expected.append({
            "class": cls, "score": 1.0, "anchor": row * GRID + col,
            "xywh": [(col + 0.5) / GRID, (row + 0.5) / GRID, 1 / GRID, 1 / GRID],
            "yxyx": [row / GRID, col / GRID, (row + 1) / GRID, (col + 1) / GRID],
        })
    return img, expected


def block_images(rng: np.random.Generator, count: int) -> Iterator[Array]:
    """Calibration frames for the detection models: cells of solid 0/1 colours.

    Random noise averages to ~0.5 per cell, which would calibrate the pooled
    scores to [0.4, 0.6] and clip a fully lit cell; solid cells span [0, 1].
    """
    for _ in range(count):
        cells = rng.integers(0, 2, (1, GRID, GRID, 3)).astype(np.float32)
        yield cells.repeat(CELL, axis=1).repeat(CELL, axis=2)


# ------------------------------------------------------------ conversion --

def convert(converter: tf.lite.TFLiteConverter, samples: list[Array],
            io_type: Any | None = tf.int8, out_type: Any | None = None) -> bytes:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None].astype(np.float32)] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io_type is not None:
        converter.inference_input_type = io_type
        converter.inference_output_type = out_type or io_type
    return bytes(converter.convert())


def keras_to_tflite(model: keras.Model, samples: list[Array], io_type: Any = tf.int8) -> bytes:
    return convert(tf.lite.TFLiteConverter.from_keras_model(model), samples, io_type)


def interpreter(content: bytes) -> tf.lite.Interpreter:
    it = tf.lite.Interpreter(model_content=content)
    it.allocate_tensors()
    return it


def run(it: tf.lite.Interpreter, pixels: Array) -> list[Array]:
    """Quantize uint8 pixels as edged does for a [0, 1] input, invoke, dequantize outputs."""
    detail = it.get_input_details()[0]
    scale, zero_point = detail["quantization"]
    q = np.round(pixels.astype(np.float64) / 255.0 / scale) + zero_point
    info = np.iinfo(detail["dtype"])
    it.set_tensor(detail["index"], np.clip(q, info.min, info.max).astype(detail["dtype"])[None])
    it.invoke()
    outs = []
    for d in it.get_output_details():
        v = it.get_tensor(d["index"])
        params = d["quantization_parameters"]
        if len(params["scales"]):
            axis, shape = params["quantized_dimension"], [1] * v.ndim
            shape[axis] = -1 if len(params["scales"]) > 1 else 1
            v = (v.astype(np.int64) - params["zero_points"].reshape(shape)) \
                * params["scales"].reshape(shape)
        outs.append(np.asarray(v, np.float64))
    return outs


def match_outputs(it: tf.lite.Interpreter, floats: list[Array]) -> list[int]:
    """For each interpreter output, the float output of the same shape (the converter reorders)."""
    order = []
    for d in it.get_output_details():
        same = [i for i, f in enumerate(floats) if tuple(f.shape) == tuple(d["shape"])]
        assert len(same) == 1, f"output shapes must be unique to match, {d['name']}"
        order.append(same[0])
    return order


def tensor_doc(d: dict[str, Any]) -> dict[str, Any]:
    p = d["quantization_parameters"]
    doc: dict[str, Any] = {"name": d["name"], "shape": [int(s) for s in d["shape"]],
                           "dtype": np.dtype(d["dtype"]).name}
    if len(p["scales"]) == 1:
        doc["quantization"] = {"kind": "per_tensor", "scale": float(p["scales"][0]),
                               "zero_point": int(p["zero_points"][0])}
    elif len(p["scales"]) > 1:
        doc["quantization"] = {"kind": "per_channel", "axis": int(p["quantized_dimension"]),
                               "scales": [float(s) for s in p["scales"]],
                               "zero_points": [int(z) for z in p["zero_points"]]}
    else:
        doc["quantization"] = {"kind": "none"}
    return doc


# ----------------------------------------------------- flatbuffer edits --

def _opcode(model: Any, builtin: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = builtin
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _set_output(model: Any, position: int, tensor: int, name: str) -> None:
    graph = model.subgraphs[0]
    outputs = np.array(graph.outputs, dtype=np.int32)  # the parsed array is read-only
    outputs[position] = tensor
    graph.outputs = outputs
    for sig in model.signatureDefs or []:
        for out in sig.outputs:
            if out.name == name:
                out.tensorIndex = tensor


def dequantize_output(content: bytes, position: int) -> bytes:
    """Give output `position` a DEQUANTIZE of its own, so it leaves as float32.

    The converter sets one output type for all quantized outputs; real models
    mixing int8 and float heads are made by exactly this kind of surgery.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(content)
    graph = model.subgraphs[0]
    src = graph.tensors[graph.outputs[position]]
    out = fb.TensorT()
    out.shape, out.type, out.buffer = list(src.shape), fb.TensorType.FLOAT32, 0
    out.name = src.name + b"/dequantized"
    if src.shapeSignature is not None:
        out.shapeSignature = list(src.shapeSignature)
    graph.tensors.append(out)
    op = fb.OperatorT()
    op.opcodeIndex = _opcode(model, fb.BuiltinOperator.DEQUANTIZE)
    op.inputs, op.outputs = [graph.outputs[position]], [len(graph.tensors) - 1]
    graph.operators.append(op)
    names = {o.tensorIndex: o.name for s in model.signatureDefs or [] for o in s.outputs}
    _set_output(model, position, len(graph.tensors) - 1, names.get(graph.outputs[position], ""))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def expose_weights(content: bytes, tensor_name: str) -> bytes:
    """List a per-channel quantized weight tensor among the outputs.

    The converter only quantizes activations per tensor; per-channel scales
    exist on weights alone, so this is the one way a real interpreter reports
    a per-channel output.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(content)
    graph = model.subgraphs[0]
    index = next(i for i, t in enumerate(graph.tensors) if t.name.decode() == tensor_name)
    assert len(graph.tensors[index].quantization.scale) > 1, tensor_name
    graph.outputs = np.append(np.array(graph.outputs, dtype=np.int32), np.int32(index))
    for sig in model.signatureDefs or []:
        entry = fb.TensorMapT()
        entry.name, entry.tensorIndex = "conv1_weights", index
        sig.outputs.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# ------------------------------------------------------- detection --

def detection_scores(x: Any) -> Any:
    """Per cell and class: the mean of that colour channel over the cell, [1, N, C]."""
    pooled = tf.nn.avg_pool2d(x, CELL, CELL, "VALID")
    return tf.reshape(pooled, [1, GRID * GRID, NUM_CLASSES_DET])


def anchors_xywh() -> Array:
    centres = (np.arange(GRID) + 0.5) / GRID
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    size = np.full(GRID * GRID, 1.0 / GRID)
    return np.stack([cx.ravel(), cy.ravel(), size, size]).astype(np.float32)  # [4, N]


def yolo_fn() -> tf.types.experimental.ConcreteFunction:
    boxes = tf.constant(anchors_xywh()[None])

    @tf.function(input_signature=[tf.TensorSpec([1, 64, 64, 3], tf.float32, name="image")])
    def yolo(x: Any) -> Any:
        # Raw YOLOv8 head layout [1, 4 + C, N]: xywh rows first, then class scores.
        return tf.concat([boxes, tf.transpose(detection_scores(x), [0, 2, 1])], axis=1)

    return yolo.get_concrete_function()


SSD_ATTRS = {"max_detections": 10, "max_classes_per_detection": 1, "detections_per_class": 10,
             "use_regular_nms": False, "nms_score_threshold": 0.3, "nms_iou_threshold": 0.5,
             "y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0,
             "num_classes": NUM_CLASSES_DET}


def ssd_tflite(samples: list[Array], workdir: Path) -> bytes:
    """SSD tail with the TFLite_Detection_PostProcess custom op.

    The converter fuses a tf.function carrying `experimental_implements` into
    the custom op (as the object-detection API's exporter does); it only does
    so from a SavedModel, not from a concrete function, which inlines it.
    """
    def attr(k: str, v: Any) -> str:
        kind = "b" if isinstance(v, bool) else "i" if isinstance(v, int) else "f"
        text = str(v).lower() if kind == "b" else v
        return f'attr {{ key: "{k}" value {{ {kind}: {text} }} }}'

    implements = " ".join(['name: "TFLite_Detection_PostProcess"',
                           *(attr(k, v) for k, v in SSD_ATTRS.items())])

    @tf.function(experimental_implements=implements)
    def postprocess(box: Any, scores: Any, anchors: Any) -> Any:
        return tuple(tf.constant(0.0, name=n) for n in ("boxes", "classes", "scores", "num"))

    xywh = anchors_xywh()
    anchors = tf.constant(np.stack([xywh[1], xywh[0], xywh[3], xywh[2]], 1))  # yxhw

    @tf.function(input_signature=[tf.TensorSpec([1, 64, 64, 3], tf.float32, name="image")])
    def ssd(x: Any) -> Any:
        scores = detection_scores(x)
        background = 1.0 - tf.reduce_max(scores, axis=2, keepdims=True)
        # Zero encodings decode to the anchors themselves; the product keeps
        # the tensor input-dependent so it is not folded away.
        encodings = tf.zeros([1, GRID * GRID, 4]) * tf.reduce_mean(x)
        return postprocess(encodings, tf.concat([background, scores], axis=2), anchors)

    module = tf.Module()
    module.ssd = ssd
    saved = workdir / "ssd_saved_model"
    tf.saved_model.save(module, str(saved), signatures=ssd.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.allow_custom_ops = True
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.inference_input_type = tf.int8
    return bytes(converter.convert())


def ssd_roles(content: bytes) -> dict[int, str]:
    """Tensor index -> role, from the custom op's own output order (the graph reorders them)."""
    model = flatbuffer_utils.convert_bytearray_to_object(content)
    graph = model.subgraphs[0]
    op = next(o for o in graph.operators
              if model.operatorCodes[o.opcodeIndex].customCode == b"TFLite_Detection_PostProcess")
    return dict(zip((int(t) for t in op.outputs), ("boxes", "classes", "scores", "count"),
                    strict=True))


def check_ssd(it: tf.lite.Interpreter, roles: dict[int, str], frames: dict[str, Array],
              expected: dict[str, dict[str, Any]]) -> None:
    """The custom op really ran: the detections are the lit cells, nothing else."""
    for name, pixels in frames.items():
        got = dict(zip((roles[d["index"]] for d in it.get_output_details()), run(it, pixels),
                       strict=True))
        count = int(got["count"][0])
        want = sorted(expected[name]["detections"], key=lambda w: w["class"])
        assert count == len(want), (name, count)
        if not count:
            continue
        order = np.argsort(got["classes"][0, :count])
        assert got["classes"][0, order].tolist() == [w["class"] for w in want], name
        assert np.allclose(got["boxes"][0, order], [w["yxyx"] for w in want], atol=1e-6), name
        assert np.allclose(got["scores"][0, order], 1.0, atol=2 / 255), name
