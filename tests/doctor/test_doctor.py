"""`edged doctor` against fake sysfs/dev trees (issue 19): each check's line is its API.

The trees are what the kernel shows on a Pi with a Coral (paths as in
Documentation/ABI and the gasket/apex driver); the whole command also runs as
a real process against a real mosquitto.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from broker import Mosquitto
from daemon_helpers import FRAMES, MODELS, base_config, write_config

from edged.doctor.checks import (
    Wanted,
    check_camera,
    check_devices,
    check_libedgetpu,
    check_permissions,
    check_power,
    check_temperatures,
    check_usb_speed,
)
from edged.system.health import Throttled, parse_throttled, read_throttled

EDGETPU = Wanted("edgetpu", "", "libedgetpu.so.1", "cpu")
EDGETPU_ONLY = Wanted("edgetpu", "", "libedgetpu.so.1", "fail")


def usb_coral(root: Path, product: str = "9302", speed: str = "5000") -> Path:
    dev = root / "sys/bus/usb/devices/2-1"
    dev.mkdir(parents=True)
    vendor = "18d1" if product == "9302" else "1a6e"
    for name, value in (("idVendor", vendor), ("idProduct", product), ("busnum", "2"),
                        ("devnum", "4"), ("speed", speed)):
        (dev / name).write_text(value + "\n")
    node = root / "dev/bus/usb/002/004"
    node.parent.mkdir(parents=True)
    node.touch()
    return node


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_no_coral_is_a_warning_with_the_cpu_fallback_and_a_failure_without(
        tmp_path: Path) -> None:
    (check,) = check_devices(EDGETPU, tmp_path)
    assert check.line() == (
        "warn  edge tpu: no USB Accelerator (1a6e:089a or 18d1:9302) and no /dev/apex_N; fix: "
        "plug it into a USB 3 port directly on the board; for PCIe, install the gasket/apex "
        "driver (docs/coral.md section 1)")
    assert check_devices(EDGETPU_ONLY, tmp_path)[0].level == "FAIL"
    assert check_devices(Wanted(), tmp_path)[0].level == "info"  # delegate = cpu


def test_usb_coral_before_and_after_its_firmware(tmp_path: Path) -> None:
    before = tmp_path / "before"
    usb_coral(before, product="089a")
    (check,) = check_devices(EDGETPU, before)
    assert check.line() == (
        f"ok    edge tpu: USB Accelerator 1a6e:089a at {before}/dev/bus/usb/002/004 (firmware "
        "not loaded yet: libedgetpu loads it on first use, then it shows as 18d1:9302)")
    after = tmp_path / "after"
    usb_coral(after)
    assert check_devices(EDGETPU, after)[0].found.endswith("(firmware loaded)")


def test_usb2_link_is_a_warning(tmp_path: Path) -> None:
    node = usb_coral(tmp_path, speed="480")
    (check,) = check_usb_speed(tmp_path)
    assert check.line() == (
        f"warn  usb link: {node}: USB 2 (480 Mb/s): every invoke's transfers are several times "
        "slower than on USB 3; fix: plug it into a USB 3 (blue) port directly on the board, not "
        "through a hub; use the cable that came with it")
    fast = tmp_path / "fast"
    usb_coral(fast, speed="5000")
    assert check_usb_speed(fast)[0].level == "ok"


def test_a_node_this_user_cannot_open_names_the_group_and_the_rule(tmp_path: Path) -> None:
    node = usb_coral(tmp_path)
    (check,) = check_permissions(EDGETPU_ONLY, tmp_path, access=lambda p: False)
    assert check.line() == (
        f"FAIL  permissions: {node} is not readable and writable by this user; fix: install the "
        "udev rule (scripts/install.sh writes /etc/udev/rules.d/99-edged-coral.rules), then add "
        "the user to the plugdev group (the service has it: SupplementaryGroups), log in again "
        "and replug")
    write(tmp_path, "etc/udev/rules.d/99-edged-coral.rules", "")
    (check,) = check_permissions(EDGETPU, tmp_path, access=lambda p: False)
    assert check.level == "warn" and "install the udev rule" not in check.fix
    assert check_permissions(EDGETPU, tmp_path, access=lambda p: True)[0].level == "ok"


def test_pcie_edge_tpu_above_its_first_trip_point(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/apex_0").touch()
    for name, milli in (("temp", "86250"), ("trip_point0_temp", "85000"),
                        ("trip_point1_temp", "90000"), ("trip_point2_temp", "95000"),
                        ("hw_temp_warn2", "104800")):
        write(tmp_path, f"sys/class/apex/apex_0/{name}", milli + "\n")
    write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "54768\n")
    assert [c.line() for c in check_devices(EDGETPU, tmp_path)] == [
        f"ok    edge tpu: PCIe Edge TPU {tmp_path}/dev/apex_0"]
    soc, apex = check_temperatures(tmp_path)
    assert soc.line() == "ok    soc temperature: 54.8 °C"
    assert apex.line() == (
        "warn  edge tpu temperature: apex_0 86.2 °C (trip points 85, 90, 95 °C; shutdown at "
        "104.8 °C): its clock is throttled; fix: cool the M.2/PCIe card (a heatsink on it, "
        "airflow)")


@pytest.mark.parametrize(("word", "now", "since_boot"), [
    (0x0, (), ()),
    (0x1, ("under-voltage",), ()),
    (0x2, ("arm frequency capped",), ()),
    (0x4, ("throttled",), ()),
    (0x8, ("soft temperature limit",), ()),
    (0x50000, (), ("under-voltage", "throttled")),
    (0x50005, ("under-voltage", "throttled"), ("under-voltage", "throttled")),
    (0xF000F, ("under-voltage", "arm frequency capped", "throttled", "soft temperature limit"),
     ("under-voltage", "arm frequency capped", "throttled", "soft temperature limit")),
])
def test_get_throttled_bits(word: int, now: tuple[str, ...], since_boot: tuple[str, ...]
                            ) -> None:
    decoded = Throttled(word)
    assert (decoded.now, decoded.since_boot) == (now, since_boot)
    assert parse_throttled(f"throttled=0x{word:x}\n") == decoded  # vcgencmd's form
    assert parse_throttled(f"{word:x}\n") == decoded  # sysfs's


def test_undervoltage_from_sysfs_says_what_and_how_to_fix_it(tmp_path: Path) -> None:
    assert check_power(read_throttled(tmp_path)).level == "info"  # not a Pi
    write(tmp_path, "sys/devices/platform/soc/soc:firmware/get_throttled", "50005\n")
    assert check_power(read_throttled(tmp_path)).line() == (
        "warn  power: now: under-voltage, throttled; since boot: under-voltage, throttled "
        "(get_throttled=0x50005); fix: use the official supply (5.1 V 3 A for a Pi 4, 5 V 5 A "
        "for a Pi 5) and a short cable; a Coral on a weak port wants a powered USB hub")
    assert check_power(Throttled(0)).line() == (
        "ok    power: no under-voltage or throttling since boot")
    assert "cooling" in check_power(Throttled(0x80008)).fix


def test_libedgetpu_found_missing_and_a_known_bad_runtime_pair(tmp_path: Path) -> None:
    missing = check_libedgetpu(EDGETPU, tmp_path, {}, "ai_edge_litert 2.3.0", environ={})
    assert missing.line() == ("warn  libedgetpu: libedgetpu.so.1 not found; fix: apt install "
                              "libedgetpu1-std (docs/coral.md section 1)")
    assert check_libedgetpu(EDGETPU_ONLY, tmp_path, {}, "x 1", environ={}).level == "FAIL"
    assert check_libedgetpu(Wanted(), tmp_path, {}, "x 1", environ={}).level == "info"
    write(tmp_path, "usr/lib/aarch64-linux-gnu/libedgetpu.so.1", "")
    bad = check_libedgetpu(EDGETPU, tmp_path, {"libedgetpu1-std": "16.0"},
                           "tflite_runtime 2.14.0", environ={})
    assert bad.line().startswith(
        "warn  libedgetpu: usr/lib/aarch64-linux-gnu/libedgetpu.so.1 (libedgetpu1-std 16.0) "
        "with tflite_runtime 2.14.0: known to crash")
    good = check_libedgetpu(EDGETPU, tmp_path, {"libedgetpu1-std": "16.0tf2.14.1-1"},
                            "tflite_runtime 2.14.0", environ={})
    assert good.level == "ok", good


def test_camera_nodes(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/video2").touch()
    assert check_camera("v4l2", "", tmp_path)[0].line() == (
        "warn  camera: /dev/video0 not found (seen: video2); edged retries until it appears; "
        "fix: plug the camera in, or set source.uri to one of the devices seen (v4l2-ctl "
        "--list-devices names them)")
    assert check_camera("v4l2", "2", tmp_path)[0].level == "ok"
    assert check_camera("picamera2", "", tmp_path)[0].level == "warn"
    assert check_camera("folder", "/x", tmp_path) == []


def _doctor(config: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", "doctor", str(config)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "EDGED_HARDWARE_ROOT": str(root)})


def test_the_command_against_a_real_broker_with_a_usb2_coral(tmp_path: Path,
                                                             mosquitto: Mosquitto) -> None:
    root = tmp_path / "hw"
    usb_coral(root, speed="480")
    write(root, "usr/lib/libedgetpu.so.1", "")
    write(root, "sys/devices/platform/soc/soc:firmware/get_throttled", "0\n")
    cfg = base_config(mosquitto.port, model=MODELS / "digits_int8.tflite", frames=FRAMES,
                      inference={"delegate": "edgetpu", "edgetpu_library": "libedgetpu.so.1"})
    config = write_config(tmp_path / "edged.toml", cfg)
    done = _doctor(config, root)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok    config", "ok    libedgetpu", "ok    edge tpu", "ok    permissions",
        "warn  usb link", "ok    power", "ok    broker"], lines
    assert lines[-1] == f"ok    broker: mqtt://127.0.0.1:{mosquitto.port}: connected"
    assert done.stderr == ""


def test_the_command_fails_on_a_broken_config_and_a_missing_coral(tmp_path: Path,
                                                                  mosquitto: Mosquitto) -> None:
    config = tmp_path / "edged.toml"
    config.write_text("[inference]\ndelegate = \"tpu\"\n")
    done = _doctor(config, tmp_path)
    assert done.returncode == 1
    first = done.stdout.splitlines()[0]
    assert first.startswith(f"FAIL  config: {config}:2: inference.delegate:"), first
    assert done.stderr == "1 problem keep edged from running as configured\n"
    cfg = base_config(mosquitto.port, model=MODELS / "digits_int8.tflite", frames=FRAMES,
                      inference={"delegate": "edgetpu", "fallback": "fail"})
    done = _doctor(write_config(config, cfg), tmp_path / "empty")
    assert done.returncode == 1, done.stdout
    failing = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    # check-config refuses it too (no libedgetpu with fallback = fail exits 78); the
    # device checks still run for what the file asks.
    assert [line.split(":")[0] for line in failing] == [
        "FAIL  config", "FAIL  libedgetpu", "FAIL  edge tpu"], done.stdout


def test_each_cameras_device_is_looked_for(tmp_path: Path, mosquitto: Mosquitto) -> None:
    root = tmp_path / "hw"
    write(root, "dev/video0", "")
    cfg = base_config(mosquitto.port, model=MODELS / "digits_int8.tflite", frames=FRAMES)
    config = write_config(tmp_path / "edged.toml", cfg)
    with config.open("a") as f:
        f.write('[[cameras]]\nid = "door"\nsource = {kind = "v4l2", uri = "/dev/video0"}\n'
                '[[cameras]]\nid = "yard"\nsource = {kind = "v4l2", uri = "/dev/video4"}\n'
                '[[cameras]]\nid = "off"\nenabled = false\n'
                'source = {kind = "v4l2", uri = "/dev/video9"}\n')
    lines = _doctor(config, root).stdout.splitlines()
    cameras = [line for line in lines if line.split(":")[0].split()[-1] in ("door", "yard",
                                                                         "off")]
    assert [line.split(":")[0] for line in cameras] == ["ok    camera door",
                                                       "warn  camera yard"], lines
