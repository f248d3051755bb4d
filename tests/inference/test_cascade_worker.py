"""A cascade's classifier in the detector's worker (issue 17): the real worker process,
the real interpreter. A classify request queues behind the frame in flight; each
answer is matched to its request, and each crop's raw outputs are the classifier's
own on that crop."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from cascade_helpers import CLASSIFIER, digit
from scene_helpers import MODEL as SCENE_MODEL

from edged.inference.messages import ModelLoadError
from edged.inference.supervisor import Supervisor
from edged.inference.worker import WorkerParams


def _supervisor(**params: object) -> Supervisor:
    return Supervisor(WorkerParams(model_path=str(SCENE_MODEL), num_threads=1,
                                   cascade_path=str(CLASSIFIER),
                                   cascade_cpu_path=str(CLASSIFIER), max_crops=3, **params))


def test_crops_classified_behind_the_frame_in_flight_each_answer_its_own() -> None:
    """Two frames' crops, one half of the crop buffers each, queued behind a frame in
    flight and each other: every answer is kept for the one who waits for it, in
    whatever order they wait."""
    from ai_edge_litert.interpreter import Interpreter

    sup = _supervisor()
    info = sup.start()
    try:
        assert info.cascade is not None and info.cascade.outputs[0].shape == (1, 10)
        assert len(sup.mem.crops) == 6 and sup.mem.crops[0].shape == (32, 32, 3)
        sup.pixels(0)[:] = 0
        digits = {0: 3, 1: 7, 3: 1, 4: 9, 5: 4}
        for i, n in digits.items():
            sup.mem.crops[i][:] = digit(n)
        sup.submit(0)  # a frame in flight: its "done" comes before the crops' answers
        first = sup.classify(2)
        second = sup.classify(3, first=3)
        done = sup.wait(second)
        assert done.slot == second == -4 and done.invoke_us > 0
        assert sup.wait(0).slot == 0
        assert sup.wait(first).slot == first == -1
        interpreter = Interpreter(model_path=str(CLASSIFIER))
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        for i, n in digits.items():
            interpreter.set_tensor(inp["index"], (digit(n).astype(np.int16) - 128)
                                   .astype(np.int8)[None])
            interpreter.invoke()
            raw = sup.mem.crop_outputs[i][0]
            assert np.array_equal(raw, interpreter.get_tensor(out["index"]))
            assert int(np.argmax(raw)) == n
    finally:
        sup.stop()


def test_a_classifier_that_cannot_load_fails_the_load_naming_its_file(tmp_path: Path) -> None:
    broken = tmp_path / "birds.tflite"
    broken.write_bytes(b"not a model")
    sup = Supervisor(WorkerParams(model_path=str(SCENE_MODEL), num_threads=1,
                                  cascade_path=str(broken), cascade_cpu_path=str(broken),
                                  max_crops=1))
    with pytest.raises(ModelLoadError, match=r"birds\.tflite"):
        sup.start()


def test_a_classify_never_waited_for_does_not_answer_for_the_next_on_its_half() -> None:
    """A frame whose delivery failed after its crops were queued: the next classify on
    those buffers gets its own answer, not the abandoned one's."""
    sup = _supervisor()
    sup.start()
    try:
        sup.mem.crops[0][:] = digit(3)
        sup.classify(1)  # abandoned
        time.sleep(0.5)  # its answer waits on the socket
        sup.mem.crops[0][:] = digit(7)
        key = sup.classify(1)
        sup.wait(key)
        assert int(np.argmax(sup.mem.crop_outputs[0][0])) == 7
        sup.pixels(0)[:] = 0  # and no answer is left over to confuse the next frame's
        sup.submit(0)
        assert sup.wait(0).slot == 0
    finally:
        sup.stop()
