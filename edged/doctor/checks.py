"""What keeps edged from its Edge TPU, its camera or its power: one `Check` per finding.

Pure functions of what they are given (a hardware root, the delegate asked
for, how to ask dpkg and os.access), so each runs against a fake sysfs/dev
tree in the tests exactly as on a Pi. Levels: "ok"; "info" (not needed by
this config); "warn" (edged runs, slower or at risk); "FAIL" (edged cannot
do what the config asks: `edged doctor` exits 1).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edged.system.hardware import UsbEdgeTpu, pci_edgetpus, usb_edgetpus
from edged.system.health import Throttled, apex_temperatures, soc_temperature_c

Level = Literal["ok", "info", "warn", "FAIL"]

LIBRARY_DIRS = ("usr/lib", "usr/lib/aarch64-linux-gnu", "usr/lib/arm-linux-gnueabihf",
                "usr/lib/x86_64-linux-gnu", "usr/local/lib")
# edged's own rule, Coral's documented one, and those libedgetpu's packages install.
UDEV_RULES = ("etc/udev/rules.d/99-edged-coral.rules",
              "etc/udev/rules.d/99-edgetpu-accelerator.rules",
              "lib/udev/rules.d/60-libedgetpu1-std.rules",
              "lib/udev/rules.d/60-libedgetpu1-max.rules")
SOC_WARN_C = 80.0  # the Pi firmware starts throttling the CPU here


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: Level
    found: str
    fix: str = ""

    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.fix and self.level in ("warn", "FAIL") else ""
        return f"{self.level:<4}  {self.name}: {self.found}{fix}"


@dataclass(frozen=True, slots=True)
class Wanted:
    """What the config asks of the accelerator."""

    delegate: str = "cpu"  # cpu, edgetpu, external
    device: str = ""
    library: str = "libedgetpu.so.1"
    fallback: str = "cpu"

    @property
    def edgetpu(self) -> bool:
        return self.delegate == "edgetpu"

    def missing(self) -> Level:
        """How bad an absent Edge TPU part is: it stops the work only with fallback = fail."""
        if not self.edgetpu:
            return "info"
        return "FAIL" if self.fallback == "fail" else "warn"


def find_library(library: str, root: Path, environ: Mapping[str, str]) -> Path | None:
    if "/" in library:
        path = root / library.lstrip("/")
        return path if path.exists() else None
    dirs = [d for d in environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    for folder in [*(root / d.lstrip("/") for d in dirs), *(root / d for d in LIBRARY_DIRS)]:
        if (folder / library).exists():
            return folder / library
    return None


def check_libedgetpu(want: Wanted, root: Path, packages: Mapping[str, str], runtime: str,
                     environ: Mapping[str, str] | None = None) -> Check:
    """The Edge TPU runtime library, its package, and the TFLite runtime it must match."""
    found = find_library(want.library, root, os.environ if environ is None else environ)
    if found is None:
        return Check("libedgetpu", want.missing(), f"{want.library} not found",
                     "apt install libedgetpu1-std (docs/coral.md section 1)")
    package = ", ".join(f"{name} {version}" for name, version in sorted(packages.items()))
    what = f"{found.relative_to(root) if root != Path('/') else found}" + (
        f" ({package})" if package else "")
    name, _, version = runtime.partition(" ")
    google_build = any(v.startswith("16.0") and "tf" not in v for v in packages.values())
    if name == "tflite_runtime" and google_build and _at_least(version, (2, 12)):
        return Check("libedgetpu", "warn", f"{what} with {runtime}: known to crash (Google's "
                     "16.0 packages are built for TensorFlow 2.5)",
                     "install the libedgetpu build for your TensorFlow version (feranick's "
                     "16.0tfX.Y packages) or tflite-runtime 2.11.1 (docs/coral.md section 1)")
    return Check("libedgetpu", "ok", f"{what} with {runtime}; check the pair once with the "
                 "smoke test (docs/coral.md section 4)")


def _at_least(version: str, floor: tuple[int, int]) -> bool:
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= floor


def _describe_usb(tpu: UsbEdgeTpu) -> str:
    ids = f"{tpu.vendor}:{tpu.product}"
    state = "firmware loaded" if tpu.firmware_loaded else (
        "firmware not loaded yet: libedgetpu loads it on first use, then it shows as 18d1:9302")
    return f"USB Accelerator {ids} at {tpu.node} ({state})"


def check_devices(want: Wanted, root: Path) -> list[Check]:
    usb, pci = usb_edgetpus(root), pci_edgetpus(root)
    if not usb and not pci:
        return [Check("edge tpu", want.missing(), "no USB Accelerator (1a6e:089a or 18d1:9302) "
                      "and no /dev/apex_N", "plug it into a USB 3 port directly on the board; "
                      "for PCIe, install the gasket/apex driver (docs/coral.md section 1)")]
    return ([Check("edge tpu", "ok", _describe_usb(t)) for t in usb]
            + [Check("edge tpu", "ok", f"PCIe Edge TPU {node}") for node in pci])


def check_permissions(want: Wanted, root: Path,
                      access: Callable[[Path], bool] | None = None) -> list[Check]:
    """Whether this user can open each Edge TPU node; the udev rule that grants it."""
    can = access or (lambda p: os.access(p, os.R_OK | os.W_OK))
    nodes = [t.node for t in usb_edgetpus(root)] + pci_edgetpus(root)
    rules = [r for r in UDEV_RULES if (root / r).exists()]
    rule_fix = ("" if rules else "install the udev rule (scripts/install.sh writes "
                "/etc/udev/rules.d/99-edged-coral.rules), then ")
    checks = []
    for node in nodes:
        if can(node):
            checks.append(Check("permissions", "ok", f"{node} is readable and writable"))
            continue
        group = "apex" if node.name.startswith("apex") else "plugdev"
        checks.append(Check(
            "permissions", want.missing() if want.edgetpu else "warn",
            f"{node} is not readable and writable by this user",
            f"{rule_fix}add the user to the {group} group (the service has it: "
            f"SupplementaryGroups), log in again and replug"))
    return checks


def check_usb_speed(root: Path) -> list[Check]:
    checks = []
    for tpu in usb_edgetpus(root):
        if tpu.speed_mbps is None:
            continue
        if tpu.speed_mbps < 5000:
            checks.append(Check(
                "usb link", "warn", f"{tpu.node}: USB 2 ({tpu.speed_mbps:g} Mb/s): every "
                "invoke's transfers are several times slower than on USB 3",
                "plug it into a USB 3 (blue) port directly on the board, not through a hub; "
                "use the cable that came with it"))
        else:
            checks.append(Check("usb link", "ok", f"{tpu.node}: USB 3 ({tpu.speed_mbps:g} Mb/s)"))
    return checks


def check_power(throttled: Throttled | None) -> Check:
    if throttled is None:
        return Check("power", "info", "no get_throttled (not a Raspberry Pi, or no firmware "
                     "interface): nothing to check")
    if not throttled.word:
        return Check("power", "ok", throttled.describe())
    fix = ("use the official supply (5.1 V 3 A for a Pi 4, 5 V 5 A for a Pi 5) and a short "
           "cable; a Coral on a weak port wants a powered USB hub") if (
        throttled.word & 0x10001) else "improve cooling: a heatsink or fan, air around the board"
    return Check("power", "warn", throttled.describe(), fix)


def check_temperatures(root: Path) -> list[Check]:
    checks = []
    soc = soc_temperature_c(root)
    if soc is not None:
        hot = soc >= SOC_WARN_C
        checks.append(Check("soc temperature", "warn" if hot else "ok", f"{soc:.1f} °C" + (
            f" (the firmware throttles from {SOC_WARN_C:g} °C)" if hot else ""),
            "a heatsink or fan; keep the case ventilated"))
    for apex in apex_temperatures(root):
        trips = ", ".join(f"{t:g}" for t in apex.trip_points_c)
        shutdown = f"; shutdown at {apex.shutdown_c:g} °C" if apex.shutdown_c else ""
        found = f"{apex.name} {apex.temp_c:.1f} °C (trip points {trips or 'none'} °C{shutdown})"
        checks.append(Check("edge tpu temperature", "warn" if apex.throttling else "ok",
                            found + (": its clock is throttled" if apex.throttling else ""),
                            "cool the M.2/PCIe card (a heatsink on it, airflow)"))
    return checks


def check_camera(kind: str, uri: str, root: Path, name: str = "camera") -> list[Check]:
    """The camera device nodes the source needs (other kinds have none to look for);
    `name`: the check's, "camera <id>" for one of several."""
    if kind == "v4l2":
        node = uri if uri.startswith("/") else f"/dev/video{uri or '0'}"
        path = root / node.lstrip("/")
        if path.exists():
            return [Check(name, "ok", f"{node} exists")]
        seen = sorted(p.name for p in (root / "dev").glob("video*"))
        return [Check(name, "warn", f"{node} not found (seen: {', '.join(seen) or 'none'}); "
                      "edged retries until it appears", "plug the camera in, or set source.uri "
                      "to one of the devices seen (v4l2-ctl --list-devices names them)")]
    if kind == "picamera2":
        media = sorted(p.name for p in (root / "dev").glob("media*"))
        if media:
            return [Check(name, "ok", f"libcamera devices: {', '.join(media)}")]
        return [Check(name, "warn", "no /dev/media* (no camera seen by libcamera)",
                      "check the ribbon cable and run rpicam-hello --list-cameras")]
    return []
