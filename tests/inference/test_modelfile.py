"""Reading .tflite files before the runtime: real files, damaged copies of them."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from edged.inference.modelfile import (
    EDGETPU_CUSTOM_OP,
    ModelFileError,
    check_model_file,
    check_runnable,
    parse_model,
    read_model_file,
)

EDGETPU_MESSAGE = ("compiled for the Edge TPU (edgetpu-custom-op): set delegate = edgetpu, "
                   "or use the CPU model")


def one_line_error(path: object, *args: object) -> str:
    with pytest.raises(ModelFileError) as info:
        check_model_file(path, *args)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.tflite"
    assert one_line_error(path) == f"{path}: model file not found"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.tflite"
    path.write_bytes(b"")
    assert one_line_error(path) == f"{path}: model file is empty"


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    assert one_line_error(tmp_path) == f"{tmp_path}: not a regular file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.tflite"
    path.write_bytes(b"x" * 16)
    path.chmod(0)
    assert one_line_error(path) == f"{path}: cannot read model file: permission denied"


def test_not_a_flatbuffer(tmp_path: Path) -> None:
    path = tmp_path / "photo.tflite"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(100))
    assert one_line_error(path) == (f"{path}: not a TFLite model (file identifier b'\\x00\\x10JF', "
                                    "expected b'TFL3' at bytes 4..8)")


def test_tiny_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.tflite"
    path.write_bytes(b"abc")
    assert "only 3 bytes, too short" in one_line_error(path)


def test_truncated_real_model(shared_models: Path, tmp_path: Path) -> None:
    data = (shared_models / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: len(data) // 2])
    message = one_line_error(path)
    assert message.startswith(f"{path}: not a valid TFLite model: ")
    assert "truncated or corrupt" in message


def test_root_offset_out_of_bounds(tmp_path: Path) -> None:
    path = tmp_path / "bad.tflite"
    path.write_bytes(b"\xff\xff\x00\x00TFL3" + bytes(8))
    assert "runs past the end of the file" in one_line_error(path)


MODELS = {
    # file: (custom ops, number of outputs, has signature)
    "mobilenet_v2_1.0_224_quant.tflite": ((), 1, False),
    "mobilenet_v1_0.25_128_quant.tflite": ((), 1, False),
    "mobilenet_v1_0.25_128_quant_edgetpu.tflite": ((EDGETPU_CUSTOM_OP,), 1, False),
    "movenet_single_pose_lightning_ptq.tflite": ((), 1, True),
    "deeplabv3_mnv2_dm05_pascal_quant.tflite": ((), 1, False),
    "keras_lstm_mnist_ptq.tflite": ((), 1, True),
    "model_invoking_error.tflite": (("fake-op-double",), 1, False),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reads_every_shared_model(shared_models: Path, name: str) -> None:
    info = read_model_file(shared_models / name)
    custom, n_outputs, has_signature = MODELS[name]
    assert info.custom_ops == custom
    assert info.needs_edgetpu == (EDGETPU_CUSTOM_OP in custom)
    assert info.schema_version == 3
    assert len(info.outputs) == n_outputs and len(info.inputs) == 1
    assert bool(info.signatures) == has_signature
    assert all(0 <= i < len(info.tensor_names) for i in info.inputs + info.outputs)


def test_edgetpu_model_without_edgetpu_names_the_fix(shared_models: Path) -> None:
    path = shared_models / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    assert one_line_error(path) == f"{path}: {EDGETPU_MESSAGE}"
    assert check_model_file(path, "edgetpu").needs_edgetpu


def test_unresolved_custom_op_is_named(shared_models: Path) -> None:
    path = shared_models / "model_invoking_error.tflite"
    message = one_line_error(path)
    assert message.startswith(f"{path}: uses custom op 'fake-op-double' that the TFLite "
                              "runtime cannot resolve")
    # The Edge TPU delegate provides only its own op.
    assert one_line_error(path, "edgetpu") == message
    # An external delegate may provide any op: the runtime decides.
    check_runnable(read_model_file(path), "external")


def test_signature_keys_and_declared_output_order(test_models: Path) -> None:
    path = test_models / "multi_output_int8.tflite"
    if not path.is_file():
        pytest.skip("multi_output_int8.tflite not generated yet")
    info = read_model_file(path)
    keys = info.output_keys()
    assert sorted(keys.values()) == [f"output_{i}" for i in range(len(info.outputs))]
    assert set(keys) == set(info.outputs)


FUZZ_MODELS = ["model_invoking_error.tflite", "keras_lstm_mnist_ptq.tflite",
               "mobilenet_v1_0.25_128_quant_edgetpu.tflite"]


def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    how = rng.randrange(4)
    if how == 0:
        return bytes(b[: rng.randrange(len(b))])
    if how == 1:
        for _ in range(rng.randrange(1, 16)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif how == 2:
        i, n = rng.randrange(len(b)), rng.randrange(1, 4096)
        b[i:i + n] = bytes(len(b[i:i + n]))
    else:  # the header and tables near the start are where structure lives
        b[rng.randrange(min(len(b), 512))] = rng.randrange(256)
    return bytes(b)


@pytest.mark.parametrize("name", FUZZ_MODELS)
def test_damaged_copies_raise_only_model_file_error(shared_models: Path, name: str) -> None:
    data = (shared_models / name).read_bytes()
    rng = random.Random(name)
    path = Path(name)
    worst = 0.0
    for _ in range(150):
        mutated = _mutate(data, rng)
        start = time.perf_counter()
        try:
            parse_model(mutated, path)
        except ModelFileError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(f"{path}: ")
        worst = max(worst, time.perf_counter() - start)
    assert worst < 1.0


def test_aliased_offsets_cannot_make_parsing_blow_up(shared_models: Path) -> None:
    # A buffers vector whose 50000 entries all point at one Buffer table with
    # a 4 KiB data vector: sound files never share elements, so the reader's
    # work budget (bytes visited <= file size) must stop it early.
    data = bytearray((shared_models / "keras_lstm_mnist_ptq.tflite").read_bytes())
    root = int.from_bytes(data[0:4], "little")
    vtable = root - int.from_bytes(data[root:root + 4], "little", signed=True)
    field = root + int.from_bytes(data[vtable + 4 + 2 * 4: vtable + 6 + 2 * 4], "little")
    assert field != root, "the model has a buffers field"
    count = 50_000
    vec = len(data)
    table_vtable = vec + 4 + 4 * count
    table = table_vtable + 8  # vtable: size 6, table size 8, field 0 at offset 4 (+2 pad)
    data_vec = table + 8
    data += count.to_bytes(4, "little")
    for i in range(count):
        data += (table - (vec + 4 + 4 * i)).to_bytes(4, "little")
    data += (6).to_bytes(2, "little") + (8).to_bytes(2, "little") + (4).to_bytes(2, "little")
    data += bytes(2)
    data += (table - table_vtable).to_bytes(4, "little", signed=True)
    data += (data_vec - (table + 4)).to_bytes(4, "little")
    data += (4096).to_bytes(4, "little") + bytes(4096)
    data[field:field + 4] = (vec - field).to_bytes(4, "little")
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match="refer to the same data repeatedly"):
        parse_model(bytes(data), Path("alias.tflite"))
    assert time.perf_counter() - start < 2.0


def test_custom_ops_the_runtime_registers_itself_are_not_refused(test_models: Path) -> None:
    path = test_models / "ssd_postprocess.tflite"
    if not path.is_file():
        pytest.skip("ssd_postprocess.tflite not generated yet")
    info = check_model_file(path)
    assert info.custom_ops == ("TFLite_Detection_PostProcess",)
