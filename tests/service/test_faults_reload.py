"""Reloads that used to reset what must only grow, or that switched settings silently.

Issue 15.4: a reload that only changed `source.fps` took `seq` from 2816 to 0
and `frames_dropped` from 4 to 0 (a worker reload did the same to
`worker_restarts`). Consumers de-duplicate by seq and Prometheus counters must
never go down: they carry on across reloads, and `boot_id` tells a restart of
the process (the one thing that starts them at 0 again). Issue 15.8: a missing
CA file named a key that does not exist (`mqtt.tls.ca_file`) without file:line,
and an emptied config file switched broker and device id to the defaults
without a word.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from broker import Mosquitto, Subscriber
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, write_config
from reload_helpers import wait_log, wait_stats

MODEL = MODELS / "digits_int8.tflite"
COUNTERS = ("frames", "frames_dropped", "frames_lost", "results_published", "results_dropped",
            "worker_restarts", "source_reopens", "mqtt_connects")
PROM = ("edged_frames_total", "edged_frames_dropped_total", "edged_worker_restarts_total",
        "edged_source_reopens_total", "edged_results_published_total")


def _prom(path: Path) -> dict[str, float]:
    out = {}
    for line in path.read_text().splitlines():
        name = line.split("{", 1)[0]
        if name in PROM:
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


def test_seq_and_counters_only_grow_across_reloads_and_boot_id_tells_a_restart(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    prom = tmp_path / "edged.prom"
    cfg = base_config(mosquitto.port, model=MODEL, frames=FRAMES,
                      source={"kind": "synthetic", "fps": 30.0, "width": 64, "height": 64},
                      inference={"max_fps": 10.0}, metrics={"textfile": str(prom)})
    path = write_config(tmp_path / "edged.toml", cfg)
    samples: list[dict[str, float]] = []
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        before = wait_stats(sub, lambda s: s["frames_dropped"] >= 20 and s["frames"] >= 20)
        samples.append(_prom(prom))
        os.kill(daemon.worker_pid(), signal.SIGKILL)
        before = wait_stats(sub, lambda s: s["worker_restarts"] == 1
                            and s["worker_state"] == "running")
        for n, change in enumerate(({"source": {"fps": 31.0}},
                                    {"inference": {"num_threads": 2}},
                                    {"source": {"width": 48}}), start=1):
            for section, keys in change.items():
                cfg[section].update(keys)
            write_config(path, cfg)
            last = max(orjson.loads(m.payload)["seq"] for m in sub.on("/results"))
            daemon.send(signal.SIGHUP)
            wait_log(daemon, "reload: applied", count=n)
            applied = time.time()
            floor = before["frames"] + 5
            after = wait_stats(sub, lambda s, floor=floor: s["frames"] > floor, after=applied)
            samples.append(_prom(prom))
            # A stats message can overtake the first result after a reload on a busy machine.
            sub.wait_for(lambda m, t=applied: m.topic.endswith("/results") and m.received_at > t,
                         timeout=30)
            for key in COUNTERS:
                assert after[key] >= before[key], (change, key, before[key], after[key])
            new = [orjson.loads(m.payload)["seq"] for m in sub.on("/results")
                   if m.received_at > applied]
            assert new and min(new) > last, (change, last, new[:5])
            before = after
        first_boot = {orjson.loads(m.payload)["boot_id"] for m in sub.messages}
        assert daemon.stop() == 0
    seqs = [orjson.loads(m.payload)["seq"] for m in sub.on("/results")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert len(first_boot) == 1 and len(next(iter(first_boot))) == 16
    for earlier, later in itertools.pairwise(samples):
        assert all(later[k] >= earlier[k] for k in PROM), (earlier, later)

    # A new process: a new boot_id, and seq from 0 again.
    sub2 = Subscriber(mosquitto.port, "edged/test/results").start()
    try:
        with DaemonProcess(path) as daemon:
            doc = orjson.loads(sub2.wait_for(lambda m: True, timeout=30).payload)
            assert daemon.stop() == 0
    finally:
        sub2.stop()
    assert doc["boot_id"] not in first_boot and doc["seq"] < 20


def _reload_fails(tmp_path: Path, mosquitto: Mosquitto, edit: Callable[[Path], None],
                  expect: str) -> str:
    """Run, apply `edit` to the file, SIGHUP: the log and the next stats, as one text."""
    cfg = base_config(mosquitto.port, model=MODEL, frames=FRAMES)
    path = write_config(tmp_path / "edged.toml", cfg)
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
        edit(path)
        daemon.send(signal.SIGHUP)
        wait_log(daemon, expect)
        sent = time.time()
        # Still running on the old config: results keep coming.
        sub.wait_count(lambda m: m.topic.endswith("/results") and m.received_at > sent, 3,
                       timeout=10)
        stats = wait_stats(sub, lambda s: True, after=sent)
        assert daemon.stop() == 0
    return f"{daemon.log_text()}\n{stats}"


def test_a_missing_ca_on_reload_names_the_real_key_and_line(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    missing = tmp_path / "gone" / "ca.crt"

    def use_tls(path: Path) -> None:
        cfg = base_config(mosquitto.port, model=MODEL, frames=FRAMES,
                          mqtt={"tls": True, "ca_file": str(missing), "port": 8883})
        write_config(path, cfg)

    out = _reload_fails(tmp_path, mosquitto, use_tls, "reload failed")
    path = tmp_path / "edged.toml"
    line = next(n for n, text in enumerate(path.read_text().splitlines(), start=1)
                if text.startswith("ca_file"))
    assert f"reload: {path}:{line}: mqtt.ca_file: {missing}: not found" in out, out
    assert f"'config_reload': 'failed: 1 problem(s), kept the running config: {path}:{line}: " \
        f"mqtt.ca_file: {missing}: not found'" in out, out
    assert "mqtt.tls." not in out


def test_an_emptied_config_on_sighup_is_refused(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # An editor that crashed, a full disk: the device would leave its broker for localhost.
    out = _reload_fails(tmp_path, mosquitto, lambda path: path.write_text(""), "reload failed")
    path = tmp_path / "edged.toml"
    assert (f"reload: {path}: holds no settings (emptied by accident?); write the settings "
            "wanted, even the defaults, to have them applied") in out, out
    assert "'config_reload': 'failed: 1 problem(s), kept the running config" in out, out


def test_a_reload_that_drops_the_broker_and_device_id_warns(tmp_path: Path,
                                                            mosquitto: Mosquitto) -> None:
    cfg: dict[str, Any] = base_config(mosquitto.port, model=MODEL, frames=FRAMES)
    path = write_config(tmp_path / "edged.toml", cfg)
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
        del cfg["mqtt"], cfg["device"]
        write_config(path, cfg)
        daemon.send(signal.SIGHUP)
        wait_log(daemon, "reload: applied")
        assert daemon.stop() == 0
    warnings = [line.split(" edged: ", 1)[1] for line in daemon.log_text().splitlines()
                if " WARNING " in line and " edged: reload: " in line]
    assert f"reload: {path}: warning: mqtt.host: is no longer set: the reload would switch " \
        'from "127.0.0.1" to the default "localhost"' in warnings, warnings
    assert f"reload: {path}: warning: mqtt.port: is no longer set: the reload would switch " \
        f"from {mosquitto.port} to the default 1883" in warnings, warnings
    assert any(w.startswith(f"reload: {path}: warning: device.id: is no longer set: the reload "
                            'would switch from "test" to the default ') for w in warnings), warnings
