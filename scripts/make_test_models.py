"""Generate the project's own small test models, frames and float references.

Run with the TensorFlow venv (TensorFlow and scikit-learn are used here only,
never by the edged package):

    /tmp/tfvenv/bin/python scripts/make_test_models.py [--bench]

Writes tests/data/models/*.tflite, tests/data/frames/*.png and
tests/data/reference.json (see tests/data/README.md for what each holds).
`--bench` also writes build/models/mobilenetv2_224_int8.tflite (not committed).

Everything is seeded; with op determinism on, a re-run on the same TensorFlow
version gives the same models. Across TensorFlow versions weights may differ
in the last bits, which is why the references carry their own error bounds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from field_models import write_field_models
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tflite_parts import (
    GRID,
    NUM_CLASSES_DET,
    SSD_ATTRS,
    block_images,
    check_ssd,
    convert,
    dequantize_output,
    expose_weights,
    interpreter,
    keras_to_tflite,
    match_outputs,
    run,
    shapes_frame,
    ssd_roles,
    ssd_tflite,
    tensor_doc,
    yolo_fn,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
MODELS, FRAMES = DATA / "models", DATA / "frames"
SEED = 0
# Steps added to the error TensorFlow's interpreter shows on each committed
# frame: room for another runtime's kernels to round differently, while
# staying well under what a wrong zero point or scale would cost.
MARGIN_SCALES = 2

Array = np.ndarray[Any, Any]


# ---------------------------------------------------------------- frames --

def write_png(path: Path, rgb: Array) -> None:
    """An 8-bit RGB PNG from raw zlib, so the bytes depend on nothing but the pixels."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + tag + body
                + struct.pack(">I", zlib.crc32(tag + body)))

    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def render_digits(images: Array) -> Array:
    """8x8 digits (0..16) -> (n, 32, 32, 3) uint8: 4x nearest upscale, grey in all channels."""
    pixels = np.round(images.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    big = pixels.repeat(4, axis=1).repeat(4, axis=2)
    return np.repeat(big[..., None], 3, axis=3)


def error_unit(it: tf.lite.Interpreter, d: dict[str, Any]) -> float:
    """One quantization step of an output: its largest scale, or its source's when dequantized."""
    scales = d["quantization_parameters"]["scales"]
    if len(scales):
        return float(np.max(scales))
    source = d["name"].removesuffix("/dequantized")
    for t in it.get_tensor_details():
        if source != d["name"] and t["name"] == source:
            return float(t["quantization"][0])
    return 0.0


def bound(error: float, unit: float) -> float:
    """Whole steps to cover `error`, plus the margin for other runtimes' kernels; exact if 0."""
    return (math.ceil(error / unit - 1e-9) + MARGIN_SCALES) * unit if unit else 0.0


def reference(name: str, content: bytes, float_fn: Callable[[Array], list[Array]],
              heldout: Array, frames: dict[str, Array], *,
              extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """I/O details, the float model's outputs per frame, and the error bounds.

    Per committed frame, each output's `atol` is the error TensorFlow's own
    interpreter shows on that frame, rounded up to whole quantization steps,
    plus MARGIN_SCALES steps; integer outputs must match exactly. Per output,
    `heldout_max_error` is the worst error over the whole held-out set, for
    information: outliers there (a clipped activation) would make a bound too
    loose to catch a wrong zero point.
    """
    (MODELS / name).write_bytes(content)
    it = interpreter(content)
    details = it.get_output_details()
    order = match_outputs(it, float_fn(heldout[0]))
    units = [error_unit(it, d) for d in details]

    def errors(pixels: Array) -> list[float]:
        floats = float_fn(pixels)
        return [float(np.max(np.abs(got - floats[i])))
                for got, i in zip(run(it, pixels), order, strict=True)]

    worst = np.max([errors(p) for p in heldout], axis=0)
    outputs = []
    for k, d in enumerate(details):
        doc = tensor_doc(d)
        doc["step"], doc["heldout_max_error"] = units[k], float(worst[k])
        # The whole-set bound, for callers that check frames of their own.
        doc["atol"] = bound(float(worst[k]), units[k]) if units[k] else 0.0
        outputs.append(doc)
    results = {}
    for frame_name, pixels in frames.items():
        floats = float_fn(pixels)
        measured = errors(pixels)
        for k, d in enumerate(details):
            assert units[k] or measured[k] == 0, f"{name} {frame_name}: {d['name']} differs"
        results[frame_name] = {
            "outputs": [np.round(floats[i], 7).tolist() for i in order],
            "tflite_outputs": [np.round(o, 7).tolist() for o in run(it, pixels)],
            "atol": [bound(e, u) for e, u in zip(measured, units, strict=True)],
            **(extra or {}).get(frame_name, {})}
    print(f"{name}: {len(content)} bytes, held-out worst errors {np.round(worst, 5).tolist()}")
    return {"bytes": len(content), "inputs": [tensor_doc(d) for d in it.get_input_details()],
            "outputs": outputs, "frames": results}


# --------------------------------------------------------------- models --

def build_digits(x_train: Array, y_train: Array, boxes: Array) -> dict[str, Any]:
    """Trunk, classifier, box regressor and feature head, all on [1, 32, 32, 3] in [0, 1]."""
    conv = [keras.layers.Conv2D(n, 3, strides=2, padding="same", activation="relu",
                                name=f"conv{i + 1}") for i, n in enumerate((16, 32, 32))]
    flat = keras.layers.Flatten(name="flat")
    classify = keras.layers.Dense(10, activation="softmax", name="probs")
    # Linear, so it gets its own calibrated scale (softmax and sigmoid outputs
    # are fixed at 1/256); L2 keeps the weights small, and with them the
    # amplification of the trunk's quantization error.
    box = keras.layers.Dense(4, kernel_regularizer=keras.regularizers.L2(1e-3), name="box")
    feature = keras.layers.Conv2D(8, 1, name="features")

    def trunk(x: Any) -> Any:
        for layer in conv:
            x = layer(x)
        return x

    inp = keras.Input((32, 32, 3))
    train = keras.Model(inp, classify(flat(trunk(inp))))
    train.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    train.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0)
    for layer in conv:
        layer.trainable = False
    # The box head regresses the digit's ink box from the frozen trunk, so
    # the regression output means something a person can check.
    boxer = keras.Model(inp, box(flat(trunk(inp))))
    boxer.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    boxer.fit(x_train, boxes, epochs=20, batch_size=32, verbose=0)

    one = keras.Input((32, 32, 3), batch_size=1, name="image")
    t = trunk(one)
    probs = classify(flat(t))
    label = keras.layers.Lambda(lambda p: tf.cast(tf.argmax(p, axis=1), tf.int32),
                                name="label")(probs)
    return {
        "train": train,
        "digits": keras.Model(one, probs),
        "multi": keras.Model(one, [probs, box(flat(t)), feature(t)]),
        "mixed": keras.Model(one, [probs, label, box(flat(t))]),
        "conv1": conv[0],
    }


def ink_boxes(frames: Array) -> Array:
    """Normalised [x0, y0, x1, y1] of the lit pixels of each 32x32 frame."""
    out = np.zeros((len(frames), 4), np.float32)
    for i, f in enumerate(frames[..., 0] > 0):
        ys, xs = np.nonzero(f)
        out[i] = [xs.min() / 32, ys.min() / 32, (xs.max() + 1) / 32, (ys.max() + 1) / 32]
    return out


def bench_model(out: Path) -> None:
    rng = np.random.default_rng(SEED)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    samples = [rng.random((224, 224, 3), dtype=np.float32) for _ in range(8)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(keras_to_tflite(model, samples))
    print(f"{out}: {out.stat().st_size} bytes")


# ----------------------------------------------------------------- main --

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", action="store_true",
                        help="also write build/models/mobilenetv2_224_int8.tflite")
    parser.add_argument("--field-only", action="store_true",
                        help="only tests/data/models/field/ (see scripts/field_models.py)")
    args = parser.parse_args()
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in write_field_models(MODELS / "field", Path(tmp)).items():
            print(f"field/{name}: {size} bytes")
    if args.field_only:
        return 0
    MODELS.mkdir(parents=True, exist_ok=True)
    FRAMES.mkdir(parents=True, exist_ok=True)

    digits = load_digits()
    pixels = render_digits(digits.images)
    idx_train, idx_test = train_test_split(np.arange(len(pixels)), test_size=0.25,
                                           random_state=SEED, stratify=digits.target)
    x_train = pixels[idx_train].astype(np.float32) / 255.0
    y_train, y_test = digits.target[idx_train], digits.target[idx_test]
    nets = build_digits(x_train, y_train, ink_boxes(pixels[idx_train]))
    probs = nets["digits"].predict(pixels[idx_test].astype(np.float32) / 255.0, verbose=0,
                                   batch_size=1)
    float_acc = float(np.mean(probs.argmax(1) == y_test))

    # One held-out frame per class: the first the float model gets right with
    # a clear margin, so a correct quantized model cannot flip it.
    frames: dict[str, Array] = {}
    labels: dict[str, dict[str, Any]] = {}
    for cls in range(10):
        k = next(k for k in range(len(idx_test))
                 if y_test[k] == cls and probs[k, cls] > 0.95)
        name = f"digit_{cls}_{int(idx_test[k])}.png"
        frames[name] = pixels[idx_test[k]]
        labels[name] = {"label": cls}
        write_png(FRAMES / name, frames[name])
    det_frame, expected = shapes_frame()
    det_frames = {"shapes_64.png": det_frame, "black_64.png": np.zeros_like(det_frame)}
    for name, img in det_frames.items():
        write_png(FRAMES / name, img)

    calib = list(x_train)  # all of it: a range seen only in held-out frames would clip
    held_out = pixels[idx_test]

    def keras_fn(model: keras.Model) -> Callable[[Array], list[Array]]:
        def fn(p: Array) -> list[Array]:
            out = model(p[None].astype(np.float32) / 255.0, training=False)
            return [np.asarray(o, np.float64) for o in (out if isinstance(out, list) else [out])]
        return fn

    refs: dict[str, Any] = {}
    for name, io in (("digits_int8.tflite", tf.int8), ("digits_uint8.tflite", tf.uint8)):
        content = keras_to_tflite(nets["digits"], calib, io)
        refs[name] = reference(name, content, keras_fn(nets["digits"]), held_out, frames,
                               extra=labels)
        it = interpreter(content)
        acc = float(np.mean([run(it, p)[0].argmax() == y for p, y in zip(held_out, y_test,
                                                                          strict=True)]))
        refs[name]["heldout_accuracy"] = {"float": float_acc, "quantized": acc,
                                          "frames": len(y_test)}
        print(f"{name}: accuracy float {float_acc:.4f} quantized {acc:.4f}")

    content = keras_to_tflite(nets["multi"], calib)
    refs["multi_output_int8.tflite"] = reference(
        "multi_output_int8.tflite", content, keras_fn(nets["multi"]), held_out, frames,
        extra=labels)

    mixed = keras_to_tflite(nets["mixed"], calib)
    it = interpreter(mixed)
    box_pos = next(i for i, d in enumerate(it.get_output_details()) if list(d["shape"]) == [1, 4])
    conv1 = next(d["name"] for d in it.get_tensor_details()
                 if d["name"].count("conv1") and len(d["shape"]) == 4
                 and len(d["quantization_parameters"]["scales"]) == 16)
    mixed = expose_weights(dequantize_output(mixed, box_pos), conv1)
    # TFLite stores conv filters OHWI; Keras keeps HWIO.
    weights = np.transpose(np.asarray(nets["conv1"].kernel), (3, 0, 1, 2)).astype(np.float64)
    refs["mixed_outputs.tflite"] = reference(
        "mixed_outputs.tflite", mixed,
        lambda p: [*keras_fn(nets["mixed"])(p), weights], held_out, frames, extra=labels)

    rng = np.random.default_rng(SEED)
    det_calib = [b[0] for b in block_images(rng, 64)]
    yolo = yolo_fn()
    yolo_content = convert(tf.lite.TFLiteConverter.from_concrete_functions([yolo], None),
                           det_calib)
    det_bound = np.stack([np.round(b * 255).astype(np.uint8) for b in det_calib]
                         + list(det_frames.values()))

    def yolo_float(p: Array) -> list[Array]:
        return [np.asarray(yolo(tf.constant(p[None] / 255.0, tf.float32)), np.float64)]

    det_extra = {"shapes_64.png": {"detections": expected}, "black_64.png": {"detections": []}}
    refs["detect_yolo_int8.tflite"] = reference("detect_yolo_int8.tflite", yolo_content,
                                                yolo_float, det_bound, det_frames, extra=det_extra)
    refs["detect_yolo_int8.tflite"]["layout"] = {
        "format": "[1, 4 + C, N]: rows x_center, y_center, width, height (normalised to the "
                  "input), then one score row per class", "classes": NUM_CLASSES_DET,
        "anchors": GRID * GRID}

    with tempfile.TemporaryDirectory() as tmp:
        ssd = ssd_tflite([b[None] for b in det_calib], Path(tmp))
    (MODELS / "ssd_postprocess.tflite").write_bytes(ssd)
    it, roles = interpreter(ssd), ssd_roles(ssd)
    refs["ssd_postprocess.tflite"] = {
        "bytes": len(ssd), "inputs": [tensor_doc(d) for d in it.get_input_details()],
        "outputs": [{**tensor_doc(d), "role": roles[d["index"]]}
                    for d in it.get_output_details()],
        "postprocess": SSD_ATTRS, "score_atol": 2 / 255, "box_atol": 1e-6,
        "frames": det_extra,
    }
    check_ssd(it, roles, det_frames, det_extra)
    print(f"ssd_postprocess.tflite: {len(ssd)} bytes")

    doc = {"generator": "scripts/make_test_models.py", "tensorflow": tf.__version__,
           "seed": SEED, "margin_scales": MARGIN_SCALES,
           "input_normalization": "float input = pixel / 255 (RGB)", "models": refs}
    text = json.dumps(doc, indent=1)
    # One line per innermost list of numbers keeps the file readable and its diffs small.
    text = re.sub(r"\[[-0-9.e,\s]+\]", lambda m: " ".join(m.group(0).split()), text)
    (DATA / "reference.json").write_text(text + "\n")
    if args.bench:
        bench_model(ROOT / "build" / "models" / "mobilenetv2_224_int8.tflite")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
