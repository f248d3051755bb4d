"""A stand-in for systemd's end of NOTIFY_SOCKET: a real datagram socket the test binds."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Message:
    """One datagram as systemd would parse it: ordered fields and the raw bytes."""

    raw: bytes
    fields: tuple[tuple[str, str], ...]
    at: float

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.fields if k == key), None)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.fields)


class NotifyListener:
    """Bound SOCK_DGRAM socket; ``env_value`` is what NOTIFY_SOCKET should hold."""

    def __init__(self, sock: socket.socket, env_value: str, path: Path | None) -> None:
        self.sock = sock
        self.env_value = env_value
        self.path = path

    def receive(self, timeout: float = 5.0) -> Message:
        self.sock.settimeout(timeout)
        raw = self.sock.recv(65536)
        text = raw.decode()
        fields = tuple(
            (key, value)
            for key, _, value in (line.partition("=") for line in text.split("\n") if line)
        )
        return Message(raw=raw, fields=fields, at=time.monotonic())

    def receive_until(self, key: str, timeout: float = 10.0) -> list[Message]:
        """All messages up to and including the first one holding ``key``."""
        deadline = time.monotonic() + timeout
        seen: list[Message] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {key} within {timeout}s; got {[m.raw for m in seen]}")
            message = self.receive(left)
            seen.append(message)
            if key in message.keys:
                return seen

    def drain(self, duration: float) -> list[Message]:
        """Everything that arrives within ``duration`` seconds."""
        deadline = time.monotonic() + duration
        seen: list[Message] = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                seen.append(self.receive(left))
            except TimeoutError:
                break
        return seen

    def close(self) -> None:
        self.sock.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


@contextlib.contextmanager
def path_listener(directory: Path) -> Iterator[NotifyListener]:
    path = directory / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.fspath(path))
    listener = NotifyListener(sock, os.fspath(path), path)
    try:
        yield listener
    finally:
        listener.close()


@contextlib.contextmanager
def abstract_listener() -> Iterator[NotifyListener]:
    name = f"edged-test-notify-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    listener = NotifyListener(sock, "@" + name, None)
    try:
        yield listener
    finally:
        listener.close()
