"""edged.system.logsetup: journald lines under systemd, timestamped by hand, one event per line."""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from edged.system.logsetup import (
    clear_secrets,
    register_secret,
    setup_logging,
    syslog_priority,
    under_journal,
)

ROOT = Path(__file__).resolve().parents[2]
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} ")


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    clear_secrets()


def _journal_env(stream: TextIO) -> dict[str, str]:
    st = os.fstat(stream.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_journal_detection_compares_device_and_inode(tmp_path: Path) -> None:
    with (tmp_path / "a").open("w") as a, (tmp_path / "b").open("w") as b:
        assert under_journal(a, _journal_env(a))
        assert not under_journal(b, _journal_env(a))  # inherited variable, other stream
        assert not under_journal(a, {})
        assert not under_journal(a, {"JOURNAL_STREAM": "garbage"})
        assert not under_journal(a, {"JOURNAL_STREAM": "8:x"})
    assert not under_journal(io.StringIO(), {"JOURNAL_STREAM": "8:1"})  # no descriptor


def test_under_journal_lines_have_priority_prefix_and_no_timestamp(tmp_path: Path) -> None:
    out_path = tmp_path / "stderr"
    with out_path.open("w") as out:
        setup_logging("debug", stream=out, environ=_journal_env(out))
        log = logging.getLogger("edged.test")
        log.debug("frame 1 decoded")
        log.info("connected to broker")
        log.warning("queue full, dropped %d results", 3)
        log.error("camera read failed")
        log.critical("giving up")
    assert _lines(out_path) == [
        "<7>edged.test: frame 1 decoded",
        "<6>edged.test: connected to broker",
        "<4>edged.test: queue full, dropped 3 results",
        "<3>edged.test: camera read failed",
        "<2>edged.test: giving up",
    ]


def test_by_hand_lines_have_timestamps_and_no_prefix(tmp_path: Path) -> None:
    out_path = tmp_path / "stderr"
    with out_path.open("w") as out:
        setup_logging("info", stream=out, environ={})
        logging.getLogger("edged.test").debug("hidden")
        logging.getLogger("edged.test").warning("broker down")
    (line,) = _lines(out_path)
    assert TIMESTAMP.match(line), line
    assert line.endswith(" WARNING edged.test: broker down")
    assert not line.startswith("<")


@pytest.mark.parametrize("journal", [True, False])
def test_multiline_messages_and_tracebacks_stay_on_one_line(tmp_path: Path, journal: bool) -> None:
    out_path = tmp_path / "stderr"
    with out_path.open("w") as out:
        setup_logging("info", stream=out, journal=journal)
        log = logging.getLogger("edged.test")
        log.error("config rejected:\n  line 3: bad key\r\n  line 9: bad value")
        settings: dict[str, str] = {}
        try:
            settings["model"]
        except KeyError:
            log.exception("reload failed")
    lines = _lines(out_path)
    assert len(lines) == 2
    assert lines[0].endswith("config rejected:\\n  line 3: bad key\\n  line 9: bad value")
    assert "reload failed\\nTraceback (most recent call last):\\n  File " in lines[1]
    assert lines[1].endswith("KeyError: 'model'")
    if journal:
        assert lines[0].startswith("<3>") and lines[1].startswith("<3>")


def test_registered_secrets_are_redacted_everywhere(tmp_path: Path) -> None:
    out_path = tmp_path / "stderr"
    register_secret("hunter2-long-password")
    register_secret("hunter2")  # a secret inside another: the longer goes first
    register_secret("")  # ignored, or every line would be mangled
    with out_path.open("w") as out:
        setup_logging("info", stream=out, journal=True)
        log = logging.getLogger("edged.publish")
        log.warning("auth failed for user edged with %s", "hunter2-long-password")
        try:
            raise ConnectionRefusedError("password hunter2 rejected")
        except ConnectionRefusedError:
            log.exception("connect failed")
    text = out_path.read_text()
    assert "hunter2" not in text
    assert "<4>edged.publish: auth failed for user edged with ***\n" in text
    assert "ConnectionRefusedError: password *** rejected" in text


def test_setup_again_replaces_its_handler(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    with first.open("w") as a, second.open("w") as b:
        setup_logging("info", stream=a, journal=True)
        setup_logging("warning", stream=b, journal=True)
        logging.getLogger("edged.test").warning("once")
        logging.getLogger("edged.test").info("filtered")
    assert _lines(first) == []
    assert _lines(second) == ["<4>edged.test: once"]


def test_warnings_become_one_line_log_events(tmp_path: Path) -> None:
    out_path = tmp_path / "stderr"
    with out_path.open("w") as out:
        setup_logging("info", stream=out, journal=True)
        warnings.warn("numpy said something", RuntimeWarning, stacklevel=1)
    (line,) = _lines(out_path)
    assert line.startswith("<4>py.warnings: ")
    assert "RuntimeWarning: numpy said something" in line


def test_bad_level_is_one_clear_line() -> None:
    with pytest.raises(ValueError) as info:
        setup_logging("verbose")
    assert str(info.value) == (
        "log level 'verbose': expected one of debug, info, warning, error, critical"
    )


def test_syslog_priorities() -> None:
    assert [syslog_priority(n) for n in (5, 10, 20, 25, 30, 40, 50, 60)] == [
        7,
        7,
        6,
        5,
        4,
        3,
        2,
        2,
    ]


_CHILD = textwrap.dedent(
    """
    import logging, sys
    from edged.system.logsetup import setup_logging
    setup_logging("info")
    logging.getLogger("edged.daemon").info("started")
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("edged.daemon").exception("tick failed")
    """
)


def _run_child(stderr: int, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-c", _CHILD],
        stderr=stderr,
        env={**os.environ, "PYTHONPATH": os.fspath(ROOT), **env},
        cwd=ROOT,
        check=True,
        timeout=60,
    )


def test_real_process_with_stderr_on_a_stream_socket_like_journald() -> None:
    # systemd connects stderr to a stream socket into journald and exports its
    # dev:ino as JOURNAL_STREAM; this is the same arrangement with a socketpair.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        st = os.fstat(theirs.fileno())
        _run_child(theirs.fileno(), {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        theirs.close()
        received = b""
        while chunk := ours.recv(65536):
            received += chunk
    lines = received.decode().splitlines()
    assert lines[0] == "<6>edged.daemon: started"
    assert len(lines) == 2
    assert lines[1].startswith("<3>edged.daemon: tick failed\\nTraceback")
    assert lines[1].endswith("ZeroDivisionError: division by zero")


def test_real_process_by_hand_ignores_an_inherited_journal_stream(tmp_path: Path) -> None:
    # JOURNAL_STREAM inherited from a shell that systemd started, stderr to a file.
    out_path = tmp_path / "stderr"
    with out_path.open("w") as out:
        _run_child(out.fileno(), {"JOURNAL_STREAM": "8:12345"})
    lines = _lines(out_path)
    assert len(lines) == 2
    assert TIMESTAMP.match(lines[0]) and lines[0].endswith(" INFO    edged.daemon: started")
