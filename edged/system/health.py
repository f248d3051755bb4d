"""The board's health as the kernel and firmware report it: throttling, temperatures.

Read from sysfs (under `edged.system.hardware.hardware_root()`, so a test or
a container can point elsewhere); each reader returns None when its file is
absent (not a Raspberry Pi, no PCIe Edge TPU), never raises. Cheap enough for
every stats report: a few small reads.

Throttling is the firmware's `get_throttled` word (what `vcgencmd
get_throttled` prints), which the Raspberry Pi kernel also exposes in sysfs.
Its low bits say what holds now, bits 16-19 what has happened since boot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edged.system.hardware import hardware_root

__all__ = ["ApexTemperature", "Throttled", "apex_temperatures", "read_throttled",
           "soc_temperature_c"]

THROTTLED_PATHS: Final = ("sys/devices/platform/soc/soc:firmware/get_throttled",
                          "sys/devices/platform/soc/soc:firmware/raspberrypi-hwmon/get_throttled")
SOC_TEMP: Final = "sys/class/thermal/thermal_zone0/temp"
APEX_CLASS: Final = "sys/class/apex"

# bit -> what it means, as the Raspberry Pi documentation names them.
_NOW: Final = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled",
               3: "soft temperature limit"}
_SINCE_BOOT = 16


@dataclass(frozen=True, slots=True)
class Throttled:
    """The firmware's get_throttled word, decoded."""

    word: int

    @property
    def now(self) -> tuple[str, ...]:
        return tuple(name for bit, name in _NOW.items() if self.word >> bit & 1)

    @property
    def since_boot(self) -> tuple[str, ...]:
        return tuple(name for bit, name in _NOW.items() if self.word >> (bit + _SINCE_BOOT) & 1)

    @property
    def under_voltage(self) -> bool:
        return bool(self.word & 1)

    def describe(self) -> str:
        """One phrase: what holds now, and what has happened since boot."""
        if not self.word:
            return "no under-voltage or throttling since boot"
        parts = []
        if self.now:
            parts.append("now: " + ", ".join(self.now))
        if self.since_boot:
            parts.append("since boot: " + ", ".join(self.since_boot))
        return f"{'; '.join(parts) or 'flags'} (get_throttled=0x{self.word:x})"


def parse_throttled(text: str) -> Throttled | None:
    """`0x50005`, `throttled=0x50005` (vcgencmd's form) or `50005` (sysfs's hex)."""
    value = text.strip().rpartition("=")[2].strip()
    try:
        return Throttled(int(value, 16))
    except ValueError:
        return None


def read_throttled(root: Path | None = None) -> Throttled | None:
    base = root or hardware_root()
    for rel in THROTTLED_PATHS:
        try:
            return parse_throttled((base / rel).read_text())
        except OSError:
            continue
    return None


def _millidegrees(path: Path) -> float | None:
    try:
        return int(path.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def soc_temperature_c(root: Path | None = None) -> float | None:
    return _millidegrees((root or hardware_root()) / SOC_TEMP)


@dataclass(frozen=True, slots=True)
class ApexTemperature:
    """A PCIe Edge TPU's temperature and the driver's trip points (°C).

    The gasket/apex driver throttles the TPU's clock at each trip point and
    shuts it down at `hw_temp_warn2`; what is not exposed is None."""

    name: str
    temp_c: float
    trip_points_c: tuple[float, ...]
    shutdown_c: float | None

    @property
    def throttling(self) -> bool:
        return bool(self.trip_points_c) and self.temp_c >= min(self.trip_points_c)


def apex_temperatures(root: Path | None = None) -> list[ApexTemperature]:
    found = []
    try:
        devices = sorted(((root or hardware_root()) / APEX_CLASS).iterdir())
    except OSError:
        return []
    for dev in devices:
        temp = _millidegrees(dev / "temp")
        if temp is None:
            continue
        trips = [_millidegrees(dev / f"trip_point{i}_temp") for i in range(3)]
        found.append(ApexTemperature(dev.name, temp, tuple(t for t in trips if t is not None),
                                     _millidegrees(dev / "hw_temp_warn2")))
    return found
