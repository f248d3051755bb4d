"""`edged run` end to end: a real child process, a real mosquitto, a real subscriber."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import orjson
import pytest
from ai_edge_litert.interpreter import Interpreter
from broker import Mosquitto, Subscriber, retained
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, results, write_config

SCHEMAS = Path(__file__).resolve().parents[2] / "edged" / "schemas"


def expected_outputs(model: Path, frame: Path) -> list[np.ndarray]:
    """The model's outputs for one frame, computed here without edged's code.

    Pixels map linearly onto the input tensor's representable range (edged's
    documented default), then `(q - zero_point) * scale` per output.
    """
    it = Interpreter(model_path=str(model))
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    scale, zp = inp["quantization"]
    pixels = cv2.cvtColor(cv2.imread(str(frame)), cv2.COLOR_BGR2RGB).astype(np.float64)
    info = np.iinfo(inp["dtype"])
    low, high = (info.min - zp) * scale, (info.max - zp) * scale
    real = low + pixels * (high - low) / 255.0
    q = np.clip(np.floor(real / scale + 0.5) + zp, info.min, info.max)
    it.set_tensor(inp["index"], q.astype(inp["dtype"]).reshape(inp["shape"]))
    it.invoke()
    out = []
    for d in it.get_output_details():
        raw = it.get_tensor(d["index"])
        scales = d["quantization_parameters"]["scales"]
        if len(scales) == 0 or not scales.any():
            out.append(raw)
        elif len(scales) == 1:
            zp_o = int(d["quantization_parameters"]["zero_points"][0])
            out.append(((raw.astype(np.int64) - zp_o) * float(scales[0])).astype(np.float32))
        else:
            axis = d["quantization_parameters"]["quantized_dimension"]
            shape = [1] * raw.ndim
            shape[axis] = -1
            zps = d["quantization_parameters"]["zero_points"].reshape(shape).astype(np.int64)
            out.append(((raw.astype(np.int64) - zps) * scales.astype(np.float64).reshape(shape))
                       .astype(np.float32))
    return out


@pytest.fixture
def digit_frames(tmp_path: Path) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    for f in sorted(FRAMES.glob("digit_*.png")):
        shutil.copy(f, d)
    return d


def run_and_collect(tmp_path: Path, broker: Mosquitto, count: int, **cfg: Any
                    ) -> tuple[list[dict[str, Any]], DaemonProcess, Subscriber]:
    sub = Subscriber(broker.port, "edged/#").start()
    config = write_config(tmp_path / "edged.toml", base_config(broker.port, **cfg))
    daemon = DaemonProcess(config)
    try:
        msgs = sub.wait_count(lambda m: m.topic.endswith("/results"), count, timeout=30)
    except AssertionError:
        daemon.stop()
        raise AssertionError(daemon.log_text()) from None
    return results(msgs), daemon, sub


@pytest.mark.parametrize("model", ["digits_int8.tflite", "digits_uint8.tflite",
                                   "multi_output_int8.tflite", "mixed_outputs.tflite"])
def test_received_floats_equal_the_models_dequantized_outputs(
        tmp_path: Path, mosquitto: Mosquitto, digit_frames: Path, model: str) -> None:
    frames = sorted(digit_frames.iterdir())
    got, daemon, sub = run_and_collect(tmp_path, mosquitto, 12, model=MODELS / model,
                                       frames=digit_frames)
    try:
        schema = orjson.loads((SCHEMAS / "result-v1.schema.json").read_bytes())
        expected = {f.name: expected_outputs(MODELS / model, f) for f in frames}
        for doc in got:
            jsonschema.validate(doc, schema)
            frame = frames[doc["seq"] % len(frames)]
            for out, want in zip(doc["outputs"], expected[frame.name], strict=True):
                data = np.asarray(out["data"])
                assert data.shape == want.shape, out["name"]
                if want.dtype.kind in "iu":
                    assert np.array_equal(data, want), out["name"]
                else:
                    np.testing.assert_allclose(data, want, rtol=1e-6, atol=1e-7,
                                               err_msg=f"{model} {out['name']} {frame.name}")
        if model.startswith("digits"):
            tops = [int(np.argmax(doc["outputs"][0]["data"])) for doc in got]
            assert tops == [int(frames[d["seq"] % len(frames)].name.split("_")[1]) for d in got]
    finally:
        assert daemon.stop() == 0
        sub.stop()


def test_status_online_then_offline_on_sigterm(tmp_path: Path, mosquitto: Mosquitto,
                                               digit_frames: Path) -> None:
    _, daemon, sub = run_and_collect(tmp_path, mosquitto, 1, model=MODELS / "digits_int8.tflite",
                                     frames=digit_frames)
    status = retained(mosquitto.port, "edged/test/status")
    assert status is not None and orjson.loads(status.payload)["state"] == "online"
    # The first status line: a source not opened yet is "opening", never "reopening".
    first = next(line for line in daemon.log_text().splitlines() if "edged running:" in line)
    assert first.endswith(("source opening", "source running")), first
    # `top -H` on a device shows each thread's job, not "python3" three times.
    names = {(task / "comm").read_text().strip()
             for task in Path(f"/proc/{daemon.pid}/task").iterdir()}
    assert {"edged-capture", "edged-pipeline", "edged-mqtt"} <= names, names
    worker = Path(f"/proc/{daemon.worker_pid()}/comm").read_text().strip()
    assert worker == "edged-worker"
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 2.0, "SIGTERM must stop the daemon within 2 s"
    status = retained(mosquitto.port, "edged/test/status")
    assert status is not None and orjson.loads(status.payload)["state"] == "offline"
    assert "Traceback" not in daemon.log_text(), daemon.log_text()
    sub.stop()


def test_last_will_after_sigkill(tmp_path: Path, mosquitto: Mosquitto,
                                 digit_frames: Path) -> None:
    _, daemon, sub = run_and_collect(tmp_path, mosquitto, 1, model=MODELS / "digits_int8.tflite",
                                     frames=digit_frames,
                                     mqtt={"keepalive_s": 5})
    worker = daemon.worker_pid()
    daemon.stop(signal.SIGKILL)
    # The broker sends the will when the keepalive lapses or the socket closes.
    sub.wait_for(lambda m: m.topic.endswith("/status")
                 and orjson.loads(m.payload)["state"] == "offline", timeout=10)
    # The orphaned worker notices its socket closing and exits.
    deadline = time.monotonic() + 5
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{worker}/cmdline").exists() or \
        b"edged.inference.worker" not in Path(f"/proc/{worker}/cmdline").read_bytes()
    sub.stop()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGABRT, signal.SIGSEGV])
def test_worker_killed_is_restarted_and_reported(tmp_path: Path, mosquitto: Mosquitto,
                                                 digit_frames: Path, sig: int) -> None:
    _, daemon, sub = run_and_collect(tmp_path, mosquitto, 3, model=MODELS / "digits_int8.tflite",
                                     frames=digit_frames)
    try:
        old = daemon.worker_pid()
        import os
        os.kill(old, sig)
        killed_at = time.time()
        after = sub.wait_for(lambda m: m.topic.endswith("/results")
                             and m.received_at > killed_at + 0.05, timeout=10)
        assert after.received_at - killed_at < 2.0, "recovery must take under 2 s"
        assert daemon.worker_pid() != old
        # Reported: a stats message counts the restart with the new worker running.
        sub.wait_for(lambda m: m.topic.endswith("/stats")
                     and orjson.loads(m.payload)["worker_restarts"] >= 1
                     and orjson.loads(m.payload)["worker_state"] == "running", timeout=5)
        assert signal.Signals(sig).name in daemon.log_text(), daemon.log_text()
    finally:
        assert daemon.stop() == 0
        sub.stop()


def test_worker_hang_past_the_deadline_is_killed_and_replaced(
        tmp_path: Path, mosquitto: Mosquitto, digit_frames: Path) -> None:
    _, daemon, sub = run_and_collect(tmp_path, mosquitto, 3, model=MODELS / "digits_int8.tflite",
                                     frames=digit_frames, inference={"invoke_timeout_s": 0.5})
    try:
        import os
        old = daemon.worker_pid()
        os.kill(old, signal.SIGSTOP)
        stopped_at = time.time()
        sub.wait_for(lambda m: m.topic.endswith("/results") and m.received_at > stopped_at + 0.6,
                     timeout=10)
        assert "worker hung" in daemon.log_text()
        assert daemon.worker_pid() != old
    finally:
        assert daemon.stop() == 0
        sub.stop()


def test_broker_outage_queues_up_to_the_bound_and_counts_the_rest(
        tmp_path: Path, mosquitto_factory: Any, digit_frames: Path) -> None:
    broker = mosquitto_factory(persistence=True)
    sub = Subscriber(broker.port, "edged/#", client_id="outage-sub", clean_session=False).start()
    config = write_config(tmp_path / "edged.toml", base_config(
        broker.port, model=MODELS / "digits_int8.tflite", frames=digit_frames,
        inference={"max_fps": 20.0}, mqtt={"queue_size": 15, "qos_results": 1}))
    with DaemonProcess(config) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 5, timeout=30)
        broker.restart(down_for=3.0)
        sub.wait_for(lambda m: m.topic.endswith("/stats")
                     and orjson.loads(m.payload)["results_dropped"] > 0
                     and orjson.loads(m.payload)["broker"] == "connected", timeout=20)
        time.sleep(1.5)
        assert daemon.stop() == 0
    sub.stop()
    seqs = sorted({d["seq"] for d in results(sub.messages)})
    missing = set(range(seqs[0], seqs[-1] + 1)) - set(seqs)
    last_stats = [orjson.loads(m.payload) for m in sub.on("/stats")][-1]
    # Every result is either delivered or counted as dropped: none lost silently.
    assert len(missing) == last_stats["results_dropped"], (missing, last_stats)
    assert last_stats["results_dropped"] > 0


def test_video_file_deleted_and_restored_is_reopened(tmp_path: Path, mosquitto: Mosquitto
                                                     ) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (32, 32))
    for i in range(30):
        writer.write(np.full((32, 32, 3), i * 8, np.uint8))
    writer.release()
    saved = video.read_bytes()
    _got, daemon, sub = run_and_collect(
        tmp_path, mosquitto, 3, model=MODELS / "digits_int8.tflite", frames=tmp_path,
        source={"kind": "video", "uri": str(video), "loop": True, "reopen_backoff_s": 0.2,
                "reopen_backoff_max_s": 0.5})
    try:
        video.unlink()
        sub.wait_for(lambda m: m.topic.endswith("/stats")
                     and orjson.loads(m.payload)["source"] == "reopening", timeout=15)
        video.write_bytes(saved)
        restored = time.time()
        sub.wait_for(lambda m: m.topic.endswith("/results") and m.received_at > restored,
                     timeout=15)
    finally:
        assert daemon.stop() == 0
        sub.stop()


def test_mobilenet_on_shared_photos(tmp_path: Path, mosquitto: Mosquitto,
                                    shared_models: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(shared_models / "cat.bmp", photos / "1_cat.bmp")
    shutil.copy(shared_models / "grace_hopper.bmp", photos / "2_grace_hopper.bmp")
    got, daemon, sub = run_and_collect(
        tmp_path, mosquitto, 4, model=shared_models / "mobilenet_v2_1.0_224_quant.tflite",
        frames=photos, output={"max_values": 2000})
    try:
        tops = {d["seq"] % 2: int(np.argmax(d["outputs"][0]["data"])) for d in got}
        assert tops == {0: 286, 1: 653}
        out = got[0]["outputs"][0]
        assert out["quantization"] == {"kind": "per_tensor", "scale": 0.00390625, "zero_point": 0}
    finally:
        assert daemon.stop() == 0
        sub.stop()


def test_movenet_float_output_passes_through(tmp_path: Path, mosquitto: Mosquitto,
                                             shared_models: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(shared_models / "squat.bmp", photos)
    got, daemon, sub = run_and_collect(
        tmp_path, mosquitto, 1, model=shared_models / "movenet_single_pose_lightning_ptq.tflite",
        frames=photos)
    try:
        out = got[0]["outputs"][0]
        assert out["dtype"] == "float32" and out["quantization"] == {"kind": "none"}
        assert np.asarray(out["data"]).shape == (1, 1, 17, 3)
    finally:
        assert daemon.stop() == 0
        sub.stop()


def test_outputs_too_large_for_json_refuse_to_start_with_one_line(
        tmp_path: Path, mosquitto: Mosquitto, digit_frames: Path) -> None:
    config = write_config(tmp_path / "edged.toml", base_config(
        mosquitto.port, model=MODELS / "digits_int8.tflite", frames=digit_frames,
        output={"max_values": 5}))
    with DaemonProcess(config) as daemon:
        assert daemon.proc.wait(30) == 78
    errors = [line for line in daemon.log_text().splitlines() if "ERROR" in line]
    assert len(errors) == 1, daemon.log_text()
    assert "edged.toml: output.max_values: the model's outputs have 10 values" in errors[0]
    assert 'set output.encoding = "binary"' in errors[0]
