"""Commands in over MQTT (issue 20): the topics, what arrives there, and the answers.

    <prefix>/<device>/cmd/<name>            set, reload, config, snapshot, model
    <prefix>/<device>/cmd/model/chunk       a model update's bytes (edged.service.updates)
    <prefix>/fleet/model                    a model update for every device (retained)
    <prefix>/<device>/<camera>/cmd/<name>   set (a [[cameras]] entry's own keys), snapshot
    .../cmd/<name>/result                   {"ok": true|false, "error": "...", ...}

The network thread only files what arrives into a small bounded inbox, and
answers at once what it can refuse unread (too large, retained, the inbox
full); the daemon's housekeeping thread carries the commands out, one at a
time, between its other chores, so a command storm neither blocks results
nor grows memory. A retained command is never carried out: it would be again
at every reconnect.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

log = logging.getLogger("edged.commands")

NAMES = ("set", "reload", "config", "snapshot", "model")
CAMERA_NAMES = ("set", "snapshot")
INBOX_SIZE = 16
REFUSALS_PER_S = 10  # answered; beyond, a storm's refusals are only counted


@dataclass(frozen=True)
class Command:
    name: str
    camera: str | None  # a [[cameras]] id for .../<camera>/cmd/<name>
    payload: bytes
    topic: str

    @property
    def result_topic(self) -> str:
        return f"{self.topic}/result"


def command_topics(base: str, cameras: Iterable[str]) -> list[tuple[str, str, str | None]]:
    """(topic, name, camera) of every command topic edged listens on."""
    out: list[tuple[str, str, str | None]] = [(f"{base}/cmd/{n}", n, None) for n in NAMES]
    out += [(f"{base}/{c}/cmd/{n}", n, c) for c in cameras for n in CAMERA_NAMES]
    return out


def answer(command: Command, ok: bool, error: str = "", **fields: Any) -> bytes:
    """A command's result: whether it was carried out, and the one-line error if not."""
    doc: dict[str, Any] = {"ok": ok, "command": command.name, "at": round(time.time(), 3)}
    if command.camera is not None:
        doc["camera"] = command.camera
    if error:
        doc["error"] = error
    return orjson.dumps({**doc, **fields})


class CommandInbox:
    """What the network thread received, for the housekeeping thread to carry out."""

    def __init__(self, max_payload_bytes: int, reply: Callable[[str, bytes], None]) -> None:
        self.max_payload_bytes = max_payload_bytes
        self._reply = reply  # queues a message; any thread
        self._queue: deque[Command] = deque()
        self._lock = threading.Lock()
        self._said_retained = False
        self._window = (0.0, 0)  # this second's start and its refusals answered

    def handler(self, topic: str, name: str, camera: str | None, *, answer_on: str = "",
                retained_ok: bool = False) -> Callable[[bytes, bool], None]:
        """What files a message on `topic` as command `name`, answered on
        `answer_on`/result (default: `topic`). `retained_ok`: a topic whose retained
        message is meant for every device that comes (the fleet's model announcement)."""
        def on_message(payload: bytes, retained: bool) -> None:
            command = Command(name, camera, payload, answer_on or topic)
            problem = self._refusal(payload, retained and not retained_ok)
            if problem:
                if self._may_answer():
                    self._reply(command.result_topic, answer(command, False, problem))
                return
            with self._lock:
                self._queue.append(command)

        return on_message

    def _may_answer(self) -> bool:
        """At most REFUSALS_PER_S refusals answered a second: answers to a flood would
        crowd the results out of the connection."""
        now = time.monotonic()
        start, answered = self._window
        if now - start >= 1.0:
            start, answered = now, 0
        self._window = (start, answered + 1)
        return answered < REFUSALS_PER_S

    def _refusal(self, payload: bytes, retained: bool) -> str:
        if retained:
            if not self._said_retained:
                self._said_retained = True
                log.warning("commands: a retained command was ignored (a command is carried "
                            "out once, when sent; clear it with an empty retained message)")
            return "retained: a command is carried out when sent, never from the broker's store"
        if len(payload) > self.max_payload_bytes:
            return (f"payload of {len(payload)} bytes: at most {self.max_payload_bytes} "
                    "(commands.max_payload_bytes)")
        with self._lock:
            if len(self._queue) >= INBOX_SIZE:
                return f"busy: {INBOX_SIZE} commands already waiting; send it again later"
        return ""

    def take(self) -> Command | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None
