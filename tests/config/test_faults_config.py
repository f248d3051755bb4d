"""Damaged config files through the real processes: `edged check-config`, `edged run`, SIGHUP.

tests/config/test_config.py already feeds random garbage to `load_config` in-process;
here hypothesis damages a *working* daemon config (wrong types, huge numbers,
unicode, unknown keys and sections, missing sections) and the real command
lines must answer with `file:line: key: message` lines and their exit code,
never a traceback; a running daemon must shrug off several broken reloads in
a row and recover on a good one.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from badinput_helpers import damaged_configs
from broker import Mosquitto, Subscriber, free_port
from config_helpers import config_problems, toml_document
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, write_config
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st

from edged.config.check import check_config

MODEL = MODELS / "digits_int8.tflite"
BASE = base_config(1883, model=MODEL, frames=FRAMES)
# The runtime prints this itself, on the real stderr, when it loads a model.
RUNTIME_NOISE = re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$")
LOG_ERROR = re.compile(r" ERROR +edged: (.*)$")


def slow_process(max_examples: int) -> settings:
    """Few examples (each one starts real processes), the same ones every run."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True,
                    database=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow,
                                                          HealthCheck.function_scoped_fixture])


def _edged(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True,
                          text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(toml_document(document), encoding="utf-8")
    return path


@slow_process(12)
@given(damaged_configs(BASE))
def test_check_config_answers_in_lines_never_a_traceback(tmp_path: Path,
                                                          document: dict[str, Any]) -> None:
    path = _write(tmp_path / "edged.toml", document)
    expected = config_problems(path)
    proc = _edged("check-config", str(path))
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    # Problems on stderr (with the runtime's own chatter), the verdict on stdout.
    lines = [line for line in proc.stderr.splitlines() if not RUNTIME_NOISE.match(line)]
    assert proc.returncode == (1 if expected else proc.returncode), proc.stderr
    assert proc.returncode in (0, 1), proc.stderr
    if proc.returncode:
        assert not proc.stdout, proc.stdout
    else:
        assert proc.stdout.splitlines()[-1].startswith(f"{path}: OK ("), proc.stdout
    if expected:
        # What the file says comes first, exactly as load_config words it; then
        # what the files named by its valid sections say, then the count.
        assert lines[:len(expected)] == expected
        found = check_config(path)
        assert found.errors[:len(expected)] == tuple(expected)
        n = len(found.errors)
        assert lines[len(expected):] == [*found.errors[len(expected):], *found.warnings,
                                         f"{path}: {n} problem{'s' if n > 1 else ''}"], lines
    for line in lines + proc.stdout.splitlines():
        assert line.startswith(f"{path}:") or line.startswith(str(tmp_path)), line


@slow_process(10)
@given(damaged_configs(BASE))
def test_run_with_a_broken_config_exits_78_with_one_line_per_problem(
        tmp_path: Path, document: dict[str, Any]) -> None:
    path = _write(tmp_path / "edged.toml", document)
    expected = config_problems(path)
    assume(expected)
    proc = _edged("run", "--config", str(path), timeout=30)
    assert proc.returncode == 78, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    logged = [m.group(1) for line in proc.stderr.splitlines() if (m := LOG_ERROR.search(line))]
    assert logged == expected
    assert len(proc.stderr.splitlines()) == len(expected), proc.stderr
    assert not proc.stdout


def _wait_stats(sub: Subscriber, predicate: Any, since: float, timeout: float = 20.0
                ) -> dict[str, Any]:
    """The first stats message received after `since` (time.time()) that matches."""
    msg = sub.wait_for(lambda m: m.topic.endswith("/stats") and m.received_at >= since
                       and predicate(orjson.loads(m.payload)), timeout=timeout)
    result: dict[str, Any] = orjson.loads(msg.payload)
    return result


@slow_process(2)
@given(st.lists(damaged_configs(BASE), min_size=4, max_size=4))
def test_broken_reloads_in_a_row_never_stop_results(
        tmp_path_factory: pytest.TempPathFactory, documents: list[dict[str, Any]]) -> None:
    tmp = tmp_path_factory.mktemp("reload")
    port = free_port()
    good = base_config(port, model=MODEL, frames=FRAMES, device="reload")
    config = tmp / "edged.toml"
    broken = []
    for doc in documents:
        # The same broker and device as the running config: only the damage differs.
        for section, keys in (("mqtt", ("host", "port")), ("device", ("id",))):
            if isinstance(doc.get(section), dict):
                doc[section].update({k: good[section][k] for k in keys})
        if config_problems(_write(config, doc)):
            broken.append(doc)
    assume(len(broken) >= 2)
    event(f"broken reloads in a row: {len(broken)}")
    with Mosquitto(tmp / "mosquitto", port=port) as broker, \
            Subscriber(broker.port, "edged/reload/#") as sub:
        write_config(config, good)
        with DaemonProcess(config) as daemon:
            sub.wait_count(lambda m: m.topic.endswith("/results"), 3, timeout=30)
            for doc in broken:
                _write(config, doc)
                mark = time.time()
                daemon.send(signal.SIGHUP)
                stats = _wait_stats(sub, lambda s: s["config_reload"].startswith("failed"), mark)
                assert f"{config}:" in stats["config_reload"], stats
                before = len(sub.on("/results"))
                sub.wait_count(lambda m: m.topic.endswith("/results"), before + 3, timeout=20)
                assert daemon.proc.poll() is None, daemon.log_text()
            write_config(config, good)
            mark = time.time()
            daemon.send(signal.SIGHUP)
            _wait_stats(sub, lambda s: s["config_reload"] == "ok", mark)
            before = len(sub.on("/results"))
            sub.wait_count(lambda m: m.topic.endswith("/results"), before + 3, timeout=20)
            assert daemon.stop() == 0
        log = daemon.log_text()
        assert "Traceback" not in log, log
        reload_errors = [line for line in log.splitlines() if "ERROR" in line and "reload:" in line]
        assert reload_errors and all(f"reload: {config}:" in line for line in reload_errors), log
