"""A private MQTT broker on a free 127.0.0.1 port, for the demo and the bench.

mosquitto from the distribution when installed; else amqtt, a maintained
pure-Python broker (the optional extra `edged[demo]`). Neither is exposed
beyond the loopback interface, and neither is used by the daemon itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from edged.system.childproc import stop_process

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    return found or next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def private_mosquitto_conf(port: int, *, nodelay: bool = True) -> str:
    """A loopback-only, anonymous, memory-only mosquitto for the demo and the bench.

    `set_tcp_nodelay`: mosquitto leaves Nagle on towards subscribers, and a
    result of a few kB then reaches them 5-12 ms late now and then (measured:
    p99 10.7 ms on loopback, 0.96 ms with it). docs/field-guide.md asks the
    same of a production broker. `nodelay=False` keeps mosquitto's default,
    to measure that.
    """
    user = "user root\n" if os.geteuid() == 0 else ""
    return (f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            + ("set_tcp_nodelay true\n" if nodelay else "") + user)


def start_private_mosquitto(mosquitto: str, folder: Path, *, nagle: bool = False
                            ) -> tuple[subprocess.Popen[bytes], int]:
    """`mosquitto` on a free 127.0.0.1 port with `private_mosquitto_conf` (written
    into `folder`), once it accepts connections: (process, port). `nagle` leaves
    mosquitto's own default, for measuring what set_tcp_nodelay buys.
    Raises RuntimeError, the process stopped, when it does not start."""
    port = free_port()
    (folder / "mosquitto.conf").write_text(private_mosquitto_conf(port, nodelay=not nagle))
    proc = subprocess.Popen([mosquitto, "-c", str(folder / "mosquitto.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 10.0
    while not wait_for_port(port, 0.25):
        if proc.poll() is not None or time.monotonic() > end:  # an exit says so at once
            stop_process(proc, 5.0)
            raise RuntimeError(f"mosquitto did not start on 127.0.0.1:{port}")
    return proc, port


def find_amqtt() -> str | None:
    """The amqtt broker command beside this Python (the `demo` extra), if installed."""
    beside = Path(sys.executable).parent / "amqtt"
    return str(beside) if beside.exists() else shutil.which("amqtt")


def start_private_amqtt(amqtt: str, folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (folder / "amqtt.yaml").write_text(
        f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
        "    allow_anonymous: true\n")
    proc = subprocess.Popen([amqtt, "-c", str(folder / "amqtt.yaml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_for_port(port):
        stop_process(proc, 2.0)
        raise RuntimeError(f"amqtt did not start on 127.0.0.1:{port}")
    return proc, port


def wait_for_port(port: int, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False
