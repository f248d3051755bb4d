"""stop_process on real children: polite, stubborn, already gone, and with a child of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from edged.system.childproc import stop_process

SLEEPER = "import time; print('up', flush=True); time.sleep(60)"
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(60)")
PARENT = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
          "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
          "print(c.pid, flush=True); time.sleep(60)")


def started(code: str, **kw: object) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            **kw)  # type: ignore[call-overload]
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_polite_child_ends_on_the_signal() -> None:
    proc, _ = started(SLEEPER)
    t0 = time.monotonic()
    assert stop_process(proc, 5.0) == -signal.SIGTERM
    assert time.monotonic() - t0 < 2.0


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period() -> None:
    proc, _ = started(STUBBORN)
    t0 = time.monotonic()
    assert stop_process(proc, 0.5) == -signal.SIGKILL
    assert 0.4 < time.monotonic() - t0 < 3.0


def test_a_child_already_reaped_is_no_error() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert stop_process(proc, 1.0) == 0


def test_group_kill_takes_the_grandchild_too() -> None:
    proc, grandchild = started(PARENT, start_new_session=True)
    assert stop_process(proc, 0.3, group=True) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while not gone(int(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(int(grandchild))
