"""`Model` on the real interpreter with real models and photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.inference.model import Model, ModelError
from edged.inference.modelfile import ModelFileError, read_model_file
from edged.inference.runtime import Runtime, select_runtime
from edged.numerics.quantize import PixelQuantizer
from edged.numerics.tensors import TensorInfo

RUNNABLE = ["mobilenet_v2_1.0_224_quant.tflite", "mobilenet_v1_0.25_128_quant.tflite",
            "movenet_single_pose_lightning_ptq.tflite", "deeplabv3_mnv2_dm05_pascal_quant.tflite",
            "keras_lstm_mnist_ptq.tflite"]
COMMITTED = ["digits_int8.tflite", "digits_uint8.tflite", "multi_output_int8.tflite",
             "mixed_outputs.tflite", "ssd_postprocess.tflite", "detect_yolo_int8.tflite"]


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return select_runtime("auto")


def photo(path: Path, t: TensorInfo) -> np.ndarray:
    """A real photo resized to the input, RGB (cv2 reads BGR)."""
    image = cv2.imread(str(path))
    assert image is not None, path
    h, w = t.shape[1], t.shape[2]
    rgb = cv2.cvtColor(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA),
                       cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb)


def independent_dequantize(q: np.ndarray, t: TensorInfo) -> np.ndarray:
    if not t.scales:
        return q
    if len(t.scales) == 1:
        return ((q.astype(np.int64) - t.zero_points[0]) * t.scales[0]).astype(np.float32)
    # Per channel, one slice at a time, with no broadcasting to get wrong.
    out = np.empty(q.shape, np.float32)
    axis = t.quantized_dimension
    for c, (scale, zp) in enumerate(zip(t.scales, t.zero_points, strict=True)):
        index = tuple(c if d == axis else slice(None) for d in range(q.ndim))
        out[index] = ((q[index].astype(np.int64) - zp) * scale).astype(np.float32)
    return out


def check_outputs(model: Model) -> None:
    raw, deq = model.raw_outputs(), model.dequantized_outputs()
    assert len(raw) == len(deq) == len(model.outputs)
    for q, f, t in zip(raw, deq, model.outputs, strict=True):
        assert q.dtype == t.dtype and q.shape == t.shape
        expected = independent_dequantize(q, t)
        assert f.dtype == expected.dtype
        np.testing.assert_array_equal(f, expected)


def random_input(model: Model) -> None:
    t = model.inputs[0]
    pixels = np.random.default_rng(7).integers(0, 256, t.shape[1:], dtype=np.uint8)
    model.set_input_pixels(pixels, PixelQuantizer(t))


@pytest.mark.parametrize("name", RUNNABLE)
def test_shared_model_outputs_dequantize_exactly(runtime: Runtime, shared_models: Path,
                                                 name: str) -> None:
    model = Model.load(shared_models / name, runtime)
    assert model.delegate_in_use == "cpu" and model.runtime is runtime
    random_input(model)
    model.invoke()
    check_outputs(model)


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_model_outputs_dequantize_exactly(runtime: Runtime, test_models: Path,
                                                    name: str) -> None:
    if not (test_models / name).is_file():
        pytest.skip(f"{name} not generated yet")
    model = Model.load(test_models / name, runtime)
    random_input(model)
    model.invoke()
    check_outputs(model)


@pytest.mark.parametrize(("image", "label"), [("cat.bmp", 286), ("grace_hopper.bmp", 653)])
def test_mobilenet_v2_classifies_photos_as_pycoral_does(runtime: Runtime, shared_models: Path,
                                                        image: str, label: int) -> None:
    model = Model.load(shared_models / "mobilenet_v2_1.0_224_quant.tflite", runtime)
    t = model.inputs[0]
    quantizer = PixelQuantizer(t)
    assert quantizer.path == "identity"  # uint8, 1/128, 128: pixels are the values
    scores = model.run(photo(shared_models / image, t), quantizer)[0][0]
    assert int(np.argmax(scores)) == label
    names = (shared_models / "imagenet_labels.txt").read_text().splitlines()
    assert {286: "Egyptian cat", 653: "military uniform"}[label] in names[label]
    assert 0.5 < float(scores.max()) <= 1.0


def test_movenet_float_output_passes_through(runtime: Runtime, shared_models: Path) -> None:
    model = Model.load(shared_models / "movenet_single_pose_lightning_ptq.tflite", runtime)
    t = model.inputs[0]
    assert t.kind == "integer" and PixelQuantizer(t).path == "identity"
    out = model.run(photo(shared_models / "squat.bmp", t), PixelQuantizer(t))[0]
    assert out.dtype == np.float32 and out.shape == (1, 1, 17, 3)
    np.testing.assert_array_equal(out, model.raw_outputs()[0])
    assert model.outputs[0].name == "output_0"  # signature key, not the tensor name
    assert float(out[..., 2].max()) > 0.3  # someone is in the squat photo


def test_deeplab_argmax_stays_integer(runtime: Runtime, shared_models: Path) -> None:
    model = Model.load(shared_models / "deeplabv3_mnv2_dm05_pascal_quant.tflite", runtime)
    t = model.inputs[0]
    out = model.run(photo(shared_models / "cat.bmp", t), PixelQuantizer(t))[0]
    assert out.dtype == np.int64 and out.shape == (1, 513, 513)
    np.testing.assert_array_equal(out, model.raw_outputs()[0])
    assert 8 in np.unique(out)  # pascal class 8 is "cat"


@pytest.mark.parametrize("name", ["digits_int8.tflite", "mixed_outputs.tflite"])
def test_raw_outputs_are_copies_the_next_invoke_leaves_alone(runtime: Runtime,
                                                              test_models: Path,
                                                              name: str) -> None:
    # raw_outputs hands over get_tensor's own arrays: that must be a copy on every runtime.
    model = Model.load(test_models / name, runtime)
    random_input(model)
    model.invoke()
    first = model.raw_outputs()
    kept = [q.copy() for q in first]
    t = model.inputs[0]
    model.set_input_pixels(np.zeros(t.shape[1:], np.uint8), PixelQuantizer(t))
    model.invoke()
    assert any(not np.array_equal(a, b) for a, b in zip(model.raw_outputs(), kept, strict=True))
    for q, k in zip(first, kept, strict=True):
        assert q.flags.owndata
        np.testing.assert_array_equal(q, k)


def test_outputs_follow_the_files_declared_order(runtime: Runtime, test_models: Path) -> None:
    path = test_models / "multi_output_int8.tflite"
    if not path.is_file():
        pytest.skip("multi_output_int8.tflite not generated yet")
    model = Model.load(path, runtime)
    info = read_model_file(path)
    assert tuple(t.index for t in model.outputs) == info.outputs
    keys = info.output_keys()
    assert [t.name for t in model.outputs] == [keys[i] for i in info.outputs]


def test_edgetpu_model_on_cpu_fails_with_the_clear_message(runtime: Runtime,
                                                           shared_models: Path) -> None:
    path = shared_models / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    with pytest.raises(ModelFileError) as info:
        Model.load(path, runtime)
    assert str(info.value) == (f"{path}: compiled for the Edge TPU (edgetpu-custom-op): set "
                               "delegate = edgetpu, or use the CPU model")


def test_invoking_error_model_fails_cleanly(runtime: Runtime, shared_models: Path) -> None:
    path = shared_models / "model_invoking_error.tflite"
    with pytest.raises(ModelFileError) as info:
        Model.load(path, runtime)
    assert str(info.value).startswith(f"{path}: uses custom op 'fake-op-double' ")
    assert "\n" not in str(info.value)


def test_bad_file_fails_before_the_runtime(runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x00" * 4 + b"TFL3" + b"\x00" * 4)
    with pytest.raises(ModelFileError, match=r"not a valid TFLite model"):
        Model.load(path, runtime)


def test_pixels_of_the_wrong_size(runtime: Runtime, shared_models: Path) -> None:
    model = Model.load(shared_models / "mobilenet_v1_0.25_128_quant.tflite", runtime)
    t = model.inputs[0]
    with pytest.raises(ModelError) as info:
        model.set_input_pixels(np.zeros((100, 100, 3), np.uint8), PixelQuantizer(t))
    assert str(info.value).endswith("pixels of shape [100, 100, 3] do not fit input 'input' of "
                                    "shape [1, 128, 128, 3]")


def test_quantizer_for_another_tensor(runtime: Runtime, shared_models: Path) -> None:
    model = Model.load(shared_models / "mobilenet_v1_0.25_128_quant.tflite", runtime)
    other = Model.load(shared_models / "movenet_single_pose_lightning_ptq.tflite", runtime)
    with pytest.raises(ModelError, match="pixel quantizer was built for tensor 'input', not "):
        model.set_input_pixels(np.zeros((128, 128, 3), np.uint8),
                               PixelQuantizer(other.inputs[0]))


def test_input_written_in_place_is_what_the_model_sees(runtime: Runtime,
                                                       shared_models: Path) -> None:
    # Repeated set/invoke: no tensor() view may survive into invoke().
    model = Model.load(shared_models / "keras_lstm_mnist_ptq.tflite", runtime)
    t = model.inputs[0]
    digit = cv2.imread(str(shared_models / "mnist_nine.bmp"), cv2.IMREAD_GRAYSCALE)
    digit = cv2.resize(digit, (t.shape[2], t.shape[1]), interpolation=cv2.INTER_AREA)
    quantizer = PixelQuantizer(t)
    first = model.run(digit, quantizer)[0]
    model.run(np.zeros_like(digit), quantizer)
    np.testing.assert_array_equal(model.run(digit, quantizer)[0], first)
    np.testing.assert_array_equal(model._interpreter.get_tensor(t.index)[0], digit)
    assert int(np.argmax(first)) == 9
