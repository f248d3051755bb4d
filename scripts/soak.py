"""Soak: run `edged run` at full speed for a while, restart the broker now and
then, and watch memory and file descriptors for leaks.

    scripts/soak.sh DURATION [options]        # DURATION: 120, 120s, 2m, 30m, 1h

Every `--sample-every` seconds it samples, from /proc, the resident memory and
open file descriptors of the daemon and of its inference worker, plus the
daemon's thread count and its stats topic (fps, results published/dropped,
broker state). Every `--broker-every` seconds the private mosquitto is stopped
(alternately SIGTERM and SIGKILL), kept down for `--broker-down` seconds and
started again on the same port.

Verdict (exit status 1 on failure, 0 on pass, 2 on a set-up problem):

* RSS growth: the median RSS in the first window after the warm-up against the
  median in the last window, for the daemon and for the worker. A window spans
  one broker restart period, so each holds one outage, when the result queue
  fills and RSS rises by up to the queue's worth for a second or two; whether a
  sample lands in that rise is chance (RELIABILITY.md has a run where it made
  the verdict), so the median, the RSS between outages, is compared. A leak
  stays: it raises the median.
  Growth over `--rss-limit-mb` (default 2 MB) fails.
* File descriptors: the same windows; any growth fails (a reconnect that
  leaks a socket shows up as one more fd per restart).
* The daemon must be alive at the end and exit 0 on SIGTERM; the worker must
  not have been restarted.

The table goes to stdout (and `--out FILE`); `--json FILE` keeps every sample.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edged.system.childproc import stop_process

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "tests" / "data" / "models" / "digits_int8.tflite"
MOSQUITTO = os.environ.get("EDGED_TEST_MOSQUITTO", "/usr/sbin/mosquitto")
HOST = "127.0.0.1"


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"duration {text!r}: use 120, 120s, 2m or 1h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


@dataclass(frozen=True)
class Sample:
    t: float
    daemon_rss_kb: int
    worker_rss_kb: int
    daemon_fds: int
    worker_fds: int
    threads: int
    worker_pid: int
    fps: float
    published: int
    dropped: int
    broker: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def rss_kb(pid: int) -> int:
    value = proc_status(pid).get("VmRSS", "0 kB")
    return int(value.split()[0])


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def worker_of(pid: int) -> int:
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if b"edged.inference.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                        return int(child)
    return 0


class Broker:
    """A private mosquitto on a loopback port, restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(f"user root\nlistener {self.port} {HOST}\nallow_anonymous true\n"
                             "persistence false\nlog_dest stderr\nlog_type error\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on {self.port}: {self.log.read_text()}")

    def stop(self, sig: int) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5.0, sig)
        self.proc = None


class StatsWatcher:
    """The daemon's latest stats, read from its stats topic."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.latest: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edged-soak-watch")
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, 0)
        self.client.on_message = self._on_message
        self.port = port

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with contextlib.suppress(ValueError), self._lock:
            self.latest = json.loads(msg.payload)

    def start(self) -> None:
        self.client.connect_async(HOST, self.port, keepalive=10)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def get(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.latest)


def write_config(path: Path, port: int, model: Path, args: argparse.Namespace) -> None:
    path.write_text(f"""[device]
id = "soak"
[source]
kind = "synthetic"
width = {args.width}
height = {args.height}
fps = {args.source_fps}
[model]
path = "{model}"
[inference]
num_threads = 1
max_fps = {args.max_fps}
[mqtt]
host = "{HOST}"
port = {port}
qos_results = 1
queue_size = {args.queue_size}
keepalive_s = 5
reconnect_min_s = 0.2
reconnect_max_s = 2.0
[output]
stats_interval_s = 1.0
[logging]
level = "info"
""")


def sample(start: float, daemon: int, stats: dict[str, Any]) -> Sample:
    worker = worker_of(daemon)
    return Sample(
        t=round(time.monotonic() - start, 1), daemon_rss_kb=rss_kb(daemon),
        worker_rss_kb=rss_kb(worker) if worker else 0, daemon_fds=fd_count(daemon),
        worker_fds=fd_count(worker) if worker else 0,
        threads=int(proc_status(daemon).get("Threads", "0")), worker_pid=worker,
        fps=float(stats.get("fps", 0.0)), published=int(stats.get("results_published", 0)),
        dropped=int(stats.get("results_dropped", 0)), broker=str(stats.get("broker", "?")),
    )


@dataclass(frozen=True)
class Verdict:
    daemon_rss_growth_kb: int
    worker_rss_growth_kb: int
    daemon_fd_growth: int
    worker_fd_growth: int
    worker_pids: int
    problems: tuple[str, ...]


def judge(samples: list[Sample], warmup: float, window: float, rss_limit_kb: int) -> Verdict:
    """Growth from the first window after the warm-up to the last: the medians' for RSS
    (a sample in an outage's queue is chance), the peaks' for file descriptors (one
    leaked socket is one more, whenever it is sampled)."""
    end = samples[-1].t
    first = [s for s in samples if warmup <= s.t < warmup + window]
    last = [s for s in samples if s.t > end - window]
    problems = []
    if not first or not last or first[-1].t >= last[0].t:
        problems.append(f"run too short to judge: warm-up {warmup:g} s and windows of "
                        f"{window:g} s need a longer duration")
        first = first or samples
        last = last or samples

    def growth(key: str) -> int:
        level = statistics.median_low if key.endswith("rss_kb") else max
        return int(level(getattr(s, key) for s in last) - level(getattr(s, key) for s in first))

    v = {k: growth(k) for k in ("daemon_rss_kb", "worker_rss_kb", "daemon_fds", "worker_fds")}
    for key in ("daemon_rss_kb", "worker_rss_kb"):
        if v[key] > rss_limit_kb:
            problems.append(f"{key.split('_')[0]} RSS grew {v[key] / 1024:.1f} MB after the "
                            f"warm-up (limit {rss_limit_kb / 1024:g} MB)")
    for key in ("daemon_fds", "worker_fds"):
        if v[key] > 0:
            problems.append(f"{key.split('_')[0]} open file descriptors grew by {v[key]}")
    pids = {s.worker_pid for s in samples if s.worker_pid}
    if len(pids) > 1:
        problems.append(f"the inference worker was replaced {len(pids) - 1} time(s)")
    return Verdict(v["daemon_rss_kb"], v["worker_rss_kb"], v["daemon_fds"], v["worker_fds"],
                   len(pids), tuple(problems))


def table(samples: list[Sample]) -> str:
    head = (f"{'t_s':>7} {'daemon_MB':>9} {'worker_MB':>9} {'d_fds':>5} {'w_fds':>5} "
            f"{'thr':>3} {'fps':>7} {'published':>10} {'dropped':>8}  broker")
    rows = [head]
    for s in samples:
        rows.append(f"{s.t:7.1f} {s.daemon_rss_kb / 1024:9.2f} {s.worker_rss_kb / 1024:9.2f} "
                    f"{s.daemon_fds:5d} {s.worker_fds:5d} {s.threads:3d} {s.fps:7.1f} "
                    f"{s.published:10d} {s.dropped:8d}  {s.broker}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("duration", type=parse_duration, help="how long: 120, 120s, 2m, 30m, 1h")
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument("--broker-every", type=float, default=30.0,
                   help="seconds between broker restarts (0 = never)")
    p.add_argument("--broker-down", type=float, default=2.0)
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds ignored at the start (default: one broker period + 10 s, "
                        "at most a quarter of the run)")
    p.add_argument("--rss-limit-mb", type=float, default=2.0)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--source-fps", type=float, default=1000.0, help="1000 = as fast as it goes")
    p.add_argument("--max-fps", type=float, default=0.0, help="0 = as fast as the model goes")
    p.add_argument("--queue-size", type=int, default=1000)
    p.add_argument("--nice", type=int, default=0, help="run the daemon at this niceness")
    p.add_argument("--out", type=Path, help="also write the table and verdict here")
    p.add_argument("--json", type=Path, help="write every sample and the verdict as JSON")
    p.add_argument("--workdir", type=Path, help="keep config and logs here (default: temp)")
    args = p.parse_args(argv)

    period = args.broker_every or args.duration / 4
    warmup = args.warmup if args.warmup is not None else min(period + 10.0, args.duration / 4)
    window = max(period + args.broker_down, 3 * args.sample_every)
    temporary = args.workdir is None
    if args.workdir is None:
        args.workdir = Path(tempfile.mkdtemp(prefix="edged-soak-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    broker = Broker(args.workdir)
    broker.start()
    config = args.workdir / "edged.toml"
    write_config(config, broker.port, args.model.resolve(), args)
    log_path = args.workdir / "edged.log"
    cmd = [sys.executable, "-m", "edged", "run", "--config", str(config)]
    if args.nice:
        cmd = ["nice", "-n", str(args.nice), *cmd]
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    watcher = StatsWatcher(broker.port, "edged/soak/stats")
    watcher.start()
    samples: list[Sample] = []
    restarts = 0
    start = time.monotonic()
    next_sample = start + args.sample_every
    next_restart = start + args.broker_every if args.broker_every else float("inf")
    code = 2
    try:
        while (now := time.monotonic()) < start + args.duration:
            if daemon.poll() is not None:
                print(f"soak: edged exited with {daemon.returncode} after {now - start:.0f} s; "
                      f"log: {log_path}", file=sys.stderr)
                return 1
            if now >= next_restart:
                sig = signal.SIGTERM if restarts % 2 == 0 else signal.SIGKILL
                broker.stop(sig)
                time.sleep(args.broker_down)
                broker.start()
                restarts += 1
                next_restart = time.monotonic() + args.broker_every
            if now >= next_sample:
                samples.append(sample(start, daemon.pid, watcher.get()))
                print(table(samples).splitlines()[-1], flush=True)
                next_sample = max(next_sample + args.sample_every, time.monotonic())
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        try:
            exit_code = daemon.wait(15)
        except subprocess.TimeoutExpired:
            exit_code = None
        verdict = judge(samples, warmup, window, int(args.rss_limit_mb * 1024))
        problems = list(verdict.problems)
        if exit_code != 0:
            problems.append(f"edged did not exit 0 on SIGTERM (got {exit_code})")
        tracebacks = log_path.read_text(errors="replace").count("Traceback")
        if tracebacks:
            problems.append(f"{tracebacks} traceback(s) in the daemon's log")
        summary = [
            "",
            f"duration {args.duration:g} s, {len(samples)} samples every {args.sample_every:g} s, "
            f"broker restarted {restarts} times (every {args.broker_every:g} s, down "
            f"{args.broker_down:g} s, SIGTERM/SIGKILL alternately)",
            f"warm-up {warmup:g} s; windows of {window:g} s compared median to median (RSS), "
            "peak to peak (fds)",
            f"RSS growth: daemon {verdict.daemon_rss_growth_kb / 1024:+.2f} MB, worker "
            f"{verdict.worker_rss_growth_kb / 1024:+.2f} MB (limit {args.rss_limit_mb:g} MB)",
            f"fd growth: daemon {verdict.daemon_fd_growth:+d}, worker "
            f"{verdict.worker_fd_growth:+d}",
            "verdict: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)),
        ]
        report = table(samples) + "\n" + "\n".join(summary) + "\n"
        print("\n".join(summary))
        if args.out:
            args.out.write_text(report)
        if args.json:
            args.json.write_text(json.dumps({"samples": [asdict(s) for s in samples],
                                             "verdict": asdict(verdict), "problems": problems,
                                             "broker_restarts": restarts}, indent=1))
        code = 1 if problems else 0
        return code
    finally:
        watcher.stop()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        broker.stop(signal.SIGKILL)
        if temporary and code == 0:
            shutil.rmtree(args.workdir, ignore_errors=True)
        elif temporary:
            print(f"soak: logs kept in {args.workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
