"""`edged doctor [FILE]`: everything that keeps edged from its Edge TPU, camera or broker.

One line per check, `ok`, `info`, `warn` or `FAIL`, each problem with its fix.
The exit status: 1 when something prevents edged from doing what the config
asks (the config invalid; with `inference.fallback = "fail"`, no Edge TPU or
no libedgetpu or no permission to open it), 0 otherwise. A broker that does
not answer is a warning: edged waits for it, queueing results. Hardware is
read under EDGED_HARDWARE_ROOT (default /), like the daemon's fail-back.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from edged.config import Config, ConfigError, default_path, read_config
from edged.config.check import check_config
from edged.config.checkcommand import add_config_file_argument
from edged.doctor.checks import (
    Check,
    Wanted,
    check_camera,
    check_devices,
    check_libedgetpu,
    check_permissions,
    check_power,
    check_temperatures,
    check_usb_speed,
)
from edged.system.hardware import hardware_root
from edged.system.health import parse_throttled, read_throttled

BROKER_TIMEOUT_S = 5.0


def dpkg_versions(names: tuple[str, ...] = ("libedgetpu1-std", "libedgetpu1-max")
                  ) -> dict[str, str]:
    """Installed packages' versions, by name; {} without dpkg."""
    if shutil.which("dpkg-query") is None:
        return {}
    done = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Package} ${Version}\n",
                           *names], capture_output=True, text=True, check=False, timeout=10)
    found = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith("i"):
            found[parts[1]] = parts[2]
    return found


def runtime_name(cfg: Config | None) -> str:
    from edged.inference.runtime import RuntimeUnavailableError, select_runtime
    try:
        return select_runtime(cfg.inference.runtime if cfg else "auto").describe()
    except RuntimeUnavailableError as exc:
        return f"no runtime ({exc})"


def check_the_config(path: Path) -> tuple[list[Check], Config | None]:
    report = check_config(path)
    if report.errors:
        more = f" (and {len(report.errors) - 1} more: edged check-config)" if len(
            report.errors) > 1 else ""
        failed = [Check("config", "FAIL", report.errors[0] + more, "edit the file")]
        try:  # a file that parses (a model missing, say) still tells what the device needs
            return failed, read_config(path).config
        except ConfigError:
            return failed, None
    # Its warnings are check-config's to show: most repeat the checks below.
    count = len(report.warnings)
    checks = [Check("config", "ok", f"{path} is valid" + (
        f" ({count} warning{'s' if count > 1 else ''}: edged check-config)" if count else ""))]
    try:
        return checks, read_config(path).config
    except ConfigError:  # pragma: no cover - changed under our feet
        return checks, None


def check_broker(cfg: Config, timeout_s: float = BROKER_TIMEOUT_S) -> Check:
    """Connect as edged would (TLS, credentials), under a client id of its own so a
    running edged is not disconnected; the broker's answer, or why there is none."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    m = cfg.mqtt
    where = f"{'mqtts' if m.tls else 'mqtt'}://{m.host}:{m.port}"
    answered = threading.Event()
    said: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        said.append("" if not reason.is_failure else str(reason))
        answered.set()

    proto = mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{cfg.client_id}-doctor",
                         protocol=proto)
    client.on_connect = on_connect
    try:
        password = m.resolve_password()
        if m.username:
            client.username_pw_set(m.username, password)
        if m.tls:
            client.tls_set(ca_certs=str(m.ca_file) if m.ca_file else None,
                           certfile=str(m.cert_file) if m.cert_file else None,
                           keyfile=str(m.key_file) if m.key_file else None)
        client.connect(m.host, m.port, keepalive=10)
        client.loop_start()
        answered.wait(timeout_s)
    except (OSError, ValueError, ConfigError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return Check("broker", "warn", f"{where}: {reason}; edged retries and queues results",
                     "check mqtt.host/port, the broker's listener and the firewall")
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
            client.loop_stop()
    if not said:
        return Check("broker", "warn", f"{where}: no answer within {timeout_s:g} s",
                     "check mqtt.host/port and that the broker runs")
    if said[0]:
        return Check("broker", "warn", f"{where}: refused the connection: {said[0]}",
                     "check mqtt.username and the password, and the broker's ACL")
    return Check("broker", "ok", f"{where}: connected" + (" with TLS" if m.tls else ""))


def throttled_now() -> Any:
    """sysfs first (no subprocess); vcgencmd where the kernel does not expose it."""
    found = read_throttled()
    if found is None and shutil.which("vcgencmd"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True,
                                 timeout=5, check=False).stdout
            found = parse_throttled(out)
    return found


def run_checks(path: Path) -> list[Check]:
    root = hardware_root()
    checks, cfg = check_the_config(path)
    inf = cfg.inference if cfg else None
    want = Wanted(inf.delegate, inf.edgetpu_device, inf.edgetpu_library,
                  inf.fallback) if inf else Wanted()
    checks.append(check_libedgetpu(want, root, dpkg_versions(), runtime_name(cfg)))
    checks += check_devices(want, root)
    checks += check_permissions(want, root)
    checks += check_usb_speed(root)
    checks.append(check_power(throttled_now()))
    checks += check_temperatures(root)
    if cfg is not None:
        for camera in (c for c in cfg.camera_list() if c.enabled):
            source = camera.config.source
            checks += check_camera(source.kind, source.uri, root,
                                   f"camera {camera.id}" if camera.index is not None else "camera")
        checks.append(check_broker(cfg))
    return checks


def main(args: argparse.Namespace) -> int:
    path = Path(args.file or default_path())
    checks = run_checks(path)
    for check in checks:
        print(check.line())
    failed = [c for c in checks if c.level == "FAIL"]
    if failed:
        print(f"{len(failed)} problem{'s' if len(failed) > 1 else ''} keep edged from running "
              "as configured", file=sys.stderr)
    return 1 if failed else 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check the Edge TPU, power, camera, broker and config, with fixes",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_config_file_argument(parser)
    parser.set_defaults(handler=main)
