"""The scene detector of issue 18's end-to-end event tests (tests/data/scene/).

Run with the TensorFlow venv (TensorFlow is used here only, never by edged):

    /tmp/tfvenv/bin/python scripts/make_scene_model.py

The detection models of make_test_models.py answer on a fixed 8x8 grid, so an
object moving through a scene jumps from cell to cell and its boxes never
overlap from one frame to the next: nothing to track. This one finds one
object per colour anywhere, with a box that moves smoothly: per channel, the
extent of its lit rows and columns (the scene draws solid rectangles).
The score is the lit area against 16x16 input pixels, capped at 1, so a growing
object raises its score. Output: YOLOv8 layout [1, 4 + 3, 16], anchor k = the
object of colour k (red person, green car, blue dog), boxes normalised;
anchors 3..15 are padding (N > 4 + C, as in every real YOLO head).

Integer kernels where TFLite has them, float where it has none (the
converter's fallback, as many real exports are), int8 in and out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

SIZE = 64
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "scene"
FULL_SCORE_AREA = 256.0  # input pixels; 16x16
ANCHORS = 16


def scene_fn() -> Any:
    centres = (np.arange(SIZE, dtype=np.float32) + 0.5) / SIZE
    xs = tf.constant(np.tile(centres, (SIZE, 1))[None, :, :, None])  # [1, H, W, 1]
    ys = tf.constant(np.tile(centres[:, None], (1, SIZE))[None, :, :, None])

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="image")])
    def scene(x: Any) -> Any:
        # Min and max reductions only: exact in integer kernels, where a centroid's
        # division and a variance's difference of squares lose the box to rounding.
        cols = tf.reduce_max(x, axis=1, keepdims=True)  # [1, 1, W, 3]: a lit column is 1
        rows = tf.reduce_max(x, axis=2, keepdims=True)  # [1, H, 1, 3]
        half = 0.5 / SIZE
        x1 = tf.reduce_max(xs * cols, axis=[1, 2]) + half  # [1, 3]
        x0 = tf.reduce_min(xs + (1.0 - cols), axis=[1, 2]) - half
        y1 = tf.reduce_max(ys * rows, axis=[1, 2]) + half
        y0 = tf.reduce_min(ys + (1.0 - rows), axis=[1, 2]) - half
        w, h = tf.maximum(x1 - x0, 0.0), tf.maximum(y1 - y0, 0.0)
        # Each side scaled first: w * h itself is too small to keep its digits in int8.
        k = SIZE / FULL_SCORE_AREA ** 0.5
        score = tf.minimum((w * k) * (h * k), 1.0)  # [1, 3]
        boxes = tf.stack([(x0 + x1) / 2, (y0 + y1) / 2, w, h], axis=1)  # [1, 4, 3]
        # Anchor k scores only class k. Not tf.linalg.diag: its TFLite kernel fills the
        # off-diagonal with a raw 0, not the zero point (0.5 once dequantized).
        scores = score[:, None, :] * tf.eye(3)[None]  # [1, 3, 3]
        # Padded to 16 anchors (13 always empty): with N = 3 < 4 + C the head's
        # layout would read as channels_last, as no real YOLO head is.
        return tf.pad(tf.concat([boxes, scores], axis=1), [[0, 0], [0, 0], [0, ANCHORS - 3]])

    return scene.get_concrete_function()


def calibration(rng: np.random.Generator, count: int) -> list[np.ndarray[Any, Any]]:
    frames = []
    for _ in range(count):
        img = np.zeros((SIZE, SIZE, 3), np.float32)
        for c in range(3):
            if rng.random() < 0.8:
                side_w, side_h = rng.integers(4, 24, 2)
                x0, y0 = rng.integers(0, SIZE - side_w), rng.integers(0, SIZE - side_h)
                img[y0:y0 + side_h, x0:x0 + side_w, c] = 1.0
        frames.append(img)
    return frames


def main() -> int:
    tf.keras.utils.set_random_seed(0)
    fn = scene_fn()
    samples = calibration(np.random.default_rng(0), 200)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], None)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    content = bytes(converter.convert())
    path = OUT / "detect_centroid_int8.tflite"
    path.write_bytes(content)
    it = tf.lite.Interpreter(model_content=content)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    worst = 0.0
    for s in samples[:50]:
        scale, zp = inp["quantization"]
        it.set_tensor(inp["index"], np.clip(np.round(s / scale + zp), -128, 127)
                      .astype(np.int8)[None])
        it.invoke()
        oscale, ozp = out["quantization"]
        got = (it.get_tensor(out["index"]).astype(np.float64) - ozp) * oscale
        want = np.asarray(fn(tf.constant(s[None])), np.float64)
        lit = want[0, 4:].max(axis=0) > 0.05  # [16]
        worst = max(worst, float(np.abs(got - want)[0, :, lit].max(initial=0.0)))
    print(f"{path.name}: {len(content)} bytes, output {list(out['shape'])} "
          f"scale {out['quantization'][0]:.5f}; worst error over lit objects {worst:.4f} "
          f"(of the input's width: {worst * SIZE:.2f} input px)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
