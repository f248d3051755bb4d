"""The `edged daemon` row of `edged bench`: the real `edged run`, measured from outside.

A private mosquitto on a free loopback port (as `edged demo` starts it), the
daemon as a child process with its inference worker, and `mosquitto_sub`,
which timestamps each result on receipt. Latency is receipt time minus the
payload's `captured_at` (one machine, one clock).

The subscriber is the C client, not paho: it shares the two cores with the
daemon it measures, and a paho subscriber spent 170-300 us of CPU per result
there (mosquitto_sub 50-100), which slowed the very invokes it was timing. On
a device the subscribers run elsewhere.

Between its runs the daemon is paused (SIGSTOP to its process group, worker
included) so the other rows measure on a quiet machine; its timeouts and
keepalive are set long enough that the pause looks like nothing to it. A
run resumes it, lets the frames that waited out the pause go by, then counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.bench.procs import summarize_run
from edged.bench.procstat import cpu_seconds, thread_cpu_seconds, thread_switches
from edged.bench.rows import proc_status_kb
from edged.mqtt.broker import find_mosquitto, start_private_mosquitto
from edged.system.childproc import stop_process

SETTLE_RESULTS = 10  # results after a resume that are not counted (warming up again)
# The most a [source] may offer: the config's bound on source.fps (the bench writes
# configs as a user does and does not import them; tests/bench pins the two equal).
MAX_SOURCE_FPS = 1000.0
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
    qos_results: int = 1
    # delegate = "external": the library and its options (the accelerator row's stand-in).
    external_library: str = ""
    external_options: tuple[tuple[str, str], ...] = ()
    cameras: int = 0  # > 0: that many [[cameras]], each the [source] above (the cameras rows)
    # Daemons alive at once (paused but connected) need their own: the broker drops the
    # older session of a client id that connects again, and they would take turns.
    client_id: str = ""
    # A classifier path: the detector (model) cascaded into it on every detection, at
    # most `crops` a frame (the cascade row).
    cascade: str = ""
    crops: int = 3
    # An http:// MJPEG camera instead of the synthetic source, decoded so (the jpeg rows).
    source_uri: str = ""
    jpeg_decode: str = "reduced"
    jpeg_decode_thread: str = "auto"


def worker_pid(daemon_pid: int) -> int | None:
    """The pid of `edged run`'s inference worker, None while it has none."""
    try:
        for task in Path(f"/proc/{daemon_pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                if b"edged.inference.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
    except OSError:
        pass
    return None


def daemon_config(spec: DaemonSpec, port: int) -> str:
    h, w = spec.source_size
    # JSON strings are TOML basic strings: a path with a quote or backslash stays one.
    options = ", ".join(f"{k} = {json.dumps(v)}" for k, v in spec.external_options)
    external = (f"external_library = {json.dumps(spec.external_library)}\n"
                f"external_options = {{{options}}}\n") if spec.external_library else ""
    source = (f'kind = "stream"\nuri = "{spec.source_uri}"\njpeg_decode = "{spec.jpeg_decode}"\n'
              f'jpeg_decode_thread = "{spec.jpeg_decode_thread}"'
              if spec.source_uri else 'kind = "synthetic"')
    return f"""\
# Written by `edged bench`.
[device]
id = "bench"
[source]
{source}
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
{external}# The bench pauses the daemon between runs: no pause may look like a hang.
invoke_timeout_s = 3600
[mqtt]
host = "127.0.0.1"
port = {port}
keepalive_s = 3600
qos_results = {spec.qos_results}
client_id = "{spec.client_id}"
""" + "".join(f'[[cameras]]\nid = "cam{i}"\n' for i in range(spec.cameras)) + (
        f'[output]\ndecoder = "detection"\ninclude_raw = false\nmin_score = 0.0\n'
        f'[[models]]\nid = "classifier"\npath = "{spec.cascade}"\n'
        f'[cascade]\nmodel = "classifier"\nmin_score = 0.0\nmax_crops = {spec.crops}\n'
        if spec.cascade else "")


def split_records(data: bytearray) -> tuple[list[tuple[float, bytes]], int]:
    """Complete `mosquitto_sub -F '%U %l %p'` records in `data` (receipt time, payload),
    and how many bytes they took; the length field frames any payload, binary too."""
    records: list[tuple[float, bytes]] = []
    pos = 0
    while True:
        stamp_end = data.find(b" ", pos)
        len_end = data.find(b" ", stamp_end + 1) if stamp_end >= 0 else -1
        if len_end < 0:
            break
        start = len_end + 1
        end = start + int(data[stamp_end + 1:len_end])
        if end >= len(data):  # the payload, or its newline, is still on the way
            break
        records.append((float(data[pos:stamp_end]), bytes(data[start:end])))
        pos = end + 1
    return records, pos


@dataclass
class _Inbox:
    """What the subscriber has received: receipt time and payload."""

    keep: bool = True
    since: float = 0.0  # results captured before this (during a pause) are ignored
    received: list[tuple[float, bytes]] = field(default_factory=list)
    count: int = 0
    want: int = 0  # what wait_for waits for: waking it for every result cost the cores
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, records: list[tuple[float, bytes]]) -> None:
        if self.since:
            records = [(t, p) for t, p in records if _captured_since(p, self.since)]
        if not records:
            return
        with self.cond:
            self.count += len(records)
            if self.keep:
                self.received.extend(records)
            if self.count >= self.want:
                self.cond.notify_all()

    def reset(self, keep: bool = True, since: float = 0.0) -> None:
        with self.cond:
            self.received, self.count, self.keep, self.since = [], 0, keep, since

    def wait_for(self, n: int, timeout_s: float) -> bool:
        with self.cond:
            self.want = n
            return self.cond.wait_for(lambda: self.count >= n, timeout_s)


def _captured_since(payload: bytes, since: float) -> bool:
    found = _CAPTURED_AT.search(payload, 0, 256)
    return found is not None and float(found.group(1)) >= since


class Broker:
    """A private mosquitto on 127.0.0.1 and a subscriber to the bench device's results."""

    def __init__(self, tmp: Path) -> None:
        mosquitto = find_mosquitto()
        if mosquitto is None:
            raise BenchError("mosquitto is not installed: run scripts/setup.sh "
                             "(or apt-get install mosquitto), or leave out the daemon row")
        if shutil.which("mosquitto_sub") is None:
            raise BenchError("mosquitto_sub is not installed: run scripts/setup.sh "
                             "(or apt-get install mosquitto-clients), or leave out the daemon row")
        try:
            self.proc, self.port = start_private_mosquitto(mosquitto, tmp)
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
        self.inbox = _Inbox()
        self.subscriber = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-i", "edged-bench-sub",
             "-k", "3600", "-t", "edged/bench/results", "-t", "edged/bench/+/results",
             "-F", "%U %l %p"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, name="bench-subscriber", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.subscriber.stdout is not None
        fd = self.subscriber.stdout.fileno()
        pending = bytearray()
        # 64 KiB: a 1 MiB read allocates, faults in and frees a fresh mapping per call.
        while chunk := os.read(fd, 1 << 16):
            pending += chunk
            records, used = split_records(pending)
            del pending[:used]
            self.inbox.add(records)
            # mosquitto_sub stamps receipt itself: reading a few results per wake-up
            # instead of each on arrival costs the measured cores less, and no accuracy.
            time.sleep(0.005)

    def close(self) -> None:
        stop_process(self.subscriber, 5.0)
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
        # The last run's CPU per result, by process and by the daemon's thread (with its
        # context switches), and peak RSS: what every daemon row records (`run`).
        self.last: dict[str, Any] = {}

    def _cpu(self) -> dict[str, float]:
        # "subscriber": mosquitto_sub and this process, whose only busy thread meanwhile
        # reads it; the observer's cost competes for the cores like the rest.
        return {"daemon": cpu_seconds(self.proc.pid), "worker": cpu_seconds(self.worker_pid()),
                "mosquitto": cpu_seconds(self.broker.proc.pid),
                "subscriber": cpu_seconds(self.broker.subscriber.pid),
                "bench": cpu_seconds(os.getpid())}

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
        return worker_pid(self.proc.pid)

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
            threads, switches = thread_cpu_seconds(self.proc.pid), thread_switches(self.proc.pid)
            if not inbox.wait_for(results, timeout_s):
                raise BenchError(f"edged run sent {inbox.count} of {results} results in "
                                 f"{timeout_s:g} s: {self.log_tail()}")
        finally:
            self.pause()
        # Where the CPU went, per process: what the stage timings cannot show (the
        # capture and MQTT threads, the broker) and what competes with the invoke.
        after, threads_after = self._cpu(), thread_cpu_seconds(self.proc.pid)
        self.last = {
            "cpu_us_per_result": {k: (after[k] - cpu[k]) * 1e6 / results for k in after},
            # And the daemon's, by thread (issue 21: where a Pi's CPU budget goes).
            "threads_us_per_result": {
                **{k: (v - threads.get(k, 0.0)) * 1e6 / results
                   for k, v in threads_after.items() if k.startswith("edged-")},
                "context switches": (sum(thread_switches(self.proc.pid).values())
                                     - sum(switches.values())) / results},
            "peak_rss_kb": self.memory_kb()["VmHWM"]}
        return list(inbox.received)

    def warm_up(self, frames: int) -> None:
        """A quarter of a run's frames (at least 20), not kept; paused after."""
        self.measure(max(20, frames // 4), keep=False)

    def run(self, results: int) -> tuple[dict[str, Any], list[tuple[float, bytes]]]:
        """One measured run: `summarize_run`'s figures with `last`'s, and what came."""
        received = self.measure(results)
        return {**summarize_run(received), **self.last}, received

    def stop(self) -> None:
        self.resume()
        stop_process(self.proc, 15.0, group=True)


@contextlib.contextmanager
def private_broker() -> Any:
    with tempfile.TemporaryDirectory(prefix="edged-bench-") as tmp:
        broker = Broker(Path(tmp))
        try:
            yield broker, Path(tmp)
        finally:
            broker.close()
