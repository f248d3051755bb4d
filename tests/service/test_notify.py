"""edged.service.notify against a real datagram socket bound the way systemd binds NOTIFY_SOCKET."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from notify_helpers import NotifyListener, abstract_listener, path_listener

from edged.service.notify import (
    HealthCheck,
    Notifier,
    ProgressMonitor,
    WatchdogGate,
    monotonic_usec,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifyListener]:
    if request.param == "path":
        with path_listener(tmp_path) as bound:
            yield bound
    else:
        with abstract_listener() as bound:
            yield bound


def _notifier(listener: NotifyListener, **env: str) -> Notifier:
    return Notifier.from_env({"NOTIFY_SOCKET": listener.env_value, **env})


def test_ready_status_stopping_arrive_as_fields(listener: NotifyListener) -> None:
    notifier = _notifier(listener)
    assert notifier.enabled
    assert notifier.ready(status="running, 30.0 fps, delegate edgetpu")
    message = listener.receive()
    assert message.raw == b"READY=1\nSTATUS=running, 30.0 fps, delegate edgetpu\n"

    assert notifier.status("broker down, retrying in 8 s")
    assert listener.receive().fields == (("STATUS", "broker down, retrying in 8 s"),)

    assert notifier.watchdog()
    assert listener.receive().raw == b"WATCHDOG=1\n"

    assert notifier.stopping()
    assert listener.receive().raw == b"STOPPING=1\n"


def test_status_with_newlines_cannot_inject_fields(listener: NotifyListener) -> None:
    notifier = _notifier(listener)
    notifier.status("bad config\nREADY=1")
    message = listener.receive()
    assert message.keys == ("STATUS",)
    assert message.get("STATUS") == "bad config READY=1"


def test_reloading_carries_monotonic_usec(listener: NotifyListener) -> None:
    notifier = _notifier(listener)
    before = monotonic_usec()
    assert notifier.reloading(status="reloading /etc/edged/edged.toml")
    after = monotonic_usec()
    message = listener.receive()
    assert message.keys == ("RELOADING", "MONOTONIC_USEC", "STATUS")
    assert message.get("RELOADING") == "1"
    stamp = int(message.get("MONOTONIC_USEC") or "0")
    # The same clock systemd reads: CLOCK_MONOTONIC in microseconds.
    assert before <= stamp <= after
    assert abs(stamp - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 5_000_000


def test_extend_timeout(listener: NotifyListener) -> None:
    _notifier(listener).extend_timeout(2.5)
    assert listener.receive().raw == b"EXTEND_TIMEOUT_USEC=2500000\n"


def test_no_socket_makes_every_call_a_no_op() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.address is None
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.reloading()
    assert not notifier.stopping()
    assert notifier.watchdog_interval() is None


def test_unsupported_address_is_disabled_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="edged.notify"):
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert not notifier.ready()
    assert [r.getMessage() for r in caplog.records] == [
        "NOTIFY_SOCKET=vsock:2:1234: unsupported address (expected /path or @abstract); "
        "systemd notifications disabled"
    ]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, 0.1),
        # Another process's watchdog (we are a child that inherited the variables).
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 100000)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    listener: NotifyListener, env: dict[str, str], expected: float | None
) -> None:
    assert _notifier(listener, **env).watchdog_interval() == expected


def test_unset_environment_keeps_children_from_inheriting(
    listener: NotifyListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_env(unset_environment=True)
    assert "NOTIFY_SOCKET" not in os.environ
    assert "WATCHDOG_USEC" not in os.environ
    assert "WATCHDOG_PID" not in os.environ
    assert notifier.watchdog_interval() == 1.0
    assert notifier.ready()
    assert listener.receive().raw == b"READY=1\n"


def test_lost_socket_logs_once_then_recovers_without_reconnecting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with path_listener(tmp_path) as first:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": first.env_value})
        assert notifier.ready()
        first.receive()
    # The socket is gone (systemd re-executing): sends fail, quietly after the first.
    with caplog.at_level(logging.INFO, logger="edged.notify"):
        results = [notifier.watchdog() for _ in range(5)]
        assert results == [False] * 5
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert warnings[0].getMessage().startswith(f"systemd notify to {first.env_value} failed:")
        # Back at the same address: the next datagram gets through, no reconnect needed.
        with path_listener(tmp_path) as second:
            assert notifier.watchdog()
            assert second.receive().raw == b"WATCHDOG=1\n"
    assert caplog.records[-1].getMessage() == f"systemd notify to {first.env_value} works again"


class _Clock:
    """Hand-advanced time for exact tick arithmetic (the real-time test is below)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_gate_pings_at_interval_and_only_while_checks_hold(
    listener: NotifyListener, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock()
    notifier = _notifier(listener, WATCHDOG_USEC="2000000")  # interval 1.0 s
    frames = ProgressMonitor(window=3.0, clock=clock)
    mqtt_alive = [True]
    gate = WatchdogGate(
        notifier,
        [
            HealthCheck("frames stalled", frames),
            HealthCheck("mqtt thread dead", lambda: mqtt_alive[0]),
        ],
        clock=clock,
    )
    assert gate.interval == 1.0

    sent: list[float] = []

    def run(seconds: float, *, beating: bool) -> None:
        end = clock.now + seconds
        while clock.now < end:
            if beating:
                frames.beat()
            if gate.tick():
                sent.append(clock.now)
            clock.now = round(clock.now + 0.1, 6)  # a 10 Hz main loop

    with caplog.at_level(logging.INFO, logger="edged.notify"):
        run(5.0, beating=True)
        assert sent == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0]
        assert gate.failing == ()

        sent.clear()
        # The source stalls after the beat at 1004.9: pings until the 3 s window
        # runs out at 1007.9, then silence.
        run(6.0, beating=False)
        assert sent == [1005.0, 1006.0, 1007.0]
        assert gate.failing == ("frames stalled",)

        sent.clear()
        run(2.0, beating=True)  # frames again: the very next tick pings
        assert sent == [1011.0, 1012.0]
        assert gate.failing == ()

        sent.clear()
        mqtt_alive[0] = False
        run(2.0, beating=True)
        assert sent == []
        assert gate.failing == ("mqtt thread dead",)

    assert [r.getMessage() for r in caplog.records] == [
        "watchdog withheld: frames stalled",
        "watchdog resumed: all health checks pass again",
        "watchdog withheld: mqtt thread dead",
    ]
    received = listener.drain(0.2)
    assert [m.raw for m in received] == [b"WATCHDOG=1\n"] * 10


def test_gate_withholds_when_a_check_raises_and_logs_it_once(
    listener: NotifyListener, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock()

    def broken() -> bool:
        raise RuntimeError("stats lock poisoned")

    gate = WatchdogGate(
        _notifier(listener, WATCHDOG_USEC="2000000"), [HealthCheck("stats", broken)], clock=clock
    )
    with caplog.at_level(logging.ERROR, logger="edged.notify"):
        for _ in range(30):
            assert not gate.tick()
            clock.now += 0.1
    assert gate.failing == ("stats",)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["health check 'stats' raised"]
    assert listener.drain(0.1) == []


def test_gate_without_watchdog_still_reports_health(listener: NotifyListener) -> None:
    clock = _Clock()
    frames = ProgressMonitor(window=1.0, clock=clock)
    gate = WatchdogGate(_notifier(listener), [HealthCheck("frames stalled", frames)], clock=clock)
    assert not gate.tick()  # no WATCHDOG_USEC: nothing is sent
    clock.now += 2.0
    gate.tick()
    assert gate.failing == ("frames stalled",)
    assert listener.drain(0.1) == []


def test_watchdog_rate_in_real_time_follows_a_real_thread(tmp_path: Path) -> None:
    # One address kind is enough here: the timing does not depend on it.
    with path_listener(tmp_path) as listener:
        _watchdog_rate_in_real_time(listener)


def _watchdog_rate_in_real_time(listener: NotifyListener) -> None:
    # WATCHDOG_USEC=200 ms -> a ping every 100 ms while the "network thread" lives.
    notifier = _notifier(listener, WATCHDOG_USEC="200000")
    stop = threading.Event()
    network = threading.Thread(target=stop.wait, name="paho-network", daemon=True)
    network.start()
    frames = ProgressMonitor(window=0.3)
    gate = WatchdogGate(
        notifier,
        [HealthCheck("frames stalled", frames), HealthCheck("mqtt thread dead", network.is_alive)],
    )

    def loop(seconds: float, *, beating: bool) -> list[float]:
        sent_at: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if beating:
                frames.beat()
            if gate.tick():
                sent_at.append(time.monotonic())
            time.sleep(0.01)
        return sent_at

    sent_at = loop(1.0, beating=True)
    healthy = listener.drain(0.05)
    assert len(healthy) == len(sent_at)
    assert 7 <= len(healthy) <= 12, sent_at
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert max(gaps) < 0.19, gaps  # well inside the 200 ms deadline

    loop(1.0, beating=False)  # stalled: pings for the 0.3 s window at most, then none
    stalled = listener.drain(0.05)
    assert len(stalled) <= 5
    loop(0.5, beating=False)
    assert listener.drain(0.05) == []

    loop(0.5, beating=True)  # frames flow again
    assert len(listener.drain(0.05)) >= 3

    stop.set()
    network.join()
    loop(0.5, beating=True)
    assert listener.drain(0.05) == []
    assert gate.failing == ("mqtt thread dead",)


_CHILD = textwrap.dedent(
    """
    import signal, sys, time
    from edged.service.notify import HealthCheck, Notifier, ProgressMonitor, WatchdogGate

    notifier = Notifier.from_env(unset_environment=True)
    frames = ProgressMonitor(window=1.0)
    gate = WatchdogGate(notifier, [HealthCheck("frames stalled", frames)])
    running = True

    def on_term(signum, frame):
        global running
        running = False
        notifier.stopping(status="SIGTERM received, stopping")

    signal.signal(signal.SIGTERM, on_term)
    notifier.ready(status="running")
    while running:
        frames.beat()
        gate.tick()
        time.sleep(0.01)
    sys.exit(0)
    """
)


def test_real_process_ready_watchdog_then_stopping_on_sigterm(listener: NotifyListener) -> None:
    env = {
        **os.environ,
        "NOTIFY_SOCKET": listener.env_value,
        "WATCHDOG_USEC": "400000",
        "PYTHONPATH": os.fspath(ROOT),
    }
    child = subprocess.Popen([sys.executable, "-c", _CHILD], env=env, cwd=ROOT)
    # WATCHDOG_PID is what systemd sets; here it is known only after the fork,
    # so the child runs without it (allowed: then the watchdog is ours).
    try:
        first = listener.receive_until("READY", timeout=30)
        assert first[-1].raw == b"READY=1\nSTATUS=running\n"
        pings = listener.drain(1.0)
        assert 3 <= len(pings) <= 7
        assert {m.raw for m in pings} == {b"WATCHDOG=1\n"}
        child.send_signal(signal.SIGTERM)
        tail = listener.receive_until("STOPPING", timeout=10)
        assert tail[-1].raw == b"STOPPING=1\nSTATUS=SIGTERM received, stopping\n"
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
