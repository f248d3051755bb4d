"""One worker holding several models (issue 17: the models on one Edge TPU share
it, as libedgetpu gives a device to one process): the real worker process, the
real interpreter. Each model has slots of its own; a frame's slot says which
model runs it, and each model's raw outputs are what that model alone makes of
the frame, whatever ran before it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cascade_helpers import CLASSIFIER, digit
from faults_helpers import build_stub_delegate
from scene_helpers import MODEL as SCENE_MODEL
from scene_helpers import render, scene

from edged.inference.messages import ModelLoadError
from edged.inference.supervisor import Supervisor
from edged.inference.worker import OtherModel, WorkerParams


def _digit_alone(n: int) -> np.ndarray:
    """The digits classifier's raw output for digit `n`, without edged."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(CLASSIFIER))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    # Its input is int8 taking the pixels as they are, shifted by 128 (its identity path).
    interpreter.set_tensor(inp["index"], (digit(n).astype(np.int16) - 128).astype(np.int8)[None])
    interpreter.invoke()
    return np.array(interpreter.get_tensor(out["index"]))


def test_two_models_in_one_worker_each_slot_runs_its_own_model() -> None:
    shared = Supervisor(WorkerParams(model_path=str(SCENE_MODEL), num_threads=1,
                                     others=(OtherModel(str(CLASSIFIER), str(CLASSIFIER)),)))
    alone = Supervisor(WorkerParams(model_path=str(SCENE_MODEL), num_threads=1))
    info = shared.start()
    alone.start()
    try:
        assert len(info.others) == 1 and info.model(1).outputs[0].shape == (1, 10)
        assert info.model(0) is info and shared.model_name == (
            "detect_centroid_int8.tflite, digits_int8.tflite")
        # Model 0's slots are 0 and 1, model 1's are 2 and 3 (two per model).
        assert shared.pixels(2).shape == (32, 32, 3)
        assert shared.pixels(0).shape == alone.pixels(0).shape != (32, 32, 3)
        frames = [render(shapes) for shapes in scene()[:2]]
        for frame, n in zip(frames, (3, 7), strict=True):
            h, w = shared.pixels(0).shape[:2]
            shared.pixels(0)[:] = alone.pixels(0)[:] = frame[:h, :w]
            shared.pixels(2 + n % 2)[:] = digit(n)
            # Queued one behind the other, the classifier's frame and the detector's.
            shared.submit(2 + n % 2)
            shared.submit(0)
            alone.submit(0)
            assert shared.wait(2 + n % 2).slot == 2 + n % 2
            assert shared.wait(0).slot == 0
            alone.wait(0)
            assert np.array_equal(shared.raw_outputs(2 + n % 2)[0], _digit_alone(n))
            assert int(np.argmax(shared.raw_outputs(2 + n % 2)[0])) == n
            for mine, theirs in zip(shared.raw_outputs(0), alone.raw_outputs(0), strict=True):
                assert np.array_equal(mine, theirs)
    finally:
        shared.stop()
        alone.stop()


def test_a_second_model_that_cannot_load_fails_the_load_naming_its_file(
        tmp_path: Path) -> None:
    broken = tmp_path / "cars.tflite"
    broken.write_bytes(b"not a model")
    sup = Supervisor(WorkerParams(model_path=str(SCENE_MODEL), num_threads=1,
                                  others=(OtherModel(str(broken), str(broken)),)))
    with pytest.raises(ModelLoadError, match=r"cars\.tflite"):
        sup.start()
    sup.stop()


def test_both_models_on_the_edgetpu_then_both_on_their_cpu_builds_edgetpu_stand_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both models load on the (stand-in) Edge TPU, each (and its twin) with its own
    delegate instance for the one device; with the device gone at load (fallback = "cpu")
    both run their CPU builds."""
    stub, record = build_stub_delegate(tmp_path), tmp_path / "record.txt"
    monkeypatch.setenv("STUB_DELEGATE_RECORD", str(record))
    params = WorkerParams(model_path=str(SCENE_MODEL), num_threads=1, delegate="edgetpu",
                          edgetpu_device="usb:0", edgetpu_library=str(stub),
                          cpu_model_path=str(SCENE_MODEL),
                          others=(OtherModel(str(CLASSIFIER), str(CLASSIFIER)),))
    sup = Supervisor(params)
    info = sup.start()
    sup.stop()
    assert info.delegate == "edgetpu" and info.model(1).delegate == "edgetpu"
    # Each model and its twin (edged.inference.overlap): four delegate instances.
    assert record.read_text().splitlines().count("device=usb:0") == 4
    assert record.read_text().splitlines().count("created") == 4

    record.unlink()
    alone = Supervisor(replace(params, overlap=False))  # inference.overlap = false
    alone.start()
    alone.stop()
    assert record.read_text().splitlines().count("device=usb:0") == 2  # no twins

    monkeypatch.setenv("STUB_DELEGATE_FAIL", "1")
    sup = Supervisor(params)
    info = sup.start()
    try:
        assert info.delegate == "cpu" and info.model(1).delegate == "cpu"
        assert Path(info.model(1).model_path).name == "digits_int8.tflite"
        sup.pixels(2)[:] = digit(5)
        sup.submit(2)
        sup.wait(2)
        assert int(np.argmax(sup.raw_outputs(2)[0])) == 5
    finally:
        sup.stop()


def test_on_an_accelerator_frames_overlap_on_twin_interpreters_edgetpu_stand_in(
        tmp_path: Path) -> None:
    """On an accelerator the worker quantizes the next frame into a second interpreter
    of the model while the first runs (edged.inference.overlap): two frames queued
    back to back, round after round, each answer is its own frame's, in order; a
    classify queued behind them runs in its turn."""
    stub = build_stub_delegate(tmp_path)
    sup = Supervisor(WorkerParams(model_path=str(CLASSIFIER), num_threads=1, delegate="edgetpu",
                                  edgetpu_library=str(stub), cpu_model_path=str(CLASSIFIER),
                                  others=(OtherModel(str(CLASSIFIER), str(CLASSIFIER)),)))
    sup.start()
    try:
        expected = {n: _digit_alone(n) for n in range(10)}
        for round_ in range(6):
            digits = [(round_ * 3 + k) % 10 for k in range(3)]
            for slot, n in zip((0, 1, 2), digits, strict=True):
                sup.pixels(slot)[:] = digit(n)
                sup.submit(slot)
            for slot, n in zip((0, 1, 2), digits, strict=True):
                assert sup.wait(slot).slot == slot
                assert np.array_equal(sup.raw_outputs(slot)[0], expected[n]), (round_, slot)
    finally:
        sup.stop()


def test_an_invoke_waiting_for_the_device_reports_only_its_own_time_edgetpu_stand_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two frames handed to the device back to back: the second waits for the first
    in the runtime, and its `invoke` timing is the device's time for it, not twice."""
    monkeypatch.setenv("STUB_DELEGATE_INVOKE_US", "20000")  # one at a time, 20 ms each
    stub = build_stub_delegate(tmp_path)
    sup = Supervisor(WorkerParams(model_path=str(CLASSIFIER), num_threads=1, delegate="edgetpu",
                                  edgetpu_library=str(stub), cpu_model_path=str(CLASSIFIER)))
    sup.start()
    try:
        for _ in range(3):
            sup.submit(0)
            sup.submit(1)
            first, second = sup.wait(0), sup.wait(1)
            assert 19_000 <= first.invoke_us < 30_000, first
            assert 19_000 <= second.invoke_us < 30_000, second
    finally:
        sup.stop()


def test_an_accelerator_that_takes_no_second_interpreter_runs_frames_one_at_a_time_edgetpu_stand_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
        ) -> None:
    """The twin (edged.inference.overlap) is an optimisation: a delegate that refuses a
    second instance costs one line naming the model, and every frame still runs, on
    the accelerator, one after the other."""
    monkeypatch.setenv("STUB_DELEGATE_MAX_INSTANCES", "1")
    stub = build_stub_delegate(tmp_path)
    sup = Supervisor(WorkerParams(model_path=str(CLASSIFIER), num_threads=1, delegate="edgetpu",
                                  edgetpu_library=str(stub), cpu_model_path=str(CLASSIFIER)))
    info = sup.start()
    try:
        assert info.delegate == "edgetpu"
        expected = {n: _digit_alone(n) for n in range(4)}
        for n in range(4):
            sup.pixels(n % 2)[:] = digit(n)
            sup.submit(n % 2)
            if n % 2:
                for slot in (0, 1):
                    assert sup.wait(slot).slot == slot
                    assert np.array_equal(sup.raw_outputs(slot)[0], expected[n - 1 + slot])
    finally:
        sup.stop()
    said = [line for line in capfd.readouterr().err.splitlines() if "second interpreter" in line]
    assert len(said) == 1, said
    assert said[0].startswith(f"edged worker: {CLASSIFIER}: no second interpreter on the "
                              "edgetpu delegate (")
    assert said[0].endswith("); frames run one at a time")

