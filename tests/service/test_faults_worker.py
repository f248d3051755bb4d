"""Inference worker faults: SIGKILL, SIGABRT and a hang (SIGSTOP), over and over.

The daemon must survive each, have results flowing again soon (the issue asks
for 2 s; the hang is noticed after `invoke_timeout_s`, 0.5 s here), grow its
restart backoff only while failures are consecutive, and say on the stats
topic what happened. A Coral whose worker keeps dying (the stub delegate
stand-in, aborting like libedgetpu on a USB error) ends on the CPU after
`cpu_fallback_after` failures.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from daemon_helpers import DaemonProcess, base_config, results, write_config
from faults_helpers import (
    DIGITS,
    Accounting,
    build_stub_delegate,
    copy_digit_frames,
    is_stats,
    kill_quietly,
    process_gone,
    record_figure,
    result_after,
    stats_of,
    subscribed,
    wait_until,
)

KINDS = {"sigkill": signal.SIGKILL, "sigabrt": signal.SIGABRT, "hang": signal.SIGSTOP}
# The pipeline notices a dead worker while waiting for it ("... while inference")
# or when handing it the next frame ("... before a frame was sent").
EXPECTED_FAILURE = {
    "sigkill": "worker killed by SIGKILL",
    "sigabrt": "worker killed by SIGABRT",
    "hang": "worker hung: no answer within 0.5 s while inference",
}
# Results delivered before the fault still reach the subscriber a few ms later;
# no replacement worker can load a model that fast, so later ones are new.
IN_FLIGHT_S = 0.1


def _config(tmp_path: Path, port: int, **overrides: Any) -> Path:
    frames = copy_digit_frames(tmp_path / "frames")
    inference = {"invoke_timeout_s": 0.5, "restart_backoff_s": 0.1,
                 "restart_backoff_max_s": 2.0, **overrides.pop("inference", {})}
    return write_config(tmp_path / "edged.toml", base_config(
        port, model=DIGITS, frames=frames, source={"fps": 30.0}, inference=inference,
        **overrides))


def _inject(tmp_path: Path, mosquitto: Any, kind: str, times: int) -> None:
    sig = KINDS[kind]
    recoveries: list[float] = []
    lost: list[int] = []
    with subscribed(mosquitto.port) as sub, \
            DaemonProcess(_config(tmp_path, mosquitto.port)) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
        for i in range(times):
            old = daemon.worker_pid()
            before = max(d["seq"] for d in results(sub.messages))
            os.kill(old, sig)
            t0 = time.time()
            try:
                first = sub.wait_for(result_after(t0 + IN_FLIGHT_S), timeout=15)
            except TimeoutError:
                raise AssertionError(f"{kind} #{i + 1}: no results after the fault:\n"
                                     f"{daemon.log_text()}") from None
            recoveries.append(first.received_at - t0)
            assert daemon.proc.poll() is None, daemon.log_text()
            after = orjson.loads(first.payload)["seq"]
            seqs = [d["seq"] for d in results(sub.messages)]
            # Folder frames are never dropped at capture: only frames in the
            # worker's two slots when it died are lost.
            lost.append(len(set(range(before + 1, after)) - set(seqs)))
            wait_until(lambda old=old: process_gone(old), 5, f"old worker {old} reaped")
            assert daemon.worker_pid() != old
        final = sub.wait_for(is_stats(lambda s: s["worker_restarts"] == times
                                      and s["worker_state"] == "running"), timeout=10)
        stats = orjson.loads(final.payload)
        assert stats["worker_last_failure"].startswith(EXPECTED_FAILURE[kind]), stats
        assert daemon.stop() == 0
    log = daemon.log_text()
    assert "Traceback" not in log, log
    assert log.count(EXPECTED_FAILURE[kind]) == times, log
    acc = Accounting.of([d["seq"] for d in results(sub.messages)])
    last = stats_of(sub.messages)[-1]
    counted = last["frames_lost"] + last["frames_dropped"] + last["results_dropped"]
    # Frames a dying worker took with it are counted, like every other loss.
    assert len(acc.missing) == counted == sum(lost), (acc.missing, last)
    figures = {"kind": kind, "times": times, "recovery_s_median": round(
        statistics.median(recoveries), 3), "recovery_s_max": round(max(recoveries), 3),
        "recovery_s": [round(r, 3) for r in recoveries], "results_lost_per_fault": lost,
        "duplicates": acc.duplicates}
    record_figure(f"worker_{kind}", **figures)
    # Timing on a shared, loaded machine: the median carries the 2 s promise,
    # the worst case only has to be bounded (RELIABILITY.md has the figures).
    assert statistics.median(recoveries) < 2.0, figures
    assert max(recoveries) < 10.0, figures
    assert max(lost) <= 2, figures
    assert acc.duplicates == 0, figures


@pytest.mark.parametrize("kind", list(KINDS))
def test_worker_fault_repeated(tmp_path: Path, mosquitto: Any, kind: str) -> None:
    _inject(tmp_path, mosquitto, kind, times=5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_worker_fault_20_times(tmp_path: Path, mosquitto: Any, kind: str) -> None:
    _inject(tmp_path, mosquitto, kind, times=20)


def _backoffs(log: str) -> list[float]:
    return [float(x) for x in re.findall(r"restarting the inference worker in ([\d.]+) s", log)]


def test_backoff_grows_while_failures_are_consecutive_and_resets_after_a_frame(
        tmp_path: Path, mosquitto: Any) -> None:
    config = _config(tmp_path, mosquitto.port,
                     inference={"restart_backoff_s": 1.0, "restart_backoff_max_s": 4.0})
    with subscribed(mosquitto.port) as sub, DaemonProcess(config) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
        first = daemon.worker_pid()
        os.kill(first, signal.SIGKILL)
        t0 = time.time()
        # While it waits out the backoff, the stats topic says so and why.
        during = sub.wait_for(lambda m: m.received_at > t0 and is_stats(
            lambda s: s["worker_state"] == "restarting")(m), timeout=5)
        figures = orjson.loads(during.payload)
        assert figures["last_error"].startswith("worker killed by SIGKILL"), figures
        # The replacement dies while loading: a second failure in a row.
        wait_until(lambda: daemon.worker_pid(timeout=5) != first, 5, "the replacement worker")
        second = daemon.worker_pid()
        os.kill(second, signal.SIGKILL)
        sub.wait_for(result_after(time.time() + IN_FLIGHT_S), timeout=20)
        # A frame went through: the next failure starts from the first backoff again.
        os.kill(daemon.worker_pid(), signal.SIGKILL)
        sub.wait_for(result_after(time.time() + IN_FLIGHT_S), timeout=20)
        assert daemon.stop() == 0
    assert _backoffs(daemon.log_text()) == [1.0, 2.0, 1.0], daemon.log_text()
    last = stats_of(sub.messages)[-1]
    assert last["worker_restarts"] == 3 and last["worker_state"] in ("running", "stopped")


@pytest.mark.parametrize("when", ["from_start", "unplugged_later"])
def test_coral_whose_worker_keeps_dying_falls_back_to_cpu(
        tmp_path: Path, mosquitto: Any, when: str) -> None:
    """Stand-in for a Coral: the stub delegate aborts the worker in Prepare."""
    stub = build_stub_delegate(tmp_path)
    unplugged = tmp_path / "unplugged"
    options = {"abort_on_prepare": "1"} if when == "from_start" else {
        "abort_if_exists": str(unplugged)}
    config = _config(tmp_path, mosquitto.port, inference={
        "delegate": "external", "external_library": str(stub), "external_options": options,
        "fallback": "cpu", "cpu_fallback_after": 3})
    with subscribed(mosquitto.port) as sub, DaemonProcess(config) as daemon:
        if when == "unplugged_later":
            sub.wait_for(lambda m: m.topic.endswith("/results")
                         and orjson.loads(m.payload)["delegate"] == "external", timeout=30)
            unplugged.touch()
            os.kill(daemon.worker_pid(), signal.SIGKILL)  # the first failure
        t0 = time.time()
        cpu = sub.wait_for(lambda m: m.topic.endswith("/results")
                           and orjson.loads(m.payload)["delegate"] == "cpu", timeout=30)
        stats = sub.wait_for(lambda m: m.received_at >= cpu.received_at and is_stats(
            lambda s: s["delegate"] == "cpu")(m), timeout=10)
        figures = orjson.loads(stats.payload)
        assert figures["worker_state"] == "running"
        assert figures["worker_last_failure"] == \
            "worker killed by SIGABRT while loading the model", figures
        # CPU from then on: no result goes back to the broken accelerator.
        later = sub.wait_count(lambda m: m.topic.endswith("/results")
                               and m.received_at > cpu.received_at, 10, timeout=15)
        assert {orjson.loads(m.payload)["delegate"] for m in later} == {"cpu"}
        assert daemon.stop() == 0
    log = daemon.log_text()
    assert "falling back to the CPU" in log, log
    assert log.count("killed by SIGABRT while loading the model") >= 2, log
    record_figure(f"coral_fallback_{when}", seconds_to_cpu=round(cpu.received_at - t0, 3),
                  worker_restarts=figures["worker_restarts"])


def test_worker_faults_under_a_live_camera_lose_only_counted_frames(tmp_path: Path,
                                                                    mosquitto: Any) -> None:
    """A live source does not wait for the worker: what it captures during a restart
    replaces the latest-frame slot (frames_dropped), beside the slots' frames_lost."""
    config = write_config(tmp_path / "edged.toml", base_config(
        mosquitto.port, model=DIGITS, frames=tmp_path,
        source={"kind": "synthetic", "fps": 30.0, "width": 64, "height": 64},
        inference={"invoke_timeout_s": 0.5, "restart_backoff_s": 0.1}))
    missing_per_fault = []
    with subscribed(mosquitto.port) as sub, DaemonProcess(config) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 30, timeout=30)
        for _ in range(3):
            before = max(d["seq"] for d in results(sub.messages))
            os.kill(daemon.worker_pid(), signal.SIGKILL)
            first = sub.wait_for(result_after(time.time() + IN_FLIGHT_S), timeout=15)
            after = orjson.loads(first.payload)["seq"]
            seqs = {d["seq"] for d in results(sub.messages)}
            missing_per_fault.append(len(set(range(before + 1, after)) - seqs))
            sub.wait_count(lambda m, t=first.received_at: m.topic.endswith("/results")
                           and m.received_at > t, 15, timeout=10)
        time.sleep(1.5)
        assert daemon.stop() == 0
    acc = Accounting.of([d["seq"] for d in results(sub.messages)])
    last = stats_of(sub.messages)[-1]
    counted = last["frames_lost"] + last["frames_dropped"] + last["results_dropped"]
    record_figure("worker_sigkill_live_camera", missing_per_fault=missing_per_fault,
                  frames_lost=last["frames_lost"], frames_dropped=last["frames_dropped"],
                  missing=len(acc.missing))
    assert len(acc.missing) == counted, (len(acc.missing), last)
    assert last["frames_lost"] <= 2 * 3 < last["frames_dropped"], last


def _stop_frozen(daemon: DaemonProcess, worker: int) -> float:
    os.kill(worker, signal.SIGSTOP)
    time.sleep(0.5)
    t0 = time.monotonic()
    assert daemon.stop(timeout=20) == 0
    took = time.monotonic() - t0
    kill_quietly(worker, signal.SIGCONT)
    return took


def test_a_clean_stop_with_the_worker_frozen_is_quick_and_no_error(tmp_path: Path,
                                                                   mosquitto: Any) -> None:
    # The default invoke deadline (10 s) used to hold the stop for 9-12 s, with an ERROR.
    config = _config(tmp_path, mosquitto.port, inference={"invoke_timeout_s": 10.0})
    with subscribed(mosquitto.port) as sub, DaemonProcess(config) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
        took = _stop_frozen(daemon, daemon.worker_pid())
    log = daemon.log_text()
    record_figure("stop_with_frozen_worker", seconds=round(took, 2))
    assert took < 5.0, (took, log)
    assert " ERROR " not in log, log
    assert "the inference worker has not answered for 2 s: stopping it without its last " \
        "frame" in log, log
    assert "inference worker stopped (worker killed by SIGKILL while inference)" in log, log


def test_a_stop_while_the_worker_is_frozen_loading_is_quick(tmp_path: Path,
                                                            mosquitto: Any) -> None:
    config = _config(tmp_path, mosquitto.port)
    with DaemonProcess(config) as daemon:
        worker = daemon.worker_pid(timeout=20)
        os.kill(worker, signal.SIGSTOP)  # most likely before it has loaded the model
        loading = "model digits_int8.tflite:" not in daemon.log_text()
        took = _stop_frozen(daemon, worker)
    log = daemon.log_text()
    assert took < 5.0, (took, log)
    assert " ERROR " not in log, log
    if loading:
        assert "stopped while starting" in log, log
