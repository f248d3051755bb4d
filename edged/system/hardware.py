"""Edge TPUs as the kernel shows them: USB Accelerators in sysfs, PCIe cards in /dev.

Read from sysfs and /dev only (no libusb, no udev): cheap enough to poll
every few seconds on a Pi (a scan is a directory listing and two small reads
per USB device), and it works in a container that bind-mounts the host's
/sys and /dev. `EDGED_HARDWARE_ROOT` points the scan at another root: such a
container's mount point, or a test's fake tree.

A USB Accelerator shows up under two IDs: 1a6e:089a (Global Unichip) when it
is plugged in, then 18d1:9302 (Google) once libedgetpu has uploaded its
firmware and it has re-enumerated on a new /dev/bus/usb node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["ROOT_ENV", "UsbEdgeTpu", "edgetpu_present", "hardware_root", "pci_edgetpus",
           "usb_edgetpus"]

ROOT_ENV: Final = "EDGED_HARDWARE_ROOT"
BEFORE_FIRMWARE: Final = ("1a6e", "089a")
AFTER_FIRMWARE: Final = ("18d1", "9302")


def hardware_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or "/")


@dataclass(frozen=True, slots=True)
class UsbEdgeTpu:
    """One Coral USB Accelerator: where sysfs shows it and its device node."""

    sysfs: Path
    vendor: str
    product: str
    node: Path  # /dev/bus/usb/BBB/DDD (under the hardware root)
    speed_mbps: float | None  # 480: a USB 2 link; 5000 and up: USB 3

    @property
    def firmware_loaded(self) -> bool:
        return (self.vendor, self.product) == AFTER_FIRMWARE


def _read(path: Path) -> str:
    return path.read_text(encoding="ascii", errors="replace").strip()


def usb_edgetpus(root: Path | None = None) -> list[UsbEdgeTpu]:
    """The Coral USB Accelerators plugged in, in sysfs order."""
    base = root or hardware_root()
    found = []
    try:
        entries = sorted((base / "sys/bus/usb/devices").iterdir())
    except OSError:
        return []
    for dev in entries:
        try:
            ids = (_read(dev / "idVendor"), _read(dev / "idProduct"))
            if ids not in (BEFORE_FIRMWARE, AFTER_FIRMWARE):
                continue
            bus, num = int(_read(dev / "busnum")), int(_read(dev / "devnum"))
        except (OSError, ValueError):
            continue  # not a device (an interface), or unplugged while read
        try:
            speed: float | None = float(_read(dev / "speed"))
        except (OSError, ValueError):
            speed = None
        found.append(UsbEdgeTpu(dev, ids[0], ids[1], base / f"dev/bus/usb/{bus:03d}/{num:03d}",
                                speed))
    return found


def pci_edgetpus(root: Path | None = None) -> list[Path]:
    """/dev/apex_N: PCIe and M.2 Edge TPUs with the gasket/apex driver loaded."""
    return sorted((root or hardware_root()).joinpath("dev").glob("apex_*"))


def edgetpu_present(device: str, root: Path | None = None) -> bool:
    """Whether an Edge TPU that libedgetpu's `device` string could name is plugged in.

    `device` is "" (the first found), "usb", "usb:N", "pci", "pci:N" or ":N".
    Presence only: whether it can be opened is the delegate's to find out.
    """
    kind, _, index = device.partition(":")
    usb = [] if kind == "pci" else usb_edgetpus(root)
    pci = [] if kind == "usb" else pci_edgetpus(root)
    count = len(usb) + len(pci)
    return count > int(index) if index.isdigit() else count > 0
