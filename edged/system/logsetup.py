"""Logging to stderr, shaped for journald when systemd runs us and for people otherwise.

Under systemd (``JOURNAL_STREAM`` names the device:inode of our stderr) each
line starts with a ``<N>`` syslog priority prefix, which journald strips and
stores as the entry's priority (so ``journalctl -p warning`` works), and
carries no timestamp: journald stamps every line itself. Run by hand, lines
start with a local timestamp and the level name instead.

Either way one event is one line: newlines inside a message or a traceback are
written as the two characters ``\\n``, because journald makes every stderr line
its own entry and a traceback split over twenty entries, each with its own
priority, cannot be filtered or read as one event.

Secrets registered with :func:`register_secret` (MQTT password, TLS key
passphrase) are replaced by ``***`` in every line, tracebacks included, and so
are credentials written into URLs (``rtsp://user:***@camera``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import TextIO

from edged.system.secrecy import redact_credentials

__all__ = [
    "OneLineFormatter",
    "clear_secrets",
    "redact_text",
    "register_secret",
    "setup_logging",
    "syslog_priority",
    "under_journal",
]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
REDACTED = "***"


class _Secrets:
    """The registered secrets: a tuple swapped whole, so readers need no lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: tuple[str, ...] = ()


_SECRETS = _Secrets()


def register_secret(secret: str) -> None:
    """Redact ``secret`` from every log line from now on (empty strings are ignored)."""
    if not secret:
        return
    with _SECRETS.lock:
        if secret not in _SECRETS.values:
            # Longest first, so a secret that contains another is removed whole.
            _SECRETS.values = tuple(sorted((*_SECRETS.values, secret), key=len, reverse=True))


def clear_secrets() -> None:
    with _SECRETS.lock:
        _SECRETS.values = ()


def redact_text(text: str) -> str:
    """`text` without the registered secrets and without credentials in URLs (one
    rule for log lines and for error strings that are published)."""
    for secret in _SECRETS.values:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return redact_credentials(text)


def syslog_priority(levelno: int) -> int:
    """The sd-daemon(3) ``<N>`` priority for a logging level (7 debug ... 2 critical)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno > logging.INFO:
        return 5  # custom levels between INFO and WARNING: "notice"
    if levelno >= logging.INFO:
        return 6
    return 7


def under_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal stream systemd connected (JOURNAL_STREAM=dev:ino).

    Comparing the device and inode, not just the variable's presence, keeps a
    child whose stderr was redirected to a file or a pipe from writing ``<6>``
    prefixes into it (the variable is inherited, the stream is not).
    """
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev_text, sep, ino_text = value.partition(":")
    if not sep:
        return False
    try:
        dev, ino = int(dev_text), int(ino_text)
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        # io.UnsupportedOperation (an OSError) for streams without a descriptor.
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _one_line(text: str) -> str:
    if "\n" not in text and "\r" not in text:
        return text
    return text.rstrip("\r\n").replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


class OneLineFormatter(logging.Formatter):
    """One event per line; ``<N>`` prefix and no time under journald, a timestamp otherwise."""

    def __init__(self, *, journal: bool) -> None:
        if journal:
            super().__init__("%(name)s: %(message)s")
        else:
            super().__init__(
                "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s",
                datefmt="%Y-%m-%d %H:%M:%S",
            )
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = _one_line(redact_text(super().format(record)))
        if self.journal:
            return f"<{syslog_priority(record.levelno)}>{text}"
        return text


def _parse_level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    found = _LEVELS.get(level.strip().lower())
    if found is None:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(_LEVELS)}")
    return found


class _EdgedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler setup_logging installed, so a second call replaces it."""


def setup_logging(
    level: int | str = "info",
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    journal: bool | None = None,
) -> logging.Handler:
    """Route the root logger to ``stream`` (default stderr); safe to call again (reload).

    ``journal`` forces the journald format on or off; by default it is detected
    with :func:`under_journal`. Returns the installed handler.
    """
    levelno = _parse_level(level)
    out = sys.stderr if stream is None else stream
    use_journal = under_journal(out, environ) if journal is None else journal
    handler = _EdgedHandler(out)
    handler.setFormatter(OneLineFormatter(journal=use_journal))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _EdgedHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levelno)
    # warnings.warn() from numpy or the runtime becomes a one-line log event too.
    logging.captureWarnings(True)
    return handler
