"""`edged listen` as a real subprocess against a real mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest
from broker import Mosquitto

from edged.mqtt.payload import Result, encode_result_binary, encode_result_json, outputs_from
from edged.mqtt.publisher import Publisher, PublisherSettings
from edged.numerics.tensors import TensorInfo

SCHEMA = Path(__file__).resolve().parents[2] / "edged" / "schemas" / "result-v1.schema.json"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto") as b:
        yield b


def listen(port: int, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "edged", "listen", "--port", str(port),
                             "--timeout", "20", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("listening on "), first
    return proc


def results(device: str) -> list[bytes]:
    info = TensorInfo(0, "logits", (1, 5), np.int8, scales=(0.125,), zero_points=(0,))
    data = np.array([[0.125, 0.875, 0.25, 0.0, 0.5]], np.float32)
    base = Result(device, 41, 1_700_000_000.0, "digits_int8.tflite", "cpu",
                  outputs_from([info], [data]), {"invoke": 900})
    second = Result(device, 42, 1_700_000_000.0, "digits_int8.tflite", "cpu",
                    outputs_from([info], [data]), {"invoke": 900})
    return [encode_result_json(base, published_at=1_700_000_000.012),
            encode_result_binary(second, published_at=1_700_000_000.02)]


def publish_all(port: int, device: str, payloads: list[bytes]) -> None:
    pub = Publisher(PublisherSettings(device_id=device, port=port))
    pub.start()
    try:
        assert pub.wait_connected(5)
        for p in payloads:
            pub.publish_result(p)
        assert pub.wait_idle(5)
    finally:
        pub.stop()


def test_readable_lines_for_json_and_binary_results_of_one_device(broker: Mosquitto) -> None:
    proc = listen(broker.port, "--device", "cam-1", "--count", "2")
    publish_all(broker.port, "cam-2", results("cam-2"))  # filtered out
    publish_all(broker.port, "cam-1", results("cam-1"))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("cam-1 seq=41  latency=12.0ms  digits_int8.tflite@cpu  "
                             "logits[1, 5]: top 1=0.875 4=0.5 2=0.25")
    assert "cam-1 seq=42  latency=20.0ms" in lines[1]
    assert "top 1=0.875 4=0.5 2=0.25" in lines[1]
    assert "fps" in lines[1]


def test_json_mode_prints_schema_valid_documents_for_both_encodings(broker: Mosquitto) -> None:
    proc = listen(broker.port, "--json", "--count", "2")
    publish_all(broker.port, "cam-1", results("cam-1"))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    docs = [orjson.loads(line) for line in out.splitlines()]
    for doc in docs:
        validator.validate(doc)
        assert doc["outputs"][0]["data"] == [[0.125, 0.875, 0.25, 0.0, 0.5]]
    assert [d["seq"] for d in docs] == [41, 42]


def test_status_topics_and_undecodable_payloads(broker: Mosquitto) -> None:
    proc = listen(broker.port, "--status", "--count", "1")
    subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-t", "edged/cam-1/results",
                    "-m", "not json"], check=True)
    publish_all(broker.port, "cam-1", results("cam-1")[:1])
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "edged/cam-1/status {" in out and '"online"' in out
    assert "edged/cam-1/results: result payload is neither binary v1 nor JSON" in err
    assert "Traceback" not in err


def test_unreachable_broker_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = Mosquitto(tmp_path / "never-started").port
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "edged", "listen", "--port", str(port)],
                          check=False, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 1
    assert proc.stderr == f"edged listen: cannot connect to 127.0.0.1:{port}: connection refused\n"
    assert time.monotonic() - t0 < 10


def test_refused_credentials_exit_1(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("wrong\n")
    with Mosquitto(tmp_path / "b", allow_anonymous=False, passwords={"u": "right"}) as broker:
        proc = subprocess.run([sys.executable, "-m", "edged", "listen", "--port",
                               str(broker.port), "--username", "u", "--password-file", str(pw),
                               "--timeout", "10"],
                              check=False, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        f"127.0.0.1:{broker.port}: broker refused the connection: not authorised")


def test_count_stops_at_count_when_a_burst_arrives_at_once(broker: Mosquitto) -> None:
    # Six results in one burst reach paho's thread in one read: it would go on
    # printing after the count was reached, until the disconnect landed.
    proc = listen(broker.port, "--device", "cam-9", "--count", "2")
    publish_all(broker.port, "cam-9", results("cam-9") * 3)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert [line.split()[3] for line in out.splitlines()] == ["seq=41", "seq=42"]
