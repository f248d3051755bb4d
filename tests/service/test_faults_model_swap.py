"""A model replaced on disk at the same path, and a thread that dies (issue 15.3).

Overwriting `model.path` with another model and letting the worker restart
used to kill the pipeline thread (`cannot reshape array of size 12288 into
shape (32,32,3)`), while stats said `worker_state = running` and SIGHUP said
"changed: nothing". A restarted worker with another model is a reload of
preprocessing; SIGHUP after replacing the file reloads the model; and a thread
that dies anyway (a bug, injected here through `sitecustomize`, as no input is
known to cause one) is reported at once: STATUS=, `WATCHDOG=trigger`, the
stats topic's `last_error`, the journal.
"""

from __future__ import annotations

import os
import shutil
import signal
import textwrap
import time
from pathlib import Path

import orjson
from broker import Mosquitto, Subscriber
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, results, write_config
from faults_helpers import process_gone, wait_until
from notify_helpers import path_listener
from reload_helpers import ShellDaemon, wait_log, wait_stats

DIGITS = MODELS / "digits_int8.tflite"  # input [1, 32, 32, 3], output [1, 10]
YOLO = MODELS / "detect_yolo_int8.tflite"  # input [1, 64, 64, 3], output [1, 7, 64]


def _running(tmp_path: Path, port: int) -> Path:
    model = tmp_path / "model.tflite"
    shutil.copyfile(DIGITS, model)
    return write_config(tmp_path / "edged.toml", base_config(port, model=model, frames=FRAMES))


def _shapes(doc: dict[str, object]) -> list[list[int]]:
    return [o["shape"] for o in doc["outputs"]]  # type: ignore[attr-defined, index]


def _overwrite(model: Path, other: Path) -> None:
    """`cp other model`: the same path, the same inode, new bytes."""
    with other.open("rb") as src, model.open("r+b") as dst:
        data = src.read()
        dst.truncate(0)
        dst.write(data)


def test_a_restarted_worker_with_another_model_is_a_reload_not_a_crash(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = _running(tmp_path, mosquitto.port)
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(config) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
        old = daemon.worker_pid()
        _overwrite(tmp_path / "model.tflite", YOLO)
        os.kill(old, signal.SIGKILL)
        swapped = time.time()
        new = sub.wait_for(lambda m: m.topic.endswith("/results") and m.received_at > swapped
                           and _shapes(orjson.loads(m.payload)) == [[1, 7, 64]], timeout=30)
        later = sub.wait_count(lambda m: m.topic.endswith("/results")
                               and m.received_at > new.received_at, 5, timeout=10)
        worker = daemon.worker_pid()
        stats = wait_stats(sub, lambda s: True, after=later[-1].received_at)
        assert daemon.stop() == 0
    assert all(_shapes(orjson.loads(m.payload)) == [[1, 7, 64]] for m in later)
    assert stats["worker_state"] == "running" and stats["worker_pid"] == worker
    log = daemon.log_text()
    assert "Traceback" not in log and "died" not in log, log
    assert (f"the restarted worker loaded {tmp_path / 'model.tflite'} with input [1, 64, 64, 3] "
            "(the model it replaced had [1, 32, 32, 3]): the file changed on disk; "
            "preprocessing now builds that input") in log, log


def test_sighup_after_the_model_file_was_replaced_loads_it(tmp_path: Path,
                                                            mosquitto: Mosquitto) -> None:
    config = _running(tmp_path, mosquitto.port)
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(config) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
        # How people deploy a model: write it beside, rename over (the worker keeps the old).
        staged = tmp_path / "model.tflite.new"
        shutil.copyfile(YOLO, staged)
        staged.replace(tmp_path / "model.tflite")
        daemon.send(signal.SIGHUP)
        wait_log(daemon, "reload: applied")
        applied = time.time()
        sub.wait_count(lambda m: m.topic.endswith("/results") and m.received_at > applied, 3,
                       timeout=30)
        daemon.send(signal.SIGHUP)
        wait_log(daemon, "reload: applied", count=2)
        assert daemon.stop() == 0
    log = daemon.log_text()
    assert ("reload: changed: model file (replaced on disk); restarting: inference worker "
            "(model reloaded)") in log, log
    assert _shapes(results(sub.messages)[-1]) == [[1, 7, 64]]
    # Nothing changed since: the next SIGHUP restarts nothing.
    assert "reload: changed: nothing; restarting: nothing" in log, log
    assert log.count("model model.tflite:") == 2


SITECUSTOMIZE = textwrap.dedent("""
    import os
    if os.environ.get("EDGED_TEST_INJECT_BUG"):
        import edged.service.pipeline as pipeline
        finish = pipeline.Pipeline._finish

        def _finish(self, job, *args):
            if job.frame.seq >= 20:
                raise RuntimeError("injected bug")
            return finish(self, job, *args)

        pipeline.Pipeline._finish = _finish
""")


def test_a_thread_that_dies_is_reported_at_once_injected_bug(tmp_path: Path,
                                                              mosquitto: Mosquitto) -> None:
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    config = write_config(tmp_path / "edged.toml", base_config(
        mosquitto.port, model=DIGITS, frames=FRAMES, output={"stats_interval_s": 30.0}))
    path = os.pathsep.join(p for p in (str(inject), os.environ.get("PYTHONPATH")) if p)
    with path_listener(tmp_path) as listener, Subscriber(mosquitto.port, "edged/#") as sub:
        env = {"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "30000000",
               "PYTHONPATH": path, "EDGED_TEST_INJECT_BUG": "1"}
        daemon = ShellDaemon(config, env)
        try:
            listener.receive_until("READY", timeout=60)
            wait_log(daemon, "thread edged-pipeline died", timeout=30)
            died = time.monotonic()
            told = listener.drain(3.0)
            trigger = [m.at for m in told if m.get("WATCHDOG") == "trigger"]
            stats = wait_stats(sub, lambda s: s["last_error"] != "", timeout=5)
            assert daemon.stop() == 0
        finally:
            daemon.__exit__()
    # Within a housekeeping tick, not at the next watchdog check (15 s here).
    assert len(trigger) == 1 and trigger[0] - died < 1.0, [m.raw for m in told]
    statuses = [m.get("STATUS") or "" for m in told if "STATUS" in m.keys]
    assert any("unhealthy: thread edged-pipeline died: RuntimeError: injected bug" in s
               for s in statuses), statuses
    assert stats["last_error"] == "thread edged-pipeline died: RuntimeError: injected bug"
    lines = [line for line in daemon.log_text().splitlines() if "died" in line]
    assert len(lines) == 1 and " ERROR " in lines[0] and "Traceback" in lines[0], lines
    wait_until(lambda: process_gone(daemon.pid), 5, "daemon gone")
