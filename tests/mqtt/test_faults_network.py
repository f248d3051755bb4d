"""Network partition: the daemon and the broker in two network namespaces of the
test's own, joined by a veth pair on a private 10.213.x.0/30; the link is cut
silently (a `blackhole` qdisc on both ends: packets vanish, no RST, no ICMP,
the link stays up, as when a Wi-Fi access point goes dark) and then healed.

Expected: the daemon notices through the MQTT keepalive (5 s), the pipeline
never blocks (the systemd watchdog, which is withheld when frames stop or the
network thread stalls, keeps pinging throughout), results beyond the queue
bound are dropped and counted, and delivery resumes after the heal with every
other result delivered. The broker, on its side, sends the last will.

Only addresses inside the namespaces created here are used. Skips (with the
reason) where creating namespaces is not permitted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from daemon_helpers import DaemonProcess, base_config, write_config
from faults_helpers import (
    DIGITS,
    Accounting,
    NotifyRecorder,
    copy_digit_frames,
    gaps,
    record_figure,
    wait_until,
)
from notify_helpers import path_listener

from edged.system.childproc import stop_process

MOSQUITTO = os.environ.get("EDGED_TEST_MOSQUITTO", "/usr/sbin/mosquitto")
PORT = 1883  # inside the broker's own namespace: nothing else listens there
KEEPALIVE_S = 5
QUEUE = 100


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass(frozen=True)
class Link:
    broker_ns: str
    daemon_ns: str
    broker_addr: str

    def cut(self) -> None:
        for ns, dev in ((self.daemon_ns, "vd"), (self.broker_ns, "vb")):
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root",
                            "blackhole"], check=True, capture_output=True)

    def heal(self) -> None:
        for ns, dev in ((self.daemon_ns, "vd"), (self.broker_ns, "vb")):
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"],
                           check=True, capture_output=True)


@contextlib.contextmanager
def partitionable_link() -> Iterator[Link]:
    if shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("network partition test needs iproute2 (ip and tc)")
    tag = secrets.token_hex(3)
    b, d = f"edged-t{tag}-b", f"edged-t{tag}-d"
    made = _ip("netns", "add", b, check=False)
    if made.returncode != 0:
        pytest.skip(f"network namespaces not permitted here: ip netns add: "
                    f"{made.stderr.strip() or made.returncode}")
    # A /30 in 10.213.0.0/16, only ever configured inside these two namespaces.
    net = int(tag[:2], 16)
    broker_addr, daemon_addr = f"10.213.{net}.1", f"10.213.{net}.2"
    try:
        _ip("netns", "add", d)
        _ip("link", "add", "vb", "netns", b, "type", "veth", "peer", "name", "vd", "netns", d)
        _ip("-n", b, "addr", "add", f"{broker_addr}/30", "dev", "vb")
        _ip("-n", d, "addr", "add", f"{daemon_addr}/30", "dev", "vd")
        for ns, dev in ((b, "vb"), (d, "vd"), (b, "lo"), (d, "lo")):
            _ip("-n", ns, "link", "set", dev, "up")
        probe = subprocess.run(["ip", "netns", "exec", d, "tc", "qdisc", "show", "dev", "vd"],
                               capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            pytest.skip(f"tc not usable in a network namespace: {probe.stderr.strip()}")
        yield Link(b, d, broker_addr)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot build the test's veth link: {' '.join(exc.cmd)}: "
                    f"{(exc.stderr or '').strip()}")
    finally:
        for ns in (d, b):  # deleting a namespace deletes its end of the veth pair
            _ip("netns", "del", ns, check=False)


class NetnsDaemon(DaemonProcess):
    """`edged run` inside a network namespace (`ip netns exec` execs in place)."""

    def __init__(self, config: Path, netns: str, env: dict[str, str]) -> None:
        self.config = config
        self.log_path = config.with_suffix(".log")
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "edged", "run", "--config",
             str(config)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **env})


@contextlib.contextmanager
def netns_process(ns: str, cmd: list[str], out: Path) -> Iterator[subprocess.Popen[bytes]]:
    with out.open("wb") as f:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        stop_process(proc, 5.0)


def _messages(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """mosquitto_sub -v output: one `topic payload` line per message."""
    out = []
    for line in path.read_bytes().splitlines():
        topic, _, payload = line.partition(b" ")
        with contextlib.suppress(orjson.JSONDecodeError):
            out.append((topic.decode(), orjson.loads(payload)))
    return out


def _log_times(log: str, text: str) -> list[float]:
    """Wall times of the log lines containing `text` (the daemon logs local time)."""
    return [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
            for line in log.splitlines() if text in line]


def _partitions(tmp_path: Path, cycles: int) -> dict[str, Any]:
    with partitionable_link() as link:
        conf = tmp_path / "mosquitto.conf"
        conf.write_text(f"user root\nlistener {PORT}\nallow_anonymous true\n"
                        "log_dest stderr\nlog_type all\nconnection_messages true\n"
                        "log_timestamp true\n")
        frames = copy_digit_frames(tmp_path / "frames")
        config = write_config(tmp_path / "edged.toml", base_config(
            PORT, model=DIGITS, frames=frames, source={"fps": 30.0},
            mqtt={"host": link.broker_addr, "keepalive_s": KEEPALIVE_S, "queue_size": QUEUE,
                  "qos_results": 1, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0}))
        received = tmp_path / "sub.txt"
        cycle: list[dict[str, float]] = []
        with netns_process(link.broker_ns, [MOSQUITTO, "-c", str(conf)],
                           tmp_path / "mosquitto.log"), \
                path_listener(tmp_path) as listener, NotifyRecorder(listener) as notify:
            wait_until(lambda: "running" in (tmp_path / "mosquitto.log").read_text(), 10,
                       "mosquitto in its namespace")
            with netns_process(link.broker_ns,
                               ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(PORT), "-q", "1",
                                "-v", "-t", "edged/#", "-i", "partition-sub", "-c"], received), \
                    NetnsDaemon(config, link.daemon_ns,
                                {"NOTIFY_SOCKET": listener.env_value,
                                 "WATCHDOG_USEC": "1000000"}) as daemon:
                wait_until(lambda: sum(t.endswith("/results") for t, _ in _messages(received))
                           >= 10, 30, f"results through the veth link:\n{daemon.log_text()}")
                for n in range(1, cycles + 1):
                    cycle.append(_one_partition(link, received, daemon, notify, n))
                assert daemon.stop() == 0
                time.sleep(1.0)
        log = daemon.log_text()
    msgs = _messages(received)
    acc = Accounting.of([p["seq"] for t, p in msgs if t.endswith("/results")])
    final = [p for t, p in msgs if t.endswith("/stats")][-1]
    figures = {
        "cycles": cycles, "keepalive_s": KEEPALIVE_S,
        "partition_s": [c["partition_s"] for c in cycle],
        "detected_by_daemon_s": [c["detected_s"] for c in cycle],
        "will_after_s": [c["will_s"] for c in cycle],
        "delivery_back_after_heal_s": [c["back_s"] for c in cycle],
        "watchdog_pings_during_partition": [c["pings"] for c in cycle],
        "missing": len(acc.missing), "dropped_counted": final["results_dropped"],
        "duplicates": acc.duplicates, "gaps": gaps(acc.missing),
    }
    assert "Traceback" not in log, log
    return figures


def _one_partition(link: Link, received: Path, daemon: DaemonProcess, notify: NotifyRecorder,
                   n: int) -> dict[str, float]:
    """Cut, wait until both sides noticed, heal, wait until delivery is back and drained."""
    seen = len(_messages(received))
    link.cut()
    cut_mono, cut_wall = time.monotonic(), time.time()
    # The broker's side: the daemon's keepalive lapses, the will is sent.
    wait_until(lambda: any(t.endswith("/status") and p["state"] == "offline"
                           for t, p in _messages(received)[seen:]), 30,
               "last will on the broker's side")
    will_at = time.time()
    wait_until(lambda: daemon.log_text().count("connection lost") >= n, 30,
               "the daemon noticing the partition")
    time.sleep(2.0)
    partition_s = time.monotonic() - cut_mono
    link.heal()
    healed = time.time()
    pings = notify.pings(after=cut_mono + 1.0)
    seen = len(_messages(received))
    wait_until(lambda: any(t.endswith("/status") and p["state"] == "online"
                           for t, p in _messages(received)[seen:]), 30,
               "online again after the heal")
    back_at = time.time()
    wait_until(lambda: any(t.endswith("/stats") and p["results_queued"] == 0
                           and p["broker"] == "connected"
                           for t, p in _messages(received)[seen:]), 30, "the queue drained")
    detected = _log_times(daemon.log_text(), "connection lost")[n - 1] - cut_wall
    return {"partition_s": round(partition_s, 1), "detected_s": round(detected, 2),
            "will_s": round(will_at - cut_wall, 2), "back_s": round(back_at - healed, 2),
            "pings": len([t for t in pings if t < cut_mono + partition_s])}


def _check(f: dict[str, Any]) -> None:
    # Keepalive: paho sends PINGREQ after keepalive_s of silence and gives up
    # when no PINGRESP comes within another keepalive_s.
    assert max(f["detected_by_daemon_s"]) <= 3 * KEEPALIVE_S, f
    # Nothing blocked: the watchdog (gated on frames and the network thread) kept pinging.
    for pings, length in zip(f["watchdog_pings_during_partition"], f["partition_s"],
                             strict=True):
        assert pings >= int(length) - 2, f
    # Every result is delivered or counted: none lost silently.
    assert f["missing"] == f["dropped_counted"] > 0, f
    assert len(f["gaps"]) <= f["cycles"], f


def test_partition_is_detected_by_keepalive_and_heals(tmp_path: Path) -> None:
    f = _partitions(tmp_path, cycles=1)
    record_figure("network_partition", **f)
    _check(f)


@pytest.mark.slow
def test_partition_5_times(tmp_path: Path) -> None:
    f = _partitions(tmp_path, cycles=5)
    record_figure("network_partition_x5", **f)
    _check(f)
