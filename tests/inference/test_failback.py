"""Back to the Edge TPU when it returns (issue 19), through the real daemon and mosquitto.

The stub delegate stands in for libedgetpu (no Coral exists here), and a fake
sysfs tree under EDGED_HARDWARE_ROOT for the USB bus: the "Coral" is plugged
in when its sysfs entry exists (STUB_DELEGATE_DEVICE points the stub at the
same entry, so the daemon's scan and the delegate agree, as on a device).
Pulling a real Coral out makes libedgetpu abort the worker; here the test
kills it. The stub claims no nodes: "on the Edge TPU" the model still runs on
the CPU kernels, and the results name the delegate edgetpu.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from broker import Mosquitto, Received
from daemon_helpers import MODELS, DaemonProcess, base_config, write_config
from faults_helpers import (
    build_stub_delegate,
    copy_digit_frames,
    is_stats,
    kill_quietly,
    record_figure,
    subscribed,
    wait_until,
)

from edged.system.hardware import edgetpu_present, usb_edgetpus

MODEL = MODELS / "digits_int8.tflite"
BACK = "back on the Edge TPU (first found): worker {pid} runs digits_int8.tflite on edgetpu again"


def plug(root: Path, port: str = "2-1", product: str = "9302", speed: str = "5000") -> Path:
    """A Coral USB Accelerator's sysfs entry and device node under a fake root."""
    dev = root / "sys/bus/usb/devices" / port
    dev.mkdir(parents=True, exist_ok=True)
    vendor = "18d1" if product == "9302" else "1a6e"
    for name, value in (("idVendor", vendor), ("idProduct", product), ("busnum", "2"),
                        ("devnum", "3"), ("speed", speed)):
        (dev / name).write_text(value + "\n")
    node = root / "dev/bus/usb/002/003"
    node.parent.mkdir(parents=True, exist_ok=True)
    node.touch()
    return dev


def unplug(entry: Path) -> None:
    shutil.rmtree(entry, ignore_errors=True)


def test_edgetpu_presence_from_a_fake_sysfs_tree(tmp_path: Path) -> None:
    assert not edgetpu_present("", tmp_path) and usb_edgetpus(tmp_path) == []
    entry = plug(tmp_path, product="089a", speed="480")  # before its firmware is loaded
    (tpu,) = usb_edgetpus(tmp_path)
    assert (tpu.vendor, tpu.firmware_loaded, tpu.speed_mbps) == ("1a6e", False, 480.0)
    assert tpu.node == tmp_path / "dev/bus/usb/002/003"
    assert edgetpu_present("", tmp_path) and edgetpu_present("usb", tmp_path)
    assert edgetpu_present("usb:0", tmp_path) and not edgetpu_present("usb:1", tmp_path)
    assert not edgetpu_present("pci", tmp_path)
    (tmp_path / "dev/apex_0").touch()
    assert edgetpu_present("pci:0", tmp_path) and edgetpu_present(":1", tmp_path)
    unplug(entry)
    assert edgetpu_present("", tmp_path) and not edgetpu_present("usb", tmp_path)


def _start(tmp_path: Path, port: int, **inference: Any) -> tuple[Path, dict[str, str], Path]:
    stub = build_stub_delegate(tmp_path)
    root = tmp_path / "hw"
    root.mkdir()
    cfg = base_config(port, model=MODEL, frames=copy_digit_frames(tmp_path / "frames"),
                      inference={"delegate": "edgetpu", "edgetpu_library": str(stub),
                                 "fallback": "cpu", "cpu_fallback_after": 1,
                                 "failback_interval_s": 1.0, **inference})
    entry = root / "sys/bus/usb/devices/2-1"
    env = {"EDGED_HARDWARE_ROOT": str(root), "STUB_DELEGATE_DEVICE": str(entry)}
    return write_config(tmp_path / "edged.toml", cfg), env, root


def _delegates(messages: list[Received], after: float = 0.0) -> list[str]:
    return [orjson.loads(m.payload)["delegate"] for m in messages
            if m.topic.endswith("/results") and m.received_at > after]


def _on(sub: Any, delegate: str, after: float, timeout: float = 30.0) -> dict[str, Any]:
    got = sub.wait_for(lambda m: m.topic.endswith("/results") and m.received_at > after
                       and orjson.loads(m.payload)["delegate"] == delegate, timeout=timeout)
    doc: dict[str, Any] = orjson.loads(got.payload)
    return doc


def _status(sub: Any, after: float, pred: Any) -> dict[str, Any]:
    got = sub.wait_for(lambda m: m.topic.endswith("/status") and m.received_at > after
                       and pred(orjson.loads(m.payload)), timeout=20)
    doc: dict[str, Any] = orjson.loads(got.payload)
    return doc


def test_back_on_the_coral_when_it_returns_and_again_after_a_relapse_edgetpu_stand_in(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    config, env, root = _start(tmp_path, mosquitto.port)
    with subscribed(mosquitto.port) as sub, DaemonProcess(config, env=env) as daemon:
        _on(sub, "cpu", 0.0)  # no Coral at start: the CPU
        _status(sub, 0.0, lambda s: s.get("delegate") == "cpu" and s.get("fallback"))
        plugged = time.time()
        entry = plug(root)
        _on(sub, "edgetpu", plugged, timeout=20)
        back_at = sub.wait_for(lambda m: m.topic.endswith("/results") and m.received_at > plugged
                               and orjson.loads(m.payload)["delegate"] == "edgetpu").received_at
        status = _status(sub, plugged, lambda s: s.get("delegate") == "edgetpu")
        assert status["fallback"] == "", status
        stats = orjson.loads(sub.wait_for(is_stats(lambda s: s["failbacks"] == 1),
                                          timeout=10).payload)
        assert stats["fallback"] == "" and stats["failback_tries"] == 1, stats
        wait_until(lambda: BACK.format(pid=daemon.worker_pid()) in daemon.log_text(), 10,
                   "the fail-back line")
        # Pulled out: libedgetpu aborts the worker; the CPU again, then the Coral again.
        unplug(entry)
        pulled = time.time()
        kill_quietly(daemon.worker_pid(), signal.SIGABRT)
        _on(sub, "cpu", pulled)
        replugged = time.time()
        plug(root)
        _on(sub, "edgetpu", replugged, timeout=30)
        sub.wait_for(is_stats(lambda s: s["failbacks"] == 2), timeout=20)
        assert daemon.stop() == 0
    seqs = [orjson.loads(m.payload)["seq"] for m in sub.on("/results")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # The switch itself: results keep coming from the CPU until the handover.
    arrivals = [m.received_at for m in sub.on("/results") if plugged < m.received_at < pulled]
    gap = max(b - a for a, b in itertools.pairwise(arrivals))
    record_figure("failback", plugged_to_edgetpu_s=round(back_at - plugged, 2),
                  longest_result_gap_s=round(gap, 3))
    final = orjson.loads(sub.on("/stats")[-1].payload)
    assert final["frames_lost"] <= 2, final  # only what the aborted worker held
    log = daemon.log_text()
    assert log.count("is there: starting a worker on it beside the CPU one") == 2, log
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "worker killed by SIGABRT" in errors[0], errors


def test_a_coral_that_appears_but_dies_before_a_result_keeps_the_cpu_edgetpu_stand_in(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The device is there, but its worker aborts while loading (a bad USB link): the
    CPU worker carries on undisturbed, tries back off, and it switches once mended."""
    config, env, root = _start(tmp_path, mosquitto.port)
    broken = tmp_path / "broken-link"
    broken.touch()
    env["STUB_DELEGATE_ABORT_IF_EXISTS"] = str(broken)
    with subscribed(mosquitto.port) as sub, DaemonProcess(config, env=env) as daemon:
        _on(sub, "cpu", 0.0)
        plug(root)
        sub.wait_for(is_stats(lambda s: s["failback_tries"] >= 2), timeout=30)
        trying = time.time()
        time.sleep(2.0)
        assert set(_delegates(sub.messages, trying)) == {"cpu"}
        assert len(_delegates(sub.messages, trying)) >= 20  # 30 fps less the tries' share
        broken.unlink()
        _on(sub, "edgetpu", time.time(), timeout=40)
        assert daemon.stop() == 0
    log = daemon.log_text()
    said = [line for line in log.splitlines() if "did not work yet" in line]
    assert said and " WARNING " in said[0] and all(" INFO " in s for s in said[1:]), said
    assert ("the Edge TPU (first found) did not work yet (worker killed by SIGABRT while "
            "loading the model): staying on the CPU, next try in 2 s") in said[0], said
    final = orjson.loads(sub.on("/stats")[-1].payload)
    assert final["worker_restarts"] == 0 and final["frames_lost"] == 0, final


@pytest.mark.slow
def test_a_flapping_coral_switches_at_most_once_an_interval_edgetpu_stand_in(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Plugged and pulled every 0.4 s for 20 s (the worker aborted at each pull): the
    waits double (1, 2, 4, 8 s...), so a handful of switches, not fifty."""
    config, env, root = _start(tmp_path, mosquitto.port)
    with subscribed(mosquitto.port) as sub, DaemonProcess(config, env=env) as daemon:
        _on(sub, "cpu", 0.0)
        end = time.monotonic() + 20.0
        entry = root / "sys/bus/usb/devices/2-1"
        while time.monotonic() < end:
            plug(root)
            time.sleep(0.4)
            unplug(entry)
            got = sub.on("/results")
            if got and orjson.loads(got[-1].payload)["delegate"] == "edgetpu":
                kill_quietly(daemon.worker_pid(), signal.SIGABRT)
            time.sleep(0.4)
        plug(root)
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    final = orjson.loads(sub.on("/stats")[-1].payload)
    record_figure("flapping_coral", failbacks=final["failbacks"],
                  tries=final["failback_tries"], results=final["results_published"])
    assert final["failbacks"] <= 5, final  # 1 + 2 + 4 + 8 s of waits in 20 s
    assert final["failback_tries"] <= 8, final
    assert final["results_published"] > 300, final  # 30 fps throughout, less the switches
    assert len(daemon.log_text().splitlines()) < 120, daemon.log_text()


def test_failback_off_stays_on_the_cpu_edgetpu_stand_in(tmp_path: Path,
                                                        mosquitto: Mosquitto) -> None:
    config, env, root = _start(tmp_path, mosquitto.port, failback=False)
    with subscribed(mosquitto.port) as sub, DaemonProcess(config, env=env) as daemon:
        _on(sub, "cpu", 0.0)
        plug(root)
        plugged = time.time()
        time.sleep(3.0)
        assert set(_delegates(sub.messages, plugged)) == {"cpu"}
        assert daemon.stop() == 0
    assert "beside the CPU one" not in daemon.log_text()
    assert os.environ.get("EDGED_HARDWARE_ROOT") is None  # the daemon's own, not ours
