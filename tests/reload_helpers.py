"""Helpers for the reload, systemd and TLS end-to-end tests of the real `edged run`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from broker import Received, Subscriber
from daemon_helpers import FRAMES, DaemonProcess

# The variables only the daemon's main process may see (sd_notify, sd_watchdog_enabled).
NOTIFY_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class ShellDaemon(DaemonProcess):
    """`edged run` as systemd starts it: through `sh -c 'export WATCHDOG_PID=$$; exec ...'`.

    systemd sets WATCHDOG_PID to the main process's pid, which a test knows only
    after the fork; `exec` keeps the shell's pid, so `$$` is the daemon's. With
    `journal=True` stderr is a file and JOURNAL_STREAM names that file's device
    and inode, which is how systemd tells a service its stderr is the journal.
    """

    def __init__(self, config: Path, env: Mapping[str, str] | None = None, *,
                 watchdog_pid: bool = True, journal: bool = False) -> None:
        self.config = config
        self.log_path = config.with_suffix(".log")
        self._log = self.log_path.open("wb")
        extra = dict(env or {})
        if journal:
            st = os.fstat(self._log.fileno())
            extra["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        script = ("export WATCHDOG_PID=$$; " if watchdog_pid else "") + \
            'exec "$0" -m edged run --config "$1"'
        self.proc = subprocess.Popen(
            ["sh", "-c", script, sys.executable, str(config)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **extra},
        )


def digit_folder(tmp_path: Path, name: str, digits: str = "0123456789") -> Path:
    """A folder source of the digit frames whose digit is in `digits`."""
    folder = tmp_path / name
    folder.mkdir()
    for f in sorted(FRAMES.glob("digit_*.png")):
        if f.name.split("_")[1] in digits:
            shutil.copy(f, folder)
    return folder


def wait_until(cond: Callable[[], bool], timeout: float, what: str,
               log: Callable[[], str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            tail = "\n" + "\n".join(log().splitlines()[-30:]) if log else ""
            raise AssertionError(f"{what}: not within {timeout} s{tail}")
        time.sleep(0.05)


def wait_log(daemon: DaemonProcess, text: str, timeout: float = 20.0, count: int = 1) -> None:
    """Until `text` appears `count` times in the daemon's log."""
    wait_until(lambda: daemon.log_text().count(text) >= count, timeout,
               f"{text!r} x{count} in the daemon log", daemon.log_text)


def sighup(daemon: DaemonProcess, expect: str = "reload: applied") -> float:
    """SIGHUP the daemon and wait for one more `expect` in its log; when it came."""
    before = daemon.log_text().count(expect)
    daemon.send(signal.SIGHUP)
    wait_log(daemon, expect, timeout=30, count=before + 1)
    return time.time()


def stats_of(message: Received) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(message.payload)
    return doc


def wait_stats(sub: Subscriber, pred: Callable[[dict[str, Any]], bool], *, after: float = 0.0,
               timeout: float = 20.0) -> dict[str, Any]:
    """The first stats message received after `after` (time.time()) matching `pred`."""
    return stats_of(sub.wait_for(lambda m: m.topic.endswith("/stats") and m.received_at > after
                                 and pred(stats_of(m)), timeout=timeout))


def results_after(sub: Subscriber, after: float) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.on("/results") if m.received_at > after]


def wait_results(sub: Subscriber, count: int, *, after: float = 0.0,
                 timeout: float = 30.0) -> list[dict[str, Any]]:
    msgs = sub.wait_count(lambda m: m.topic.endswith("/results") and m.received_at > after,
                          count, timeout=timeout)
    return [orjson.loads(m.payload) for m in msgs]


def worker_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                if "=" in item)


def worker_count(daemon: DaemonProcess) -> int:
    """How many edged.inference.worker children the daemon has right now."""
    n = 0
    for task in Path(f"/proc/{daemon.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if b"edged.inference.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    n += 1
            except FileNotFoundError:
                pass
    return n
