"""`edged demo` end to end: a private loopback broker (mosquitto, else amqtt from
the `demo` extra), the real daemon as a child, results printed, a clean stop."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edged import demo
from edged.mqtt import broker
from edged.mqtt.broker import find_amqtt, find_mosquitto

ROOT = Path(__file__).resolve().parent.parent


def demo_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGED_", "NOTIFY_"))}
    return {**env, **extra}


def _demo(count: int, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", "demo", "--count", str(count)],
                          check=False, env=demo_env(**env), cwd=ROOT, capture_output=True,
                          text=True, timeout=180)


def _check_output(proc: subprocess.CompletedProcess[str], count: int) -> list[str]:
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len([line for line in lines if line.startswith("seq ")]) == count
    assert all("-> floats [" in line for line in lines if "int8 per_tensor" in line)
    assert "status: online" in lines
    assert lines[-1] == "daemon stopped cleanly (exit 0)"
    return lines


def test_edged_demo_end_to_end_on_amqtt() -> None:
    if find_amqtt() is None:
        pytest.skip("amqtt not installed (pip install 'edged[demo]')")
    lines = _check_output(_demo(3, EDGED_DEMO_BROKER="amqtt"), 3)
    assert lines[0].startswith("broker: private amqtt (pure-Python, demo only) on 127.0.0.1:")


def test_edged_demo_prefers_mosquitto_when_installed() -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    lines = _check_output(_demo(1), 1)
    assert lines[0].startswith("broker: private mosquitto on 127.0.0.1:")


def test_without_any_broker_the_demo_says_how_to_install_one_standin(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
        ) -> None:
    """Stand-in for a machine with neither broker installed (both are here)."""
    monkeypatch.setattr(broker, "find_mosquitto", lambda: None)
    monkeypatch.setattr(broker, "find_amqtt", lambda: None)
    with contextlib.ExitStack() as stack:
        assert demo._start_broker(tmp_path, stack) is None
    err = capsys.readouterr().err
    assert err.strip() == f"edged demo: {demo.INSTALL_HELP}"
    assert "apt-get install mosquitto" in err and "edged[demo]" in err


def test_edged_demo_rejects_an_unknown_broker_choice_in_one_line() -> None:
    proc = _demo(1, EDGED_DEMO_BROKER="rabbit")
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("edged demo: EDGED_DEMO_BROKER='rabbit': must be auto, "
                                   "mosquitto or amqtt")


def test_edged_demo_help_documents_the_broker_choice() -> None:
    proc = subprocess.run([sys.executable, "-m", "edged", "demo", "--help"], check=False,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "EDGED_DEMO_BROKER=auto|mosquitto|amqtt" in " ".join(proc.stdout.split())
