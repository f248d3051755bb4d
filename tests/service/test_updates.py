"""Model updates (issue 20), through the real `edged run`, mosquitto and the real
worker: a signed update received in chunks (in any order), checked on its golden
frame, swapped in and kept after its trial; a wrong signature, a missing chunk and a
golden frame the model does not answer as announced each refused with nothing
changed; a worker that dies on the new model during the trial brings the old back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from broker import Mosquitto, Subscriber
from cameras_helpers import MODEL, config_text
from daemon_helpers import MODELS, DaemonProcess, base_config
from faults_helpers import build_stub_delegate
from reload_helpers import digit_folder, wait_until

from edged.inference.modelupdate import chunk
from edged.inference.signmodel import keygen, make_update

ROOT = Path(__file__).resolve().parents[2]
NEW = MODELS / "digits_uint8.tflite"
GOLDEN = next((ROOT / "tests/data/frames").glob("digit_7_*.png"))
BASE = "edged/test"
STATUS_SCHEMA = orjson.loads((ROOT / "edged/schemas/status-v1.schema.json").read_bytes())


def _golden_top() -> tuple[int, float]:
    """What digits_uint8 answers on the golden frame (32x32 RGB, its own input size)."""
    import cv2
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(NEW))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.set_tensor(inp["index"], cv2.imread(str(GOLDEN))[:, :, ::-1][None].copy())
    it.invoke()
    scale, zero = out["quantization"]
    scores = (it.get_tensor(out["index"])[0].astype(np.float64) - zero) * scale
    return int(np.argmax(scores)), float(scores.max())


class Fleet:
    """A key pair, a daemon taking updates signed with it, a subscriber."""

    def __init__(self, tmp_path: Path, port: int, **updates: Any) -> None:
        self.tmp = tmp_path
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.public = keygen(tmp_path / "keys")
        self.key = (tmp_path / "keys" / "update.pem").read_bytes()
        cfg = base_config(port, model=MODEL, frames=digit_folder(tmp_path, "digits"),
                          output={"decoder": "classification", "top_k": 1, "min_score": 0.0,
                                  "include_raw": False},
                          commands={"enabled": True, "allow_insecure": True,
                                    "overrides_file": str(tmp_path / "overrides.toml")},
                          updates={"enabled": True, "public_key": self.public,
                                   "models_dir": str(tmp_path / "models"), "trial_s": 3.0,
                                   "no_results_s": 5.0, "receive_timeout_s": 3.0, **updates})
        cfg["source"]["fps"] = 20.0
        self.path = tmp_path / "edged.toml"
        self.path.write_text(config_text(cfg, []))

    def update(self, version: str, *, label_id: int | None = None, key: bytes | None = None,
               model: Path = NEW) -> tuple[dict[str, Any], bytes]:
        top = _golden_top()
        bundle = self.tmp / f"{version}.bundle"
        a = make_update(key or self.key, model, GOLDEN, version=version,
                        label_id=top[0] if label_id is None else label_id, score=top[1],
                        out=bundle)
        doc = a.to_json()
        doc["chunk_size"] = 4096
        del doc["path"]
        return doc, bundle.read_bytes()


def _send(sub: Subscriber, doc: dict[str, Any], bundle: bytes,
          order: list[int] | None = None) -> float:
    """The announcement, then (once the device answers "receiving") the chunks."""
    sent = time.time()
    sub.client.publish(f"{BASE}/cmd/model", orjson.dumps(doc), qos=1).wait_for_publish(5)
    first = orjson.loads(sub.wait_for(lambda m: m.topic.endswith("/cmd/model/result")
                                      and m.received_at >= sent, timeout=10).payload)
    if first.get("state") != "receiving":
        return sent
    pieces = [bundle[i:i + 4096] for i in range(0, len(bundle), 4096)]
    for i in order if order is not None else range(len(pieces)):
        sub.client.publish(f"{BASE}/cmd/model/chunk", chunk(i, pieces[i]), qos=1)
    return sent


def _states(sub: Subscriber, after: float) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.on("/cmd/model/result")
            if m.received_at >= after]


def _wait_state(sub: Subscriber, daemon: DaemonProcess, after: float, state: str,
                timeout: float = 30) -> dict[str, Any]:
    wait_until(lambda: any(s.get("state") == state for s in _states(sub, after)), timeout,
               f"update state {state}", daemon.log_text)
    return next(s for s in _states(sub, after) if s.get("state") == state)


def _models(sub: Subscriber, after: float) -> set[str]:
    """The model files the results came from (an update's: <version>-<sha256>-<name>)."""
    return {orjson.loads(m.payload)["model"].rsplit("-", 1)[-1]
            for m in sub.on("/test/results") if m.received_at > after}


def test_a_signed_update_in_any_order_is_checked_swapped_and_kept(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    fleet = Fleet(tmp_path, mosquitto.port)
    doc, bundle = fleet.update("digits-v2")
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(fleet.path) as daemon:
        wait_until(lambda: bool(_models(sub, 0)), 20, "results", daemon.log_text)
        n = -(-len(bundle) // 4096)
        sent = _send(sub, doc, bundle, order=list(reversed(range(n))))
        assert _wait_state(sub, daemon, sent, "receiving")["ok"] is True
        trial = _wait_state(sub, daemon, sent, "trial")
        assert trial["ok"] is True and trial["sha256"] == doc["sha256"]
        swapped = time.time() + 0.5
        wait_until(lambda: _models(sub, swapped) == {NEW.name}, 20, "the new model's results",
                   daemon.log_text)
        assert _wait_state(sub, daemon, sent, "accepted")["version"] == "digits-v2"
        stats = sub.wait_for(lambda m: m.topic == f"{BASE}/stats" and b"accepted" in m.payload,
                             timeout=10)
        assert orjson.loads(stats.payload)["model_update"] == {
            "version": "digits-v2", "sha256": doc["sha256"], "name": NEW.name,
            "state": "accepted"}
        status = orjson.loads(sub.wait_for(lambda m: m.topic == f"{BASE}/status"
                                           and b"model_version" in m.payload).payload)
        jsonschema.validate(status, STATUS_SCHEMA)
        assert (status["model_version"], status["model_sha256"]) == ("digits-v2", doc["sha256"])
    restarted = time.time()
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(fleet.path) as daemon:
        wait_until(lambda: bool(_models(sub, restarted)), 20, "results", daemon.log_text)
        assert _models(sub, restarted) == {NEW.name}  # kept across a restart


def test_wrong_signature_missing_chunk_and_wrong_golden_are_refused(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    fleet = Fleet(tmp_path, mosquitto.port)
    keygen(tmp_path / "other")
    other = (tmp_path / "other" / "update.pem").read_bytes()
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(fleet.path) as daemon:
        wait_until(lambda: bool(_models(sub, 0)), 20, "results", daemon.log_text)
        doc, bundle = fleet.update("forged", key=other)
        sent = _send(sub, doc, bundle)
        got = sub.wait_for(lambda m: m.topic.endswith("/cmd/model/result")
                           and m.received_at >= sent).payload
        assert orjson.loads(got)["error"] == \
            "signature: not made with the key in updates.public_key"
        doc, bundle = fleet.update("short")
        n = -(-len(bundle) // 4096)
        sent = _send(sub, doc, bundle, order=[i for i in range(n) if i != 2])
        got = _wait_state(sub, daemon, sent, "incomplete")
        assert got["error"].startswith(f"incomplete: 1 of {n} chunks missing")
        doc, bundle = fleet.update("detector", model=MODELS / "detect_yolo_int8.tflite")
        sent = _send(sub, doc, bundle)
        got = _wait_state(sub, daemon, sent, "rejected")  # the config decodes classes
        assert got["error"].startswith("detect_yolo_int8.tflite: output.decoder: "), got
        doc, bundle = fleet.update("liar", label_id=(_golden_top()[0] + 1) % 10)
        sent = _send(sub, doc, bundle)
        got = _wait_state(sub, daemon, sent, "rejected")
        assert got["error"].startswith("golden frame: top result ")
        after = time.time()
        wait_until(lambda: bool(_models(sub, after)), 20, "results", daemon.log_text)
        assert _models(sub, after) == {MODEL.name}
    assert not (tmp_path / "overrides.toml").exists()


def test_a_worker_dying_on_the_new_model_during_its_trial_brings_the_old_back(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    fleet = Fleet(tmp_path, mosquitto.port, trial_s=20.0)
    doc, bundle = fleet.update("digits-v3")
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(fleet.path) as daemon:
        wait_until(lambda: bool(_models(sub, 0)), 20, "results", daemon.log_text)
        sent = _send(sub, doc, bundle)
        _wait_state(sub, daemon, sent, "trial")
        swapped = time.time() + 0.5
        wait_until(lambda: _models(sub, swapped) == {NEW.name}, 20, "the new model's results",
                   daemon.log_text)
        os.kill(daemon.worker_pid(), signal.SIGKILL)  # the new model's worker dies
        got = _wait_state(sub, daemon, sent, "rolled_back")
        assert got["ok"] is False and got["error"].startswith(
            "rolled back: the worker restarted 1 time(s) on it")
        back = time.time() + 0.5
        wait_until(lambda: _models(sub, back) == {MODEL.name}, 20, "the old model's results",
                   daemon.log_text)
        assert daemon.proc.poll() is None


def test_the_push_script_rolls_an_update_out_and_reports_it(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    fleet = Fleet(tmp_path, mosquitto.port, trial_s=2.0)
    doc, _bundle = fleet.update("digits-v4")
    announcement = tmp_path / "digits-v4.json"
    announcement.write_bytes(orjson.dumps(doc))
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(fleet.path) as daemon:
        wait_until(lambda: bool(_models(sub, 0)), 20, "results", daemon.log_text)
        push = subprocess.run(
            [sys.executable, str(ROOT / "scripts/push_model.py"), "--port", str(mosquitto.port),
             "--wait", "30", str(announcement), str(tmp_path / "digits-v4.bundle"), "test"],
            check=False, capture_output=True, text=True, timeout=60)
        assert push.returncode == 0, push.stdout + push.stderr
        assert push.stdout.splitlines()[-1] == "test: accepted"


def test_a_retained_fleet_announcement_reaches_a_device_that_comes_later_once(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Two devices share a key; the push script announces once, retained, on
    edged/fleet/model and sends each device its chunks when it answers "receiving".
    The second device starts after the announcement; a restart does not take the
    update again (the retained announcement comes back at every connect)."""
    one = Fleet(tmp_path / "one", mosquitto.port, trial_s=1.0)
    two = Fleet(tmp_path / "two", mosquitto.port, trial_s=1.0)
    for fleet, device in ((one, "pi-1"), (two, "pi-2")):
        (fleet.tmp / "keys" / "update.pem").write_bytes(one.key)
        fleet.path.write_text(fleet.path.read_text().replace(fleet.public, one.public)
                              .replace('id = "test"', f'id = "{device}"'))
    doc, _ = one.update("digits-v5")
    announcement = tmp_path / "digits-v5.json"
    announcement.write_bytes(orjson.dumps(doc))
    with DaemonProcess(one.path) as first:
        push = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts/push_model.py"), "--port",
             str(mosquitto.port), "--fleet", "--wait", "40", str(announcement),
             str(one.tmp / "digits-v5.bundle"), "pi-1", "pi-2"],
            stdout=subprocess.PIPE, text=True)
        time.sleep(3)
        with DaemonProcess(two.path) as second:
            out, _ = push.communicate(timeout=60)
            assert push.returncode == 0, out + first.log_text() + second.log_text()
            assert out.splitlines()[-2:] == ["pi-1: accepted", "pi-2: accepted"]
            second.stop()
        with Subscriber(mosquitto.port, "edged/#") as sub:
            restarted = time.time()
            with DaemonProcess(two.path) as again:
                got = orjson.loads(sub.wait_for(
                    lambda m: m.topic == "edged/pi-2/cmd/model/result"
                    and m.received_at >= restarted, timeout=20).payload)
                assert got["state"] == "current", again.log_text()
    with Subscriber(mosquitto.port, "edged/fleet/model") as sub:
        sub.client.publish("edged/fleet/model", b"", qos=1, retain=True).wait_for_publish(5)


def test_the_golden_frame_answered_wrong_on_the_accelerator_rolls_back_edgetpu_stand_in(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The update passes its golden frame on the CPU, then runs it again on the device's
    Edge TPU (the stub delegate, which here claims the graph and leaves the outputs
    untouched, as an accelerator computing garbage would): the answer differs from the
    announced one, so the previous model comes back."""
    stub = build_stub_delegate(tmp_path)
    fleet = Fleet(tmp_path, mosquitto.port, trial_s=20.0)
    fleet.path.write_text(fleet.path.read_text().replace(
        "[inference]\n", f'[inference]\ndelegate = "edgetpu"\nedgetpu_library = "{stub}"\n'
        'fallback = "fail"\n', 1))
    doc, bundle = fleet.update("digits-v6")
    env = {"STUB_DELEGATE_INVOKE_US": "100"}
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(fleet.path, env) as daemon:
        wait_until(lambda: bool(_models(sub, 0)), 20, "results", daemon.log_text)
        sent = _send(sub, doc, bundle)
        _wait_state(sub, daemon, sent, "trial")  # the CPU check passed
        got = _wait_state(sub, daemon, sent, "rolled_back")
        assert got["error"].startswith("rolled back: on the device: golden frame: top "
                                       "result "), got
        back = time.time() + 0.5
        wait_until(lambda: _models(sub, back) == {MODEL.name}, 20, "the old model's results",
                   daemon.log_text)


def test_an_update_already_on_the_device_is_taken_by_path(tmp_path: Path,
                                                          mosquitto: Mosquitto) -> None:
    fleet = Fleet(tmp_path, mosquitto.port, trial_s=1.0)
    doc, _ = fleet.update("digits-v7")
    doc["path"] = str(tmp_path / "digits-v7.bundle")  # copied there by other means
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(fleet.path) as daemon:
        wait_until(lambda: bool(_models(sub, 0)), 20, "results", daemon.log_text)
        sent = time.time()
        sub.client.publish(f"{BASE}/cmd/model", orjson.dumps(doc), qos=1).wait_for_publish(5)
        assert _wait_state(sub, daemon, sent, "accepted")["sha256"] == doc["sha256"]
        after = time.time()
        wait_until(lambda: _models(sub, after) == {NEW.name}, 20, "the new model's results",
                   daemon.log_text)
    assert (tmp_path / "digits-v7.bundle").exists()  # the file given is left where it was
