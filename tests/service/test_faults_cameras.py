"""Several cameras under churn (slow): one camera's source dying again and again and
another camera reloaded every few seconds, for a minute, while a third runs steadily.

What must hold: the steady camera publishes throughout with no pause beyond a
reload's hand-over, and the daemon leaks nothing: its threads and open files
return to what they were (each reload replaces a camera's capture thread and
source; each reopen of the dead stream opens a socket).
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import pytest
from broker import Mosquitto
from cameras_helpers import Cameras, folder

SECONDS = 60.0
RELOAD_EVERY_S = 3.0


def _threads_and_fds(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
def test_cameras_under_churn_leak_nothing_and_keep_the_steady_one_going(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    steady: dict[str, Any] = {"id": "steady", "source": {"uri": folder(tmp_path, "s", "01")}}
    dead: dict[str, Any] = {"id": "dead", "source": {
        "kind": "stream", "uri": "rtsp://127.0.0.1:9/none", "reopen_backoff_s": 0.1,
        "reopen_backoff_max_s": 0.2}}
    c = Cameras(tmp_path, mosquitto, [steady, dead, _churned(tmp_path, 0)])
    try:
        c.wait_results("steady", 10)
        c.wait_results("churned", 5)
        time.sleep(2.0)
        before = _threads_and_fds(c.daemon.pid)
        start = time.time()
        n = 0
        while time.time() - start < SECONDS:
            n += 1
            c.reload([steady, dead, _churned(tmp_path, n)])
            time.sleep(RELOAD_EVERY_S)
        c.wait_results("churned", 5, after=time.time())
        time.sleep(2.0)
        after = _threads_and_fds(c.daemon.pid)
        received = [m.received_at for m in c.sub.on("/test/steady/results")
                    if m.received_at >= start]
        gaps = [b - a for a, b in itertools.pairwise(received)]
        assert max(gaps) < 1.0, max(gaps)
        assert len(received) > SECONDS * 10  # the folder plays at 30/s, shared
        assert after[0] <= before[0], (before, after)  # no capture thread left behind
        assert after[1] <= before[1] + 2, (before, after)  # no socket or file left open
        assert c.daemon.stop() == 0
        assert "Traceback" not in c.daemon.log_text()
    finally:
        c.daemon.__exit__()
        c.sub.stop()


def _churned(tmp_path: Path, n: int) -> dict[str, Any]:
    """Another source every reload: alternately a folder and a synthetic camera."""
    if n % 2:
        return {"id": "churned", "source": {"kind": "synthetic", "width": 160 + 16 * (n % 5)}}
    return {"id": "churned", "source": {"uri": folder(tmp_path, f"c{n}", "23")}}
