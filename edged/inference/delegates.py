"""CPU, Edge TPU and external delegates; their one-line errors; the fallback policy.

Loading goes through the runtime's own `load_delegate`, which implements the
external-delegate plugin ABI (`tflite_plugin_create_delegate`). It fails in
four ways, and each needs a different fix on the device:

* `OSError`: the shared library is not there (Edge TPU runtime not installed)
  or is for another architecture;
* `AttributeError`: the library is not a delegate plugin (missing symbol);
* `ValueError`: the plugin returned NULL; for libedgetpu that means no Edge
  TPU matched the device string, or it could not be opened (permissions);
* `RuntimeError`: non-CPython, or the interpreter could not apply it.

The runtime's `Delegate.__init__` fails after Python has created the object,
and its `__del__` then touches attributes that were never set (or a destroy
symbol that does not exist). Because the half-built object sits in a
reference cycle with the traceback, that prints "Exception ignored in
<function Delegate.__del__>" at some arbitrary later garbage collection,
into the journal of a daemon that had handled the error. `_disarm` finds the
object through the traceback and makes its `__del__` a no-op.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Literal

from edged.inference.runtime import Runtime
from edged.system.hardware import pci_edgetpus, usb_edgetpus

DelegateKind = Literal["cpu", "edgetpu", "external"]
FallbackPolicy = Literal["cpu", "fail"]

EDGETPU_LIBRARY = "libedgetpu.so.1"
# usb, usb:N, pci, pci:N, :N (N-th Edge TPU of any kind), "" (the first found);
# the forms libedgetpu documents for its "device" option.
_DEVICE_RE = re.compile(r"(usb|pci)?(:\d+)?")


class DelegateError(RuntimeError):
    """A delegate that cannot be used; the message is one line saying what to check.

    `heals`: the library loaded but found no device it could open (a Coral not
    plugged in yet, or busy); waiting can mend that, unlike a missing library.
    """

    def __init__(self, message: str, *, heals: bool = False) -> None:
        super().__init__(message)
        self.heals = heals


@dataclass(frozen=True, slots=True)
class DelegateSpec:
    """Which accelerator to run on, and what to do when it is not available.

    `library` is the plugin to load: required for `external`, and for
    `edgetpu` defaults to `libedgetpu.so.1` (tests point it at a stub).
    `options` are passed to the plugin as strings; for the Edge TPU,
    `device` becomes the `"device"` option.
    """

    kind: DelegateKind = "cpu"
    num_threads: int | None = None
    device: str = ""
    library: str | None = None
    options: Mapping[str, str] = field(default_factory=dict, hash=False)
    fallback: FallbackPolicy = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "edgetpu", "external"):
            raise DelegateError(f"delegate: unknown kind {self.kind!r} (cpu, edgetpu, external)")
        if self.fallback not in ("cpu", "fail"):
            raise DelegateError(f"delegate: fallback must be cpu or fail, got {self.fallback!r}")
        if self.num_threads is not None and self.num_threads < 1:
            raise DelegateError(f"delegate: num_threads must be >= 1, got {self.num_threads}")
        if self.device and self.kind != "edgetpu":
            raise DelegateError(f"delegate: device {self.device!r} is only for the edgetpu kind")
        if self.kind == "edgetpu" and not _DEVICE_RE.fullmatch(self.device):
            raise DelegateError(
                f"delegate: Edge TPU device {self.device!r} is not valid: use usb, usb:N, "
                "pci, pci:N, :N, or leave it empty for the first Edge TPU found")
        if self.kind == "external" and not self.library:
            raise DelegateError("delegate: kind external needs a library path")
        if self.kind == "cpu" and (self.library or self.options):
            raise DelegateError("delegate: library and options are not used with kind cpu")
        # Freeze the options so the spec really is immutable.
        object.__setattr__(self, "options", MappingProxyType(
            {str(k): str(v) for k, v in self.options.items()}))

    @property
    def library_path(self) -> str | None:
        if self.kind == "edgetpu":
            return self.library or EDGETPU_LIBRARY
        return self.library if self.kind == "external" else None

    def plugin_options(self) -> dict[str, str]:
        opts = dict(self.options)
        if self.kind == "edgetpu" and self.device:
            opts["device"] = self.device
        return opts

    def describe(self) -> str:
        if self.kind == "cpu":
            return "cpu" + (f" ({self.num_threads} threads)" if self.num_threads else "")
        if self.kind == "edgetpu":
            return f"edgetpu ({self.device or 'first found'})"
        return f"external ({self.library})"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _disarm(tb: TracebackType | None) -> None:
    """Make the half-built Delegate's `__del__` a no-op (see the module docstring)."""
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if type(candidate).__name__ == "Delegate" and hasattr(candidate, "__del__"):
            with contextlib.suppress(AttributeError, TypeError):
                object.__setattr__(candidate, "_library", None)
        tb = tb.tb_next


def _diagnose_device(device: str) -> str:
    kind = device.split(":", maxsplit=1)[0]
    nodes = ([] if kind == "pci" else [t.node for t in usb_edgetpus()]) + \
            ([] if kind == "usb" else pci_edgetpus())
    if not nodes:
        where = {"usb": "USB", "pci": "PCIe"}.get(kind, "USB or PCIe")
        return (f"no {where} Edge TPU found (device {device or 'first found'!r}): check it is "
                "plugged in (lsusb lists 18d1:9302 or 1a6e:089a; PCIe shows /dev/apex_0), "
                "then check permissions: plugdev/apex groups and the udev rules")
    denied = [n for n in nodes if not os.access(n, os.R_OK | os.W_OK)]
    if denied:
        return (f"Edge TPU {denied[0]} is not accessible to this user: add it to the plugdev "
                "group (USB) or apex group (PCIe), install the udev rules from libedgetpu1-std, "
                "then log in again and replug")
    return (f"Edge TPU found ({nodes[0]}) but it could not be opened for device "
            f"{device or 'first found'!r}: it may be in use by another process, or the device "
            "index does not exist; check the plugdev/apex groups and udev rules, then replug")


def explain_failure(spec: DelegateSpec, exc: BaseException) -> str:
    """The one line a user needs when `spec`'s delegate did not load."""
    lib = spec.library_path or "?"
    detail = _one_line(exc)
    edgetpu = spec.kind == "edgetpu"
    what = "Edge TPU delegate" if edgetpu else f"delegate {lib}"
    if isinstance(exc, OSError):
        if "No such file" in detail or "cannot open shared object" in detail:
            if edgetpu:
                return (f"{what}: {lib} not found: the Edge TPU runtime is not installed "
                        "(apt install libedgetpu1-std)")
            return f"{what}: library not found"
        return f"{what}: {lib} could not be loaded ({detail}): reinstall it for this architecture"
    if isinstance(exc, AttributeError):
        return (f"{what}: {lib} is not a TFLite delegate plugin "
                "(no tflite_plugin_create_delegate): wrong library")
    if isinstance(exc, ValueError) and edgetpu:
        return f"{what}: {_diagnose_device(spec.device)}"
    return f"{what}: {type(exc).__name__}: {detail or 'failed without a message'}"


def load_delegate(spec: DelegateSpec, runtime: Runtime) -> Any | None:
    """The loaded delegate object for `spec`, or None for the CPU.

    Raises `DelegateError` with the one line from `explain_failure`; the
    fallback policy is the caller's (see `Model.load`), because the
    interpreter can also fail when it applies a delegate that did load.
    """
    library = spec.library_path
    if library is None:
        return None
    try:
        return runtime.load_delegate(library, spec.plugin_options())
    except (OSError, ValueError, AttributeError, RuntimeError) as exc:
        _disarm(exc.__traceback__)
        # ValueError: the plugin returned no delegate (no device it could open).
        raise DelegateError(explain_failure(spec, exc),
                            heals=isinstance(exc, ValueError)) from None


def fall_back(spec: DelegateSpec, reason: str, cpu_model: str = "", *,
              heals: bool = False) -> str:
    """Apply the fallback policy after `reason`; returns the line to tell the user.

    Not logged here: the caller says it once, where the user looks (the daemon
    logs it and publishes it; its inference worker would only repeat it).
    `cpu_model` names the file that runs on the CPU when it is not the one asked for.
    """
    if spec.fallback == "fail":
        raise DelegateError(f"{reason} (fallback = fail)", heals=heals)
    running = f"running {cpu_model} on the CPU" if cpu_model else "running on the CPU"
    return f"{reason}; {running} instead (fallback = cpu)"
