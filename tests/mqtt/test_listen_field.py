"""`edged listen` as a field tool, against a real daemon and a real mosquitto."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
from broker import Mosquitto
from daemon_helpers import MODELS, DaemonProcess, base_config, write_config
from fleet_helpers import copy_frames

from edged.mqtt.listen import decoded_text


def listen(port: int, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "edged", "listen", "--port", str(port),
                             "--timeout", "40", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("listening on "), first
    return proc


LINE = re.compile(r"^ *(\d+\.\d) fps  cam-1 seq=(\d+)  latency=(\d+\.\d)ms  "
                  r"digits_int8\.tflite@cpu  (\d) (\d\.\d\d)(, \d \d\.\d\d)*$")


def test_live_lines_json_and_filters_on_a_running_daemon(tmp_path: Path,
                                                         mosquitto: Mosquitto) -> None:
    cfg = base_config(mosquitto.port, model=MODELS / "digits_int8.tflite",
                      frames=copy_frames(tmp_path / "frames"), device="cam-1",
                      output={"decoder": "classification", "top_k": 2})
    live = listen(mosquitto.port, "--device", "cam-1", "--kind", "classification",
                  "--count", "8")
    as_json = listen(mosquitto.port, "--json", "--kind", "classification", "--count", "3")
    other = listen(mosquitto.port, "--kind", "detection", "--timeout", "1")  # filtered out
    other_device = listen(mosquitto.port, "--device", "cam-2", "--timeout", "1")
    with DaemonProcess(write_config(tmp_path / "edged.toml", cfg)) as daemon:
        out, err = live.communicate(timeout=60)
        json_out, json_err = as_json.communicate(timeout=60)
        assert daemon.stop() == 0
    assert live.returncode == 0 and as_json.returncode == 0, err + json_err
    lines = out.splitlines()
    assert len(lines) == 8, out
    for line in lines:
        m = LINE.match(line)
        assert m, line
    # fps is a running estimate per device: 0 for the first line, then real.
    assert float(LINE.match(lines[-1]).group(1)) > 0  # type: ignore[union-attr]
    docs = [orjson.loads(line) for line in json_out.splitlines()]
    assert len(docs) == 3
    for doc in docs:
        assert doc["device_id"] == "cam-1" and doc["decoded"]["kind"] == "classification"
        assert doc["outputs"][0]["shape"] == [1, 10]
    for proc in (other, other_device):
        o, e = proc.communicate(timeout=30)
        assert proc.returncode == 0 and o == "", e


def test_share_group_needs_a_plain_name(mosquitto: Mosquitto) -> None:
    proc = subprocess.run([sys.executable, "-m", "edged", "listen", "--port",
                           str(mosquitto.port), "--share", "a/b"],
                          capture_output=True, text=True, timeout=20, check=False)
    assert proc.returncode == 2
    assert proc.stderr == "edged listen: --share 'a/b': a group name has no '/', '+' or '#'\n"


def test_decoded_answers_in_a_few_words() -> None:
    assert decoded_text({"kind": "classification", "classes": [
        {"label_id": 7, "label": None, "score": 0.981}, {"label_id": 1, "label": "one",
                                                         "score": 0.01}]}) == "7 0.98, one 0.01"
    assert decoded_text({"kind": "classification", "classes": []}) == "no class"
    assert decoded_text({"kind": "detection", "detections": [
        {"label_id": 0, "label": "person", "score": 0.9}, {"label_id": 2, "label": "car",
                                                           "score": 0.8},
        {"label_id": 0, "label": "person", "score": 0.7}]}) == "3 objects: person x2, car x1"
    assert decoded_text({"kind": "detection", "detections": []}) == "0 objects"
    assert decoded_text({"kind": "detection", "detections": [  # a cascade's answers
        {"label_id": 15, "label": "bird", "score": 0.9,
         "classes": [{"label_id": 802, "label": "robin", "score": 0.874}]},
        {"label_id": 15, "label": "bird", "score": 0.3}]}) == \
        "2 objects: bird x2; classified: bird robin 0.87"
    assert decoded_text({"kind": "pose", "poses": [{"score": 0.456}]}) == "pose 0.46"
    assert decoded_text({"kind": "segmentation", "classes": [
        {"label_id": 15, "label": "person", "fraction": 0.414}]}) == "person 41%"
