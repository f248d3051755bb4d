"""CPU time and context switches of processes and their threads, from /proc, and
what one sleep and wake-up costs here.

The bench's "CPU per result" (per process) and where a daemon's goes (per thread,
by the names edged's threads give the kernel: edged-capture, edged-pipeline,
edged-mqtt). The clock tick is 10 ms: over a few hundred results, steps of tens
of microseconds per result.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a whole process (all its threads) so far."""
    return 0.0 if pid is None else stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def stat_cpu_seconds(stat_file: Path) -> float:
    """User + system CPU time from a /proc `stat` file (a process's or a thread's);
    0 when it is gone."""
    try:
        stat = stat_file.read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time of each of a process's threads, summed by the name it gave the kernel."""
    out: dict[str, float] = {}
    for task in _tasks(pid):
        try:
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        out[name] = out.get(name, 0.0) + stat_cpu_seconds(task / "stat")
    return out


def thread_switches(pid: int) -> dict[str, int]:
    """Context switches of each of a process's threads by name (voluntary: it waited
    and was woken; involuntary: preempted)."""
    out: dict[str, int] = {}
    for task in _tasks(pid):
        try:
            name = (task / "comm").read_text().strip()
            lines = (task / "status").read_text().splitlines()
        except OSError:
            continue
        n = sum(int(line.split()[1]) for line in lines if "ctxt_switches" in line)
        out[name] = out.get(name, 0) + n
    return out


def sleep_wake_us(n: int, interval_s: float) -> float:
    """CPU time of one `time.sleep(interval_s)` and its wake-up, over `n` of them: the
    price of every wait in the daemon's threads (a KVM guest pays an exit for the
    timer and the idle, a few times what bare metal does)."""
    t0 = time.thread_time()
    for _ in range(n):
        time.sleep(interval_s)
    return (time.thread_time() - t0) * 1e6 / n


def _tasks(pid: int) -> list[Path]:
    try:
        return list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:  # the process is gone
        return []
