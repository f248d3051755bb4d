"""Models shaped like the exports users bring from the field (issue 14).

Written by `scripts/make_test_models.py` (or alone with `--field-only`) to
tests/data/models/field/. Their weights are seeded, untrained: what they
test is the plumbing (shapes, layouts, types, state), and the tests compare
edged's published floats with a plain interpreter loop on the same file.

* dynbatch_flatten_int8 / _uint8: a Keras `Flatten` classifier; batch -1
  in every shape_signature, the output allocated only at the first invoke.
* dynbatch_reshape_int8: the same through `Reshape((-1,))`.
* nchw_int8: a PyTorch / Ultralytics LiteRT export's input [1, 3, H, W].
* float_input_int8: float32 input and output around an int8 body
  (QUANTIZE / DEQUANTIZE at the edges).
* nchw_float_input: both, a channel-first float32 input before an int8 body.
* audio_int8: not an image, a keyword-spotting style input [1, 3, 40].
* normalized_calib_int8 / _metadata: trained on p / 255 but calibrated on
  normalized data, so its input quantization range is [-2.13, 2.63] (as a
  YOLOv8n full-integer export's); the _metadata copy states mean 0, std 255
  in TFLite metadata (NormalizationOptions), as MetadataWriter writes it.
* stateful_int8: an image model with a variable (VAR_HANDLE /
  READ_VARIABLE / ASSIGN_VARIABLE): each output depends on earlier frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flatbuffers
import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as fb
from tensorflow.lite.tools import flatbuffer_utils
from tflite_parts import convert, keras_to_tflite

Array = np.ndarray[Any, Any]
SIZE = 16  # pixels: small files, every shape still a real image's


def _calibration(rng: np.random.Generator, shape: tuple[int, ...], count: int = 32
                 ) -> list[Array]:
    return [rng.random(shape, dtype=np.float32) for _ in range(count)]


def _classifier(flatten: keras.layers.Layer, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((SIZE, SIZE, 3))  # batch None: shape_signature [-1, ...]
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = flatten(x)
    x = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inp, x)


def _nchw(io: Any, seed: int, samples: list[Array]) -> bytes:
    keras.utils.set_random_seed(seed)
    conv = keras.layers.Conv2D(4, 3, strides=2, activation="relu")
    dense = keras.layers.Dense(5, activation="softmax")

    @tf.function(input_signature=[tf.TensorSpec([1, 3, SIZE, SIZE], tf.float32)])
    def fn(x: Any) -> Any:
        y = conv(tf.transpose(x, [0, 2, 3, 1]))
        return dense(tf.reduce_mean(y, axis=[1, 2]))

    cf = fn.get_concrete_function()
    chw = [np.transpose(s, (2, 0, 1)) for s in samples]
    return convert(tf.lite.TFLiteConverter.from_concrete_functions([cf], fn), chw, io)


def _audio(seed: int, rng: np.random.Generator) -> bytes:
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((3, 40), batch_size=1)
    x = keras.layers.Conv1D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(4, activation="softmax")(x)
    return keras_to_tflite(keras.Model(inp, x), _calibration(rng, (3, 40)))


class _Stateful(tf.Module):
    """out = softmax(dense(mean pixel per channel) + state); state += 0.25 * mean."""

    def __init__(self) -> None:
        super().__init__()
        self.state = tf.Variable(tf.zeros([1, 3]), trainable=False)
        self.w = tf.constant(np.random.default_rng(7).normal(size=(3, 6)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    def __call__(self, x: Any) -> Any:
        m = tf.reduce_mean(x, axis=[1, 2])
        self.state.assign(self.state * 0.5 + m * 0.25)
        return tf.nn.softmax(tf.matmul(m + self.state, self.w) * 4.0)


def _stateful(samples: list[Array], workdir: Path) -> bytes:
    module = _Stateful()
    tf.saved_model.save(module, str(workdir), signatures=module.__call__.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_saved_model(str(workdir))
    converter.experimental_enable_resource_variables = True
    return convert(converter, samples, tf.int8)


def _offsets(b: flatbuffers.Builder, items: list[int]) -> int:
    b.StartVector(4, len(items), 4)
    for item in reversed(items):
        b.PrependUOffsetTRelative(item)
    return int(b.EndVector())


def _floats(b: flatbuffers.Builder, values: list[float]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(v)
    return int(b.EndVector())


def normalization_metadata(mean: list[float], std: list[float]) -> bytes:
    """A ModelMetadata flatbuffer (metadata_schema.fbs, "M001") whose first input
    has one NormalizationOptions process unit: what tflite-support writes."""
    b = flatbuffers.Builder(256)
    mean_v, std_v = _floats(b, mean), _floats(b, std)
    b.StartObject(2)  # NormalizationOptions {mean, std}
    b.PrependUOffsetTRelativeSlot(0, mean_v, 0)
    b.PrependUOffsetTRelativeSlot(1, std_v, 0)
    options = b.EndObject()
    b.StartObject(2)  # ProcessUnit {options_type, options}
    b.PrependUint8Slot(0, 1, 0)  # ProcessUnitOptions.NormalizationOptions
    b.PrependUOffsetTRelativeSlot(1, options, 0)
    units = _offsets(b, [b.EndObject()])
    b.StartObject(7)  # TensorMetadata: process_units is field 4
    b.PrependUOffsetTRelativeSlot(4, units, 0)
    inputs = _offsets(b, [b.EndObject()])
    b.StartObject(7)  # SubGraphMetadata: input_tensor_metadata is field 2
    b.PrependUOffsetTRelativeSlot(2, inputs, 0)
    subgraphs = _offsets(b, [b.EndObject()])
    name = b.CreateString("edged field model")
    b.StartObject(8)  # ModelMetadata: name 0, subgraph_metadata 3
    b.PrependUOffsetTRelativeSlot(0, name, 0)
    b.PrependUOffsetTRelativeSlot(3, subgraphs, 0)
    b.Finish(b.EndObject(), file_identifier=b"M001")
    return bytes(b.Output())


def with_metadata(content: bytes, metadata: bytes) -> bytes:
    model = flatbuffer_utils.convert_bytearray_to_object(content)
    buffer = fb.BufferT()
    buffer.data = list(metadata)
    model.buffers.append(buffer)
    entry = fb.MetadataT()
    entry.name, entry.buffer = b"TFLITE_METADATA", len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def write_field_models(out: Path, workdir: Path) -> dict[str, int]:
    """Write every field model to `out`; their sizes in bytes."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(14)
    images = _calibration(rng, (SIZE, SIZE, 3))
    models: dict[str, bytes] = {
        "dynbatch_flatten_int8.tflite":
            keras_to_tflite(_classifier(keras.layers.Flatten(), 1), images, tf.int8),
        "dynbatch_flatten_uint8.tflite":
            keras_to_tflite(_classifier(keras.layers.Flatten(), 1), images, tf.uint8),
        "dynbatch_reshape_int8.tflite":
            keras_to_tflite(_classifier(keras.layers.Reshape((-1,)), 2), images, tf.int8),
        "nchw_int8.tflite": _nchw(tf.int8, 3, images),
        "nchw_float_input.tflite": _nchw(None, 3, images),
        "float_input_int8.tflite":
            keras_to_tflite(_classifier(keras.layers.Flatten(), 4), images, None),
        "audio_int8.tflite": _audio(5, rng),
        "stateful_int8.tflite": _stateful(images, workdir),
    }
    # Trained on p / 255, calibrated on normalized data: an unusual input range.
    normalized = [s * 4.76 - 2.13 for s in images]
    plain = keras_to_tflite(_classifier(keras.layers.Flatten(), 6), normalized, tf.int8)
    models["normalized_calib_int8.tflite"] = plain
    models["normalized_calib_int8_metadata.tflite"] = with_metadata(
        plain, normalization_metadata([0.0], [255.0]))
    for name, content in models.items():
        (out / name).write_bytes(content)
    return {name: len(content) for name, content in models.items()}
