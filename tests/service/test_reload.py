"""SIGHUP reload of the real `edged run` with a real mosquitto: what restarts, what does not.

Proof that a part was not restarted comes from three places at once: the
worker's pid (from /proc and from the stats topic), the daemon's log (one
"model ..." line per model load) and the stats counters (source reopens).
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from broker import Mosquitto, Subscriber
from daemon_helpers import MODELS, DaemonProcess, base_config, results, write_config
from reload_helpers import (
    digit_folder,
    results_after,
    sighup,
    wait_results,
    wait_stats,
    wait_until,
    worker_count,
)

ROOT = Path(__file__).resolve().parents[2]
LABELS = ROOT / "edged" / "data" / "digits_labels.txt"
MODEL = MODELS / "digits_int8.tflite"
LOADED = "model digits_int8.tflite:"  # logged once per model load


def classes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    decoded: dict[str, Any] = doc["decoded"]
    assert decoded["kind"] == "classification"
    out: list[dict[str, Any]] = decoded["classes"]
    return out


class Running:
    """A daemon on a config dict, a subscriber, and `reload(**sections)`."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, cfg: dict[str, dict[str, Any]],
                 sub: Subscriber | None = None) -> None:
        self.cfg = cfg
        self.path = write_config(tmp_path / "edged.toml", cfg)
        self.sub = sub or Subscriber(broker.port, "edged/#").start()
        self.daemon = DaemonProcess(self.path)
        self.reloads = 0

    def reload(self, expect: str = "reload: applied", **sections: dict[str, Any]) -> float:
        """Rewrite the file with `sections` merged in, SIGHUP, wait for `expect` in the log."""
        for name, keys in sections.items():
            self.cfg.setdefault(name, {}).update(keys)
        write_config(self.path, self.cfg)
        return self.hup(expect)

    def hup(self, expect: str) -> float:
        return sighup(self.daemon, expect)


@pytest.fixture
def running(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Running]:
    cfg = base_config(mosquitto.port, model=MODEL, frames=digit_folder(tmp_path, "all"),
                      output={"decoder": "classification", "top_k": 5, "min_score": 0.0,
                              "include_raw": False, "stats_interval_s": 1.0})
    cfg["model"]["labels"] = str(LABELS)
    r = Running(tmp_path, mosquitto, cfg)
    try:
        wait_results(r.sub, 3)
        yield r
        assert r.daemon.stop() == 0
        assert "Traceback" not in r.daemon.log_text(), r.daemon.log_text()
    finally:
        r.daemon.__exit__()
        r.sub.stop()


def test_threshold_change_keeps_camera_and_model_and_changes_the_output(running: Running
                                                                         ) -> None:
    r = running
    assert all(len(classes(d)) == 5 for d in results(r.sub.messages))
    pid = r.daemon.worker_pid()
    before = wait_stats(r.sub, lambda s: s["worker_pid"] == pid)

    applied = r.reload(output={"min_score": 0.5, "top_k": 2})

    after = wait_results(r.sub, 5, after=applied)
    assert all(len(classes(d)) <= 2 for d in after)
    assert all(c["score"] >= 0.5 for d in after for c in classes(d))
    assert any(classes(d) for d in after), "clean digits score above 0.5"
    stats = wait_stats(r.sub, lambda s: True, after=applied)
    assert (stats["worker_pid"], stats["worker_restarts"]) == (pid, 0)
    assert stats["source_reopens"] == before["source_reopens"]
    assert stats["config_reload"] == "ok"
    assert r.daemon.worker_pid() == pid
    log = r.daemon.log_text()
    assert log.count(LOADED) == 1, log
    assert "reload: changed: output; restarting: decoder/encoder" in log


def test_broken_file_keeps_the_old_config_and_results_keep_flowing(running: Running,
                                                                    tmp_path: Path) -> None:
    r = running
    pid = r.daemon.worker_pid()
    sent = time.time()
    failed = r.reload("reload failed: still running with the previous config",
                      output={"top_k": 0, "min_score": 2.0})
    log = r.daemon.log_text()
    # Every problem, each on its own line naming the file, line and key.
    assert f"reload: {r.path}:" in log
    assert "output.top_k" in log and "output.min_score" in log
    stats = wait_stats(r.sub, lambda s: True, after=failed)
    assert stats["config_reload"].startswith("failed: 2 problem(s), kept the running config: ")
    assert str(r.path) in stats["config_reload"]

    # The old config (top 5 classes) carries on without a gap.
    wait_results(r.sub, 5, after=failed)
    times = [m.received_at for m in r.sub.on("/results") if sent - 2 < m.received_at]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 3.0, gaps
    assert all(len(classes(d)) == 5 for d in results_after(r.sub, failed))

    # A file that parses but points at a broken model: refused before the
    # running worker is touched.
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model" * 100)
    r.cfg["output"].update(top_k=5, min_score=0.0)
    r.reload("reload failed: still running with the previous config", model={"path": str(junk)})
    assert f"model.path: {junk}" in r.daemon.log_text()
    assert r.daemon.worker_pid() == pid
    assert r.daemon.log_text().count(LOADED) == 1

    # Raw outputs larger than max_values allows in one JSON message: refused
    # against the running model's outputs, as check-config would.
    r.cfg["model"]["path"] = str(MODEL)
    r.reload("reload failed: still running with the previous config",
             output={"include_raw": True, "max_values": 5})
    assert f"reload: {r.path}: output.max_values: " in r.daemon.log_text()

    # Fixed: applied, and the stats say so.
    r.cfg["output"].update(include_raw=False, max_values=65536)
    applied = r.reload(output={"top_k": 1})
    stats = wait_stats(r.sub, lambda s: s["config_reload"] == "ok", after=applied)
    assert stats["worker_pid"] == pid
    assert all(len(classes(d)) <= 1 for d in wait_results(r.sub, 3, after=applied))


def test_inference_restarts_the_worker_and_source_reopens_only_the_source(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    threes, sevens = digit_folder(tmp_path, "threes", "3"), digit_folder(tmp_path, "sevens", "7")
    cfg = base_config(mosquitto.port, model=MODEL, frames=threes,
                      output={"decoder": "classification", "top_k": 1, "stats_interval_s": 1.0})
    cfg["model"]["labels"] = str(LABELS)
    r = Running(tmp_path, mosquitto, cfg)
    try:
        assert {classes(d)[0]["label"] for d in wait_results(r.sub, 3)} == {"3"}
        first = r.daemon.worker_pid()
        reopens = wait_stats(r.sub, lambda s: s["worker_pid"] == first)["source_reopens"]

        applied = r.reload(inference={"num_threads": 2})
        second = r.daemon.worker_pid()
        assert second != first
        stats = wait_stats(r.sub, lambda s: s["worker_pid"] == second, after=applied)
        assert stats["source_reopens"] == reopens
        assert r.daemon.log_text().count(LOADED) == 2
        # ... and nothing else (no ", source" after it).
        assert "reload: changed: inference; restarting: inference worker (model reloaded)\n" \
            in r.daemon.log_text()

        applied = r.reload(source={"uri": str(sevens)})
        # Frames the old source captured before the swap may still be in the worker's
        # slots or the result queue (a loaded machine backs it up); every frame
        # captured after the reload was applied comes from the new source.
        new_frames = r.sub.wait_count(lambda m: m.topic.endswith("/results") and orjson.loads(
            m.payload)["captured_at"] > applied, 3, timeout=30)
        labels = [classes(orjson.loads(m.payload))[0]["label"] for m in new_frames]
        assert labels == ["7", "7", "7"], labels
        assert r.daemon.worker_pid() == second
        assert r.daemon.log_text().count(LOADED) == 2
        assert "reload: changed: source; restarting: source" in r.daemon.log_text()
        assert r.daemon.stop() == 0
    finally:
        r.daemon.__exit__()
        r.sub.stop()


def test_mqtt_change_during_a_broker_outage_loses_nothing(tmp_path: Path,
                                                          mosquitto_factory: Any) -> None:
    broker = mosquitto_factory(persistence=True)
    sub = Subscriber(broker.port, "edged/#", client_id="reload-sub", clean_session=False).start()
    cfg = base_config(broker.port, model=MODEL, frames=digit_folder(tmp_path, "all"),
                      inference={"max_fps": 10.0}, mqtt={"queue_size": 500})
    r = Running(tmp_path, broker, cfg, sub)
    try:
        wait_results(sub, 5)
        pid = r.daemon.worker_pid()
        broker.stop()
        time.sleep(1.0)
        r.reload(mqtt={"keepalive_s": 6, "queue_size": 600})  # must not wedge on the outage
        time.sleep(1.0)
        broker.start()
        back = time.time()
        wait_results(sub, 5, after=back)
        stats = wait_stats(sub, lambda s: s["broker"] == "connected", after=back)
        assert stats["worker_pid"] == pid
        # The new connection's status says where the model runs, as the old one did.
        said = sub.wait_for(lambda m: m.topic.endswith("/status") and m.received_at > back
                            and "delegate" in orjson.loads(m.payload), timeout=10)
        assert orjson.loads(said.payload)["delegate"] == "cpu"
        assert r.daemon.stop() == 0
    finally:
        r.daemon.__exit__()
        sub.stop()
    seqs = sorted({d["seq"] for d in results(sub.messages)})
    missing = set(range(seqs[0], seqs[-1] + 1)) - set(seqs)
    final = orjson.loads(sub.on("/stats")[-1].payload)
    # Queued and unacknowledged results moved to the new connection: none lost.
    assert missing == set(), sorted(missing)
    assert final["results_dropped"] == 0
    assert final["results_published"] >= len(seqs)
    assert "Traceback" not in r.daemon.log_text()


def test_reload_while_the_worker_restarts_leaves_one_worker_running(running: Running) -> None:
    r = running
    os.kill(r.daemon.worker_pid(), signal.SIGKILL)
    applied = r.reload(inference={"num_threads": 2})
    wait_results(r.sub, 3, after=applied)
    wait_until(lambda: worker_count(r.daemon) == 1, 10, "exactly one worker",
               r.daemon.log_text)
    time.sleep(1.0)  # no stray restart afterwards
    assert worker_count(r.daemon) == 1
    # And an output change right after: still the same worker.
    pid = r.daemon.worker_pid()
    applied = r.reload(output={"top_k": 1})
    assert all(len(classes(d)) <= 1 for d in wait_results(r.sub, 3, after=applied))
    assert r.daemon.worker_pid() == pid
