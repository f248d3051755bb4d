"""A cascade's crops are classified while the worker has the next frame queued
(edged.service.pipeline `_complete`): the rest of the delivery runs after that
frame's invoke may have written the slot its result came from. What it publishes
must not change with it: the real worker and interpreter (scene detector, digits
classifier), the real `build_deliver`, a real mosquitto and subscriber."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
from broker import Mosquitto, Subscriber
from cascade_helpers import CLASSIFIER, digit_frame
from publisher_helpers import publisher
from scene_helpers import MODEL as SCENE_MODEL

from edged.config import load_config
from edged.inference.supervisor import Supervisor
from edged.inference.worker import WorkerParams
from edged.numerics.quantize import dequantize
from edged.preprocess import Preprocessor
from edged.service.result import Result
from edged.service.stats import StageTimes
from edged.service.wiring import build_deliver


def test_the_rest_of_a_cascaded_result_keeps_its_outputs_when_the_slot_is_written_again(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = tmp_path / "edged.toml"
    config.write_text(
        f'[device]\nid = "cam-1"\n[model]\npath = "{SCENE_MODEL}"\n'
        f'[output]\ndecoder = "detection"\ninclude_raw = true\nmin_score = 0.05\n'
        f'[[models]]\nid = "digits"\npath = "{CLASSIFIER}"\n'
        f'[cascade]\nmodel = "digits"\nmin_score = 0.05\nmin_class_score = 0.0\n')
    cfg = load_config(config)
    sup = Supervisor(WorkerParams(model_path=str(SCENE_MODEL), num_threads=1,
                                  cascade_path=str(CLASSIFIER), cascade_cpu_path=str(CLASSIFIER),
                                  max_crops=3))
    info = sup.start()
    pub = publisher(mosquitto.port)
    try:
        with Subscriber(mosquitto.port, "edged/cam-1/results") as sub:
            frame = digit_frame(4, (40, 30), 96)
            pre = Preprocessor.for_input(info.inputs[0])
            pre(frame, sup.pixels(0))
            sup.submit(0)
            sup.wait(0)
            raw = tuple(sup.raw_outputs(0))
            # Float outputs are views of the slot (dequantize passes them through): stand
            # for them with arrays this test can overwrite, as the next invoke would.
            outputs = tuple(np.array(dequantize(r, t)) for r, t in zip(raw, info.outputs,
                                                                      strict=True))
            want = [o.copy() for o in outputs]
            result = Result(7, time.time(), time.monotonic(), outputs, raw, info.outputs,
                            pre.geometry, StageTimes(), frame)
            deliver = build_deliver(cfg, sup, pub, lambda: None)
            rest = deliver(result)
            assert rest is not None, "a detection to classify: the rest waits for the worker"
            for o in outputs:
                o[...] = 7  # the next frame's invoke, into the same slot
            rest()
            msg = sub.wait_for(lambda m: True, timeout=10)
        doc = orjson.loads(msg.payload)
        assert doc["seq"] == 7 and any("classes" in d for d in doc["decoded"]["detections"])
        for out, values in zip(doc["outputs"], want, strict=True):
            assert np.allclose(np.asarray(out["data"], np.float64).reshape(values.shape),
                               values, atol=1e-6)
    finally:
        pub.stop()
        sup.stop()
