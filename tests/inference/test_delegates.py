"""Delegates through the runtime's real `load_delegate`.

There is no Coral here, so a stub plugin compiled from
tests/stub_delegate/stub_delegate.c stands in for libedgetpu.so.1: tests using
it are named `test_edgetpu_stand_in_*`. Everything else is real: the runtime,
the model files, ctypes loading, the interpreter applying the delegate.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from faults_helpers import build_stub_delegate

from edged.inference.delegates import EDGETPU_LIBRARY, DelegateError, DelegateSpec, load_delegate
from edged.inference.model import Model
from edged.inference.modelfile import ModelFileError
from edged.inference.runtime import Runtime, select_runtime

CPU_MODEL = "mobilenet_v1_0.25_128_quant.tflite"
NOT_INSTALLED = (f"Edge TPU delegate: {EDGETPU_LIBRARY} not found: the Edge TPU runtime is not "
                 "installed (apt install libedgetpu1-std)")


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return select_runtime("auto")


@pytest.fixture(scope="module")
def stub_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_stub_delegate(tmp_path_factory.mktemp("stub"), "libstub_edgetpu.so")


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "stub-record.txt"
    monkeypatch.setenv("STUB_DELEGATE_RECORD", str(path))
    monkeypatch.delenv("STUB_DELEGATE_FAIL", raising=False)
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("device", ["", "usb", "usb:0", "usb:12", "pci", "pci:1", ":0", ":3"])
def test_valid_edgetpu_devices(device: str) -> None:
    spec = DelegateSpec("edgetpu", device=device)
    assert spec.plugin_options() == ({"device": device} if device else {})
    assert spec.library_path == EDGETPU_LIBRARY


@pytest.mark.parametrize("device", ["usb0", "USB", "usb:", "pci:x", "0", "usb:0:1", " usb"])
def test_invalid_edgetpu_device_is_one_line(device: str) -> None:
    with pytest.raises(DelegateError) as info:
        DelegateSpec("edgetpu", device=device)
    assert str(info.value) == (f"delegate: Edge TPU device {device!r} is not valid: use usb, "
                               "usb:N, pci, pci:N, :N, or leave it empty for the first Edge TPU "
                               "found")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "external"}, "delegate: kind external needs a library path"),
    ({"kind": "cpu", "num_threads": 0}, "delegate: num_threads must be >= 1, got 0"),
    ({"kind": "cpu", "device": "usb"}, "delegate: device 'usb' is only for the edgetpu kind"),
    ({"kind": "gpu"}, "delegate: unknown kind 'gpu' (cpu, edgetpu, external)"),
    ({"kind": "edgetpu", "fallback": "retry"}, "delegate: fallback must be cpu or fail, got "
                                                "'retry'"),
])
def test_bad_spec_messages(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DelegateError) as info:
        DelegateSpec(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_spec_is_immutable() -> None:
    spec = DelegateSpec("external", library="/x.so", options={"a": 1})  # type: ignore[dict-item]
    assert dict(spec.options) == {"a": "1"}
    with pytest.raises(TypeError):
        spec.options["b"] = "2"  # type: ignore[index]


def test_libedgetpu_absent_says_not_installed(runtime: Runtime) -> None:
    if _libedgetpu_present():
        pytest.skip("libedgetpu.so.1 is installed here")
    with pytest.raises(DelegateError) as info:
        load_delegate(DelegateSpec("edgetpu", device="usb:0"), runtime)
    assert str(info.value) == NOT_INSTALLED


def test_libedgetpu_absent_falls_back_to_cpu(runtime: Runtime, shared_models: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    if _libedgetpu_present():
        pytest.skip("libedgetpu.so.1 is installed here")
    with caplog.at_level(logging.WARNING, logger="edged.delegates"):
        model = Model.load(shared_models / CPU_MODEL, runtime, DelegateSpec("edgetpu"))
    assert model.delegate_in_use == "cpu"
    assert model.fallback_reason == f"{NOT_INSTALLED}; running on the CPU instead (fallback = cpu)"
    # Said by whoever loaded it (the daemon, once), not by the library as well.
    assert not caplog.records


def test_edgetpu_model_cannot_fall_back_to_cpu(runtime: Runtime, shared_models: Path) -> None:
    path = shared_models / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    with pytest.raises(ModelFileError) as info:
        Model.load(path, runtime, DelegateSpec("edgetpu", library="/nonexistent/libedgetpu.so.1"))
    assert str(info.value).startswith(f"{path}: compiled for the Edge TPU (edgetpu-custom-op) "
                                      "and cannot run on the CPU: Edge TPU delegate: ")


def test_edgetpu_model_falls_back_to_its_cpu_build_edgetpu_stand_in(
        runtime: Runtime, shared_models: Path, stub_library: Path, stub_fails: Path) -> None:
    path = shared_models / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    model = Model.load(path, runtime, DelegateSpec("edgetpu", library=str(stub_library)),
                       cpu_path=shared_models / CPU_MODEL)
    assert (model.path, model.delegate_in_use) == (shared_models / CPU_MODEL, "cpu")
    assert model.fallback_reason is not None and model.fallback_reason.endswith(
        f"; running {CPU_MODEL} on the CPU instead (fallback = cpu)")
    model.invoke()


def test_edgetpu_model_whose_cpu_build_is_itself_refuses_in_one_line(
        runtime: Runtime, shared_models: Path) -> None:
    path = shared_models / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    with pytest.raises(ModelFileError) as info:
        Model.load(path, runtime, DelegateSpec("edgetpu", library="/nonexistent/libedgetpu.so.1"),
                   cpu_path=path)
    assert str(info.value).startswith(f"{path}: compiled for the Edge TPU (edgetpu-custom-op) "
                                      "and cannot run on the CPU: Edge TPU delegate: ")


def test_library_without_plugin_symbols(runtime: Runtime) -> None:
    libc = "libc.so.6"
    with pytest.raises(DelegateError) as info:
        load_delegate(DelegateSpec("external", library=libc), runtime)
    assert str(info.value) == (f"delegate {libc}: {libc} is not a TFLite delegate plugin "
                               "(no tflite_plugin_create_delegate): wrong library")


def test_edgetpu_stand_in_loads_with_device_option(runtime: Runtime, shared_models: Path,
                                                   stub_library: Path, record: Path) -> None:
    spec = DelegateSpec("edgetpu", device="usb:0", library=str(stub_library))
    model = Model.load(shared_models / CPU_MODEL, runtime, spec)
    assert model.delegate_in_use == "edgetpu" and model.fallback_reason is None
    assert lines(record) == ["device=usb:0", "created"]
    # The stub claims no nodes, so the CPU kernels still give real answers.
    model.invoke()
    assert model.raw_outputs()[0].shape == (1, 1001)
    del model
    assert lines(record)[-1] == "destroyed"


def test_edgetpu_stand_in_first_device_passes_no_options(runtime: Runtime, stub_library: Path,
                                                         record: Path) -> None:
    delegate = load_delegate(DelegateSpec("edgetpu", library=str(stub_library)), runtime)
    assert delegate is not None
    assert lines(record) == ["created"]


def test_external_delegate_gets_its_options(runtime: Runtime, stub_library: Path,
                                            record: Path) -> None:
    spec = DelegateSpec("external", library=str(stub_library),
                        options={"cache_dir": "/var/cache/x", "precision": "fp16"})
    delegate = load_delegate(spec, runtime)
    assert lines(record) == ["cache_dir=/var/cache/x", "precision=fp16", "created"]
    del delegate
    assert lines(record)[-1] == "destroyed"


@pytest.fixture
def stub_fails(record: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUB_DELEGATE_FAIL", "1")
    return record


def test_edgetpu_stand_in_failure_falls_back_to_cpu_with_one_line(
        runtime: Runtime, shared_models: Path, stub_library: Path, stub_fails: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    record = stub_fails
    spec = DelegateSpec("edgetpu", device="usb:1", library=str(stub_library))
    with caplog.at_level(logging.WARNING, logger="edged.delegates"):
        model = Model.load(shared_models / CPU_MODEL, runtime, spec)
    assert lines(record) == ["device=usb:1", "failed"]
    assert model.delegate_in_use == "cpu"
    # No Coral on this machine: the diagnosis looks at sysfs and finds none.
    assert model.fallback_reason == (
        "Edge TPU delegate: no USB Edge TPU found (device 'usb:1'): check it is plugged in "
        "(lsusb lists 18d1:9302 or 1a6e:089a; PCIe shows /dev/apex_0), then check "
        "permissions: plugdev/apex groups and the udev rules; running on the CPU instead "
        "(fallback = cpu)")
    assert not caplog.records
    model.invoke()


def test_edgetpu_stand_in_failure_with_fail_policy_raises(
        runtime: Runtime, shared_models: Path, stub_library: Path, record: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_DELEGATE_FAIL", "1")
    spec = DelegateSpec("edgetpu", device="pci:0", library=str(stub_library), fallback="fail")
    with pytest.raises(DelegateError) as info:
        Model.load(shared_models / CPU_MODEL, runtime, spec)
    assert str(info.value).startswith("Edge TPU delegate: no PCIe Edge TPU found "
                                      "(device 'pci:0'): ")
    assert str(info.value).endswith(" (fallback = fail)")
    assert "\n" not in str(info.value)


def test_edgetpu_stand_in_failure_by_option(runtime: Runtime, stub_library: Path,
                                           record: Path) -> None:
    spec = DelegateSpec("external", library=str(stub_library), options={"fail": "1"})
    with pytest.raises(DelegateError, match=r"^delegate .*: ValueError: Failed to load "
                                            r"delegate from .* stub delegate: told to fail$"):
        load_delegate(spec, runtime)


NOISE_SCRIPT = """
import gc, sys
from edged.inference.delegates import DelegateError, DelegateSpec, load_delegate
from edged.inference.runtime import select_runtime
rt = select_runtime("auto")
for spec in [DelegateSpec("edgetpu", library="/nonexistent/libedgetpu.so.1"),
             DelegateSpec("external", library="libc.so.6"),
             DelegateSpec("external", library=sys.argv[1], options={"fail": "1"})]:
    try:
        load_delegate(spec, rt)
    except DelegateError as exc:
        print(exc)
gc.collect()
print("done")
"""


def test_edgetpu_stand_in_failures_leave_no_del_noise(stub_library: Path) -> None:
    # The runtime's half-built Delegate objects are collected later; without
    # edged disarming them each prints "Exception ignored in ... __del__".
    result = subprocess.run([sys.executable, "-c", NOISE_SCRIPT, str(stub_library)],
                            capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.splitlines()[-1] == "done"
    assert len(result.stdout.splitlines()) == 4
    assert "Exception ignored" not in result.stderr
    assert "Traceback" not in result.stderr


def _libedgetpu_present() -> bool:
    import ctypes

    try:
        ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError:
        return False
    return True


def test_cpu_threads_are_passed(runtime: Runtime, shared_models: Path) -> None:
    model = Model.load(shared_models / CPU_MODEL, runtime, DelegateSpec(num_threads=2))
    assert model.delegate_in_use == "cpu"
    model.invoke()
    assert np.asarray(model.raw_outputs()[0]).dtype == np.uint8
