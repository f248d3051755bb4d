"""The Coral layout docs/coral.md recommends, without a Coral: the CPU model runs.

`model.edgetpu_path` holds the Edge TPU build, `model.path` the CPU build of
the same model, `inference.fallback = "cpu"`. When libedgetpu is missing, or
the Edge TPU cannot be opened (the stub delegate stands in for libedgetpu:
STUB_DELEGATE_FAIL=1 makes its create fail, as libedgetpu does with no
device), edged runs `model.path` on the CPU and says so once.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
from broker import Mosquitto, retained
from daemon_helpers import DaemonProcess, base_config, write_config
from faults_helpers import build_stub_delegate, is_stats, subscribed
from fleet_helpers import render

TPU_MODEL = "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
CPU_MODEL = "mobilenet_v1_0.25_128_quant.tflite"
NO_CORAL = ("Edge TPU delegate: no USB or PCIe Edge TPU found (device 'first found'): check "
            "it is plugged in (lsusb lists 18d1:9302 or 1a6e:089a; PCIe shows /dev/apex_0), "
            "then check permissions: plugdev/apex groups and the udev rules")


def coral_config(tmp_path: Path, port: int, shared: Path, **inference: Any) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    shutil.copy(shared / "cat.bmp", photos / "cat.bmp")
    cfg = base_config(port, model=shared / CPU_MODEL, frames=photos,
                      inference={"delegate": "edgetpu", "fallback": "cpu", **inference},
                      output={"max_values": 2000})
    cfg["model"]["edgetpu_path"] = str(shared / TPU_MODEL)
    return write_config(tmp_path / "edged.toml", cfg)


def warnings_of(log: str) -> list[str]:
    return [line.split(" WARNING ", 1)[1] for line in log.splitlines() if " WARNING " in line]


def runs_cpu_model(config: Path, port: int, env: dict[str, str] | None = None,
                   fallback: str = "") -> str:
    """Run the daemon until a CPU result arrives; its log. With `fallback`, the
    status and stats topics (where subscribers look) must say that line too."""
    with subscribed(port) as sub, DaemonProcess(config, env=env) as daemon:
        try:
            got = sub.wait_for(lambda m: m.topic.endswith("/results"), timeout=30)
        except TimeoutError:
            raise AssertionError(daemon.log_text()) from None
        doc = orjson.loads(got.payload)
        assert (doc["model"], doc["delegate"]) == (CPU_MODEL, "cpu")
        if fallback:
            status = sub.wait_for(lambda m: m.topic.endswith("/status")
                                  and "delegate" in orjson.loads(m.payload), timeout=10)
            said = orjson.loads(status.payload)
            assert (said["state"], said["reason"], said["delegate"], said["fallback"]) == (
                "online", "connected", "cpu", fallback), said
            stats = sub.wait_for(is_stats(lambda f: f["delegate"] == "cpu"), timeout=10)
            assert orjson.loads(stats.payload)["fallback"] == fallback
        assert daemon.stop() == 0
    if fallback:
        offline = retained(port, "edged/test/status")
        assert offline is not None
        assert orjson.loads(offline.payload)["fallback"] == fallback  # kept when it stops
    return daemon.log_text()


def test_edgetpu_path_without_libedgetpu_runs_model_path_on_the_cpu(
        tmp_path: Path, mosquitto: Mosquitto, shared_models: Path) -> None:
    library = "/nonexistent/libedgetpu.so.1"
    config = coral_config(tmp_path, mosquitto.port, shared_models, edgetpu_library=library)
    line = (f"Edge TPU delegate: {library} not found: the Edge TPU runtime is not installed "
            f"(apt install libedgetpu1-std); running {CPU_MODEL} on the CPU instead "
            "(fallback = cpu)")
    log = runs_cpu_model(config, mosquitto.port, fallback=line)
    assert warnings_of(log).count(f"edged: {line}") == 1, log
    assert log.count(line) == 1, log  # said once: not by the worker as well


def test_edgetpu_path_without_a_coral_runs_model_path_on_the_cpu_edgetpu_stand_in(
        tmp_path: Path, mosquitto: Mosquitto, shared_models: Path) -> None:
    stub = build_stub_delegate(tmp_path)
    config = coral_config(tmp_path, mosquitto.port, shared_models, edgetpu_library=str(stub))
    config.write_text(config.read_text() + "[homeassistant]\nenabled = true\n")
    line = f"{NO_CORAL}; running {CPU_MODEL} on the CPU instead (fallback = cpu)"
    log = runs_cpu_model(config, mosquitto.port, env={"STUB_DELEGATE_FAIL": "1"},
                         fallback=line)
    assert warnings_of(log).count(f"edged: {line}") == 1, log
    assert log.count(line) == 1, log
    # Home Assistant's "CPU fallback" problem sensor, rendered against the real stats.
    discovery = retained(mosquitto.port, "homeassistant/device/edged_test/config")
    stats = retained(mosquitto.port, "edged/test/stats")
    assert discovery is not None and stats is not None
    entity = orjson.loads(discovery.payload)["cmps"]["fallback"]
    assert render(entity["val_tpl"], stats.payload) == "ON"
    assert orjson.loads(render(entity["json_attr_tpl"], stats.payload)) == {"reason": line}


def test_a_cpu_model_without_a_coral_is_said_once_edgetpu_stand_in(
        tmp_path: Path, mosquitto: Mosquitto, shared_models: Path) -> None:
    """No edgetpu_path: model.path itself goes to the CPU; the line is said once too."""
    stub = build_stub_delegate(tmp_path)
    config = coral_config(tmp_path, mosquitto.port, shared_models, edgetpu_library=str(stub))
    text = config.read_text().replace(f'edgetpu_path = "{shared_models / TPU_MODEL}"\n', "")
    config.write_text(text)
    log = runs_cpu_model(config, mosquitto.port, env={"STUB_DELEGATE_FAIL": "1"})
    line = f"{NO_CORAL}; running on the CPU instead (fallback = cpu)"
    assert log.count(line) == 1, log
