"""Stopping a child process: a signal, a grace period, then SIGKILL, and reap.

The demo, the bench, the soak script and the tests start brokers and daemons
as children; each must be gone, and reaped, whatever state it is in, or it
keeps a port, a core or the test's temp folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], grace_s: float, sig: int | None = signal.SIGTERM,
                 *, group: bool = False) -> int:
    """Send `sig` (None: send nothing, e.g. after closing its stdin), wait up to
    `grace_s` for it to exit, then SIGKILL it; return its exit code (negative:
    the signal that ended it). `group`: the SIGKILL goes to its whole process
    group (a child started with `start_new_session=True` whose own children,
    an inference worker, would otherwise outlive it). `sig` goes to the child
    alone: a daemon stops its own children in order."""
    if proc.poll() is None and sig is not None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        return proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        return proc.wait()


def describe_exit(code: int | None) -> str:
    """How a child ended, from its exit code (None: it has not: hung)."""
    if code is None:
        return "hung"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"
