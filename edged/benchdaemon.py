"""The `edged daemon` row of `edged bench`: the real `edged run`, measured from outside.

A private mosquitto on a free loopback port (as `edged demo` starts it), the
daemon as a child process with its inference worker, and a subscriber in
this process that timestamps each result on receipt. Latency is receipt time
minus the payload's `captured_at` (one machine, one clock).

Between its runs the daemon is paused (SIGSTOP to its process group, worker
included) so the other rows measure on a quiet machine; its timeouts and
keepalive are set long enough that the pause looks like nothing to it. A
run resumes it, lets the frames that waited out the pause go by, then counts.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from edged.benchrows import proc_status_kb
from edged.childproc import stop_process
from edged.demo import find_mosquitto, free_port, private_mosquitto_conf, wait_for_port

SETTLE_RESULTS = 10  # results after a resume that are not counted (warming up again)
_CAPTURED_AT = re.compile(rb'"captured_at":([-0-9.eE+]+)')


class BenchError(RuntimeError):
    """The benchmark could not run; the message is one line."""


@dataclass(frozen=True)
class DaemonSpec:
    model: str
    threads: int
    source_size: tuple[int, int]
    fps: float
    runtime: str = "auto"
    delegate: str = "cpu"


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a whole process (all its threads) so far."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_config(spec: DaemonSpec, port: int) -> str:
    h, w = spec.source_size
    return f"""\
# Written by `edged bench`.
[device]
id = "bench"
[source]
kind = "synthetic"
width = {w}
height = {h}
fps = {spec.fps:.3f}
[model]
path = "{spec.model}"
[inference]
runtime = "{spec.runtime}"
delegate = "{spec.delegate}"
fallback = "fail"
num_threads = {spec.threads}
# The bench pauses the daemon between runs: no pause may look like a hang.
invoke_timeout_s = 3600
[mqtt]
host = "127.0.0.1"
port = {port}
keepalive_s = 3600
"""


@dataclass
class _Inbox:
    """What the subscriber has received: receipt time and payload."""

    keep: bool = True
    since: float = 0.0  # results captured before this (during a pause) are ignored
    received: list[tuple[float, bytes]] = field(default_factory=list)
    count: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, payload: bytes | bytearray) -> None:
        now = time.time()
        if self.since:
            found = _CAPTURED_AT.search(payload, 0, 256)
            if found is None or float(found.group(1)) < self.since:
                return
        with self.cond:
            self.count += 1
            if self.keep:
                self.received.append((now, bytes(payload)))
            self.cond.notify_all()

    def reset(self, keep: bool = True, since: float = 0.0) -> None:
        with self.cond:
            self.received, self.count, self.keep, self.since = [], 0, keep, since

    def wait_for(self, n: int, timeout_s: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.count >= n, timeout_s)


class Broker:
    """A private mosquitto on 127.0.0.1 and a subscriber to the bench device's results."""

    def __init__(self, tmp: Path) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        mosquitto = find_mosquitto()
        if mosquitto is None:
            raise BenchError("mosquitto is not installed: run scripts/setup.sh "
                             "(or apt-get install mosquitto), or leave out the daemon row")
        self.port = free_port()
        conf = tmp / "mosquitto.conf"
        conf.write_text(private_mosquitto_conf(self.port))
        self.proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_for_port(self.port):
            self.close()
            raise BenchError(f"mosquitto did not start on 127.0.0.1:{self.port}")
        self.inbox = _Inbox()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edged-bench-sub")
        self.client.on_message = lambda _c, _u, msg: self.inbox.add(msg.payload)
        self.client.connect("127.0.0.1", self.port, keepalive=3600)
        self.client.subscribe("edged/bench/results", qos=0)
        self.client.loop_start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.loop_stop()
            self.client.disconnect()
        stop_process(self.proc, 5.0)


class BenchDaemon:
    """`edged run` on a generated config, paused except while it is measured."""

    def __init__(self, spec: DaemonSpec, broker: Broker, tmp: Path, tag: str) -> None:
        self.broker = broker
        cfg = tmp / f"{tag}.toml"
        cfg.write_text(daemon_config(spec, broker.port))
        self.log_path = tmp / f"{tag}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edged", "run", "--config", str(cfg)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # its own group: SIGSTOP reaches the worker too
        broker.inbox.reset()
        end = time.monotonic() + 90.0
        while not broker.inbox.wait_for(1, 0.25):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise BenchError(f"edged run gave no result: {self.log_tail()}")
        self.paused = False
        self.cpu_us_per_result: dict[str, float] = {}

    def _cpu(self) -> dict[str, float]:
        # "subscriber": this process, whose only busy thread meanwhile is the
        # subscriber's; the observer's cost competes for the cores like the rest.
        return {"daemon": cpu_seconds(self.proc.pid), "worker": cpu_seconds(self.worker_pid()),
                "mosquitto": cpu_seconds(self.broker.proc.pid),
                "subscriber": cpu_seconds(os.getpid())}

    def log_tail(self) -> str:
        """The daemon's last error line (or last line), for a one-line failure."""
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        errors = [line for line in lines if " ERROR " in line]
        return (errors or lines or ["(empty log)"])[-1]

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def worker_pid(self) -> int | None:
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    if b"edged.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                        return int(child)
        except OSError:
            pass
        return None

    def memory_kb(self) -> dict[str, int]:
        """RSS and peak RSS of the daemon plus its worker."""
        total = {"VmRSS": 0, "VmHWM": 0}
        for pid in (self.proc.pid, self.worker_pid()):
            if pid is not None:
                for k, v in proc_status_kb(pid).items():
                    total[k] += v
        return total

    def measure(self, results: int, *, keep: bool = True, timeout_s: float = 600.0
                ) -> list[tuple[float, bytes]]:
        """Resume, skip the settling results, collect `results`, pause again."""
        inbox = self.broker.inbox
        inbox.reset(keep=False, since=time.time())
        self.resume()
        try:
            if not inbox.wait_for(SETTLE_RESULTS, 60.0):
                raise BenchError(f"edged run stopped sending results: {self.log_tail()}")
            inbox.reset(keep=keep, since=inbox.since)
            cpu = self._cpu()
            if not inbox.wait_for(results, timeout_s):
                raise BenchError(f"edged run sent {inbox.count} of {results} results in "
                                 f"{timeout_s:g} s: {self.log_tail()}")
        finally:
            self.pause()
        # Where the CPU went, per process: what the stage timings cannot show (the
        # capture and MQTT threads, the broker) and what competes with the invoke.
        after = self._cpu()
        self.cpu_us_per_result = {k: (after[k] - cpu[k]) * 1e6 / results for k in after}
        return list(inbox.received)

    def stop(self) -> None:
        self.resume()
        stop_process(self.proc, 15.0, group=True)


def summarize_run(received: list[tuple[float, bytes]]) -> dict[str, Any]:
    """results/s, latency percentiles and mean stage times from one run's results."""
    times = np.array([t for t, _ in received])
    docs = [orjson.loads(p) for _, p in received]
    latency_ms = np.array([(t - d["captured_at"]) * 1000 for (t, _), d in zip(
        received, docs, strict=True)])
    publish_us = np.array([(t - d["published_at"]) * 1e6 for (t, _), d in zip(
        received, docs, strict=True)])
    timing = {k: np.array([d["timings_us"].get(k, 0) for d in docs], dtype=np.float64)
              for k in ("preprocess", "quantize", "invoke", "dequantize", "decode")}
    span = float(times[-1] - times[0]) if len(times) > 1 else 0.0
    return {
        "frames": len(received),
        "fps": (len(received) - 1) / span if span > 0 else 0.0,
        "stages_us": {"resize": timing["preprocess"].mean(), "quantize": timing["quantize"].mean(),
                      "invoke": timing["invoke"].mean(), "dequantize": timing["dequantize"].mean(),
                      "decode": timing["decode"].mean(), "publish": float(publish_us.mean())},
        "latency_ms": {f"p{q}": float(np.percentile(latency_ms, q)) for q in (50, 95, 99)},
        "invoke_ms": {f"p{q}": float(np.percentile(timing["invoke"], q)) / 1000
                      for q in (50, 95, 99)},
    }


@contextlib.contextmanager
def private_broker() -> Any:
    with tempfile.TemporaryDirectory(prefix="edged-bench-") as tmp:
        broker = Broker(Path(tmp))
        try:
            yield broker, Path(tmp)
        finally:
            broker.close()
